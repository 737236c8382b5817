"""Notebook 05b's comparison of six fine-tuning methods, kept on disk so that notebook 05c reads the same runs.

``lora_vs_full(base, world, run)`` trains every method of ``LORA_VS_FULL`` at every rate of its grid (``compare_methods``),
measures each trained model with ``measure_run`` and returns the ``Comparison``. It also writes the result to the
cache directory (``$LORA_EDU_CACHE``, default ``~/.cache/lora_edu``) under a name that fingerprints everything the
numbers depend on: the base model's weights, the settings, the package's code, torch's version, the device, the CPU
kernels and the thread count. A second call with the same fingerprint loads the file instead of training again; any
change trains anew, into a new file. A stored file is never overwritten.

How notebook 05b reads the runs lives in ``forgetting``; how notebook 05c reads their intruder dimensions, in
``intruders``.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ..gpt.data import World
from ..gpt.evaluate import facts_known, format_token_ids, lm_loss, lm_loss_parts
from ..gpt.finetune import Report, update_ratios
from ..gpt.model import GPT
from ..gpt.pretrain import cache_root, pretraining_eval_rows
from ..gpt.train import TrainResult
from ..lora.layer import adapted_weight
from .analysis import intruder_similarity
from .comparison import (
    Arm,
    Comparison,
    LearningForgetting,
    compare_methods,
    evaluation_at,
    learning_forgetting,
    more_seeds,
)
from .experiments import Interval, better, interval, update_spectra, verdict

__all__ = ["COMPARED", "CONTROL", "LONGER", "LORA_VS_FULL", "LongerBudget", "at_matched_learning", "closest_in_learning",
           "learned_rates", "load_comparison", "longer_budget", "lora_vs_full", "measure_run", "qv_names", "save_comparison"]

LORA_VS_FULL = (
    Arm("lora-all", "lora-all", (1e-3, 3e-3, 1e-2, 3e-2), headline=True),
    Arm("full", "full", (3e-4, 1e-3, 3e-3), headline=True),
    Arm("full-linear", "full-linear", (3e-4, 1e-3, 3e-3, 1e-2)),
    Arm("lora-qv", "lora-qv", (1e-2, 3e-2, 1e-1)),
    Arm("last-block", "last-block", (1e-3, 3e-3, 1e-2)),
)
CONTROL = Arm("control", "control", (3e-4, 1e-3, 3e-3))  # full fine-tuning's grid; validation answer loss chooses
SWEEP_SEEDS, SEEDS = (0, 1, 2), (0, 1, 2, 3, 4)
R, ALPHA = 8, 16
COMPARED = ("lora-all", "full", "full-linear")  # compared at matched learning (05b, section 2): five seeds at every rate that learned
MIN_VAL_EM = 0.75  # "learned": mean validation exact match at least this, after the last step
PACKAGE = Path(__file__).resolve().parents[1]


def qv_names(base: GPT) -> list[str]:
    """The Wq and Wv of every block, where notebook 05c counts intruder dimensions."""
    return [f"blocks.{i}.attn.{p}" for i in range(base.config.n_layer) for p in ("q_proj", "v_proj")]


def measure_run(base: GPT, world: World, model: GPT) -> dict:
    """What notebooks 05b and 05c read of one trained model, beyond its ``Report``:

    - ``facts``: (attribute, among the answers) -> per test animal, whether the old phrasing still reaches the fact;
    - ``held_out_parts``: the held-out loss on the facts and on the filler lines, apart;
    - ``held_out_format``: the part of the held-out loss on the fact lines spent on the JSON answers' own tokens
      (``lm_loss_parts``, ``format_token_ids``): the format leaking into plain sentences;
    - ``top_r``: the median ||ΔW||_F / ||W's top-8 part||_F over the weights it moved;
    - ``qv_sizes``: ||ΔW||_F / ||W||_F of each Wq and Wv (0 where it left one alone);
    - ``qv_spectra``: the singular values of each Wq's and Wv's ΔW, for the random-direction null;
    - ``qv_similarity``: for each Wq and Wv, the largest |cosine| of each of its top 10 singular vectors with any of
      the pretrained weight's (an intruder at ε when below ε);
    - ``intruders``: intruder dimensions among the top 10 singular vectors of each Wq and Wv at ε = 0.5, summed.
    """
    names = qv_names(base)
    sizes = update_ratios(base, model)
    parts = {part: pretraining_eval_rows(world, base.config.n_ctx, part) for part in ("facts", "filler")}
    similarity = {n: intruder_similarity(adapted_weight(base, n), adapted_weight(model, n), 10).tolist() for n in names}
    return {"facts": {(a, among): facts_known(model, world, a, world.test_animals, among)
                      for a in ("home", "food") for among in (False, True)},
            "held_out_parts": {part: lm_loss(model, rows, world.tokenizer.pad_id) for part, rows in parts.items()},
            "held_out_format": lm_loss_parts(model, parts["facts"], format_token_ids(world), world.tokenizer.pad_id)[1],
            "top_r": float(np.median(list(update_ratios(base, model, top_r=R).values()))),
            "qv_sizes": {n: sizes.get(n, 0.0) for n in names},
            "qv_spectra": update_spectra(base, model, names),
            "qv_similarity": similarity,
            "intruders": sum(s < 0.5 for values in similarity.values() for s in values)}


def at_matched_learning(comparison: Comparison, world: World, labels: tuple[str, str], steps: int | None,
                        min_val_em: float = MIN_VAL_EM) -> LearningForgetting:
    """Notebook 05b's forgetting at matched learning: ``learning_forgetting`` with the rates matched on the sweep seeds'
    validation exact match (at least ``min_val_em``; gaps under one validation animal per seed count as none) and
    forgetting compared on every seed, everything read after all ``steps`` steps of each run (``None``: at each run's
    best checkpoint instead, a second look)."""
    return learning_forgetting(comparison, labels, SWEEP_SEEDS, min_val_em, 1 / len(world.val_animals), step=steps,
                               compare_on=SEEDS)


def learned_rates(comparison: Comparison, steps: int) -> list[tuple[str, float]]:
    """(label, rate) of every rate of the ``COMPARED`` arms whose mean validation exact match over the sweep seeds, after
    ``steps`` steps, reached ``MIN_VAL_EM``: where section 2 of notebook 05b may match a pair."""
    return [(arm.label, lr) for arm in comparison.arms if arm.label in COMPARED for lr in arm.lrs
            if comparison.along(arm.label, "val", lr, SWEEP_SEEDS)[steps] >= MIN_VAL_EM]


def lora_vs_full(base: GPT, world: World, run: dict, done: dict | None = None, show_progress: bool = True) -> Comparison:
    """Every method of ``LORA_VS_FULL`` (and the untrained ``CONTROL``) on the JSON task, each at the rate validation
    chooses from its grid; ``run``: the steps and batch size of each fine-tune (``FINETUNE_SIZES[size]``). Every run
    records its held-out loss at each evaluation (``track_forgetting``), so methods can be compared at the same step.
    Then every rate of the ``COMPARED`` methods that learned the task (mean validation exact match over the sweep seeds
    at least ``MIN_VAL_EM`` after the last step) gets every seed of ``SEEDS``: the pairs section 2 of notebook 05b
    matches, and 05c's pair of about the same size, are among them, so their comparisons run on five seeds.

    Loads the stored result of an earlier call with the same fingerprint, else trains (``done`` as in
    ``compare_methods``) and stores it."""
    path = cache_dir() / f"lora-vs-full-{fingerprint(base, run)}.json"
    if path.exists():
        comparison = load_comparison(path)
        print(f"Loaded the {len(comparison.reports)} fine-tunes that an earlier run with these settings kept in lora_edu's cache.")
        return comparison
    comparison = compare_methods(base, world, "json", LORA_VS_FULL, SWEEP_SEEDS, SEEDS, r=R, alpha=ALPHA,
                                 measure=lambda model: measure_run(base, world, model), done=done,
                                 show_progress=show_progress, track_forgetting=True, **run)
    comparison.include(compare_methods(base, world, "json", [CONTROL], SWEEP_SEEDS, SWEEP_SEEDS,
                                       show_progress=show_progress, track_forgetting=True, **run))
    more_seeds(comparison, base, world, "json", learned_rates(comparison, run["steps"]), SEEDS,
               measure=lambda model: measure_run(base, world, model),
               show_progress=show_progress, r=R, alpha=ALPHA, track_forgetting=True, **run)
    try:
        save_comparison(comparison, path)
    except OSError as err:  # a read-only home: the runs are still here, only not kept for notebook 05c
        print(f"Could not keep these runs for notebook 05c ({err}); it will train them again.")
    return comparison


def cache_dir() -> Path:
    return cache_root() / "runs"


def fingerprint(base: GPT, run: dict) -> str:
    """16 hex digits that change with anything the comparison's numbers depend on."""
    h = hashlib.sha256()
    for name, tensor in sorted(base.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    for source in sorted(PACKAGE.rglob("*.py")):
        h.update(source.read_bytes())
    device = next(base.parameters()).device
    settings = {"run": run, "arms": [encode(a) for a in (*LORA_VS_FULL, CONTROL)], "seeds": [SWEEP_SEEDS, SEEDS],
                "r": R, "alpha": ALPHA, "torch": torch.__version__, "threads": torch.get_num_threads(),
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
                "kernels": torch.backends.cpu.get_cpu_capability()}
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:16]


