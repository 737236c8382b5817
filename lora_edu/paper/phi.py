"""How much two adapters' subspaces overlap: the paper's φ (Section 7.2, Figures 3 and 4), on one layer (notebook 06,
section 3).

``PhiStudy`` holds A, learned and at its start, for one layer at a small rank and a high rank on the same seeds, and an
adapter of the high rank trained on another task from the same starts. It sets φ beside three baselines: random
subspaces (chance), two seeds of one rank, and the other task's adapter; and it asks what the shared random start
alone gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..gpt.model import GPT
from .analysis import subspace_similarity
from .experiments import Interval, LoRARun, PhiChance, initial_factor, interval, phi_chance, phi_verdicts

__all__ = ["PhiStudy", "phi_study"]

Finding = tuple[str, str, str]  # (the paper's claim, our word, the evidence), as ``Findings.add`` takes them


@dataclass(frozen=True)
class PhiStudy:
    """A of ``layer`` per seed: learned at ``small`` and ``high`` rank on the task, and at ``high`` on another task
    (``card``), with the starts of the first two (``card`` starts where ``high`` does); ``many_starts``: φ(1, 1) of the
    two starts over many seeds; ``chance``: φ of random subspaces of the same sizes."""

    layer: str
    seeds: tuple[int, ...]
    small: int
    high: int
    learned_small: tuple[np.ndarray, ...]  # per seed, A (small, d_in)
    learned_high: tuple[np.ndarray, ...]  # per seed, A (high, d_in)
    learned_card: tuple[np.ndarray, ...]  # per seed, A (high, d_in) trained on the other task
    start_small: tuple[np.ndarray, ...]
    start_high: tuple[np.ndarray, ...]
    many_starts: tuple[float, ...]
    chance: PhiChance

    @cached_property
    def per_seed(self) -> list[np.ndarray]:
        """φ(A_small, A_high) of each seed: (small, high)."""
        return [subspace_similarity(a, b) for a, b in zip(self.learned_small, self.learned_high, strict=True)]

    @cached_property
    def card(self) -> list[np.ndarray]:
        """φ(A_small on the task, A_high on the other task) of each seed: (small, high)."""
        return [subspace_similarity(a, b) for a, b in zip(self.learned_small, self.learned_card, strict=True)]

    @property
    def between_seeds(self) -> np.ndarray:
        """φ between the high-rank A of the first two seeds: (high, high)."""
        return subspace_similarity(self.learned_high[0], self.learned_high[1])

    def seed_overlap(self, i: int, j: int) -> float:
        """The mean φ over the top ``small`` × ``small`` of two seeds' high-rank A (seeds by position)."""
        return float(subspace_similarity(self.learned_high[i], self.learned_high[j])[:self.small, :self.small].mean())

    @property
    def pairs(self) -> list[tuple[int, int]]:
        n = len(self.seeds)
        return [(i, j) for i in range(n) for j in range(i + 1, n)]

    @property
    def across_ranks(self) -> float:
        """The mean over seeds of φ(A_small, A_high) over i, j ≤ small."""
        return float(np.mean([p[:, :self.small].mean() for p in self.per_seed]))

    @property
    def across_seeds(self) -> float:
        """The same for two seeds of the high rank, over every pair of seeds."""
        return float(np.mean([self.seed_overlap(i, j) for i, j in self.pairs]))

    @cached_property
    def ranks_minus_seeds(self) -> Interval:
        """Per seed, its small-vs-high overlap minus its high rank's overlap with the other seeds' (averaged): a rough
        interval, since the seed pairs share runs."""
        n = len(self.seeds)
        return interval(p[:, :self.small].mean() - np.mean([self.seed_overlap(i, j) for j in range(n) if j != i])
                        for i, p in enumerate(self.per_seed))

    @cached_property
    def at_start(self) -> list[float]:
        """φ(1, 1) of each seed's two starts, before any step."""
        return [float(subspace_similarity(a, b)[0, 0]) for a, b in zip(self.start_small, self.start_high, strict=True)]

    def __str__(self) -> str:
        s, h, chance = self.small, self.high, self.chance
        diff = self.ranks_minus_seeds
        shared = ("less than two seeds of one rank do" if diff.high < 0 else "more than two seeds of one rank do"
                  if diff.low > 0 else "an amount not told apart from what two seeds of one rank share (not resolved)")
        return "\n".join([
            f"φ(A{s}, A{h}, 1, 1) per seed: {', '.join(f'{p[0, 0]:.2f}' for p in self.per_seed)}; random subspaces: "
            f"{chance.top:.2f} on average, above {chance.top95:.2f} only 5% of the time",
            f"mean over i, j <= {s}: A{s} vs A{h} {self.across_ranks:.2f} ({len(self.seeds)} seeds) | two seeds at r = {h}: "
            f"{self.across_seeds:.2f} ({len(self.pairs)} pairs) | random: {chance.mean[:, :s].mean():.2f}",
            f"our own question, r = {s} against r = {h} next to two seeds of one rank: per seed, its A{s}-vs-A{h} overlap minus "
            f"its overlap with the other seeds' A{h}: {diff.mean:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}] (a rough interval: "
            f"the seed pairs share runs); they share {shared}"])

    def start_luck(self, draws: int = 10_000, seed: int = 0) -> float:
        """How often the mean start φ(1, 1) of as many seeds, drawn from ``many_starts``, is at least our seeds' mean."""
        many, ours = np.array(self.many_starts), float(np.mean(self.at_start))
        picks = np.random.default_rng(seed).integers(0, len(many), (draws, len(self.at_start)))
        return float(np.mean(many[picks].mean(axis=1) >= ours))

    @cached_property
    def raised(self) -> Interval:
        """Per seed, the learned φ(1, 1) minus its start's: how much training added to the overlap."""
        return interval(p[0, 0] - start for p, start in zip(self.per_seed, self.at_start, strict=True))

    def starts(self) -> str:
        """What the shared random start alone gives: our seeds' φ(1, 1) before any step, against many seeds' and chance's,
        and how much training added to it."""
        many, ours, n = np.array(self.many_starts), self.at_start, len(self.at_start)
        luck = self.start_luck()
        sits = (f"rare luck: a mean as high comes in {luck:.1%} of draws of {n} seeds" if luck < 0.05 else
                f"not unusual: a mean as high comes in {luck:.0%} of draws of {n} seeds")
        raised = self.raised
        added = ("training added to it in every seed, by an amount the interval resolves" if raised.low > 0 and
                 all(p[0, 0] > start for p, start in zip(self.per_seed, ours, strict=True)) else
                 "training added to it, by an amount the interval resolves" if raised.low > 0 else
                 "the interval does not resolve what training added")
        return (f"before any step, from the same seeds: φ(A{self.small}, A{self.high}, 1, 1) {', '.join(f'{p:.2f}' for p in ours)}, "
                f"mean {np.mean(ours):.3f}. Over {len(many)} seeds the mean is {many.mean():.3f}, chance's {self.chance.top:.3f}: "
                f"a shared seed does not make the two starts alike. Our seeds' mean start is {sits}. Learned minus start, per "
                f"seed: {raised.mean:+.2f} [{raised.low:+.2f}, {raised.high:+.2f}]; {added}")

    def findings(self) -> list[Finding]:
        """The descriptive overlap; the paper's first finding (the top direction is shared) judged against chance and
        each seed's own start, with the paper's 0.5 as a size beside it; its second (``phi_verdicts``: the drop-off)."""
        s, h = self.small, self.high
        rows = [("Section 7.2 (Figure 3): the subspaces of r = 8 and r = 64 overlap in their top directions", "descriptive",
                 f"mean φ over i, j <= {s}: r = {s} against r = {h} {self.across_ranks:.2f}, two seeds of one rank "
                 f"{self.across_seeds:.2f}, random subspaces {self.chance.mean[:, :s].mean():.2f}. The verdict rows below test "
                 "the paper's two findings")]
        top = [float(p[0, 0]) for p in self.per_seed]
        above_chance, raised = interval(x - self.chance.top for x in top), self.raised
        if above_chance.low > 0 and raised.low > 0 and min(top) > 0.5:
            word = "agrees: shared, above chance, above the seeds' own starts and above 0.5"
        elif above_chance.low > 0 and raised.low > 0:
            word = "partly: shared (above chance and above the seeds' own starts), but smaller than GPT-3's 0.5"
        elif above_chance.low > 0:
            word = "partly: above chance, but not shown above the seeds' own starts"
        elif above_chance.high < 0:
            word = "disagrees: below chance"
        else:
            word = "not resolved: not told apart from chance"
        rows.append(("Section 7.2: the top direction is shared (φ(1, 1) above 0.5 on GPT-3)",
                     word + " (0.5 is a size, which depends on the width and the update: compare it as a description)",
                     f"φ(1, 1) per seed {', '.join(f'{x:.2f}' for x in top)}; minus chance's {self.chance.top:.2f}, "
                     f"{above_chance.mean:+.2f} [{above_chance.low:+.2f}, {above_chance.high:+.2f}]; minus the same seed's start "
                     f"({', '.join(f'{x:.2f}' for x in self.at_start)}), {raised.mean:+.2f} [{raised.low:+.2f}, {raised.high:+.2f}] "
                     f"(95% intervals over the {len(top)} seeds)"))
        return rows + phi_verdicts(self.per_seed, self.chance)[1:]

    @cached_property
    def json_minus_card(self) -> Interval:
        """φ(1, 1) with the task's A_small: the task's A_high minus the other task's, paired by seed."""
        return interval(j[0, 0] - c[0, 0] for j, c in zip(self.per_seed, self.card, strict=True))

    def moved(self, learned: Sequence[np.ndarray]) -> float:
        """How far a high-rank A moved from its start, ‖A − A₀‖_F / ‖A₀‖_F, mean over the seeds."""
        return float(np.mean([np.linalg.norm(a - a0) / np.linalg.norm(a0) for a, a0 in zip(learned, self.start_high, strict=True)]))

    def card_report(self) -> str:
        """The stricter baseline: the other task's adapter from the same start, and what the difference allows."""
        s, h, diff = self.small, self.high, self.json_minus_card
        moved = {"json": self.moved(self.learned_high), "card": self.moved(self.learned_card)}
        if diff.low <= 0:  # the task's overlap must be larger, by a difference the seeds resolve
            so = "so the overlap may not be specific to the JSON task"
        elif moved["card"] < moved["json"] / 2:
            so = ("the card adapter's A stayed much closer to its random start, so this baseline is close to the random one: "
                  "the shared top direction is learned, but these runs cannot say it is specific to the JSON task")
        else:
            so = ("so in this layer and these seeds, the shared top direction is more the JSON task's than another task's (its "
                  "outputs' or its prompts': these runs cannot separate the two): an adapter for another task, from the same "
                  "start and moving about as far, finds less of it; section 4's baseline on W asks the same more strictly")
        return "\n".join([
            f"φ(A{s} json, A{h} card, 1, 1) per seed: {', '.join(f'{p[0, 0]:.2f}' for p in self.card)}; "
            f"mean over i, j <= {s}: {np.mean([p[:, :s].mean() for p in self.card]):.2f}",
            f"φ(1, 1) with A{s} json, A{h} json's minus A{h} card's, paired by seed: {diff.mean:+.2f} "
            f"[{diff.low:+.2f}, {diff.high:+.2f}] (95% interval " + ("above 0)" if diff.low > 0 else "includes 0)"),
            f"how far A{h} moved from its random start, ‖A - A₀‖_F / ‖A₀‖_F (mean over seeds): json {moved['json']:.2f}, "
            f"card {moved['card']:.2f}",
            so])


