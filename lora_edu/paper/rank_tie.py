"""Is a smaller rank enough? Table 6's claim tested as a tie (notebook 06, section 2d).

The paper's claim is a tie: r = 1 does about as well as a larger rank. A tie is tested against a margin, not against
1: on exact match, the reference rank's lead at most ``em_margin`` (one test animal: the finest step exact match takes);
on the answer loss, the smaller rank's loss at most ``margin`` times the reference's. An interval that lies below the
margin is a tie, one above it is not, one across it is a question the runs cannot decide. The
same runs answer a second, plainer question: is the reference rank better (its loss lower, its exact match higher)?
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from .comparison import PairedDifference, paired_difference
from .experiments import PAPER, LoRARun, LossRatio, log_interval, runs_loss_ratio, still_learning

__all__ = ["RankTie"]


@dataclass(frozen=True)
class RankTie:
    """Wq+Wv at a few ranks, each at the rate validation chose for it, scored on the same seeds.

    ``runs``: rank -> its scored runs; ``rates``: rank -> its chosen rate; ``reference``: the rank the smaller ones are
    held against; ``margin``: the tie's margin on the loss ratio; ``em_margin``: the tie's margin on exact match (how
    far the reference's lead may go); ``steps``: the runs' length.
    """

    runs: dict[int, Sequence[LoRARun]]
    rates: dict[int, float]
    reference: int
    margin: float
    em_margin: float
    steps: int

    def __post_init__(self) -> None:
        if self.reference not in self.runs or len(self.runs) < 2:
            raise ValueError(f"Give the reference rank {self.reference} and at least one smaller rank in runs; got {sorted(self.runs)}.")
        if self.margin <= 1:
            raise ValueError(f"The margin is how much higher a tied rank's loss may be: a ratio above 1, got {self.margin}.")
        if not 0 < self.em_margin < 1:
            raise ValueError(f"em_margin is how far the reference's exact match may lead, between 0 and 1; got {self.em_margin}.")

    @property
    def smaller(self) -> list[int]:
        return sorted(r for r in self.runs if r < self.reference)

    @cached_property
    def ratios(self) -> dict[int, LossRatio]:
        """Each smaller rank's test answer loss over the reference's (seeds and test animals redrawn)."""
        return {r: runs_loss_ratio(self.runs[r], self.runs[self.reference]) for r in self.smaller}

    @cached_property
    def exact_match_gaps(self) -> dict[int, PairedDifference]:
        """The reference rank's test exact match minus each smaller rank's, the test animals paired."""
        return {r: paired_difference([run.test_right for run in self.runs[self.reference]],
                                     [run.test_right for run in self.runs[r]]) for r in self.smaller}

    def tie_word(self, r: int) -> str:
        """The tie's verdict at rank ``r`` on the answer loss: the whole interval below the margin, above it, or across it."""
        ratio = self.ratios[r]
        return "agrees" if ratio.high < self.margin else "disagrees" if ratio.low > self.margin else "not resolved"

    def em_tie_word(self, r: int) -> str:
        """The tie's verdict at rank ``r`` on exact match: the reference's lead below ``em_margin`` throughout, above it,
        or across it."""
        gap = self.exact_match_gaps[r]
        return "agrees" if gap.high < self.em_margin else "disagrees" if gap.low > self.em_margin else "not resolved"

    def better(self) -> str:
        """The plainer question at the smallest rank: is the reference rank better on the loss, on exact match?"""
        low, ref = self.smaller[0], self.reference
        on_loss = self.ratios[low].low > 1
        on_match = self.exact_match_gaps[low].low > 0
        if on_loss and on_match:
            return f"r = {ref} is better than r = {low} on both measures: a lower loss and a higher exact match"
        if on_loss or on_match:
            return f"r = {ref} is better than r = {low} on {'the loss' if on_loss else 'exact match'} only"
        return f"r = {ref} is not shown better than r = {low} on either measure"

    def __str__(self) -> str:
        lines = [f"Wq+Wv r = {r} at {self.rates[r]:g}: test answer loss {log_interval([run.test_answer_loss for run in group])}, "
                 "test exact match per seed " + ", ".join(f"{run.test_exact_match:.2f}" for run in group)
                 for r, group in sorted(self.runs.items())]
        for r, ratio in self.ratios.items():
            tie = {"agrees": f"below {self.margin} throughout: a tie", "disagrees": f"above {self.margin} throughout: no tie",
                   "not resolved": f"the interval straddles {self.margin}: the tie is not resolved"}[self.tie_word(r)]
            lower = f"; above 1 throughout: r = {self.reference}'s loss is lower" if ratio.low > 1 else ""
            lines.append(f"r = {r}'s loss / r = {self.reference}'s {ratio}: {tie}{lower}")
        for r, gap in self.exact_match_gaps.items():
            tie = {"agrees": f"below {self.em_margin:.3f} throughout: a tie", "disagrees": f"above {self.em_margin:.3f} throughout: no tie",
                   "not resolved": f"the interval straddles {self.em_margin:.3f}: the tie is not resolved"}[self.em_tie_word(r)]
            lines.append(f"test exact match, r = {self.reference} minus r = {r} (seeds and test animals redrawn): {gap}: {tie}")
        falls = {r: still_learning(self.runs[r]) for r in (self.smaller[0], self.reference)}
        lines.append("validation answer loss over the last quarter, mean of the seeds: " + ", ".join(
            f"r = {r} {then:.3f} -> {end:.3f}" + (" (still falling)" if falling else "") for r, (falling, then, end) in falls.items()))
        lines.append(f"so: {self.better()}")
        return "\n".join(lines)

    def finding(self, width: int) -> tuple[str, str, list[str]]:
        """Table 6's claim for ``Findings.add``: the tie's verdict at each smaller rank, then the plainer question."""
        scores = PAPER["table6_wikisql"][("q", "v")]
        paper_low, paper_ref = (scores[PAPER["table6_ranks"].index(r)] for r in (self.smaller[0], self.reference))
        claim = (f"Table 6 (Section 7.2): r = {self.smaller[0]} is already enough for Wq+Wv ({paper_low}% against {paper_ref}% "
                 f"at r = {self.reference})")
        on_match = ", ".join(f"{self.em_tie_word(r)} at r = {r}" for r in self.smaller)
        on_loss = ", ".join(f"{self.tie_word(r)} at r = {r}" for r in self.smaller)
        word = (f"{on_match} on exact match, the measure nearest the paper's accuracy (r = {self.reference}'s lead at most "
                f"{self.em_margin:.3f}, one test animal); {on_loss} on the answer loss (within {self.margin} times r = "
                f"{self.reference}'s), after {self.steps} steps")
        seeds = len(self.runs[self.reference])
        evidence = ([f"test exact match, r = {self.reference} minus r = {r}, {gap}" for r, gap in self.exact_match_gaps.items()]
                    + [f"r = {r}'s loss / r = {self.reference}'s {ratio}" for r, ratio in self.ratios.items()]
                    + [f"so: {self.better()}",
                       f"{seeds} seeds, each rank at the rate validation chose for it on {self.steps}-step runs of the tuning seeds",
                       "final accuracy, the paper's measure, untested: the rate decays to zero at the end of a run, so a flat "
                       "curve cannot show convergence",
                       f"on a {width}-wide model, where the paper's is 12,288 wide"])
        return claim, word, evidence
