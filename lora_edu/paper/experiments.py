"""The LoRA paper's experiments (arXiv 2106.09685, Section 7 and Table 1) at the scale of our small GPT.

``lora_run`` fine-tunes one LoRA configuration and scores it; ``sweep`` runs a grid over seeds.
The paper's own numbers are kept here as data (``PAPER``) so notebook 06 can set them beside ours.
"""

from __future__ import annotations

import copy
import functools
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import nn

from ..checks import is_finite_number
from ..gpt.data import World
from ..gpt.finetune import finetune, prepare
from ..gpt.model import GPT
from ..gpt.progress import progress as progress_line
from ..lora.layer import adapted_weight, lora_layers
from ..maths.intervals import t95, tabled_df, welch_half_width, welch_se_df
from ..maths.timing import decided_side, interleave, rank_sum_p, round_by_round, round_ratios
from .analysis import intruder_dimensions, subspace_similarity

if TYPE_CHECKING:
    from ..lora.quant import ResidualNF4Error

__all__ = [
    "PAPER",
    "AdapterLatencyTrend",
    "PhiChance",
    "Interval",
    "LoRARun",
    "Latency",
    "LogInterval",
    "LossRatio",
    "at_edge",
    "batch1_latency_ms",
    "better",
    "compare_latency",
    "compare_step_time",
    "config_name",
    "interval",
    "log_interval",
    "phi_chance",
    "phi_verdicts",
    "ratio_verdict",
    "ratio_winner",
    "runs_by_config",
    "seeds_and_animals",
    "intruder_count",
    "random_direction_intruders",
    "update_spectra",
    "learned_factors",
    "update_to_weight",
    "lora_run",
    "loss_ratio",
    "merged_latency_finding",
    "qpissa_finding",
    "loss_verdict",
    "next_rate",
    "paper_tiers",
    "still_learning",
    "summarize",
    "sweep",
    "tally",
    "tally_word",
    "TunedSweep",
    "tuned_sweep",
    "interval_word",
    "verdict_word",
    "within_noise_word",
    "verdict",
]

PAPER_ALPHA = 16  # alpha / r with alpha fixed, as in the paper: the scaling is 2 at r = 8
RANK_SWEEP_ALPHA = 2 * 8**0.5  # with rsLoRA: the scaling alpha / sqrt(r) is 2 at r = 8
SHORT = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}

# Numbers the paper reports for GPT-3 175B (validation accuracy in %, WikiSQL), quoted for comparison.
PAPER = {
    "table5_wikisql": {
        ("q",): 70.4, ("k",): 70.0, ("v",): 73.0, ("o",): 73.2, ("q", "k"): 71.4, ("q", "v"): 73.7, ("q", "k", "v", "o"): 73.7
    },
    "table5_rank": {("q",): 8, ("k",): 8, ("v",): 8, ("o",): 8, ("q", "k"): 4, ("q", "v"): 4, ("q", "k", "v", "o"): 2},
    # Table 6, WikiSQL: validation accuracy by rank r = 1, 2, 4, 8, 64
    "table6_wikisql": {("q",): (68.8, 69.6, 70.5, 70.4, 70.0), ("q", "v"): (73.4, 73.3, 73.7, 73.8, 73.5)},
    "table6_ranks": (1, 2, 4, 8, 64),
    "table7_amplification": {4: 21.5, 64: 1.9},  # ||ΔWq|| / ||U^T Wq V^T||, GPT-3 layer 48
    "table7_norms": {"w": 61.95, "delta_w": {4: 6.91, 64: 3.57}},  # ||Wq||_F and ||ΔWq||_F in the same table
    # ||U^T Wq V^T||_F with U, V the top-r singular directions of ΔWq, of Wq itself, and random ones (same table)
    "table7_projections": {4: {"delta_w": 0.32, "w": 21.67, "random": 0.02}, 64: {"delta_w": 1.90, "w": 37.71, "random": 0.33}},
    "table1_adapter_latency_increase": (0.207, 0.303),  # GPT-2 medium, batch 1, 128 tokens: AdapterL, AdapterH (19.8 ms -> 23.9, 25.8)
    # Table 1 (Section 3): GPT-2 medium on one Quadro RTX8000, ms per forward pass by (batch, tokens): fine-tune/LoRA,
    # AdapterL, AdapterH. The added share falls as a pass holds more tokens.
    "table1_latency_ms": {(32, 512): (1449.4, 1482.0, 1492.2), (16, 256): (338.0, 354.8, 366.3), (1, 128): (19.8, 23.9, 25.8)},
}


@dataclass
class LoRARun:
    """One fine-tuning run: configuration, scores, and the learned factors of every LoRA layer (not the model)."""

    targets: tuple[str, ...]
    r: int
    seed: int
    val_exact_match: float
    val_answer_loss: float
    test_exact_match: float
    test_answer_loss: float
    seconds: float
    factors: dict[str, tuple[np.ndarray, np.ndarray, float]]  # layer -> (A (r, d_in), B (d_out, r), scaling)
    lr: float | None = None  # None: finetune's default for LoRA
    test_answer_losses: tuple[float, ...] = ()  # each test animal's answer loss, in the order of world.test_animals
    val_curve: tuple[tuple[int, float], ...] = ()  # (step, validation answer loss) at each evaluation during training
    test_right: tuple[bool, ...] = ()  # whether each test animal's answer was exactly right, in world.test_animals' order

    def factor(self, layer: str, which: str = "A") -> np.ndarray:
        """lora_A (r, d_in) or lora_B (d_out, r) of a layer, e.g. ``"blocks.3.attn.q_proj"``."""
        a, b, _ = self.factors[layer]
        return a if which == "A" else b

    def delta_weight(self, layer: str) -> np.ndarray:
        """ΔW = scaling * B A: (d_out, d_in)."""
        a, b, scaling = self.factors[layer]
        return scaling * b @ a


def update_to_weight(run: LoRARun, base: nn.Module) -> float:
    """How far a run moved its weights: the median over its adapted layers of ‖ΔW‖_F / ‖W‖_F, W taken from ``base``
    (the model it fine-tuned). The LoRA paper's Table 7 puts GPT-3's at about 0.11 (Wq of layer 48, r = 4)."""
    def weight(layer: str) -> np.ndarray:
        return base.get_submodule(layer).weight.detach().double().cpu().numpy()

    return statistics.median(float(np.linalg.norm(run.delta_weight(layer)) / np.linalg.norm(weight(layer))) for layer in run.factors)


def learned_factors(model: nn.Module) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Every LoRA layer's (A, B, scaling) as float64 NumPy arrays on the host."""
    return {name: (m.lora_A.detach().double().cpu().numpy(), m.lora_B.detach().double().cpu().numpy(), float(m.scaling))
            for name, m in lora_layers(model).items()}


