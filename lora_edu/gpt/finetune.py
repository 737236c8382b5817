"""Fine-tuning the pretrained GPT on a new output format, by LoRA or by the alternatives.

``finetune(base, world, "json", method)`` trains a copy of ``base`` and returns it with a
``Report``: trainable parameters, training-state memory, step time, validation and test exact match
and the loss on the pretraining distribution (forgetting).  Methods:

- ``"lora-qv"``: rank-r LoRA on Wq and Wv (the paper's choice); ``"lora-all"``: on every linear layer;
  ``"lora"`` with ``targets=[...]``: on the named layers;
- ``"full"``: every weight trains; ``"full-linear"``: only the matrices lora-all adapts train (every linear
  layer's weight in the blocks; embeddings, norms and biases frozen); ``"last-block"``: only the last
  transformer block trains (partial freezing, as vision models are often tuned);
- ``"control"``: full fine-tuning of an *untrained* GPT of the same size: it cannot know the
  held-out animals, so it must score about 0 on them.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..lora.layer import LoRALinear, adapted_weight, count_parameters, inject_lora, mark_only_lora_trainable, match_targets
from ..lora.quant import NF4Linear, dequantized_weight
from .data import World, lm_targets, task_data
from .evaluate import answer_rows, answer_scores, answers_right, exact_match, lm_loss
from .model import GPT
from .pretrain import pretraining_eval_rows, pretraining_rows
from .train import TrainConfig, TrainResult, train

__all__ = ["CHECKPOINT_BY", "FINETUNE_SIZES", "METHODS", "Report", "collect_reports", "finetune", "update_ratio", "update_ratios"]

# The notebook's configuration per model size: "tiny" on a CPU, "gpu" on a class GPU. The tiny world has 24
# training rows, so a batch of 16 draws two thirds of them per step.
FINETUNE_SIZES = {"tiny": {"steps": 200, "batch_size": 16}, "gpu": {"steps": 400, "batch_size": 64}}
METHODS = ("lora", "lora-qv", "lora-all", "full", "full-linear", "last-block", "control")
# Each method at a learning rate that suits it (LoRA's small, zero-started update takes a larger one).
CHECKPOINT_BY = ("exact match", "answer loss")  # what picks the kept checkpoint on the validation animals
DEFAULT_LR = {"lora": 1e-2, "lora-qv": 1e-2, "lora-all": 1e-2, "full": 3e-4, "full-linear": 3e-4, "last-block": 1e-3, "control": 1e-3}


@dataclass
class Report:
    """One fine-tuning run, as a row of the comparison table.

    The checkpoint is picked by exact match on the *validation* animals, ties broken by their answer loss
    (and then by the earlier step); ``pretrain_loss`` is the loss on held-out pretraining text
    (``World.heldout_text``, never trained on), the measure of forgetting;
    ``test_exact_match`` (and ``test_answer_loss``, from the same pass) is scored once, on the held-out test animals,
    after training.
    ``ms_per_step`` and ``tokens_per_second`` leave out evaluations and saves and count every token
    processed; ``peak_memory_bytes`` is the CUDA peak of this run above what was allocated before it (0 on CPU).
    """

    method: str
    lr: float
    seed: int
    trainable: int
    total: int
    state_bytes: int
    ms_per_step: float
    tokens_per_second: float
    peak_memory_bytes: int
    val_exact_match: float
    val_answer_loss: float
    val_right: tuple[bool, ...]  # animal by animal at the chosen checkpoint, in the order of world.val_animals
    test_exact_match: float
    test_answer_loss: float
    test_right: tuple[bool, ...]  # animal by animal, in the order of world.test_animals
    test_answer_losses: tuple[float, ...]  # each test animal's answer loss, in the same order
    train_exact_match: float
    pretrain_loss: float
    update_ratios: dict[str, float]  # ||ΔW||_F / ||W||_F of every block weight the method changed
    best_step: int
    result: TrainResult

    @property
    def update_ratio(self) -> float:
        """The median of ``update_ratios``: how far, relative to its own size, a typical trained weight moved."""
        return statistics.median(self.update_ratios.values()) if self.update_ratios else 0.0


@torch.no_grad()
def update_ratios(base: GPT, model: GPT, top_r: int | None = None) -> dict[str, float]:
    """||ΔW||_F / ||W||_F for every Linear weight in the blocks that fine-tuning changed: ΔW = s B A for a LoRA
    layer (on a full-precision or an NF4 base), W' - W for a trained weight. The paper's Table 7 has
    6.91 / 61.95 = 0.11 for GPT-3's Wq at r = 4.

    ``top_r``: divide by the norm of W's top-``top_r`` part instead (the root of the sum of its ``top_r`` largest
    squared singular values), a measure that depends less on the width: Table 7 has 6.91 / 21.67 = 0.32."""
    if top_r is not None and (not isinstance(top_r, int) or top_r < 1):
        raise ValueError(f"top_r must be a whole number of directions, 1 or more, got {top_r!r}.")
    ratios, in_base = {}, dict(base.named_modules())
    for name, layer in model.named_modules():
        if not name.startswith("blocks.") or name not in in_base:  # e.g. the Linear inside a LoRA layer
            continue
        if isinstance(layer, LoRALinear) and not layer.merged:
            w = dequantized_weight(layer) if isinstance(layer.base, NF4Linear) else layer.base_weight().detach()
            delta = layer.delta_weight()
        elif isinstance(layer, nn.Linear) and not isinstance(layer, NF4Linear):
            w = adapted_weight(base, name)
            delta = adapted_weight(model, name) - w
        else:
            continue
        if delta.any():
            ratios[name] = update_ratio(w, delta, top_r)
    return ratios


def update_ratio(weight: torch.Tensor, delta: torch.Tensor, top_r: int | None = None) -> float:
    """||delta||_F / ||weight||_F, or with ``top_r`` / ||weight's top-``top_r`` part||_F (the root of the sum of its
    ``top_r`` largest squared singular values). weight, delta: (d_out, d_in); half precision is computed in fp32."""
    w, d = (t.to(torch.promote_types(t.dtype, torch.float32)) for t in (weight, delta))
    size = w.norm() if top_r is None else torch.linalg.svdvals(w)[:top_r].norm()
    return float(d.norm() / size)


LORA_TARGETS = {"lora-qv": ["q_proj", "v_proj"], "lora-all": "all-linear"}


def prepare(base: GPT, method: str, r: int, alpha: float, seed: int, targets: list[str] | None = None,
            rslora: bool = False) -> GPT:
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose from {METHODS}.")
    if (method == "lora") != (targets is not None):
        raise ValueError("Pass targets=[...] with method='lora' (and only then), e.g. targets=['q_proj', 'v_proj'].")
    if method == "control":
        torch.manual_seed(seed + 1)
        return GPT(base.config).to(next(base.parameters()).device)
    model = copy.deepcopy(base)
    if method.startswith("lora"):
        torch.manual_seed(seed)  # the random init of A
        inject_lora(model, targets if targets is not None else LORA_TARGETS[method], r=r, alpha=alpha, use_rslora=rslora)
        mark_only_lora_trainable(model)
    elif method == "last-block":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(f"blocks.{base.config.n_layer - 1}."))
    elif method == "full-linear":  # the weights lora-all puts a branch beside, and nothing else
        model.requires_grad_(False)
        for name in match_targets(model, LORA_TARGETS["lora-all"]):
            model.get_submodule(name).weight.requires_grad_(True)
    else:
        model.requires_grad_(True)
    return model


def finetune(
    base: GPT,
    world: World,
    task: str,
    method: str = "lora-qv",
    r: int = 8,
    alpha: float = 16,
    steps: int = 300,
    lr: float | None = None,
    batch_size: int = FINETUNE_SIZES["tiny"]["batch_size"],
    replay: float = 0.0,
    save_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    targets: list[str] | None = None,
    loraplus_ratio: float | None = None,
    rslora: bool = False,
    precision: str | None = None,
    score_all: bool = True,
    track_forgetting: bool = False,
    eval_every: int | None = None,
    checkpoint_by: str = "exact match",
) -> tuple[GPT, Report]:
    """Fine-tune a copy of ``base`` (never ``base`` itself) and report on it.

    ``replay`` > 0 mixes pretraining text into the batches, ``replay`` rows of it per task row
    (a cure for forgetting).  ``save_dir`` keeps the best adapter on disk (LoRA methods).
    ``loraplus_ratio`` (LoRA+) trains every lora_B at ``ratio`` times the learning rate of lora_A.
    ``rslora`` scales the LoRA branch by alpha / sqrt(r) instead of alpha / r (rsLoRA).
    ``score_all=False`` skips the training-animal score and the pretraining loss (NaN in the report): sweeps need neither.
    ``track_forgetting`` adds the held-out loss to every evaluation (``report.result.evals``, key ``"held_out"``), so
    that runs kept at different steps can be compared at the same step (``Comparison.forgetting(..., step=)``).
    ``eval_every``: evaluate on the validation animals every that many steps (default: six times a run, ``steps // 6``);
    a finer grid resolves when a run reached a level, and gives the best checkpoint more steps to come from.
    ``checkpoint_by``: the run keeps the weights of its best evaluation on the validation animals, by ``"exact match"``
    (ties: the lower answer loss) or by ``"answer loss"`` alone (for a lesson whose verdicts are on the answer loss).
    """
    if replay < 0:
        raise ValueError(f"replay must be >= 0, got {replay}.")
    if checkpoint_by not in CHECKPOINT_BY:
        raise ValueError(f"checkpoint_by must be one of {CHECKPOINT_BY}, got {checkpoint_by!r}.")
    if eval_every is not None and (isinstance(eval_every, bool) or not isinstance(eval_every, int) or not 1 <= eval_every <= steps):
        raise ValueError(f"eval_every must be a whole number of steps from 1 to steps ({steps}), got {eval_every!r}.")
    if not world.val_animals:
        raise ValueError("The world has no validation animals to pick a checkpoint with; build it with make_world(..., n_val=8).")
    if loraplus_ratio is not None and not method.startswith("lora"):
        raise ValueError(f"loraplus_ratio applies to LoRA methods only, not {method!r}.")
    n_ctx = base.config.n_ctx
    if rslora and not method.startswith("lora"):
        raise ValueError(f"rslora applies to LoRA methods only, not {method!r}.")
    model = prepare(base, method, r, alpha, seed, targets, rslora)
    x, y = task_data(world, task, world.train_animals, n_ctx)
    if replay:  # pretraining rows make up replay / (1 + replay) of what a batch draws from
        pre_x, pre_y = lm_targets(pretraining_rows(world, n_ctx, epochs=4, first_seed=20_000), world.tokenizer.pad_id)
        reps = max(1, round(len(pre_x) / (replay * len(x))))
        x, y = torch.cat([x.repeat(reps, 1), pre_x]), torch.cat([y.repeat(reps, 1), pre_y])

    held_out = pretraining_eval_rows(world, n_ctx) if track_forgetting else None

    def evaluate(m: GPT) -> dict[str, float]:  # validation animals only: the test animals are scored once, at the end
        em, loss = answer_scores(m, world, task, world.val_animals)  # one forward pass for both
        scores = {"val": em, "val_loss": loss}
        if checkpoint_by == "answer loss":
            scores["-val_loss"] = -loss  # higher is better, as train() ranks
        if held_out is not None:  # forgetting along the run; it chooses nothing
            scores["held_out"] = lm_loss(m, held_out, world.tokenizer.pad_id)
        return scores

    lr = lr or DEFAULT_LR[method]
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, eval_every=eval_every or max(1, steps // 6), seed=seed,
                      precision=precision)
    groups = None
    if loraplus_ratio is not None:
        from ..lora.variants import loraplus_param_groups

        groups = loraplus_param_groups(model, lr=lr, ratio=loraplus_ratio)
    device = next(base.parameters()).device
    keys = {"score_key": "val", "tiebreak_key": "val_loss"} if checkpoint_by == "exact match" else {"score_key": "-val_loss"}
    result = train(model, x, y, cfg, evaluate=evaluate, save_dir=save_dir, device=device, desc=f"{method} ({task})",
                   progress=progress, param_groups=groups, **keys)
    count = count_parameters(model)
    val_right, val_loss = answers_right(model, world, task, world.val_animals)
    test_right, test_losses, test_loss = answer_rows(model, world, task, world.test_animals)
    report = Report(
        method=method + (f" + replay {replay:g}" if replay else "") + (f" + LoRA+ x{loraplus_ratio:g}" if loraplus_ratio else ""),
        lr=lr,
        seed=seed,
        trainable=count.trainable,
        total=count.total,
        state_bytes=result.state_bytes,
        ms_per_step=result.ms_per_step,
        tokens_per_second=result.tokens_per_second,
        peak_memory_bytes=result.peak_cuda_bytes,
        val_exact_match=dict(result.evals)[result.best_step]["val"],  # train() restored the weights that scored it
        val_answer_loss=val_loss,
        val_right=tuple(val_right),
        test_exact_match=sum(test_right) / len(test_right),
        test_answer_loss=test_loss,
        test_right=tuple(test_right),
        test_answer_losses=tuple(test_losses),
        train_exact_match=exact_match(model, world, task, world.train_animals) if score_all else math.nan,
        pretrain_loss=lm_loss(model, pretraining_eval_rows(world, n_ctx), world.tokenizer.pad_id) if score_all else math.nan,
        update_ratios={} if method == "control" else update_ratios(base, model),  # the control does not start from base
        best_step=result.best_step,
        result=result,
    )
    for reports in _collectors:
        reports.append(report)
    return model, report


_collectors: list[list[Report]] = []  # the open collect_reports() blocks


@contextmanager
def collect_reports() -> Iterator[list[Report]]:
    """Every ``Report`` that ``finetune`` returns inside the block, in order.

    For tools that run a lesson and measure its fine-tunes (``benchmarks/gpu_check.py``): the lesson itself
    keeps no list for them.
    """
    reports: list[Report] = []
    _collectors.append(reports)
    try:
        yield reports
    finally:
        _collectors.remove(reports)
