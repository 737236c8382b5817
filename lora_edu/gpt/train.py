"""The training loop shared by pretraining and every fine-tune in the notebooks.

AdamW with linear warmup and cosine decay, a progress line (``lora_edu.gpt.progress``), evaluation every
``eval_every`` steps, and the best weights kept (the *earliest* best score wins; the best adapter is
saved to ``save_dir`` when the score improves, and a ``KeyboardInterrupt`` -- the stop button in a
notebook -- ends training cleanly with the best weights restored and saved).

Precision follows the device (``precision_for``): bf16 autocast on CUDA GPUs of compute capability
8.0 and above (A100, L4, H100), fp16 autocast with a gradient scaler below (T4, V100), fp32 on CPU and
MPS. On CUDA, fp32 matmuls use TF32 and AdamW runs fused. The training rows live on the device, the
batch indices are drawn up front, the token ids are range-checked once, and nothing waits for the GPU
inside a step except at evaluations (fp16's gradient scaler hands its overflow flag to the fused AdamW
kernel instead of reading it on the host). ``lora_edu.devtools.synccheck`` finds such waits on a CPU.
With ``TrainConfig(cuda_graph=True)`` or ``LORA_EDU_CUDA_GRAPHS=1`` (opt-in, on CUDA), every step
after the first few is replayed from one recorded CUDA graph (``lora_edu.gpt.stepgraph``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..lora.adapter import check_save_path, save_adapter
from ..lora.layer import lora_layers
from .device import configure_threads, peak_flops, pick_device
from .model import check_token_ids, trusted_token_ids
from .progress import Progress
from .stepgraph import GRAPH_DEVICES, WARMUP_STEPS, StepGraph, graphs_requested, warmup_stream

__all__ = ["PRECISIONS", "TrainConfig", "TrainResult", "lr_at", "precision_for", "state_bytes", "train", "trim_padding"]

PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    """Hyperparameters of one run; ``warmup`` is a fraction of ``steps``.

    ``precision`` is ``None`` (chosen from the device by ``precision_for``) or one of ``PRECISIONS``.
    ``cuda_graph`` records each step as one CUDA graph (``lora_edu.gpt.stepgraph``; on CUDA);
    ``None`` leaves it to ``LORA_EDU_CUDA_GRAPHS=1`` and to the device.
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

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"TrainConfig.{name} must be an int, got {value!r} ({type(value).__name__}); e.g. steps=1000, not 1e3.")
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError(f"steps, batch_size and eval_every must be positive, got {self.steps}, {self.batch_size}, {self.eval_every}.")
        for name in ("lr", "warmup", "min_lr_ratio", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TypeError(f"TrainConfig.{name} must be a finite number, got {value!r}.")
        if not self.lr > 0:
            raise ValueError(f"The learning rate must be positive, got {self.lr}.")
        if not 0 <= self.warmup < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"warmup must be in [0, 1) and min_lr_ratio in [0, 1], got {self.warmup} and {self.min_lr_ratio}.")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be None (chosen from the device) or one of {PRECISIONS}, got {self.precision!r}.")
        if self.cuda_graph is not None and not isinstance(self.cuda_graph, bool):
            raise TypeError(f"TrainConfig.cuda_graph must be True, False or None (the environment decides), got {self.cuda_graph!r}.")


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
        """One line after training, as GPU fine-tuning notebooks show it: time, throughput, peak memory, MFU."""
        mfu = self.mfu(device)
        memory = f"peak memory {self.peak_cuda_bytes / 2**20:,.0f} MiB" if device.type == "cuda" else "peak GPU memory: no GPU"
        utilisation = f"MFU {100 * mfu:.1f}%" if mfu is not None else "MFU: needs a GPU with a known peak"
        graph = ", CUDA graph" if self.cuda_graph else ""
        return (f"{self.steps_done} steps in {self.seconds / 60:.2f} min = {self.seconds:.1f} s ({self.precision}{graph}) | "
                f"{self.tokens_per_second:,.0f} tokens/s | {self.flops_per_second / 1e12:.3g} TFLOP/s | {memory} | {utilisation}")