def lora_run(base: GPT, world: World, targets: Iterable[str], r: int, steps: int, seed: int = 0, task: str = "json",
             lr: float | None = None, rslora: bool = False) -> LoRARun:
    """LoRA on the short names ``targets`` (q, k, v, o), scaled as in the paper: alpha / r with a fixed alpha.

    alpha = 16, so the scaling is 2 at r = 8 (notebook 05's alpha / r = 16 / 8). With a fixed alpha, the first Adam
    step lowers the loss by the same amount at every rank (``lora_edu.lora.variants.loss_drop_after_one_step``),
    while the size of the update shrinks like 1 / sqrt(r). ``rslora=True`` scales by RANK_SWEEP_ALPHA / sqrt(r)
    instead, which keeps the size and lets the fall in the loss grow like sqrt(r). Each run keeps its checkpoint with
    the lowest validation answer loss: the measure the lessons' verdicts read.
    """
    targets = tuple(targets)
    unknown = [t for t in targets if t not in SHORT]
    if unknown:
        raise ValueError(f"Unknown target {unknown[0]!r}; use the short names {list(SHORT)}.")
    t0 = time.perf_counter()
    alpha = RANK_SWEEP_ALPHA if rslora else PAPER_ALPHA
    model, rep = finetune(base, world, task, "lora", targets=[SHORT[t] for t in targets], r=r, alpha=alpha, rslora=rslora,
                          steps=steps, lr=lr, seed=seed, progress=False, score_all=False, checkpoint_by="answer loss")
    run = LoRARun(targets, r, seed, rep.val_exact_match, rep.val_answer_loss, rep.test_exact_match, rep.test_answer_loss,
                  time.perf_counter() - t0, learned_factors(model), lr, rep.test_answer_losses,
                  tuple((step, scores["val_loss"]) for step, scores in rep.result.evals), rep.test_right)
    del model  # keep the factors, free the model (on a GPU, 80 models would not fit a small card)
    return run


def still_learning(runs: Sequence[LoRARun], last: float = 0.25, fall: float = 0.1) -> tuple[bool, float, float]:
    """Was training still improving at the end? Validation only: the mean over ``runs`` of the validation answer loss at
    the evaluation that opens the ``last`` share of the run, and at the final one; still learning when it fell by more
    than ``fall`` (a share) between the two. Returns (still learning, loss then, loss at the end)."""
    if not runs or any(len(run.val_curve) < 2 for run in runs):
        raise ValueError("still_learning needs runs with a validation curve of at least two evaluations (lora_run keeps one).")
    steps = runs[0].val_curve[-1][0]
    then = [min(run.val_curve, key=lambda point: abs(point[0] - (1 - last) * steps))[1] for run in runs]
    then_mean, end_mean = float(np.mean(then)), float(np.mean([run.val_curve[-1][1] for run in runs]))
    return end_mean < (1 - fall) * then_mean, then_mean, end_mean


def initial_factor(base: GPT, targets: Iterable[str], r: int, seed: int, layer: str) -> np.ndarray:
    """lora_A (r, d_in) of ``layer`` as ``lora_run(base, world, targets, r, ..., seed)`` starts it, before any step."""
    model = prepare(base, "lora", r=r, alpha=PAPER_ALPHA, seed=seed, targets=[SHORT[t] for t in targets])
    return lora_layers(model)[layer].lora_A.detach().double().cpu().numpy()


def sweep(base: GPT, world: World, configs: list[tuple[tuple[str, ...], int]], seeds: Iterable[int], steps: int,
          lr: float | None = None, progress: bool = True, task: str = "json") -> list[LoRARun]:
    """Every (targets, r) configuration for every seed on ``task``, with a progress bar."""
    jobs = [(t, r, s) for t, r in configs for s in seeds]
    return [lora_run(base, world, t, r, steps, s, task=task, lr=lr)
            for t, r, s in progress_line(jobs, "LoRA runs", disable=not progress)]


Config = tuple[tuple[str, ...], int]  # (targets, r)


@dataclass
class TunedSweep:
    """Every configuration run at every rate of its grid with every seed, and the rate chosen for each on validation.

    ``chosen_lr[config]`` has the lowest mean validation answer loss over the seeds (ties: the smaller rate); the test
    scores play no part in it. ``grids[config]`` are the rates that configuration tried, ``all_runs`` every run that
    chose, ``scored`` the runs at the chosen rates on seeds that chose nothing (``tuned_sweep(..., score_seeds=)``), and
    ``runs`` the runs to score: ``scored`` when there are any, else the choosing runs at the chosen rates.
    """

    grids: dict[Config, tuple[float, ...]]
    all_runs: list[LoRARun]
    chosen_lr: dict[Config, float]
    scored: list[LoRARun] = field(default_factory=list)

    @property
    def runs(self) -> list[LoRARun]:
        if self.scored:
            return self.scored
        return [run for run in self.all_runs if run.lr == self.chosen_lr[(run.targets, run.r)]]

    def val_loss(self, config: Config, lr: float) -> float:
        """Mean validation answer loss of ``config`` at ``lr`` over the seeds."""
        return float(np.mean([run.val_answer_loss for run in self.all_runs if (run.targets, run.r) == config and run.lr == lr]))

    def choose(self, config: Config) -> float:
        self.chosen_lr[config] = min(self.grids[config], key=lambda lr: (self.val_loss(config, lr), lr))
        return self.chosen_lr[config]

    def at_grid_edge(self, config: Config) -> bool:
        return at_edge(self.chosen_lr[config], self.grids[config])

    def table(self, d_model: int, paper: dict[tuple[str, ...], float] | None = None, metric: str = "test_answer_loss",
              paper_label: str = "paper, accuracy %", base: nn.Module | None = None) -> str:
        """One row per configuration: its rank, trainable parameters per block (square d_model x d_model matrices),
        the validation loss at each rate it tried (the chosen one marked <), ``metric`` at the chosen rate (geometric
        mean and 95% interval over seeds, on the log scale), given ``base`` the size of the update (``update_to_weight``,
        the mean over the scored runs) and, when given, the paper's figure under ``paper_label``."""
        intervals = summarize(self.runs, metric, log=True)
        sizes = ({c: statistics.fmean(update_to_weight(run, base) for run in self.runs if (run.targets, run.r) == c)
                  for c in intervals} if base is not None else {})
        cells = {c: "  ".join(f"{lr:g}: {self.val_loss(c, lr):.3f}" + ("<" if lr == self.chosen_lr[c] else " ")
                              for lr in self.grids[c]) for c in intervals}
        width = max(len("validation loss at each rate"), *map(len, cells.values()))
        head = (f"{'adapted':<12} {'r':>2} {'params per block':>16} | {'validation loss at each rate':<{width}} | "
                f"{metric.replace('_', ' '):>22}" + (" | ‖ΔW‖/‖W‖" if sizes else ""))
        width_paper = max(17, len(paper_label))
        lines = [head + (f" | {paper_label:>{width_paper}}" if paper else "")]
        for (targets, r), iv in intervals.items():
            edge = "*" if self.at_grid_edge((targets, r)) else " "
            row = (f"{config_name(targets):<12} {r:>2} {len(targets) * r * 2 * d_model:>16,} | "
                   f"{cells[(targets, r)] + edge:<{width}} | {iv!s:>22}" + (f" | {sizes[(targets, r)]:>8.2f}" if sizes else ""))
            lines.append(row + (f" | {paper[targets]:>{width_paper}}" if paper else ""))
        lines.append("< the rate validation chose" + ("; ‖ΔW‖/‖W‖: the median over a run's adapted weights, the mean over "
                                                      "the scored runs" if sizes else ""))
        if any(self.at_grid_edge(c) for c in intervals):
            lines.append("* the rate chosen is the largest or smallest tried: a better one may lie outside the grid")
        return "\n".join(lines)