def save_comparison(comparison: Comparison, path: str | Path) -> Path:
    """Write ``comparison`` as JSON to a new file ``path``, atomically and durably; an existing file is left alone
    (``FileExistsError``)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another path or delete it first.")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": "lora_edu comparison 1", "arms": [encode(a) for a in comparison.arms],
                       "reports": encode(comparison.reports), "chosen_lr": encode(comparison.chosen_lr),
                       "measured": encode(comparison.measured)})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # fails, leaving ``path`` alone, if another writer got there first
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path


def load_comparison(path: str | Path) -> Comparison:
    """The ``Comparison`` that ``save_comparison`` wrote to ``path``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != "lora_edu comparison 1":
        raise ValueError(f"{path} is not a comparison written by lora_edu's save_comparison.")
    return Comparison(decode(data["arms"]), decode(data["reports"]), decode(data["chosen_lr"]), decode(data["measured"]))


def encode(x: object) -> object:
    """JSON for what a comparison holds: tuples, dicts with tuple keys, ``Arm``, ``Report`` and ``TrainResult`` survive
    the trip."""
    if isinstance(x, (Arm, Report, TrainResult)):
        return {"kind": type(x).__name__, "fields": {f.name: encode(getattr(x, f.name)) for f in fields(x)}}
    if isinstance(x, dict):
        return {"kind": "dict", "items": [[encode(k), encode(v)] for k, v in x.items()]}
    if isinstance(x, tuple):
        return {"kind": "tuple", "items": [encode(v) for v in x]}
    if isinstance(x, list):
        return [encode(v) for v in x]
    if isinstance(x, (np.bool_, np.integer, np.floating)):
        return x.item()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f"Cannot store a {type(x).__name__} in a comparison file; measure() should return numbers, "
                    "strings, lists, tuples and dicts.")