def precision_for(device: torch.device) -> str:
    """bf16 on CUDA with compute capability >= 8.0, fp16 on older CUDA GPUs (a T4 is 7.5), else fp32."""
    if device.type != "cuda":
        return "fp32"
    major, _ = torch.cuda.get_device_capability(device)
    return "bf16" if major >= 8 else "fp16"


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
    """Matmul FLOPs per token of one training step: 2 N forward, 2 N for the activation gradients, 2 N_trainable
    for the weight gradients (N: weights of the Linear layers and the head), plus attention's 12 n_layer seq d."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    trainable = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear) and m.weight.requires_grad)
    trainable += sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and ("lora_" in n))
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    cfg = getattr(model, "config", None)
    attention = 12 * cfg.n_layer * seq * cfg.d_model if cfg is not None else 0
    return 4 * (linear + lora) + 2 * trainable + attention


FUSED_ADAMW_DEVICES = {"cuda"}  # one kernel for the whole update; the CPU keeps torch's default (its numbers are the notebooks')


def make_optimizer(params: list, cfg: TrainConfig, device: torch.device, param_groups: list[dict] | None,
                   recordable: bool = False) -> torch.optim.AdamW:
    """AdamW (fused on CUDA); each group remembers its rate relative to ``cfg.lr`` as ``lr_scale``.

    ``recordable`` (for a CUDA graph): each group's rate is a tensor on the device, which ``set_lr`` fills in place.
    """
    groups = [dict(g) for g in param_groups] if param_groups is not None else [{"params": params}]
    for g in groups:
        g["lr_scale"] = g.get("lr", cfg.lr) / cfg.lr
        if recordable:  # in the precision each fused kernel reads it in: float32 on CUDA, double on a CPU
            g["lr"] = torch.tensor(g.get("lr", cfg.lr), dtype=torch.float32 if device.type == "cuda" else torch.float64, device=device)
    fused = device.type in FUSED_ADAMW_DEVICES
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95), fused=fused,
                             capturable=recordable and device.type == "cuda")


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr * group["lr_scale"])  # in place: a recorded step reads it from the same address
        else:
            group["lr"] = lr * group["lr_scale"]


def use_cuda_graph(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether this run records its step (``lora_edu.gpt.stepgraph``): asked for, on CUDA, with fused AdamW."""
    if not graphs_requested(cfg.cuda_graph):
        return False
    possible = device.type in GRAPH_DEVICES and device.type in FUSED_ADAMW_DEVICES
    if cfg.cuda_graph and not possible:
        raise ValueError(f"cuda_graph=True records the step as a CUDA graph, which needs a CUDA device; this run is on {device.type}. "
                         "Leave cuda_graph=None to use graphs where they can be.")
    return possible