def at_edge(lr: float, grid: Iterable[float]) -> bool:
    """True when ``lr`` is the smallest or largest of a grid of several rates: the best may lie outside the grid."""
    grid = tuple(grid)
    return len(grid) > 1 and lr in (min(grid), max(grid))


def next_rate(lr: float, up: bool) -> float:
    """The neighbour of ``lr`` on the ladder 1, 3, 10, 30, ... x 10^k that learning-rate grids use: 3e-2 -> 1e-1 up,
    1e-2 -> 3e-3 down."""
    exponent = math.floor(math.log10(lr) + 1e-9)
    mantissa = round(lr / 10**exponent, 6)
    if mantissa not in (1.0, 3.0):
        raise ValueError(f"Learning rate {lr!r} is not on the 1-3-10 ladder (1e-2, 3e-2, 1e-1, ...); extend a grid of such rates.")
    ladder = [1.0, 3.0, 10.0] if up else [0.3, 1.0, 3.0]
    return float(f"{ladder[ladder.index(mantissa) + (1 if up else -1)] * 10**exponent:.1e}")


def config_name(targets: Iterable[str]) -> str:
    """("q", "v") -> "Wq+Wv"."""
    return "+".join("W" + t for t in targets)


class Tiers(NamedTuple):
    """A paper's configurations split in two at the largest gap between neighbouring scores."""

    lower: list
    upper: list
    gap: float  # the gap between the two tiers, in the paper's units


def paper_tiers(scores: dict[object, float]) -> Tiers:
    """Split ``scores`` (configuration -> a paper's score, higher is better) at the largest gap between neighbouring
    scores. Each tier keeps the order of ``scores``. A gap many times a paper's noise is a difference it resolves; the
    order inside a tier may be noise."""
    if len(scores) < 2:
        raise ValueError(f"Need at least 2 scores to split into tiers; got {len(scores)}.")
    ordered = sorted(scores.values())
    gaps = np.diff(ordered)
    if gaps.max() <= 0:
        raise ValueError(f"All {len(scores)} scores are equal ({ordered[0]}): there is no gap to split them at.")
    cut = ordered[int(np.argmax(gaps))]  # the highest score of the lower tier
    return Tiers([k for k, v in scores.items() if v <= cut], [k for k, v in scores.items() if v > cut], float(gaps.max()))


def resolved_for(verdicts: dict[object, str], name: str) -> tuple[list[object], list[object], list[object]]:
    """The keys of a family of ``verdict`` lines that resolve for ``name``, against it, and not at all."""
    won = [k for k, line in verdicts.items() if line.startswith(f"{name} beats")]
    lost = [k for k, line in verdicts.items() if " beats " in line and not line.startswith(f"{name} beats")]
    open_ = [k for k, line in verdicts.items() if "not resolved" in line]
    return won, lost, open_


def tally(verdicts: dict[object, str], name: str) -> str:
    """Where a family of ``verdict`` lines (keyed by what differs between them) resolves for ``name``, against it, or not."""
    won, lost, open_ = resolved_for(verdicts, name)

    def keys(ks: list[object]) -> str:
        return ", ".join(map(str, ks)) or "none"

    return f"{name} resolved better: {keys(won)} | resolved worse: {keys(lost)} | not resolved: {keys(open_)}"


def verdict_word(winner: str | None, expected: str) -> str:
    """A comparison with a paper in one word: "agrees" when it resolved for the side the paper favours,
    "disagrees" when for the other side, "not resolved" when for neither."""
    return "not resolved" if winner is None else "agrees" if winner == expected else "disagrees"


def interval_word(iv: Interval, side: str) -> str:
    """A claim that an interval lies on one ``side`` of 0 ("above" or "below"), in one word: "agrees" when its 95%
    interval lies wholly there, "disagrees" when wholly on the other side, else "not resolved"."""
    if side not in ("above", "below"):
        raise ValueError(f'side must be "above" or "below", got {side!r}.')
    sign = 1 if side == "above" else -1
    lo, hi = sorted((sign * iv.low, sign * iv.high))
    return "agrees" if lo > 0 else "disagrees" if hi < 0 else "not resolved"


def within_noise_word(winner: str | None, favoured: str | None) -> str:
    """A comparison where the paper's own gap is within its noise, in one word. ``favoured=None`` (the paper reports a
    tie): "disagrees" when ours resolves a winner, else "not resolved" (ours cannot tell them apart, which does not show
    a tie either). ``favoured`` a name (the paper's small gap points to it): "agrees" or "disagrees" when ours
    resolves, else "not resolved"."""
    if favoured is None:
        return "not resolved" if winner is None else "disagrees"
    return verdict_word(winner, favoured)


def tally_word(verdicts: dict[object, str], name: str) -> str:
    """A family of ``verdict`` lines, where the paper favours ``name`` in each, in one word: "agrees" when every line
    resolves for it, "disagrees" when any resolves against it, "partly" when some do not resolve."""
    won, lost, _ = resolved_for(verdicts, name)
    return "disagrees" if lost else "agrees" if len(won) == len(verdicts) else "partly" if won else "not resolved"


