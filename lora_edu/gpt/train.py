"""The training loop shared by pretraining and every fine-tune in the notebooks.

AdamW with linear warmup and cosine decay, a progress line (``lora_edu.gpt.progress``), evaluation every
``eval_every`` steps, and the best weights kept (``BestWeights``: the *earliest* best score wins; the best
adapter is saved to ``save_dir`` when the score improves, and a ``KeyboardInterrupt`` -- the stop button in a
notebook -- ends training cleanly with the best weights restored and saved). Each step is one call of
``lora_edu.gpt.step.TrainStep`` (forward, backward, clip, optimizer step), the same step the distributed
script takes.

Precision follows the device (``lora_edu.gpt.device.precision_for``): bf16 autocast on CUDA GPUs of compute
capability 8.0 and above (A100, L4, H100), fp16 autocast with a gradient scaler below (T4, V100), fp32 on CPU
and MPS. On CUDA, fp32 matmuls use TF32 and AdamW runs fused. The training rows live on the device, the
batch indices are drawn up front, the token ids are range-checked once, and nothing waits for the GPU
inside a step except at evaluations (fp16's gradient scaler hands its overflow flag to the fused AdamW
kernel instead of reading it on the host). ``lora_edu.devtools.synccheck`` finds such waits on a CPU.
With ``TrainConfig(cuda_graph=True)`` or ``LORA_EDU_CUDA_GRAPHS=1`` (opt-in, on CUDA), every step
after the first few is replayed from one recorded CUDA graph (``lora_edu.gpt.stepgraph``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checks import is_int, is_number
from ..lora.adapter import check_save_path, save_adapter
from ..lora.layer import lora_layers
from .device import configure_threads, peak_flops, pick_device, precision_for
from .model import check_token_ids
from .progress import Progress
from .step import TrainStep
from .stepgraph import graphs_requested

__all__ = [
    "PRECISIONS", "BestWeights", "TrainConfig", "TrainResult", "lr_at", "make_optimizer", "set_lr",
    "state_bytes", "train", "training_flops_parts", "training_flops_per_token", "trim_padding",
]

PRECISIONS = ("fp32", "bf16", "fp16")


FLOAT_FIELDS = {"lr": "learning rate", "warmup": "warmup fraction of the steps", "min_lr_ratio": "final fraction of the learning rate",
                "weight_decay": "weight decay", "grad_clip": "gradient-clipping norm"}


@dataclass
class TrainConfig:
    """Hyperparameters of one run; ``warmup`` is a fraction of ``steps``.

    ``precision`` is ``None`` (chosen from the device by ``precision_for``) or one of ``PRECISIONS``.
    ``cuda_graph`` records each step as one CUDA graph (``lora_edu.gpt.stepgraph``; on CUDA);
    ``None`` leaves it to ``LORA_EDU_CUDA_GRAPHS=1`` and to the device.
    ``gpu_path_on_cpu`` is for tests and benchmarks: on a CPU, take the CUDA path's bookkeeping -- fused AdamW
    and, with ``cuda_graph``, the graph's static buffers, learning-rate tensors and warm-up steps, with nothing
    recorded -- so that it can be checked without a GPU. It changes nothing on other devices.
    """

    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    warmup: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 50
    seed: int = 0
    precision: str | None = None
    cuda_graph: bool | None = None
    gpu_path_on_cpu: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "seed"):
            value = getattr(self, name)
            if not is_int(value):
                raise TypeError(f"TrainConfig.{name} must be an int, got {value!r} ({type(value).__name__}); e.g. steps=1000, not 1e3.")
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError(f"steps, batch_size and eval_every must be positive, got {self.steps}, {self.batch_size}, {self.eval_every}.")
        for name, what in FLOAT_FIELDS.items():
            value = getattr(self, name)
            if not is_number(value):
                raise TypeError(f"TrainConfig.{name} ({what}) must be a number, got {value!r} ({type(value).__name__}).")
            if not math.isfinite(value):
                raise ValueError(f"TrainConfig.{name}, the {what}, must be a finite number, got {value!r}; "
                                 f"pass a finite value, e.g. {name}={getattr(TrainConfig, name)!r} (the default).")
        if not self.lr > 0:
            raise ValueError(f"The learning rate must be positive, got {self.lr}.")
        if not 0 <= self.warmup < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"warmup must be in [0, 1) and min_lr_ratio in [0, 1], got {self.warmup} and {self.min_lr_ratio}.")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be None (chosen from the device) or one of {PRECISIONS}, got {self.precision!r}.")
        if self.cuda_graph is not None and not isinstance(self.cuda_graph, bool):
            raise TypeError(f"TrainConfig.cuda_graph must be True, False or None (the environment decides), got {self.cuda_graph!r}.")
        if not isinstance(self.gpu_path_on_cpu, bool):
            raise TypeError(f"TrainConfig.gpu_path_on_cpu must be True or False, got {self.gpu_path_on_cpu!r}.")


@dataclass
class TrainResult:
    """What a run did: losses per step, evaluations, the best score and when, time, throughput and memory.

    ``seconds`` is the wall time of the whole loop; ``train_seconds`` leaves out evaluations and adapter
    saves, and is what ``ms_per_step`` and ``tokens_per_second`` use. ``tokens`` counts every token the
    model processed (padding included); ``supervised_tokens`` only those with a target.
    ``peak_cuda_bytes`` is the peak allocated *during* this run above what was allocated before it.
    """

    losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    best_score: float = -math.inf
    best_step: int = 0
    steps_done: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    train_seconds: float = 0.0
    tokens: int = 0
    supervised_tokens: int = 0
    state_bytes: int = 0
    peak_cuda_bytes: int = 0
    precision: str = "fp32"
    flops: float = 0.0
    cuda_graph: bool = False  # the steps after the first few were replayed from one recorded CUDA graph

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def ms_per_step(self) -> float:
        return 1000 * self.train_seconds / self.steps_done if self.steps_done else 0.0

    @property
    def flops_per_second(self) -> float:
        return self.flops / self.train_seconds if self.train_seconds else 0.0

    def mfu(self, device: torch.device) -> float | None:
        """Model FLOP utilisation: achieved matmul FLOP/s over the GPU's dense peak (None without a known GPU)."""
        peak = peak_flops(device)
        return self.flops_per_second / peak if peak else None

    def summary(self, device: torch.device) -> str:
        """One line after training: time and throughput; on a GPU also FLOP/s, peak memory and MFU, as GPU
        fine-tuning notebooks show it (on a CPU those say nothing a student can use, so they are left out)."""
        graph = ", CUDA graph" if self.cuda_graph else ""
        line = (f"{self.steps_done} steps in {self.seconds / 60:.2f} min = {self.seconds:.1f} s ({self.precision}{graph}) | "
                f"{self.tokens_per_second:,.0f} tokens/s")
        if device.type != "cuda":
            return line
        mfu = self.mfu(device)
        utilisation = f"MFU {100 * mfu:.1f}%" if mfu is not None else "MFU: unknown peak FLOP/s for this GPU"
        return (f"{line} | {self.flops_per_second / 1e12:.3g} TFLOP/s | peak memory {self.peak_cuda_bytes / 2**20:,.0f} MiB | "
                f"{utilisation}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr_ratio * lr`` at the last step."""
    warm = max(1, int(cfg.warmup * cfg.steps))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes held by the parameters, their gradients and the optimizer's state tensors (activations excluded)."""
    seen, total = set(), 0
    tensors = list(model.parameters())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    if optimizer is not None:
        tensors += [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def trim_padding(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the trailing columns where no row has a target: inputs, targets (rows, seq) -> (rows, seq').

    A causal model's output at a position depends only on the positions before it, so the loss is
    unchanged; fine-tuning rows (prompt + answer, padded to the context) shrink to the longest answer.
    """
    has_target = (targets != -100).any(dim=0).nonzero()
    keep = int(has_target.max()) + 1 if len(has_target) else targets.shape[1]
    return inputs[:, :keep], targets[:, :keep]


def training_flops_per_token(model: nn.Module, seq: int) -> float:
    """Matmul FLOPs per token of one training step: the sum of ``training_flops_parts``."""
    return float(sum(training_flops_parts(model, seq).values()))


def training_flops_parts(model: nn.Module, seq: int) -> dict[str, int]:
    """Matmul FLOPs per token of one training step, by where they go. Every weight of a Linear layer (and the head)
    costs 2 FLOPs in the forward pass and 2 for the gradient of its input; a trainable one 2 more for its own gradient.
    So: "frozen layers" 4 per frozen weight, "trained layers" 6 per trainable weight, "adapters" 6 per LoRA A and B
    entry, and "attention" 12 n_layer seq d for its products (queries times keys, weights times values), which
    have no weights."""
    frozen = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear) and not m.weight.requires_grad)
    trained = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear) and m.weight.requires_grad)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    lora_trained = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n and p.requires_grad)
    cfg = getattr(model, "config", None)
    return {"frozen layers": 4 * frozen, "trained layers": 6 * trained, "adapters": 4 * lora + 2 * lora_trained,
            "attention": 12 * cfg.n_layer * seq * cfg.d_model if cfg is not None else 0}


def gpu_path(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether this run takes the CUDA path (fused AdamW; CUDA graphs if asked): on CUDA, or on a CPU for the tests."""
    return device.type == "cuda" or (cfg.gpu_path_on_cpu and device.type == "cpu")


def make_optimizer(params: list, cfg: TrainConfig, device: torch.device, param_groups: list[dict] | None = None,
                   recordable: bool = False, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW(betas 0.9, 0.95); each group remembers its rate relative to ``cfg.lr`` as ``lr_scale`` (for ``set_lr``).

    ``fused``: one kernel for the whole update; None fuses on the CUDA path (``gpu_path``), while the CPU keeps
    torch's default (its numbers are the notebooks'); False keeps torch's default anywhere (e.g. for FSDP's DTensors).
    ``recordable`` (for a CUDA graph): each group's rate is a tensor on the device, which ``set_lr`` fills in place.
    """
    groups = [dict(g) for g in param_groups] if param_groups is not None else [{"params": params}]
    for g in groups:
        g["lr_scale"] = g.get("lr", cfg.lr) / cfg.lr
        if recordable:  # in the precision each fused kernel reads it in: float32 on CUDA, double on a CPU
            g["lr"] = torch.tensor(g.get("lr", cfg.lr), dtype=torch.float32 if device.type == "cuda" else torch.float64, device=device)
    fused = gpu_path(cfg, device) if fused is None else fused
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95), fused=fused or None,
                             capturable=recordable and device.type == "cuda")


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Every group's rate to ``lr`` times its ``lr_scale`` (a tensor rate is filled in place: a recorded step reads it there)."""
    for group in opt.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr * group["lr_scale"])
        else:
            group["lr"] = lr * group["lr_scale"]


def use_cuda_graph(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether this run records its step (``lora_edu.gpt.stepgraph``): asked for, and on the CUDA path."""
    if not graphs_requested(cfg.cuda_graph):
        return False
    possible = gpu_path(cfg, device)
    if cfg.cuda_graph and not possible:
        raise ValueError(f"cuda_graph=True records the step as a CUDA graph, which needs a CUDA device; this run is on {device.type}. "
                         "Leave cuda_graph=None to use graphs where they can be.")
    return possible


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class BestWeights:
    """Evaluations, and the weights of the best: ranked by ``metrics[score_key]`` (higher is better), ties broken
    by ``metrics[tiebreak_key]`` (lower is better), then by the earlier step. The best adapter is saved to
    ``save_dir`` at each improvement; ``restore()`` puts the best trainable weights back into the model.
    """

    def __init__(self, model: nn.Module, evaluate: Callable[[nn.Module], dict[str, float]] | None, score_key: str = "score",
                 tiebreak_key: str | None = None, save_dir: str | Path | None = None) -> None:
        self.model, self.evaluate_fn, self.save_dir = model, evaluate, save_dir
        self.score_key, self.tiebreak_key = score_key, tiebreak_key
        self.evals: list[tuple[int, dict[str, float]]] = []
        self.rank, self.score, self.step = (-math.inf, -math.inf), -math.inf, 0
        self.state = trainable_state(model)

    def evaluate(self, step: int) -> None:
        """Score the model (in eval mode) after ``step`` steps; keep its weights (and save its adapter) if it is the best."""
        if self.evaluate_fn is None:
            return
        self.model.eval()
        metrics = self.evaluate_fn(self.model)
        self.model.train()
        rank = self.ranking(metrics)
        self.evals.append((step, metrics))
        if rank > self.rank:  # strictly better: the earliest of equal scores is kept
            self.rank, self.score, self.step = rank, metrics[self.score_key], step
            self.state = trainable_state(self.model)
            if self.save_dir is not None:
                save_adapter(self.model, self.save_dir)

    def ranking(self, metrics: Mapping[str, float]) -> tuple[float, float]:
        """(score, -tiebreak) of one evaluation; a clear error if ``evaluate`` did not return those keys."""
        if not isinstance(metrics, Mapping):
            raise TypeError(f"evaluate(model) must return a dict of metrics, e.g. {{{self.score_key!r}: 0.9}}; "
                            f"it returned {type(metrics).__name__}.")
        for role, key in (("score_key", self.score_key), ("tiebreak_key", self.tiebreak_key)):
            if key is not None and key not in metrics:
                raise ValueError(f"evaluate(model) returned the keys {sorted(metrics)}, without {key!r} ({role}); "
                                 f"return {key!r} from evaluate, or pass {role} = one of those keys.")
        return metrics[self.score_key], -metrics[self.tiebreak_key] if self.tiebreak_key else 0.0

    def restore(self) -> None:
        """The best evaluation's trainable weights back into the model (nothing without evaluations)."""
        if not self.evals:
            return
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in self.state:
                    p.copy_(self.state[name])


class Clock:
    """The loop's wall time, and its training time without evaluations (on CUDA, read after the GPU has finished)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.train_seconds = device, 0.0
        self.start = self.segment = time.perf_counter()

    def pause(self, wait: bool = True) -> None:
        """End a stretch of training (``wait``: for the GPU first); ``resume()`` starts the next."""
        if wait:
            synchronize(self.device)
        self.train_seconds += time.perf_counter() - self.segment

    def resume(self) -> None:
        self.segment = time.perf_counter()

    def total(self) -> float:
        synchronize(self.device)
        return time.perf_counter() - self.start


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_baseline(device: torch.device) -> int:
    """CUDA bytes allocated now, with the peak counter reset (0 off CUDA); ``peak_above`` reads the peak above it."""
    if device.type != "cuda":
        return 0
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def peak_above(device: torch.device, baseline: int) -> int:
    return torch.cuda.max_memory_allocated(device) - baseline if device.type == "cuda" else 0


def setup_device(device: torch.device | None) -> torch.device:
    """The device (``pick_device`` by default), with CPU threads set, or TF32 matmuls on CUDA."""
    device = device or pick_device()
    if device.type == "cpu":
        configure_threads()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores (A100 and later)
        torch.backends.cudnn.allow_tf32 = True
    return device


def check_arguments(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, save_dir: str | Path | None) -> None:
    """Refuse, before anything moves: mismatched rows, nothing to train, or a save_dir that cannot be an adapter's."""
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must have the same shape.")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("No parameter requires grad: nothing to train. Did you freeze everything?")
    if save_dir is not None and not lora_layers(model):
        raise ValueError("save_dir saves the best adapter, but the model has no LoRA layers.")
    if save_dir is not None:
        check_save_path(save_dir)  # a user's folder is refused now, not at the first improvement mid-training


def training_rows(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """inputs, targets (rows, seq) -> (rows, seq') on the device: ids checked once, padding columns trimmed."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "vocab_size"):
        check_token_ids(inputs, config)  # once, here: the steps run inside trusted_token_ids(), without a host sync
    inputs, targets = trim_padding(inputs, targets)
    return inputs.to(device), targets.to(device)  # resident: no copy from host memory per step


def draw_batches(cfg: TrainConfig, rows: int, device: torch.device) -> torch.Tensor:
    """Every step's row indices, drawn up front from ``cfg.seed``: (steps, batch_size), on the device."""
    gen = torch.Generator().manual_seed(cfg.seed)
    return torch.randint(0, rows, (cfg.steps, cfg.batch_size), generator=gen).to(device)


def train(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, cfg: TrainConfig,
          evaluate: Callable[[nn.Module], dict[str, float]] | None = None, score_key: str = "score",
          save_dir: str | Path | None = None, device: torch.device | None = None, desc: str = "train", progress: bool = True,
          param_groups: list[dict] | None = None, tiebreak_key: str | None = None) -> TrainResult:
    """Train the parameters of ``model`` that require grad on rows of ``inputs``/``targets``.

    inputs, targets: (rows, seq) token ids; a target of -100 is ignored by the loss.
    ``evaluate(model)`` returns metrics; ``metrics[score_key]`` (higher is better) picks the best
    weights (the earliest of equal scores), which are restored at the end and, for a LoRA model, saved
    to ``save_dir``; ``metrics[tiebreak_key]`` (lower is better, e.g. a validation loss) breaks ties of the score.
    ``param_groups`` (AdamW groups, e.g. LoRA+'s) may give some parameters their own
    ``lr``; the schedule scales every group's rate alike.
    """
    check_arguments(model, inputs, targets, save_dir)
    device = setup_device(device)
    model.to(device)
    inputs, targets = training_rows(model, inputs, targets, device)
    batches = draw_batches(cfg, len(inputs), device)  # (steps, batch_size)
    graphed = use_cuda_graph(cfg, device)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg, device, param_groups, recordable=graphed)
    precision = cfg.precision or precision_for(device)
    step = TrainStep(model, opt, device, precision, cfg.grad_clip, cuda_graph=graphed)
    baseline = memory_baseline(device)
    best = BestWeights(model, evaluate, score_key, tiebreak_key, save_dir)
    result = TrainResult(precision=precision, evals=best.evals)
    losses = torch.zeros(cfg.steps, device=device)  # (steps,): read back only at evaluations and at the end
    model.train()
    clock, bar = Clock(device), Progress(cfg.steps, desc, disable=not progress)
    try:
        for it in range(cfg.steps):
            set_lr(opt, lr_at(it, cfg))  # the schedule
            x, y = step.gather(inputs, targets, batches[it])  # the batch: (batch_size, seq) each
            losses[it] = step(x, y)  # forward, backward, clip, AdamW
            result.steps_done = it + 1
            if it == 0:
                result.state_bytes = state_bytes(model, opt)  # the optimizer's state exists after its first step
            if (it + 1) % cfg.eval_every == 0 or it + 1 == cfg.steps:
                clock.pause()
                best.evaluate(it + 1)  # keeps the best weights, saves the best adapter
                bar.update(it + 1, loss=f"{losses[it].item():.3f}", **last_score(result, score_key))
                clock.resume()
            elif it % 10 == 0:
                bar.update(it + 1)
    except KeyboardInterrupt:
        result.interrupted = True
        print(f"Interrupted at step {result.steps_done}: keeping the best weights seen so far.")
        clock.pause(wait=False)
        best.evaluate(result.steps_done)
    finally:
        step.release()
        result.best_score, result.best_step, result.cuda_graph = best.score, best.step, step.recorded
        close_bar(bar, result, score_key)
        result.seconds, result.train_seconds = clock.total(), clock.train_seconds
        result.peak_cuda_bytes = peak_above(device, baseline)
    count_work(result, model, losses, targets, batches, cfg.batch_size)
    best.restore()
    model.eval()
    return result


def close_bar(bar: Progress, result: TrainResult, score_key: str) -> None:
    """The progress line's last update: the steps done, and the best score and its step."""
    bar.update(result.steps_done)
    bar.close(**({f"best {score_key}": f"{result.best_score:.3f} at step {result.best_step}"} if result.evals else {}))


def last_score(result: TrainResult, score_key: str) -> dict[str, str]:
    """The progress line's score: the last evaluation's, if any."""
    return {score_key: f"{result.evals[-1][1][score_key]:.3f}"} if result.evals else {}


def count_work(result: TrainResult, model: nn.Module, losses: torch.Tensor, targets: torch.Tensor, batches: torch.Tensor,
               batch_size: int) -> None:
    """Losses, tokens (all, and those with a target) and matmul FLOPs of the steps done into ``result``.

    losses: (steps,); targets: (rows, seq); batches: (steps, batch_size) row indices.
    """
    done, seq = result.steps_done, targets.shape[1]
    result.losses = losses[:done].tolist()
    result.tokens = done * batch_size * seq
    result.supervised_tokens = int((targets[batches[:done]] != -100).sum())
    result.flops = training_flops_per_token(model, seq) * batch_size * seq * done
