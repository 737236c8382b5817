"""The LoRA paper's experiments (arXiv 2106.09685, Section 7 and Table 1) at the scale of our small GPT.

``lora_run`` fine-tunes one LoRA configuration and scores it; ``sweep`` runs a grid over seeds.
The paper's own numbers are kept here as data (``PAPER``) so notebook 06 can set them beside ours.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import World
from .evaluate import answer_loss
from .finetune import finetune
from .gpt import GPT
from .lora import lora_layers

__all__ = ["PAPER", "LoRARun", "batch1_latency_ms", "lora_run", "summarize", "sweep"]

SHORT = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}

# Numbers the paper reports for GPT-3 175B (validation accuracy in %, WikiSQL), quoted for comparison.
PAPER = {
    "table5_wikisql": {
        ("q",): 70.4, ("k",): 70.0, ("v",): 73.0, ("o",): 73.2, ("q", "k"): 71.4, ("q", "v"): 73.7, ("q", "k", "v", "o"): 73.7
    },
    "table5_rank": {("q",): 8, ("k",): 8, ("v",): 8, ("o",): 8, ("q", "k"): 4, ("q", "v"): 4, ("q", "k", "v", "o"): 2},
    "table7_amplification": {4: 21.5, 64: 1.9},  # ||ΔWq|| / ||U^T Wq V^T||, GPT-3 layer 48
    "table1_adapter_latency_increase": (0.20, 0.30),  # GPT-2 medium, batch 1, short sequences
}


@dataclass
class LoRARun:
    """One fine-tuning run: configuration and scores (the model is kept for the analyses)."""

    targets: tuple[str, ...]
    r: int
    seed: int
    heldout_exact_match: float
    heldout_answer_loss: float
    seconds: float
    model: GPT

    def factor(self, layer: str, which: str = "A") -> np.ndarray:
        """lora_A (r, d_in) or lora_B (d_out, r) of a layer, e.g. ``"blocks.3.attn.q_proj"``."""
        m = lora_layers(self.model)[layer]
        return (m.lora_A if which == "A" else m.lora_B).detach().double().cpu().numpy()

    def delta_weight(self, layer: str) -> np.ndarray:
        return lora_layers(self.model)[layer].delta_weight().detach().double().cpu().numpy()


def lora_run(base: GPT, world: World, targets: Iterable[str], r: int, steps: int, seed: int = 0, task: str = "json") -> LoRARun:
    """LoRA with alpha = 2 r (so the scaling is 2 at every rank) on the short names ``targets`` (q, k, v, o)."""
    targets = tuple(targets)
    unknown = [t for t in targets if t not in SHORT]
    if unknown:
        raise ValueError(f"Unknown target {unknown[0]!r}; use the short names {list(SHORT)}.")
    t0 = time.perf_counter()
    model, rep = finetune(base, world, task, "lora", targets=[SHORT[t] for t in targets], r=r, alpha=2 * r, steps=steps, seed=seed,
                          progress=False)
    loss = answer_loss(model, world, task, world.heldout_animals)
    return LoRARun(targets, r, seed, rep.heldout_exact_match, loss, time.perf_counter() - t0, model)


def sweep(base: GPT, world: World, configs: list[tuple[tuple[str, ...], int]], seeds: Iterable[int], steps: int,
          progress: bool = True) -> list[LoRARun]:
    """Every (targets, r) configuration for every seed, with a progress bar."""
    from tqdm.auto import tqdm

    jobs = [(t, r, s) for t, r in configs for s in seeds]
    return [lora_run(base, world, t, r, steps, s) for t, r, s in tqdm(jobs, desc="LoRA runs", disable=not progress)]


def summarize(runs: list[LoRARun], metric: str) -> dict[tuple[tuple[str, ...], int], tuple[float, float]]:
    """(mean, standard deviation over seeds) of ``metric`` per (targets, r)."""
    groups: dict[tuple[tuple[str, ...], int], list[float]] = {}
    for run in runs:
        groups.setdefault((run.targets, run.r), []).append(getattr(run, metric))
    return {k: (float(np.mean(v)), float(np.std(v))) for k, v in groups.items()}


@torch.no_grad()
def batch1_latency_ms(model: nn.Module, tokens: torch.Tensor, repeats: int = 100) -> float:
    """Median milliseconds of one forward pass at batch size 1 (tokens: (1, seq))."""
    device = tokens.device
    times = []
    for i in range(repeats + 10):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(tokens)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 10:
            times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))