def tuned_sweep(base: GPT, world: World, configs: list[Config], seeds: Iterable[int], steps: int, lrs: Iterable[float],
                extend: int = 0, progress: bool = True, score_seeds: Iterable[int] = ()) -> TunedSweep:
    """``sweep`` at every rate of ``lrs``, each configuration then keeping the rate that validation chooses.

    ``extend`` > 0: a configuration whose chosen rate is the largest (or smallest) of its grid then tries the next rate
    beyond it on the 1-3-10 ladder (``next_rate``) and chooses again, up to ``extend`` times. Validation, not the first
    guess of a grid, decides where each configuration's grid ends.

    ``score_seeds``: each configuration then runs at its chosen rate on these seeds, which took no part in the choice
    (``TunedSweep.scored``): a seed's luck on validation cannot flatter its test score.
    """
    lrs = tuple(sorted(lrs))
    if not lrs or not all(is_finite_number(lr) and lr > 0 for lr in lrs):
        raise ValueError(f"lrs must be positive finite learning rates, got {lrs!r}.")
    if not isinstance(extend, int) or extend < 0:
        raise ValueError(f"extend must be a whole number of extra rates, 0 or more, got {extend!r}.")
    seeds, score_seeds = tuple(seeds), tuple(score_seeds)
    if set(seeds) & set(score_seeds):
        raise ValueError(f"score_seeds {score_seeds} share seeds with the seeds that choose, {seeds}; pass seeds that do not.")

    def run_all(jobs: list[tuple[Config, float]], label: str, on: tuple[int, ...] = seeds) -> list[LoRARun]:
        jobs = [(t, r, lr, s) for (t, r), lr in jobs for s in on]
        return [lora_run(base, world, t, r, steps, s, lr=lr) for t, r, lr, s in progress_line(jobs, label, disable=not progress)]

    tuned = TunedSweep({c: lrs for c in configs}, run_all([(c, lr) for c in configs for lr in lrs], "LoRA runs"), {})
    for config in configs:
        tuned.choose(config)
    for _ in range(extend):
        edges = [c for c in configs if tuned.at_grid_edge(c)]
        if not edges:
            break
        beyond = {c: next_rate(tuned.chosen_lr[c], up=tuned.chosen_lr[c] == max(tuned.grids[c])) for c in edges}
        tuned.all_runs += run_all(list(beyond.items()), "LoRA runs, one rate beyond the edge")
        for c, lr in beyond.items():
            tuned.grids[c] = tuple(sorted((*tuned.grids[c], lr)))
            tuned.choose(c)
    if score_seeds:
        tuned.scored = run_all([(c, tuned.chosen_lr[c]) for c in configs], "LoRA runs at the chosen rates, fresh seeds", score_seeds)
    return tuned


@dataclass(frozen=True)
class Interval:
    """Mean of n seeds and the half-width of its 95% t-interval."""

    mean: float
    half_width: float
    values: tuple[float, ...]

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.half_width:.3f}"


def interval(values: Iterable[float]) -> Interval:
    """The mean and 95% t-interval of per-seed values (at least 2)."""
    v = np.asarray(list(values), dtype=np.float64)
    if len(v) < 2:
        raise ValueError(f"An interval needs at least 2 seeds, got {len(v)}.")
    t = t95(len(v) - 1)
    return Interval(float(v.mean()), float(t * v.std(ddof=1) / np.sqrt(len(v))), tuple(float(x) for x in v))


@dataclass(frozen=True)
class LogInterval:
    """A 95% interval for a positive quantity such as a loss, made on the log scale.

    Losses vary between seeds by factors rather than by steps, and a t-interval of three losses can reach below
    zero. So: the t-interval of the logarithms, mapped back. ``mean`` is the geometric mean (the exp of the mean
    log), and ``low`` and ``high`` are always positive; printed ``mean [low, high]``.
    """

    mean: float
    low: float
    high: float
    values: tuple[float, ...]

    @property
    def errors(self) -> tuple[float, float]:
        """How far the interval reaches below and above the mean (for a plot's asymmetric error bars)."""
        return self.mean - self.low, self.high - self.mean

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def log_interval(values: Iterable[float]) -> LogInterval:
    """The geometric mean of positive per-seed values (at least 2) and the 95% t-interval of their logs, mapped back."""
    v = np.asarray(list(values), dtype=np.float64)
    if not (v > 0).all() or not np.isfinite(v).all():
        raise ValueError(f"log_interval needs positive finite values (such as losses), got {v.tolist()}; use interval() instead.")
    logs = interval(np.log(v))
    return LogInterval(float(np.exp(logs.mean)), float(np.exp(logs.low)), float(np.exp(logs.high)), tuple(float(x) for x in v))


def summarize(runs: list[LoRARun], metric: str, log: bool = False) -> dict[tuple[tuple[str, ...], int], Interval | LogInterval]:
    """The 95% interval over seeds of ``metric`` per (targets, r); ``log=True`` makes it on the log scale
    (``log_interval``), as suits a loss."""
    values = {config: [getattr(run, metric) for run in group] for config, group in runs_by_config(runs).items()}
    return {k: (log_interval(v) if log else interval(v)) for k, v in values.items()}


def runs_by_config(runs: Iterable[LoRARun]) -> dict[Config, list[LoRARun]]:
    """The runs grouped by (targets, r), in the order they came."""
    groups: dict[Config, list[LoRARun]] = {}
    for run in runs:
        groups.setdefault((run.targets, run.r), []).append(run)
    return groups


def rank_penalty(groups: dict[Config, list[LoRARun]], targets: tuple[str, ...], small: int, tuned: int,
                 metric: str = "test_answer_loss") -> LogInterval:
    """How much worse one placement does at rank ``small`` than at rank ``tuned``: per seed, ``metric`` at ``small``
    over ``metric`` at ``tuned`` (the same seed's two runs), as a ``LogInterval`` of those ratios."""
    def by_seed(r: int) -> dict[int, float]:
        if (targets, r) not in groups:
            raise ValueError(f"No runs of {targets} at r = {r}: run that rank before asking for its penalty.")
        return {run.seed: getattr(run, metric) for run in groups[(targets, r)]}

    at_small, at_tuned = by_seed(small), by_seed(tuned)
    if at_small.keys() != at_tuned.keys():
        raise ValueError(f"r = {small} ran seeds {sorted(at_small)} and r = {tuned} seeds {sorted(at_tuned)}: pair the same seeds.")
    return log_interval(at_small[s] / at_tuned[s] for s in sorted(at_small))


@dataclass(frozen=True)
class LossRatio:
    """A's answer loss divided by B's (geometric means over seeds), a 95% interval for that ratio, and the two-sided
    p-value of the same t test against a ratio of 1 (below 0.05 exactly when the interval leaves out 1)."""

    ratio: float
    low: float
    high: float
    p: float = float("nan")

    def inverse(self) -> LossRatio:
        """B's loss over A's: the same interval and p-value, turned over."""
        return LossRatio(1 / self.ratio, 1 / self.high, 1 / self.low, self.p)

    def __str__(self) -> str:
        """Two decimals; three where a bound would round to 1.00 without being 1, so a resolved ratio never prints a
        bound of 1.00."""
        places = 3 if any(f"{bound:.2f}" == "1.00" and bound != 1 for bound in (self.low, self.high)) else 2
        return f"{self.ratio:.{places}f} [{self.low:.{places}f}, {self.high:.{places}f}]"