def train(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    cfg: TrainConfig,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    score_key: str = "score",
    save_dir: str | Path | None = None,
    device: torch.device | None = None,
    desc: str = "train",
    progress: bool = True,
    param_groups: list[dict] | None = None,
    tiebreak_key: str | None = None,
) -> TrainResult:
    """Train the parameters of ``model`` that require grad on rows of ``inputs``/``targets``.

    inputs, targets: (rows, seq) token ids; a target of -100 is ignored by the loss.
    ``evaluate(model)`` returns metrics; ``metrics[score_key]`` (higher is better) picks the best
    weights (the earliest of equal scores), which are restored at the end and, for a LoRA model, saved
    to ``save_dir``; ``metrics[tiebreak_key]`` (lower is better, e.g. a validation loss) breaks ties of the score.
    ``param_groups`` (AdamW groups, e.g. LoRA+'s) may give some parameters their own
    ``lr``; the schedule scales every group's rate alike.
    """
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must have the same shape.")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("No parameter requires grad: nothing to train. Did you freeze everything?")
    if save_dir is not None and not lora_layers(model):
        raise ValueError("save_dir saves the best adapter, but the model has no LoRA layers.")
    if save_dir is not None:
        check_save_path(save_dir)  # a user's folder is refused now, not at the first improvement mid-training
    device = device or pick_device()
    if device.type == "cpu":
        configure_threads()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores (A100 and later)
        torch.backends.cudnn.allow_tf32 = True
    precision = cfg.precision or precision_for(device)
    model.to(device)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "vocab_size"):
        check_token_ids(inputs, config)  # once, here: the steps run inside trusted_token_ids(), without a host sync
    inputs, targets = trim_padding(inputs, targets)
    inputs, targets = inputs.to(device), targets.to(device)  # resident: no copy from host memory per step
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = torch.randint(0, len(inputs), (cfg.steps, cfg.batch_size), generator=gen).to(device)
    graphed = use_cuda_graph(cfg, device)
    opt = make_optimizer(params, cfg, device, param_groups, recordable=graphed)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    result = TrainResult(precision=precision)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    best_state = trainable_state(model)
    step_losses = torch.zeros(cfg.steps, device=device)
    flops_per_step = training_flops_per_token(model, inputs.shape[1]) * cfg.batch_size * inputs.shape[1]

    best_key = (-math.inf, -math.inf)

    def run_eval(step: int) -> None:
        nonlocal best_state, best_key
        if evaluate is None:
            return
        model.eval()
        metrics = evaluate(model)
        model.train()
        result.evals.append((step, metrics))
        key = (metrics[score_key], -metrics[tiebreak_key] if tiebreak_key else 0.0)
        if key > best_key:  # strictly better: the earliest of equal scores is kept
            best_key = key
            result.best_score, result.best_step = metrics[score_key], step
            best_state = trainable_state(model)
            if save_dir is not None:
                save_adapter(model, save_dir)

    def step_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPE.get(precision, torch.float32),
                            enabled=precision != "fp32", cache_enabled=not graphed):  # a recorded step caches nothing
            with trusted_token_ids():
                _, loss = model(x, y)
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        return loss.detach()

    graph = None
    if graphed:  # every step reads its batch from these two buffers, so that a recorded step can
        static_x = inputs.new_empty((cfg.batch_size, inputs.shape[1]))
        static_y = targets.new_empty((cfg.batch_size, targets.shape[1]))

        def static_step() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)  # recorded, the backward writes fresh gradients at every replay
            return step_fn(static_x, static_y)

        graph = StepGraph(static_step, device)

    model.train()
    start = segment = time.perf_counter()
    bar = Progress(cfg.steps, desc, disable=not progress)
    try:
        for step in range(cfg.steps):
            set_lr(opt, lr_at(step, cfg))
            if graph is not None and step == WARMUP_STEPS:
                failed = graph.record()
                if failed is not None:
                    warnings.warn(f"Could not record the training step as a CUDA graph ({failed}); this run and the rest of "
                                  "the session train without CUDA graphs.", stacklevel=2)
                    graph = None
                result.cuda_graph = graph is not None and graph.recorded
            if graph is not None:
                torch.index_select(inputs, 0, batches[step], out=static_x)
                torch.index_select(targets, 0, batches[step], out=static_y)
                if step < WARMUP_STEPS:
                    with warmup_stream(device):
                        step_losses[step] = static_step()
                else:
                    step_losses[step] = graph.replay()
            else:
                x, y = inputs[batches[step]], targets[batches[step]]
                opt.zero_grad(set_to_none=True)
                step_losses[step] = step_fn(x, y)
            result.steps_done = step + 1
            if step == 0:
                result.state_bytes = state_bytes(model, opt)
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                result.train_seconds += time.perf_counter() - segment
                run_eval(step + 1)
                bar.update(step + 1, loss=f"{step_losses[step].item():.3f}",
                           **({score_key: f"{result.evals[-1][1][score_key]:.3f}"} if result.evals else {}))
                segment = time.perf_counter()
            elif step % 10 == 0:
                bar.update(step + 1)
    except KeyboardInterrupt:
        result.interrupted = True
        print(f"Interrupted at step {result.steps_done}: keeping the best weights seen so far.")
        result.train_seconds += time.perf_counter() - segment
        run_eval(result.steps_done)
    finally:
        if graph is not None:
            opt.zero_grad(set_to_none=True)  # the recorded step's gradients: let its memory pool go with the graph
        bar.update(result.steps_done)
        bar.close(**({f"best {score_key}": f"{result.best_score:.3f} at step {result.best_step}"} if result.evals else {}))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        result.seconds = time.perf_counter() - start
        if device.type == "cuda":
            result.peak_cuda_bytes = torch.cuda.max_memory_allocated(device) - baseline
    result.losses = step_losses[: result.steps_done].tolist()
    result.tokens = result.steps_done * cfg.batch_size * inputs.shape[1]
    result.supervised_tokens = int((targets[batches[: result.steps_done]] != -100).sum())
    result.flops = flops_per_step * result.steps_done
    if evaluate is not None and result.evals:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in best_state:
                    p.copy_(best_state[name])
    model.eval()
    return result


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
