"""How ΔW relates to W, the paper's Table 7, on the parts a small model can test (notebook 06, section 4).

``table7_study(base, layer, groups)`` measures, for each group of runs (one setting, several seeds), how much of W
lies in ΔW's top-r directions against random directions (``delta_w_alignment``), how large ΔW is next to W, and how
far A moved from its start. ``Table7Study`` prints that as one table and turns it into the lesson's verdicts: ΔW's
directions against random ones, with a large and a small update, and against another task's update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..gpt.model import GPT
from .analysis import delta_w_alignment
from .experiments import PAPER, Interval, LoRARun, initial_factor, interval, interval_word

__all__ = ["Table7Group", "Table7Study", "table7_study"]


@dataclass(frozen=True)
class Table7Group:
    """One setting's runs, seed by seed: ``delta_w_alignment`` of the layer's ΔW, how far its A moved, its test loss."""

    label: str
    r: int
    seeds: tuple[int, ...]
    alignments: tuple[dict[str, float], ...]
    a_moved: tuple[float, ...]  # ‖A − A₀‖_F / ‖A₀‖_F per seed
    test_loss: tuple[float, ...]

    @property
    def size(self) -> float:
        """‖ΔW‖_F / ‖W‖_F, the mean over seeds."""
        return float(np.mean([al["norm_delta_w"] / al["norm_w"] for al in self.alignments]))

    @property
    def over_random(self) -> Interval:
        """Per seed, the log of W's projection on ΔW's directions over its projection on random ones: mean and 95%
        t-interval over seeds (exp of it is the ratio)."""
        return interval(math.log(al["delta_w"] / al["random"]) for al in self.alignments)

    @property
    def above_random(self) -> int:
        """In how many seeds ΔW's directions catch more of W than random ones do."""
        return sum(al["delta_w"] > al["random"] for al in self.alignments)

    def mean(self, key: str) -> float:
        return float(np.mean([al[key] for al in self.alignments]))


def ratio_text(iv: Interval) -> str:
    """A log-scale interval as a ratio: "2.3 [1.0, 5.1]"."""
    return f"{math.exp(iv.mean):.1f} [{math.exp(iv.low):.1f}, {math.exp(iv.high):.1f}]"


def table7_group(base: GPT, layer: str, label: str, runs: list[LoRARun]) -> Table7Group:
    """Measure one group of runs (one targets and rank, several seeds) on ``layer``."""
    w = base.get_submodule(layer).weight.detach()
    r = runs[0].r
    starts = [initial_factor(base, run.targets, r, run.seed, layer) for run in runs]
    return Table7Group(
        label=label, r=r, seeds=tuple(run.seed for run in runs),
        alignments=tuple(delta_w_alignment(w, run.delta_weight(layer), r=r) for run in runs),
        a_moved=tuple(float(np.linalg.norm(run.factor(layer) - a0) / np.linalg.norm(a0)) for run, a0 in zip(runs, starts, strict=True)),
        test_loss=tuple(run.test_answer_loss for run in runs))