def loss_ratio(losses_a: Iterable[Iterable[float]], losses_b: Iterable[Iterable[float]], resamples: int = 2000,
               seed: int = 0, paired: bool = False) -> LossRatio:
    """A's test answer loss over B's, with a 95% interval that counts two kinds of luck.

    ``losses_a``: (seeds of A, animals), each run's answer loss animal by animal; ``losses_b``: (seeds of B, animals),
    the same animals in the same order. A run's loss is its mean over the animals, and the ratio is that of the two
    geometric means over seeds. Its interval is ``seeds_and_animals``'s, made on the log scale: the luck of the seeds
    and the luck of which animals are in the test set, added. ``paired=True``: row k of A and row k of B ran with the
    same seed, so the seeds' luck is that of the per-seed log ratios.
    """
    a, b = np.asarray(losses_a, dtype=np.float64), np.asarray(losses_b, dtype=np.float64)
    if a.ndim == 2 and b.ndim == 2 and not ((a > 0).all() and (b > 0).all() and np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("Per-animal losses must be positive and finite.")
    centre, se, df = seeds_and_animals_test(a, b, lambda m: np.log(m.mean(axis=-1)), resamples, seed, paired)
    half = t95(df) * se
    p = t_two_sided_p(centre / se, df) if se else float(centre == 0)  # no spread at all: any gap is certain
    return LossRatio(math.exp(centre), math.exp(centre - half), math.exp(centre + half), p)


def seeds_and_animals(a: np.ndarray, b: np.ndarray, per_run: Callable[[np.ndarray], np.ndarray], resamples: int = 2000,
                      seed: int = 0, paired: bool = False) -> tuple[float, float]:
    """The difference of the mean of ``per_run`` over A's seeds and over B's, and the half-width of its 95% interval.

    ``a``: (seeds of A, animals) and ``b``: (seeds of B, animals), scores of the same animals in the same order;
    ``per_run`` turns (..., animals) into one number per run (e.g. the mean over the animals). Two kinds of luck are
    added as variances: the seeds' (each side's spread over its seeds, over its number of seeds) and the test
    animals' (the animals redrawn with replacement, one draw for both sides, since an animal that is hard is hard
    for both). The t quantile takes the Welch-Satterthwaite degrees of freedom of the seeds alone: the animals add
    variance but no degrees of freedom, so the interval is never narrower than the seeds-only one (with 3 seeds a
    side, about 4 degrees of freedom). Some luck is counted twice (the seeds' spread already holds part of the
    animals'), so the interval errs on the wide side.

    ``paired=True``: row k of A and row k of B ran with the same seed (the same start and the same batches), so the
    seeds' luck is the spread of the per-seed differences (a paired t, n - 1 degrees of freedom), which is smaller
    when a seed that helps A also helps B.
    """
    centre, se, df = seeds_and_animals_test(a, b, per_run, resamples, seed, paired)
    return centre, t95(df) * se


def seeds_and_animals_test(a: np.ndarray, b: np.ndarray, per_run: Callable[[np.ndarray], np.ndarray], resamples: int = 2000,
                           seed: int = 0, paired: bool = False) -> tuple[float, float, float]:
    """``seeds_and_animals``'s difference with its standard error and degrees of freedom (the parts of its t test)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[1] < 2 or min(len(a), len(b)) < 2:
        raise ValueError(f"Need (seeds, animals) tables of per-animal results on the same animals, at least 2 seeds and 2 "
                         f"animals each; got shapes {a.shape} and {b.shape}.")
    if paired and len(a) != len(b):
        raise ValueError(f"Pairing by seed needs the same seeds on both sides; got {len(a)} and {len(b)} runs.")
    runs_a, runs_b = per_run(a), per_run(b)
    draws = np.random.default_rng(seed).integers(0, a.shape[1], (resamples, a.shape[1]))
    redrawn = per_run(a[:, draws]).mean(axis=0) - per_run(b[:, draws]).mean(axis=0)  # (resamples,)
    if paired:
        seed_parts = [((runs_a - runs_b).var(ddof=1) / len(a), len(a) - 1)]  # (variance, df) of the per-seed differences
    else:
        seed_parts = [(runs_a.var(ddof=1) / len(a), len(a) - 1), (runs_b.var(ddof=1) / len(b), len(b) - 1)]
    se, df = welch_se_df(seed_parts, extra_variance=float(redrawn.var(ddof=1)))
    return float(runs_a.mean() - runs_b.mean()), se, df


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t, at the tabled degrees of freedom ``t95`` uses (rounded down), so that p < 0.05
    exactly when ``t95``'s interval leaves out 0. The density is integrated numerically."""
    nu = tabled_df(df)
    x = np.linspace(0.0, abs(t), 20_001)
    density = np.exp(math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2)) / math.sqrt(nu * math.pi) * (1 + x**2 / nu) ** (-(nu + 1) / 2)
    return float(max(0.0, 1.0 - 2.0 * np.trapezoid(density, x)))


def holm(pvalues: dict, level: float = 0.05) -> set:
    """The keys of a family of tests that Holm's step-down procedure rejects at family-wise ``level``: the smallest p
    against level / m, the next against level / (m - 1), and so on, stopping at the first that fails."""
    rejected = set()
    for i, (key, p) in enumerate(sorted(pvalues.items(), key=lambda kv: kv[1])):
        if p > level / (len(pvalues) - i):
            break
        rejected.add(key)
    return rejected


def holm_verdicts(name: str, ratios: dict[str, LossRatio], what: str = "test answer loss") -> dict[str, str]:
    """``name``'s loss over each other's (``ratios``: other -> ``runs_loss_ratio``), read as one family of tests:
    ``ratio_verdict``'s line for each, but a comparison that resolves on its own is kept only where Holm's correction
    for the family keeps it too (``holm``); otherwise its line says so and reads "not resolved"."""
    kept = holm({other: ratio.p for other, ratio in ratios.items()})
    lines = {}
    for other, ratio in ratios.items():
        lines[other] = ratio_verdict(name, other, ratio, what)
        if ratio_winner(name, other, ratio) is not None and other not in kept:
            lines[other] = (f"{name} vs {other} on {what}: not resolved after Holm's correction for {len(ratios)} tests "
                            f"(loss ratio {name} / {other} {ratio}, p = {ratio.p:.3f}, resolved on its own)")
    return lines


def ratio_winner(name_a: str, name_b: str, ratio: LossRatio) -> str | None:
    """The lower-loss one when the 95% interval of A's loss over B's lies wholly below 1 (A) or above 1 (B), else None."""
    return name_a if ratio.high < 1 else name_b if ratio.low > 1 else None


def runs_loss_ratio(runs_a: Iterable[LoRARun], runs_b: Iterable[LoRARun], paired: bool = False) -> LossRatio:
    """``loss_ratio`` of two groups of runs, from each run's per-animal test answer losses. ``paired=True`` pairs the
    runs by seed; both groups must then hold the same seeds."""
    runs_a, runs_b = list(runs_a), list(runs_b)
    if paired and sorted(r.seed for r in runs_a) != sorted(r.seed for r in runs_b):
        raise ValueError(f"Pairing by seed needs the same seeds on both sides; got {sorted(r.seed for r in runs_a)} and "
                         f"{sorted(r.seed for r in runs_b)}.")
    if paired:
        runs_a, runs_b = sorted(runs_a, key=lambda r: r.seed), sorted(runs_b, key=lambda r: r.seed)
    return loss_ratio([run.test_answer_losses for run in runs_a], [run.test_answer_losses for run in runs_b], paired=paired)