def decode(x: object) -> object:
    if isinstance(x, list):
        return [decode(v) for v in x]
    if not isinstance(x, dict):
        return x
    kind = x["kind"]
    if kind == "dict":
        return {decode(k): decode(v) for k, v in x["items"]}
    if kind == "tuple":
        return tuple(decode(v) for v in x["items"])
    values = {name: decode(v) for name, v in x["fields"].items()}
    if kind == "Arm":
        return Arm(**values)
    if kind == "Report":
        return Report(**values)
    if kind == "TrainResult":
        return TrainResult(**values)
    raise ValueError(f"Unknown kind {kind!r} in a comparison file.")


LONGER = 3  # how many times notebook 05b's budget the longer lora-all run trains (appendix D)


@dataclass(frozen=True)
class LongerBudget:
    """lora-all at a small rate trained ``LONGER`` times as long (``longer``), against full fine-tuning in the ordinary
    budget (from ``comparison``) at ``full_lr``, the rate that learned about as much, every run read after its last step,
    on the same seeds."""

    comparison: Comparison
    longer: Comparison
    label: str  # the longer arm's label
    full_lr: float
    steps: int  # the ordinary budget

    @property
    def lr(self) -> float:
        return self.longer.chosen_lr[self.label]

    @property
    def long_steps(self) -> int:
        return self.longer.runs(self.label)[0].result.evals[-1][0]

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.longer.runs(self.label)]

    def scores(self, which: str) -> tuple[Comparison, str, float, int]:
        """(comparison, label, rate, last step) of ``which``: "lora-all" (the longer run) or "full"."""
        return ((self.longer, self.label, self.lr, self.long_steps) if which == "lora-all"
                else (self.comparison, "full", self.full_lr, self.steps))

    def at_end(self, which: str, key: str) -> Interval:
        """``key`` ("val" exact match, "val_loss", "held_out") of each seed's run after its last step: mean and interval."""
        comparison, label, lr, step = self.scores(which)
        return interval(evaluation_at(run, key, step) for run in comparison.runs(label, lr) if run.seed in self.seeds)

    def moved(self, which: str) -> float:
        """The median ‖ΔW‖/‖W‖ of the weights the method moved, at each run's best checkpoint, mean over the seeds."""
        comparison, label, lr, _ = self.scores(which)
        return statistics.fmean(run.update_ratio for run in comparison.runs(label, lr) if run.seed in self.seeds)

    @property
    def learned(self) -> bool:
        """Did the longer run learn the task: mean validation exact match after its last step at least ``MIN_VAL_EM``?"""
        return self.at_end("lora-all", "val").mean >= MIN_VAL_EM

    def word(self) -> str:
        """What the longer run says about the short budget as the cause of full's edge."""
        if not self.learned:
            return (f"not resolved; at {self.lr:g} lora-all does not learn the task even in {self.long_steps} steps, so this "
                    "run cannot test the budget")
        forgets_less = better("lora-all", self.at_end("lora-all", "held_out"), "full", self.at_end("full", "held_out"), False)
        learns_more = better("lora-all", self.at_end("lora-all", "val_loss"), "full", self.at_end("full", "val_loss"), False)
        if forgets_less == "full":
            return ("disagrees still; full forgets less" + (" and learns more" if learns_more == "full" else "")
                    + f", so one budget {LONGER} times as long did not remove full's edge")
        if forgets_less is None and learns_more == "full":
            return ("disagrees still; the held-out losses are not told apart, but full learns more (a lower validation answer "
                    "loss); on one shared curve, equal forgetting would come with equal learning")
        if forgets_less == "lora-all":
            return ("agrees with a longer budget; lora-all forgets less than full"
                    + (" and learns less, the paper's side of the curve" if learns_more == "full" else "")
                    + ", so the short budget explains at least part of full's edge")
        return "not resolved; neither the held-out losses nor the learning are told apart"

    def __str__(self) -> str:
        lora_em = self.longer.along(self.label, "val", self.lr, SWEEP_SEEDS)[self.long_steps]
        full_em = self.comparison.along("full", "val", self.full_lr, SWEEP_SEEDS)[self.steps]
        lines = [f"full's rate matched on learning: {self.full_lr:g}, validation exact match {full_em:.2f} after {self.steps} "
                 f"steps against lora-all's {lora_em:.2f} after {self.long_steps} (the sweep seeds, as section 2a matches)",
                 f"every run after its last step, {len(self.seeds)} seeds, mean [95% interval]:"]
        for which in ("lora-all", "full"):
            _, label, lr, step = self.scores(which)
            lines.append(f"  {which:<8} at {lr:g}, {step} steps: validation exact match {self.at_end(which, 'val').mean:.2f}, "
                         f"answer loss {self.at_end(which, 'val_loss')}; weights moved {self.moved(which):.2f} of their size "
                         f"(median ‖ΔW‖/‖W‖); held-out loss {self.at_end(which, 'held_out')}")
        return "\n".join([*lines, *self.verdicts(), "against the paper's one curve, with the longer budget: " + self.word()])

    def verdicts(self) -> list[str]:
        """lora-all against full on forgetting (the held-out loss), then on learning (the validation answer loss)."""
        return [verdict("lora-all", self.at_end("lora-all", "held_out"), "full", self.at_end("full", "held_out"), False,
                        "held-out loss"),
                verdict("lora-all", self.at_end("lora-all", "val_loss"), "full", self.at_end("full", "val_loss"), False,
                        "validation answer loss (how much was learned)")]


