"""The training loop shared by pretraining and every fine-tune in the notebooks.

AdamW with linear warmup and cosine decay, bf16 autocast on CUDA, a ``tqdm.auto`` progress bar,
evaluation every ``eval_every`` steps, and the best weights kept: the best adapter is saved to
``save_dir`` whenever the score improves, and a ``KeyboardInterrupt`` (the stop button in a
notebook) ends training cleanly with the best weights restored and saved.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .adapter import save_adapter
from .device import configure_threads, pick_device
from .lora import lora_layers

__all__ = ["TrainConfig", "TrainResult", "lr_at", "state_bytes", "train"]


@dataclass
class TrainConfig:
    """Hyperparameters of one run; ``warmup`` is a fraction of ``steps``."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    warmup: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError(f"steps, batch_size and eval_every must be positive, got {self.steps}, {self.batch_size}, {self.eval_every}.")
        if not self.lr > 0:
            raise ValueError(f"The learning rate must be positive, got {self.lr}.")


@dataclass
class TrainResult:
    """What a run did: losses per step, evaluations, the best score and when, time and memory."""

    losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    best_score: float = -math.inf
    best_step: int = 0
    steps_done: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    tokens: int = 0
    state_bytes: int = 0
    peak_cuda_bytes: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def ms_per_step(self) -> float:
        return 1000 * self.seconds / self.steps_done if self.steps_done else 0.0


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


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


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
) -> TrainResult:
    """Train the parameters of ``model`` that require grad on rows of ``inputs``/``targets``.

    inputs, targets: (rows, seq) token ids; a target of -100 is ignored by the loss.
    ``evaluate(model)`` returns metrics; ``metrics[score_key]`` (higher is better) picks the best
    weights, which are restored at the end and, for a LoRA model, saved to ``save_dir``.
    """
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must have the same shape.")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("No parameter requires grad: nothing to train. Did you freeze everything?")
    if save_dir is not None and not lora_layers(model):
        raise ValueError("save_dir saves the best adapter, but the model has no LoRA layers.")
    device = device or pick_device()
    if device.type == "cpu":
        configure_threads()
    model.to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    use_bf16 = device.type == "cuda"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = TrainResult()
    best_state = trainable_state(model)

    def run_eval(step: int) -> None:
        nonlocal best_state
        if evaluate is None:
            return
        model.eval()
        metrics = evaluate(model)
        model.train()
        result.evals.append((step, metrics))
        if metrics[score_key] >= result.best_score:  # ties go to the later, longer-trained weights
            result.best_score, result.best_step = metrics[score_key], step
            best_state = trainable_state(model)
            if save_dir is not None:
                save_adapter(model, save_dir)

    model.train()
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, leave=True)
    try:
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            idx = torch.randint(0, len(inputs), (cfg.batch_size,), generator=gen)
            x, y = inputs[idx].to(device), targets[idx].to(device)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
                _, loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            result.losses.append(loss.item())
            result.tokens += int((y != -100).sum())
            result.steps_done = step + 1
            if step == 0:
                result.state_bytes = state_bytes(model, opt)
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                run_eval(step + 1)
                if result.evals:
                    bar.set_postfix(loss=f"{result.losses[-1]:.3f}", **{score_key: f"{result.evals[-1][1][score_key]:.3f}"})
    except KeyboardInterrupt:
        result.interrupted = True
        print(f"Interrupted at step {result.steps_done}: keeping the best weights seen so far.")
        run_eval(result.steps_done)
    finally:
        bar.close()
        result.seconds = time.perf_counter() - start
        if device.type == "cuda":
            result.peak_cuda_bytes = torch.cuda.max_memory_allocated(device)
    if evaluate is not None and result.evals:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in best_state:
                    p.copy_(best_state[name])
    model.eval()
    return result