def loss_winner(name_a: str, runs_a: Iterable[LoRARun], name_b: str, runs_b: Iterable[LoRARun], paired: bool = False) -> str | None:
    """The name with the lower test answer loss when ``loss_verdict`` would call it the winner, else None."""
    return ratio_winner(name_a, name_b, runs_loss_ratio(runs_a, runs_b, paired))


def loss_verdict(name_a: str, runs_a: Iterable[LoRARun], name_b: str, runs_b: Iterable[LoRARun], what: str = "test answer loss",
                 winner_first: bool = True, paired: bool = False) -> str:
    """"A beats B" on test answer loss when the 95% interval of A's loss over B's (``loss_ratio``, seeds and test animals
    both redrawn) lies below 1, "B beats A" when above, else "not resolved". By default the winner is named first in
    the ratio too, so a resolved ratio always reads below 1; ``winner_first=False`` keeps every ratio A / B (for a
    lesson that sets several variants against one reference). The lesson states the 95% rule once, so the line does
    not. ``paired=True`` pairs the runs by seed (``runs_loss_ratio``)."""
    return ratio_verdict(name_a, name_b, runs_loss_ratio(runs_a, runs_b, paired), what, winner_first)


def ratio_verdict(name_a: str, name_b: str, ratio: LossRatio, what: str = "test answer loss", winner_first: bool = True) -> str:
    """``loss_verdict``'s line from a loss ratio A / B already computed."""
    winner = ratio_winner(name_a, name_b, ratio)
    if winner == name_a:
        return f"{name_a} beats {name_b} on {what} (loss ratio {name_a} / {name_b} {ratio})"
    if winner == name_b and not winner_first:
        return f"{name_b} beats {name_a} on {what} (loss ratio {name_a} / {name_b} {ratio})"
    if winner == name_b:
        flipped = ratio.inverse()
        return f"{name_b} beats {name_a} on {what} (loss ratio {name_b} / {name_a} {flipped})"
    return f"{name_a} vs {name_b} on {what}: not resolved (loss ratio {name_a} / {name_b} {ratio})"


def difference_interval(a: Interval | LogInterval, b: Interval | LogInterval) -> Interval:
    """A minus B, mean and 95% Welch t-interval, from the per-seed values of two unpaired intervals (on the log scale
    for ``LogInterval``s, so a difference of logs, a ratio). One interval for the difference is the 95% test; asking that
    two separate 95% intervals do not overlap would be a much stricter one."""
    if len(a.values) < 2 or len(b.values) < 2:
        raise ValueError("Comparing two intervals needs the per-seed values of each (at least 2): build them with "
                         "interval() or log_interval().")
    va, vb = (np.log(iv.values) if isinstance(iv, LogInterval) else np.asarray(iv.values, dtype=np.float64) for iv in (a, b))
    parts = [(v.var(ddof=1) / len(v), len(v) - 1) for v in (va, vb)]  # (variance of the mean, degrees of freedom)
    return Interval(float(va.mean() - vb.mean()), float(welch_half_width(parts)), ())


def better(name_a: str, a: Interval | LogInterval, name_b: str, b: Interval | LogInterval, higher_is_better: bool) -> str | None:
    """The name whose mean is better when the 95% Welch interval of the difference (``difference_interval``) excludes 0,
    or None."""
    diff = difference_interval(a, b)
    sign = 1 if higher_is_better else -1  # A is better where sign * (A - B) > 0
    lo, hi = sorted((sign * diff.low, sign * diff.high))
    if lo > 0:
        return name_a
    if hi < 0:
        return name_b
    return None


def verdict(name_a: str, a: Interval | LogInterval, name_b: str, b: Interval | LogInterval, higher_is_better: bool,
            what: str = "") -> str:
    """"A beats B" when the 95% Welch interval of their difference excludes 0 (``better``), else "not resolved"."""
    what = f" on {what}" if what else ""
    winner = better(name_a, a, name_b, b, higher_is_better)
    if winner == name_a:
        return f"{name_a} beats {name_b}{what} ({a} vs {b})"
    if winner == name_b:
        return f"{name_b} beats {name_a}{what} ({b} vs {a})"
    return f"{name_a} vs {name_b}{what}: not resolved ({a} vs {b})"


def intruder_count(base: nn.Module, model: nn.Module, names: Iterable[str], k: int = 10, threshold: float = 0.5) -> int:
    """Intruder dimensions (``lora_edu.paper.analysis.intruder_dimensions``) of ``model`` against ``base``, summed over layers."""
    return sum(intruder_dimensions(adapted_weight(base, n), adapted_weight(model, n), k, threshold).count for n in names)


def update_spectra(base: nn.Module, model: nn.Module, names: Iterable[str]) -> dict[str, list[float]]:
    """The singular values of each named weight's update ΔW = W_model - W_base, largest first (``min(d_out, d_in)`` of
    them; a rank-r LoRA update has r above zero)."""
    return {n: torch.linalg.svdvals((adapted_weight(model, n) - adapted_weight(base, n)).double().cpu()).tolist() for n in names}


def random_direction_intruders(base: nn.Module, spectra: dict[str, Sequence[float]], seed: int, k: int = 10,
                               threshold: float = 0.5, draws: int = 1) -> float:
    """The null for ``intruder_count``: intruder dimensions of an update with the same singular values as the run's own
    (``update_spectra``), so the same rank, size and shape of spectrum, but random singular vectors, blind to W's
    directions: ΔW = U diag(σ) Vᵀ with U and V random orthonormal columns. Summed over the layers of ``spectra``;
    the mean over ``draws`` independent draws (more draws: less noise from the draw itself)."""
    if not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a whole number, 1 or more, got {draws!r}.")
    gen = torch.Generator().manual_seed(seed)
    count = 0
    for name, sigma in [item for _ in range(draws) for item in spectra.items()]:
        w0 = adapted_weight(base, name).double().cpu()
        d_out, d_in = w0.shape
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        if sigma.dim() != 1 or len(sigma) > min(d_out, d_in) or (sigma < 0).any():
            raise ValueError(f"spectra[{name!r}] must be at most {min(d_out, d_in)} singular values, none negative; "
                             f"got {len(sigma)} values.")
        u = torch.linalg.qr(torch.randn(d_out, len(sigma), generator=gen, dtype=torch.float64))[0]
        v = torch.linalg.qr(torch.randn(d_in, len(sigma), generator=gen, dtype=torch.float64))[0]
        count += intruder_dimensions(w0, w0 + u @ torch.diag(sigma) @ v.T, k, threshold).count
    return count / draws