def closest_in_learning(comparison: Comparison, label: str, exact_match: float, steps: int) -> float:
    """Of ``label``'s rates that learned the task (``learned_rates``), the one whose mean validation exact match after
    ``steps`` steps over the sweep seeds is closest to ``exact_match`` (ties: the smaller rate): matched on learning,
    as section 2a matches."""
    rates = [lr for lab, lr in learned_rates(comparison, steps) if lab == label]
    if not rates:
        raise ValueError(f"No rate of {label!r} learned the task in {steps} steps: there is nothing to match on learning.")
    return min(rates, key=lambda lr: (abs(comparison.along(label, "val", lr, SWEEP_SEEDS)[steps] - exact_match), lr))


def longer_budget(base: GPT, world: World, run: dict, comparison: Comparison, lr: float = 1e-3, factor: int = LONGER,
                  show_progress: bool = True) -> LongerBudget:
    """Notebook 05b, appendix D: lora-all at ``lr`` for ``factor`` times ``run``'s steps on every seed of ``SEEDS``, set
    against full fine-tuning in ``comparison`` (the ordinary budget) at the rate that learned about as much
    (``closest_in_learning``, read on the sweep seeds)."""
    if not isinstance(factor, int) or factor < 2:
        raise ValueError(f"factor is how many times the ordinary budget the longer run trains: a whole number from 2, got {factor!r}.")
    label = f"lora-all, {factor}x steps"
    longer = compare_methods(base, world, "json", [Arm(label, "lora-all", (lr,), headline=True)], SEEDS, SEEDS, r=R, alpha=ALPHA,
                             show_progress=show_progress, track_forgetting=True, **{**run, "steps": factor * run["steps"]})
    learned = longer.along(label, "val", lr, SWEEP_SEEDS)[factor * run["steps"]]
    return LongerBudget(comparison, longer, label, closest_in_learning(comparison, "full", learned, run["steps"]), run["steps"])
