"""rsLoRA over a training run (notebook 06b, section 2c): one learning rate, ranks 1 to 16, under α/r and α/√r.

Kalajdzievski (2023, arXiv 2312.03732, abstract): an adapter divided by its rank learns slowly at higher ranks, so
they gain little; divided by √r instead, a larger rank can buy a better fine-tune. Here both scalings give the same
γ at a reference rank, and every run uses the one learning rate chosen there, as the paper keeps one rate across ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .comparison import Arm, Comparison
from .experiments import LossRatio, ratio_winner, runs_loss_ratio, verdict_word

__all__ = ["RSLORA_CLAIM", "SCALINGS", "RankStudy", "rank_arm_label", "rank_arms"]

SCALINGS = ("α/r", "α/√r")
RSLORA_CLAIM = ("Kalajdzievski 2023, rsLoRA (abstract): divided by r, higher-rank adapters learn slowly and gain little; "
                "divided by √r, a larger rank learns more")


def rank_arm_label(scaling: str, r: int) -> str:
    return f"{scaling}, r = {r}"


def scaling_at(scaling: str, r: int, reference: int, gamma: float) -> float:
    """γ of one scaling at rank r, when both scalings give ``gamma`` at the ``reference`` rank."""
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}; got {scaling!r}.")
    return gamma * reference / r if scaling == "α/r" else gamma * math.sqrt(reference / r)


def rank_arms(ranks: tuple[int, ...], reference: int, gamma: float, lr: float, options: dict[str, object]) -> list[Arm]:
    """One LoRA arm per scaling and rank, all at ``lr``, with α set so that γ = ``gamma`` at the ``reference`` rank under
    both scalings (α/r: α = gamma · reference; α/√r: α = gamma · √reference). ``options``: each arm's other finetune
    options (targets, ...)."""
    if reference not in ranks:
        raise ValueError(f"The reference rank {reference} must be one of the ranks {ranks}: the two scalings meet there.")
    return [Arm(rank_arm_label(s, r), "lora", (lr,),
                {**options, "r": r, "alpha": gamma * (reference if s == "α/r" else math.sqrt(reference)), "rslora": s == "α/√r"},
                headline=True) for s in SCALINGS for r in ranks]


@dataclass
class RankStudy:
    """The runs of ``rank_arms`` (``runs``: every arm at its one rate, on seeds that chose nothing) read as the rsLoRA
    paper's claim. The verdict is the one contrast that separates the scalings: at the highest rank, reached from the
    reference rank where both give the same γ, α/√r's test answer loss over α/r's, paired by seed (below 1: α/√r
    learned more). Each scaling's gain in rank (the highest rank's loss over a lower one's) is shown beside it."""

    runs: Comparison
    ranks: tuple[int, ...]
    reference: int
    gamma: float

    def gain(self, scaling: str, low: int | None = None) -> LossRatio:
        """The highest rank's test answer loss over rank ``low``'s (default the lowest), paired by seed."""
        low = min(self.ranks) if low is None else low
        return runs_loss_ratio(self.runs.runs(rank_arm_label(scaling, max(self.ranks))),
                               self.runs.runs(rank_arm_label(scaling, low)), paired=True)

    def at_top(self) -> LossRatio:
        """α/√r over α/r at the highest rank, paired by seed."""
        top = max(self.ranks)
        return runs_loss_ratio(self.runs.runs(rank_arm_label("α/√r", top)), self.runs.runs(rank_arm_label("α/r", top)), paired=True)

    def loss(self, scaling: str, r: int) -> float:
        """The geometric mean over seeds of each run's test answer loss (its mean over the test animals)."""
        return float(np.exp(np.mean([np.log(np.mean(run.test_answer_losses)) for run in self.runs.runs(rank_arm_label(scaling, r))])))

    def word(self) -> str:
        """The claim in a word, at the highest rank: "agrees" when α/√r learned resolvably more than α/r there."""
        return verdict_word(ratio_winner("α/√r", "α/r", self.at_top()), "α/√r")

    def table(self) -> str:
        """One row per rank: the scaling γ each rule gives there, and each rule's mean test answer loss."""
        lines = [f"{'r':>3}  {'γ under α/r':>12}  {'γ under α/√r':>13}  {'test answer loss, α/r':>22}  {'α/√r':>6}"]
        lines += [f"{r:>3}  {scaling_at('α/r', r, self.reference, self.gamma):>12.2f}  "
                  f"{scaling_at('α/√r', r, self.reference, self.gamma):>13.2f}  {self.loss('α/r', r):>22.3f}  {self.loss('α/√r', r):>6.3f}"
                  for r in self.ranks]
        high = max(self.ranks)
        for low in sorted({min(self.ranks), self.reference} - {high}):
            lines.append(f"r = {high} over r = {low}{' (where the two scalings meet)' if low == self.reference else ''}, paired by "
                         f"seed (below 1: the higher rank learned more): " + "; ".join(f"{s} {self.gain(s, low)}" for s in SCALINGS))
        lines.append(f"at r = {high}, α/√r over α/r (below 1: α/√r learned more): {self.at_top()}")
        return "\n".join(lines)

    def finding(self, width: int) -> tuple[str, str, str]:
        """(claim, word, evidence) for the summary: the verdict at the highest rank, and each scaling's gains beside it."""
        seeds, low, high = len(self.runs.runs(rank_arm_label("α/r", self.reference))), min(self.ranks), max(self.ranks)
        return (RSLORA_CLAIM, f"{self.word()} at r = {high} (α/√r against α/r, one rate, d = {width})",
                f"at r = {high}, α/√r's test answer loss over α/r's, {seeds} seeds paired: {self.at_top()}; r = {high} over r = "
                f"{self.reference}: α/√r {self.gain('α/√r', self.reference)}, α/r {self.gain('α/r', self.reference)}; over r = {low}: "
                f"α/√r {self.gain('α/√r')}, α/r {self.gain('α/r')}; every run at the rate chosen for r = {self.reference}, where "
                f"both scalings give γ = {self.gamma:g}" + self.halves())

    def halves(self) -> str:
        """The claim's two halves read apart, for the evidence: what the top contrast's interval allows when it is not
        resolved, and whether α/r's highest rank still learned resolvably more than its lowest ("gain little")."""
        high, low, top = max(self.ranks), min(self.ranks), self.at_top()
        parts = []
        if ratio_winner("α/√r", "α/r", top) is None and top.low < 1:
            parts.append(f"what the interval allows at r = {high}: α/√r's loss at most {1 - top.low:.0%} below α/r's")
        if ratio_winner("high", "low", self.gain("α/r")) == "high":
            parts.append(f"under α/r, r = {high} learned resolvably more than r = {low}: counted from r = {low}, the higher rank "
                         "did not gain little here")
        return "".join(f"; {part}" for part in parts)