@dataclass(frozen=True)
class Latency:
    """Milliseconds per forward pass (or training step) of one model: the median over rounds and the range of the
    rounds' medians."""

    median: float
    low: float
    high: float
    rounds: tuple[float, ...] = ()  # each round's median, in the order the rounds ran

    def versus(self, other: Latency) -> str:
        """This model's time over ``other``'s, round by round (a slow moment of the computer hits both in a round),
        and a verdict: slower or faster only when the rounds agree (``round_by_round``)."""
        return round_by_round(self.rounds, other.rounds, above="slower", below="faster")

    def slower_than(self, other: Latency) -> bool:
        """Whether the rounds decide that this model is slower than ``other`` (the verdict of ``versus``)."""
        return decided_side(self.rounds, other.rounds) > 0

    def extra(self, other: Latency) -> str:
        """The time this model adds to ``other``'s, as a share: the middle of the per-round ratios where the rounds
        decide (``versus``), and where they do not, only a bound: at most what the slowest round gives."""
        ratios = round_ratios(self.rounds, other.rounds)
        if decided_side(self.rounds, other.rounds):
            return f"{float(np.median(ratios)) - 1:+.0%}"
        return f"at most {max(ratios) - 1:+.0%} (not resolved)"


def falls_with_size(small: dict[str, Latency], large: dict[str, Latency], model: str = "adapters", base: str = "base") -> bool:
    """Whether ``model`` adds a smaller share over ``base`` in the ``large`` pass than in the ``small`` one: the large
    pass's per-round ratios lie below the small pass's more often than chance allows (``rank_sum_p`` below 0.05), so one
    stalled round does not decide it."""
    return rank_sum_p(round_ratios(large[model].rounds, large[base].rounds), round_ratios(small[model].rounds, small[base].rounds)) < 0.05


@dataclass(frozen=True)
class AdapterLatencyTrend:
    """The LoRA paper's Table 1 (Section 3) read as a trend: adapter layers add latency, most when a pass holds few
    tokens. ``by_size``: "batch b x t" -> ``compare_latency``'s timings with "base" and "adapters", the smallest pass
    first and the largest last; ``nearest``: the size nearest the paper's batch 1 of 128 tokens."""

    by_size: dict[str, dict[str, Latency]]
    nearest: str
    ours_label: str = "ours"  # e.g. "ours, a 64-wide GPT on the cpu"

    @property
    def slower(self) -> bool:
        """Adapters decided slower than the base at the nearest size."""
        return self.by_size[self.nearest]["adapters"].slower_than(self.by_size[self.nearest]["base"])

    @property
    def falls(self) -> bool:
        """The share adapters add falls from the smallest pass to the largest (``falls_with_size``)."""
        sizes = list(self.by_size)
        return falls_with_size(self.by_size[sizes[0]], self.by_size[sizes[-1]])

    @property
    def word(self) -> str:
        """Both halves of the paper's statement: agrees; one of them: partly; neither: not resolved."""
        return "agrees" if self.slower and self.falls else "partly" if self.slower or self.falls else "not resolved"

    def shares(self) -> dict[int, tuple[float, float, float]]:
        """Tokens per pass -> the share adapters add there: the middle of the per-round ratios minus 1, and the lowest
        and highest round's (for a plot; ``ours`` says which sizes the rounds resolve)."""
        out = {}
        for size, t in self.by_size.items():
            batch, tokens = (int(n) for n in size.removeprefix("batch ").split(" x "))
            ratios = round_ratios(t["adapters"].rounds, t["base"].rounds)
            out[batch * tokens] = (float(np.median(ratios)) - 1, min(ratios) - 1, max(ratios) - 1)
        return out

    @staticmethod
    def paper_by_size() -> dict[tuple[int, int], float]:
        """(batch, tokens) -> the share the paper's AdapterH (two adapters per block, like ours) adds, its Table 1."""
        return {size: ms[2] / ms[0] - 1 for size, ms in PAPER["table1_latency_ms"].items()}

    @classmethod
    def paper_shares(cls) -> dict[int, float]:
        """Tokens per pass -> the share the paper's AdapterH adds (``paper_by_size``), for a plot."""
        return {b * t: share for (b, t), share in cls.paper_by_size().items()}

    def ours(self) -> str:
        """The share adapters add at each of our sizes (``Latency.extra``)."""
        return ", ".join(f"{size} {t['adapters'].extra(t['base'])}" for size, t in self.by_size.items())

    @classmethod
    def paper(cls) -> str:
        """The share the paper's AdapterH adds at each size of its Table 1 (``paper_by_size``), largest first."""
        shares = sorted(cls.paper_by_size().items(), key=lambda kv: -kv[1])
        return ", ".join(f"batch {b} x {t} {share:+.1%}" for (b, t), share in shares)

    def reading(self) -> str:
        """The verdict with its two halves, for the summary."""
        t = self.by_size[self.nearest]
        return (f"{self.word}: adapters add {t['adapters'].extra(t['base'])} at {self.nearest} tokens, and their share "
                + ("falls" if self.falls else "was not shown to fall") + " as a pass holds more tokens, as in the paper")

    def __str__(self) -> str:
        return "\n".join([
            "the time adapters add, two per block (AdapterH, as ours), by the size of a pass:",
            f"  {self.ours_label}:".ljust(38) + self.ours().replace(", ", " | "),
            "  the paper, GPT-2 medium on a GPU:".ljust(38) + self.paper().replace(", ", " | "),
            "the sizes are not comparable (other hardware, model and lengths); the direction is, and so is the fall as a pass "
            "holds more tokens: " + ("ours falls too, from the smallest pass to the largest (a rank-sum test over the rounds)"
                                     if self.falls else "ours was not shown to fall from the smallest pass to the largest")])


def merged_latency_finding(base: nn.Module, merged: nn.Module, timing: Latency, base_timing: Latency) -> tuple[str, str, str]:
    """The LoRA paper's Section 4.1 (merged, LoRA adds no inference latency) read from the models themselves: a merged
    model that runs exactly the base's linear layers, shape for shape, does the base's work. Its timing against the
    base's (``Latency.versus``) is shown beside the count, as what noise alone gives. (claim, word, evidence)."""
    shapes = [[tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)] for model in (base, merged)]
    word = ("agrees: merged LoRA runs exactly the base model's linear layers, so it adds no work" if shapes[0] == shapes[1]
            else "disagrees: merged LoRA runs other linear layers than the base model's")
    return ("The LoRA paper (Section 4.1): merged, LoRA adds no inference latency", word,
            f"counted: merged LoRA runs {len(shapes[1])} linear layers, the base model {len(shapes[0])}, "
            + ("with the same shapes, so its timing can only show the computer's noise" if shapes[0] == shapes[1] else "with other shapes")
            + f" (merged LoRA / base: {timing.versus(base_timing)})")


QPISSA_CLAIM = ("Meng et al. 2024, PiSSA (abstract): at the start of fine-tuning, QPiSSA (PiSSA with a 4-bit residual) has a "
                "smaller quantisation error than QLoRA (a 4-bit W)")