def phi_study(base: GPT, small: Sequence[LoRARun], high: Sequence[LoRARun], card: Sequence[LoRARun], layer: str,
              start_seeds: int = 200) -> PhiStudy:
    """Section 3 of notebook 06 on ``layer``: the runs at the small and the high rank and the other task's high-rank
    runs, one per seed in the same seed order; ``start_seeds``: how many seeds' starts show what a shared seed gives."""
    seeds = tuple(run.seed for run in small)
    if tuple(run.seed for run in high) != seeds or tuple(run.seed for run in card) != seeds:
        raise ValueError(f"Give one run per seed, in the same seed order, for each group: got {seeds}, "
                         f"{tuple(run.seed for run in high)} and {tuple(run.seed for run in card)}.")
    r_small, r_high, targets = small[0].r, high[0].r, small[0].targets

    def start(r: int, seed: int) -> np.ndarray:
        return initial_factor(base, targets, r, seed, layer)

    many = tuple(float(subspace_similarity(start(r_small, s), start(r_high, s))[0, 0]) for s in range(start_seeds))
    return PhiStudy(layer=layer, seeds=seeds, small=r_small, high=r_high,
                    learned_small=tuple(run.factor(layer) for run in small),
                    learned_high=tuple(run.factor(layer) for run in high),
                    learned_card=tuple(run.factor(layer) for run in card),
                    start_small=tuple(start(r_small, s) for s in seeds), start_high=tuple(start(r_high, s) for s in seeds),
                    many_starts=many, chance=phi_chance(r_small, r_high, base.config.d_model))