@dataclass(frozen=True)
class Table7Study:
    """Section 4's groups: ``large`` (the JSON task at section 1's rate, r = 4), ``second`` (the same at a second rank),
    ``small`` (the JSON task at a rate that keeps ΔW small next to W) and ``card`` (another task, the same start)."""

    large: Table7Group
    second: Table7Group
    small: Table7Group
    card: Table7Group

    @property
    def groups(self) -> list[Table7Group]:
        return [self.large, self.second, self.small, self.card]

    @cached_property
    def json_minus_card(self) -> Interval:
        """Per seed, the JSON update's ratio to random minus the card update's (same seed, same start A): mean and 95%
        t-interval, on the plain scale."""
        if self.large.seeds != self.card.seeds:
            raise ValueError(f"Pair the card runs with the JSON runs by seed: got {self.card.seeds} and {self.large.seeds}.")
        return interval(j["delta_w"] / j["random"] - c["delta_w"] / c["random"]
                        for j, c in zip(self.large.alignments, self.card.alignments, strict=True))

    def table(self) -> str:
        """One row per group: r, ‖ΔW‖/‖W‖, how far A moved, the test loss, and W on ΔW's directions over random ones."""
        w = max(len(g.label) for g in self.groups)
        ratio_head = "W on ΔW's directions / on random ones"
        lines = [f"{'update':<{w}}  {'r':>2}  {'‖ΔW‖/‖W‖':>8}  {'‖A−A₀‖/‖A₀‖':>11}  {'test loss':>9}  {ratio_head:>38}  {'above in':>8}"]
        for g in self.groups:
            lines.append(f"{g.label:<{w}}  {g.r:>2}  {g.size:>8.2f}  {np.mean(g.a_moved):>11.2f}  {np.mean(g.test_loss):>9.3f}  "
                         f"{ratio_text(g.over_random):>38}  {g.above_random:>3} of {len(g.seeds)}")
        paper = PAPER["table7_projections"][4]
        paper_size = PAPER["table7_norms"]["delta_w"][4] / PAPER["table7_norms"]["w"]
        lines.append(f"{'the paper, GPT-3 Wq':<{w}}  {4:>2}  {paper_size:>8.2f}  {'':>11}  {'':>9}  "
                     f"{paper['delta_w'] / paper['random']:>38.1f}")
        lines.append(f"(one layer's ‖ΔW‖/‖W‖, where section 1's table gives the median over every adapted weight; arithmetic "
                     f"means over {len(self.large.seeds)} seeds, except the ratio: a geometric mean with its 95% interval; "
                     f"the paper's d is 12,288, where a random direction catches far less of W)")
        return "\n".join(lines)

    def projections(self) -> str:
        """The projections themselves, for the large update at both ranks: onto ΔW's, W's own and random directions."""
        return "\n".join(f"r = {g.r:>2}: ‖UᵀWVᵀ‖_F with U, V of ΔW {g.mean('delta_w'):.3f} | of W {g.mean('w'):.3f} | "
                         f"random {g.mean('random'):.3f} | amplification ‖ΔW‖_F / ‖UᵀWVᵀ‖_F {g.mean('amplification'):.2f}"
                         for g in (self.large, self.second))

    def top_part(self) -> str:
        """The large update's size against W's own top-r part, beside the paper's: a measure less tied to the width."""
        ours = float(np.mean([al["norm_delta_w"] / al["w"] for al in self.large.alignments]))  # al["w"]: ‖W's top-r part‖_F
        paper = PAPER["table7_norms"]["delta_w"][4] / PAPER["table7_projections"][4]["w"]
        return (f"‖ΔW‖_F against W's own top-{self.large.r} part, a size less tied to the width: at section 1's rate "
                f"{ours:.2f} (the mean of each seed's own ratio, so not the ratio of the means above), the paper's "
                f"{paper:.2f}: ours is {ours / paper:.1f} times the paper's")

    def __str__(self) -> str:
        diff = self.json_minus_card
        card = ("above 0: the JSON update's directions catch more of W than another task's do" if diff.low > 0 else
                "includes 0: not told apart from another task's update, so the relation to W may come from the layer "
                "and its inputs rather than from the task")
        return (self.table() + "\n\n" + self.projections() + "\n" + self.top_part()
                + f"\n\nJSON's ratio minus the card's, paired by seed: {diff.mean:+.1f} [{diff.low:+.1f}, {diff.high:+.1f}]; "
                f"the 95% interval {card}")

    def finding(self) -> tuple[str, str, str]:
        """The lesson's finding: the claim, our words (led by the smaller update, nearer the paper's regime) and the evidence."""
        big_word, small_word = interval_word(self.large.over_random, "above"), interval_word(self.small.over_random, "above")
        diff = self.json_minus_card
        paper_size = PAPER["table7_norms"]["delta_w"][4] / PAPER["table7_norms"]["w"]
        word = (f"{small_word} against random directions with a smaller update ({self.small.size:.2f} of W; GPT-3's {paper_size:.2f})"
                + (" (the same at section 1's rate)" if small_word == big_word
                   else f" ({big_word} at section 1's rate, where ΔW is {self.large.size:.1f} times W)")
                + f"; {interval_word(diff, 'above')} against another task's update (the stricter baseline)")
        evidence = "; ".join(f"{g.label} (update {g.size:.2f} of W): {ratio_text(g.over_random)} times random, above in "
                             f"{g.above_random} of {len(g.seeds)} seeds" for g in (self.large, self.small))
        evidence += (f"; JSON's minus the card adapter's, paired by seed, {diff.mean:+.1f} [{diff.low:+.1f}, {diff.high:+.1f}]; "
                     "how much ΔW amplifies is not set beside the paper's (the sizes differ)")
        return "Table 7 (Section 7.3), the part a small model can test: ΔW's directions catch more of W than random directions do", \
            word, evidence


def table7_study(base: GPT, layer: str, large: list[LoRARun], second: list[LoRARun], small: list[LoRARun],
                 card: list[LoRARun], small_rate: float) -> Table7Study:
    """Section 4 of notebook 06 on ``layer``: the JSON runs at section 1's rate at r = 4 (``large``) and a second rank
    (``second``), at ``small_rate`` (``small``), and the card task's runs from the same starts (``card``)."""
    return Table7Study(large=table7_group(base, layer, "JSON, section 1's rate", large),
                       second=table7_group(base, layer, "JSON, section 1's rate", second),
                       small=table7_group(base, layer, f"JSON, rate {small_rate:g}", small),
                       card=table7_group(base, layer, "card task, section 1's rate", card))