def qpissa_finding(errors: dict[str, ResidualNF4Error], r: int) -> tuple[str, str, str]:
    """PiSSA's claim about a 4-bit base, read weight by weight: ``errors`` maps each weight to its
    ``residual_nf4_error`` (QLoRA's error, QPiSSA's, and ‖W − W_r‖_F / ‖W‖_F). A two-sided sign test over the weights
    decides (``decided_side``). (claim, word, evidence)."""
    if not errors:
        raise ValueError("qpissa_finding needs at least one weight's residual_nf4_error.")
    qlora, qpissa = [e.qlora for e in errors.values()], [e.qpissa for e in errors.values()]
    shares = [e.residual_share for e in errors.values()]
    ratios = [b / a for a, b in zip(qlora, qpissa, strict=True)]
    side = decided_side(qpissa, qlora, floor=0.0)
    word = {-1: "agrees", 1: "disagrees", 0: "not resolved"}[side] + f" on the {len(errors)} block weights of our GPT, r = {r}"
    return (QPISSA_CLAIM, word,
            f"QPiSSA's error over QLoRA's, weight by weight (Frobenius norm): median {np.median(ratios):.2f}, from "
            f"{min(ratios):.2f} to {max(ratios):.2f}, smaller in {sum(x < 1 for x in ratios)} of {len(ratios)} (a sign test over "
            f"the weights); the residual's size over W's, ‖W − W_r‖/‖W‖: median {np.median(shares):.2f}")


def compare_latency(models: dict[str, nn.Module], tokens: torch.Tensor, rounds: int = 11, repeats: int = 30) -> dict[str, Latency]:
    """Time each model at batch 1, interleaved: every round times every model once (``repeats`` passes), so
    a slow moment of the computer falls on all of them alike; ``Latency.versus`` compares two round by round.
    """
    return interleaved({name: functools.partial(batch1_latency_ms, model, tokens, repeats) for name, model in models.items()},
                       rounds)


def interleaved(timers: dict[str, Callable[[], float]], rounds: int) -> dict[str, Latency]:
    """Call every timer (it returns milliseconds) once per round, the order turning each round
    (``lora_edu.maths.timing.interleave``); each one's median round, range and rounds."""
    per_round = interleave(timers, rounds)
    return {name: Latency(float(np.median(t)), min(t), max(t), tuple(t)) for name, t in per_round.items()}


def median_ms(call: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    """Median milliseconds of ``call()`` over ``repeats`` calls, after ``warmup`` untimed ones (on CUDA, synchronised)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for i in range(warmup + repeats):
        sync()
        t0 = time.perf_counter()
        call()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def compare_step_time(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, rounds: int = 7,
                      repeats: int = 10) -> dict[str, Latency]:
    """Time one training step of each model (forward, backward, AdamW on its trainable weights), interleaved as in
    ``compare_latency``. Steps run on copies: the models themselves are not trained.

    x, y: (batch, seq) token ids and targets, as ``train`` takes them; each model returns (logits, loss) for (x, y).
    """
    copies = {name: copy.deepcopy(model).train() for name, model in models.items()}
    optimizers = {}
    for name, model in copies.items():
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(f"{name!r} has no trainable weights: a training step would do nothing. Mark some trainable "
                             "(mark_only_lora_trainable, or requires_grad_ on the weights to train).")
        optimizers[name] = torch.optim.AdamW(trainable, lr=1e-6)
    return interleaved({name: functools.partial(train_step_ms, model, optimizers[name], x, y, repeats)
                        for name, model in copies.items()}, rounds)


def train_step_ms(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    """Median milliseconds of one training step of ``model`` on (x, y), after three untimed ones."""
    def step() -> None:
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return median_ms(step, repeats, warmup=3, device=x.device)


@torch.no_grad()
def batch1_latency_ms(model: nn.Module, tokens: torch.Tensor, repeats: int = 100) -> float:
    """Median milliseconds of one forward pass at batch size 1 (tokens: (1, seq))."""
    return median_ms(lambda: model(tokens), repeats, warmup=10, device=tokens.device)


@dataclass(frozen=True)
class PhiChance:
    """What the subspace similarity φ gives for random subspaces: its mean at every (i, j) and the 95th percentile of
    φ(1, 1), over many pairs of random (r1 x d) and (r2 x d) Gaussian matrices (isotropic: no direction preferred)."""

    mean: np.ndarray  # (r1, r2)
    top95: float

    @property
    def top(self) -> float:
        return float(self.mean[0, 0])


def phi_chance(r1: int, r2: int, d: int, draws: int = 1000, seed: int = 0) -> PhiChance:
    rng = np.random.default_rng(seed)
    phis = np.array([subspace_similarity(rng.standard_normal((r1, d)), rng.standard_normal((r2, d))) for _ in range(draws)])
    return PhiChance(phis.mean(axis=0), float(np.quantile(phis[:, 0, 0], 0.95)))


def phi_verdicts(phis: list[np.ndarray], chance: PhiChance, paper_top: float = 0.5) -> list[tuple[str, str, str]]:
    """Our φ(A_small, A_high) per seed against the paper's two findings (Section 7.2), as (the paper's finding, our
    verdict in a word, the evidence): the top direction is shared (φ(1, 1) above ``paper_top``), and the overlap drops
    off beyond the top directions. Both are judged against random subspaces, since chance alone gives φ(i, j) of about
    max(i, j) / d."""
    top = [float(p[0, 0]) for p in phis]
    against_paper = interval(x - paper_top for x in top)  # per seed, paired with nothing: a one-sample t-interval
    paper_word, chance_word = interval_word(against_paper, "above"), interval_word(interval(x - chance.top for x in top), "above")
    shared_word, shared = (("agrees", f"shared above the paper's {paper_top}") if paper_word == "agrees" else
                           ("disagrees", f"below the paper's {paper_top}") if paper_word == "disagrees" else
                           (f"agrees that it is shared (above chance), not resolved above {paper_top}",
                            f"shared more than by chance, but not told apart from the paper's {paper_top}")
                           if chance_word == "agrees" else ("not resolved", f"told apart from neither chance nor the paper's {paper_top}"))
    mean = against_paper.mean + paper_top
    k = min(p.shape[0] for p in phis) - 1
    # Each seed's drop: its overlap above chance at (1, 1) minus its overlap above chance at (k + 1, k + 1), paired by seed.
    drop = interval((p[0, 0] - chance.mean[0, 0]) - (p[k, k] - chance.mean[k, k]) for p in phis)
    said = interval_word(drop, "above")
    where = "above" if drop.low > 0 else "below" if drop.high < 0 else "includes"
    return [(f"Section 7.2: the top direction is shared, φ(1, 1) above {paper_top}", shared_word,
             f"φ(1, 1) per seed {', '.join(f'{x:.2f}' for x in top)}, mean {mean:.3f} [{against_paper.low + paper_top:.3f}, "
             f"{against_paper.high + paper_top:.3f}] (95% interval over seeds; chance {chance.top:.2f}): {shared}"
             + (f"; below {paper_top} in every seed" if max(top) < paper_top and paper_word == "not resolved" else "")),
            ("Section 7.2: the overlap drops off beyond the top directions", said,
             f"the overlap above chance at (1, 1) minus that at ({k + 1}, {k + 1}), paired by seed, "
             f"{drop.mean:+.2f} [{drop.low:+.2f}, {drop.high:+.2f}] (95% interval {where} 0)")]
