"""LoRA+ against plain LoRA, each at its own rate (notebook 06b, section 2a).

Plain LoRA is LoRA+ at ratio 1 (B and A at one rate). ``compare_methods`` sweeps every ratio's rates on the seeds
that choose; ``LoRAPlusStudy`` then picks the ratio on validation by the rates' own rule, names the arms to run again
on fresh seeds, and turns those runs into what the lesson prints: the validation table, the verdicts (the answer loss
paired by seed), what the fresh seeds rule out, the learning curves and the lesson's finding.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import numpy as np

from ..gpt.finetune import Report
from ..maths.intervals import welch_half_width
from .comparison import Comparison, choose_arm, mean_val_answer_loss
from .experiments import LossRatio, ratio_verdict, ratio_winner, runs_loss_ratio, verdict_word

__all__ = ["LoRAPlusStudy", "arm_label", "steps_to_reach"]

PAPER_RATIO = 16  # the default ratio of Hayou et al. (2024)
PAPER_BEST_SPEEDUP = 2.0  # the abstract's best case: up to about twice the fine-tuning speed


def arm_label(ratio: float) -> str:
    """The arm's name: "LoRA" at ratio 1, else "LoRA+ <ratio>"."""
    return "LoRA" if ratio == 1 else f"LoRA+ {ratio:g}"


def speed_word(low: float, high: float) -> str | None:
    """A steps ratio's 95% interval (LoRA+ over plain LoRA) in a word: "faster" wholly below 1, "slower" above, else None."""
    return "faster" if high < 1 else "slower" if low > 1 else None


def median_steps(steps: list[int | None]) -> float:
    """The lower median of the seeds' steps to a target, a seed that never got there (None) counting as the slowest
    (inf): the median ``steps_ratio`` also reads."""
    return statistics.median_low([math.inf if s is None else s for s in steps])


def steps_to_reach(report: Report, target: float, key: str = "val_loss") -> int | None:
    """The first evaluation step at which the run's ``key`` (validation answer loss) was at or below ``target``, or
    None if it never got there."""
    return next((step for step, scores in report.result.evals if scores[key] <= target), None)


@dataclass
class LoRAPlusStudy:
    """Validation's choice of B's ratio, and plain LoRA against LoRA+ on fresh seeds.

    ``sweep``: every arm ("LoRA" and "LoRA+ <ratio>" for each of ``ratios``) at every rate of its grid on
    ``sweep_seeds``, its rates chosen by ``choose_by``, which chooses the ratio too; ``fresh``: the arms of
    ``compared`` again at their chosen rates on seeds that chose nothing (``on_fresh_seeds``), set once they have
    run; ``what``: the measure in words, as the verdicts print it.
    """

    sweep: Comparison
    ratios: tuple[float, ...]
    sweep_seeds: tuple[int, ...]
    what: str
    fresh: Comparison | None = None
    choose_by: str = "exact match"  # the rule that chose the sweep's rates, and now the ratio (``choose_arm``)
    _ratios: dict = field(default_factory=dict, init=False, repr=False)  # (id of fresh, label) -> loss_ratio(label)

    def __post_init__(self) -> None:
        missing = [label for label in self.labels if label not in self.sweep.chosen_lr]
        if missing:
            raise ValueError(f"The sweep has no arm {missing}: name the arms with arm_label(ratio), plain LoRA as ratio 1.")

    @property
    def labels(self) -> list[str]:
        """Plain LoRA first, then every ratio in the order given."""
        return [arm_label(1), *(arm_label(ratio) for ratio in self.ratios)]

    @property
    def chosen(self) -> str:
        """LoRA+ proper (B faster than A): validation's choice among the ratios above 1, by the rates' rule."""
        return choose_arm({label: self.sweep.runs(label) for label, ratio in zip(self.labels[1:], self.ratios, strict=True)
                           if ratio > 1}, self.choose_by)

    @property
    def chosen_with_references(self) -> str:
        """The same rule with plain LoRA (1) and the ratios below 1 included."""
        return choose_arm({label: self.sweep.runs(label) for label in self.labels}, self.choose_by)

    @property
    def compared(self) -> list[str]:
        """The LoRA+ arms run on fresh seeds: validation's choice, then the paper's default 16 and validation's choice
        among every ratio when that is not plain LoRA (further looks)."""
        overall = [] if self.chosen_with_references == arm_label(1) else [self.chosen_with_references]
        return list(dict.fromkeys((self.chosen, arm_label(PAPER_RATIO), *overall)))

    def lead(self, label: str) -> str:
        """How a verdict line on ``label`` starts: nothing for validation's choice of LoRA+, else which further look."""
        if label == self.chosen:
            return ""
        if label == arm_label(PAPER_RATIO):
            return "a further look, at the paper's default: "
        return "a further look, at validation's choice among every ratio: "

    def val_loss(self, label: str) -> tuple[float, float]:
        """The mean validation answer loss of an arm at its chosen rate over the sweep seeds, and its standard error."""
        runs = self.sweep.runs(label)
        return mean_val_answer_loss(runs), statistics.stdev(run.val_answer_loss for run in runs) / len(runs) ** 0.5

    def too_close_to_tell(self) -> list[str]:
        """The arms whose validation answer loss lies within the 95% Welch interval (over the sweep seeds) of the lowest."""
        loss = {label: self.val_loss(label) for label in self.labels}
        best = min(loss, key=lambda label: loss[label][0])
        df = len(self.sweep_seeds) - 1
        return [label for label, (mean, se) in loss.items()
                if mean - loss[best][0] <= welch_half_width([(se**2, df), (loss[best][1] ** 2, df)])]

    def validation_table(self) -> str:
        """One row per arm: its grid, the rate validation chose and the validation scores there; then the choice."""
        rows = [f"{'arm':<9} {'rates of A tried':<27} {'chosen':>6}  {'exact match':>11}  {'answer loss (± s.e.)':>20}"]
        for label in self.labels:
            mean, se = self.val_loss(label)
            edge = "*" if self.sweep.at_grid_edge(label) else " "
            rows.append(f"{label:<9} {' '.join(f'{lr:g}' for lr in self.sweep.arm(label).lrs):<27} "
                        f"{self.sweep.chosen_lr[label]:>6g}{edge} {self.sweep.mean(label, 'val_exact_match'):>11.2f}  "
                        f"{mean:>12.3f} ± {se:.3f}")
        if any(self.sweep.at_grid_edge(label) for label in self.labels):
            rows.append("* the largest or smallest rate tried: a better one may lie outside the grid")
        lowest = min(self.labels, key=lambda label: self.val_loss(label)[0])
        close = self.too_close_to_tell()
        if self.choose_by == "answer loss":
            right = [sum(sum(run.val_right) for run in self.sweep.runs(label)) for label in self.labels]
            asked = len(self.sweep.runs("LoRA")[0].val_right) * len(self.sweep_seeds)
            rows.append(f"the validation answer loss chose every rate and the ratio; exact match is shown beside it, near its "
                        f"floor: {min(right)} to {max(right)} right answers of {asked} at the chosen rates")
        rows += ["", f"validation's choice of LoRA+ (a ratio above 1): {self.chosen}; with plain LoRA and the smaller "
                 f"ratios included: {self.chosen_with_references}",
                 f"lowest validation answer loss: {lowest}; within the 95% interval of it (Welch, {len(self.sweep_seeds)} "
                 f"seeds): " + ("every arm" if len(close) == len(self.labels) else ", ".join(close))]
        return "\n".join(rows)

    def _fresh(self) -> Comparison:
        if self.fresh is None:
            raise ValueError("Run the compared arms on fresh seeds first (on_fresh_seeds) and set study.fresh.")
        return self.fresh

    def loss_ratio(self, label: str) -> LossRatio:
        """The arm's test answer loss over plain LoRA's on the fresh seeds, paired by seed (computed once per fresh set)."""
        fresh = self._fresh()
        key = (id(fresh), label)
        if key not in self._ratios:
            self._ratios[key] = runs_loss_ratio(fresh.runs(label), fresh.runs("LoRA"), paired=True)
        return self._ratios[key]

    def verdicts(self) -> list[str]:
        """On the fresh seeds, each compared arm against plain LoRA: the answer loss (the verdict, for validation's
        choice; a further look, for ratio 16) and exact match (a second measure)."""
        fresh = self._fresh()
        lines = []
        for label in self.compared:
            lines.append(self.lead(label) + ratio_verdict(label, "LoRA", self.loss_ratio(label), self.what, winner_first=False))
            lines.append("  " + fresh.paired_verdict(label, "LoRA"))
        return lines

    def fresh_report(self) -> str:
        """What the fresh seeds say: the verdicts, then the winner's curse line."""
        seeds = sorted({run.seed for run in self._fresh().runs("LoRA")})
        return "\n".join([f"on {len(seeds)} fresh seeds, {seeds[0]} to {seeds[-1]}, each arm at its chosen rate:",
                          *self.verdicts(), self.winners_curse()])

    def fresh_table(self) -> str:
        """On the fresh seeds, one row per arm at its chosen rate of A: the test answer loss and the steps to reach
        ``target()``, each as LoRA+ over plain LoRA with its 95% interval (below 1: LoRA+ better)."""
        fresh, target, past = self._fresh(), self.target(), self.past_the_end()
        seeds = sorted({run.seed for run in fresh.runs("LoRA")})
        rows = [f"on {len(seeds)} fresh seeds ({seeds[0]} to {seeds[-1]}), each arm at its chosen rate of A; LoRA+ over plain "
                "LoRA, below 1 = LoRA+ better:",
                f"{'arm':<9} {'rate':>6}  {'test answer loss':>18}  {'steps to the dashed line':>24}",
                f"{'LoRA':<9} {self.sweep.chosen_lr['LoRA']:>6g}  {'1 (the reference)':>18}  {'1 (the reference)':>24}"]
        for label in self.compared:
            steps, low, high = self.steps_ratio(label, target, past)
            rows.append(f"{label:<9} {self.sweep.chosen_lr[label]:>6g}  {str(self.loss_ratio(label)):>18}  "
                        f"{f'{steps:.2f} [{low:.2f}, {high:.2f}]':>24}")
        return "\n".join(rows)

    def winners_curse(self) -> str:
        """Validation's loss ratio for the chosen arm beside the fresh seeds' interval, and what that interval rules out."""
        ratio = self.loss_ratio(self.chosen)
        on_val = self.val_loss(self.chosen)[0] / self.val_loss("LoRA")[0]
        came_back = ("the interval holds that, so the fresh seeds cannot tell whether validation's edge was luck"
                     if ratio.low <= on_val <= ratio.high else "that lies outside the interval: validation's edge did not come back")
        rules_out = (f"at best {1 - ratio.low:.0%} below plain LoRA's" if ratio.low < 1 else "above plain LoRA's")
        return (f"on the fresh seeds {self.chosen}'s test answer loss is {ratio} times plain LoRA's; on validation it was "
                f"{on_val:.2f} times: {came_back}. "
                f"What the fresh seeds allow: {self.chosen}'s test answer loss is {rules_out}")

    def curves(self, label: str) -> dict[int, list[float]]:
        """Step -> validation answer loss of every fresh seed of one arm, along its training."""
        runs = self._fresh().runs(label)
        return {step: [dict(run.result.evals)[step]["val_loss"] for run in runs] for step, _ in runs[0].result.evals}

    def target(self) -> float:
        """The level to reach, fixed before the fresh seeds ran: plain LoRA's mean validation answer loss at the last
        step of its sweep runs at its chosen rate (the seeds that chose)."""
        return statistics.fmean(run.result.evals[-1][1]["val_loss"] for run in self.sweep.runs("LoRA"))

    def steps_to_target(self) -> str:
        """Per arm, the steps its fresh seeds took to first reach ``target()`` on validation (the median, a seed that
        never got there counting as the slowest, and how many got there), and LoRA+'s median over plain LoRA's: the
        abstract's speed, measured in steps."""
        target, fresh = self.target(), self._fresh()
        last = fresh.runs("LoRA")[0].result.evals[-1][0]
        medians = {}
        lines = [f"steps to reach validation answer loss {target:.3f}, plain LoRA's level at the end of its sweep runs (evaluated "
                 f"every {fresh.runs('LoRA')[0].result.evals[0][0]} steps; a seed that never got there counts as the slowest):"]
        for label in ["LoRA", *self.compared]:
            steps = [steps_to_reach(run, target) for run in fresh.runs(label)]
            reached = [s for s in steps if s is not None]
            middle = median_steps(steps)
            medians[label] = None if middle == math.inf else middle
            lines.append(f"  {label:<9} median {f'{middle:g}' if medians[label] else f'more than {last}'} steps (the lower middle "
                         f"seed in order, number {(len(steps) + 1) // 2} of {len(steps)}), "
                         f"{len(reached)} of {len(steps)} seeds got there")
        past = self.past_the_end()
        lines.append("each LoRA+ median over plain LoRA's (95% interval by redrawing the seeds in pairs; below 1: faster; a seed "
                     f"that never got there counts as step {past}, one evaluation past the end, so such a ratio is a bound):")
        for label in self.compared:
            ratio, low, high = self.steps_ratio(label, target, past)
            word = speed_word(low, high) or "not told apart from plain LoRA"
            bound = " (its median seed never got there: a lower bound)" if medians[label] is None else ""
            lines.append(f"  {label:<9} {'at least ' if bound else ''}{ratio:.2f} [{low:.2f}, {high:.2f}]: {word}{bound}")
        return "\n".join(lines)

    def in_short(self, width: int) -> str:
        """The section's result in one sentence: validation's choice, the verdict on the fresh seeds, and the paper's
        ratio 16 in steps (a further look) when validation chose another."""
        chosen, ratio = self.chosen, self.loss_ratio(self.chosen)
        picked = ("validation could not tell the ratios apart" if len(self.too_close_to_tell()) == len(self.labels)
                  else f"validation preferred {chosen}")
        outcome = {None: "was not shown to learn faster than", chosen: "learned faster than",
                   "LoRA": "learned more slowly than"}[ratio_winner(chosen, "LoRA", ratio)]
        parts = [f"In short, at d = {width}: {picked}, and on the fresh seeds {chosen} {outcome} plain LoRA "
                 f"(its test answer loss {ratio} times plain LoRA's)"]
        paper = self.paper_ratio_steps()
        if paper:
            parts.append(f"{paper[0]} ({paper[1]}; a further look)")
        return "; ".join(parts) + ". " + self.best_case()

    def best_case(self) -> str:
        """The abstract's best case, about ``PAPER_BEST_SPEEDUP`` times as fast (a step ratio of its inverse), set against
        each LoRA+ arm's step ratio on the fresh seeds (``steps_ratio``)."""
        edge = 1 / PAPER_BEST_SPEEDUP
        spans = {label: self.steps_ratio(label, self.target(), self.past_the_end())[1:] for label in self.compared}
        listed = ", ".join(f"{label} [{low:.2f}, {high:.2f}]" for label, (low, high) in spans.items())
        inside = [label for label, (low, _) in spans.items() if low <= edge]
        where = (f"within the interval of {' and '.join(inside)}" if inside
                 else "below every arm's interval: no ratio came near it here")
        return (f"The abstract's best case, about {PAPER_BEST_SPEEDUP:g} times as fast (a step ratio of {edge:g}), lies {where} "
                f"(steps over plain LoRA's: {listed}).")

    def paper_ratio_steps(self) -> tuple[str, str] | None:
        """The paper's ratio in steps, a further look beside validation's choice: ("the paper's ratio 16 took ... times
        plain LoRA's steps", its word), or None when validation chose that ratio or it did not run on fresh seeds."""
        label = arm_label(PAPER_RATIO)
        if label not in self.compared or label == self.chosen:
            return None
        steps, low, high = self.steps_ratio(label, self.target(), self.past_the_end())
        at_least = "at least " if self.median_censored(label, self.target()) else ""
        return (f"the paper's ratio {PAPER_RATIO} took {at_least}{steps:.2f} [{low:.2f}, {high:.2f}] times plain LoRA's steps",
                speed_word(low, high) or "not told apart")

    def median_censored(self, label: str, target: float) -> bool:
        """Whether ``label``'s median fresh seed (the lower median, as ``steps_ratio``'s) never reached ``target``: then its
        step ratio, which counts such a seed one evaluation past the end, is a lower bound."""
        return median_steps([steps_to_reach(run, target) for run in self._fresh().runs(label)]) == math.inf

    def past_the_end(self) -> int:
        """One evaluation after the fresh runs' last: where ``steps_ratio`` puts a seed that never reached the target."""
        evals = self._fresh().runs("LoRA")[0].result.evals
        return evals[-1][0] + evals[0][0]

    def steps_ratio(self, label: str, target: float, past: int, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
        """The median steps of ``label``'s fresh seeds to reach ``target`` over plain LoRA's, and a 95% percentile
        interval from redrawing the seeds with replacement, each seed's two runs together (a seed that never got there
        counts as ``past``)."""
        fresh = self._fresh()
        pairs = [(steps_to_reach(a, target), steps_to_reach(b, target))
                 for a, b in zip(*(sorted(fresh.runs(lab), key=lambda r: r.seed) for lab in (label, "LoRA")), strict=True)]
        steps = np.array([[past if s is None else s for s in pair] for pair in pairs], dtype=np.float64)  # (seeds, 2)
        draws = np.random.default_rng(seed).integers(0, len(steps), (resamples, len(steps)))
        low_middle = (len(steps) - 1) // 2  # the lower median, as the table's medians

        def median(x: np.ndarray) -> np.ndarray:  # (..., seeds) -> (...)
            return np.sort(x, axis=-1)[..., low_middle]

        ratios = median(steps[draws, 0]) / median(steps[draws, 1])
        centre = float(median(steps[:, 0]) / median(steps[:, 1]))
        return centre, float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))

    def finding(self, width: int) -> tuple[str, str, list[str]]:
        """The lesson's finding for ``Findings.add``: the claim, our word (from the answer loss at validation's ratio,
        exact match named where it resolves) and the evidence."""
        fresh = self._fresh()
        chosen = self.chosen
        on_loss = verdict_word(ratio_winner(chosen, "LoRA", self.loss_ratio(chosen)), chosen)
        on_match = fresh.paired_winner(chosen, "LoRA")
        word = on_loss + (f" on the answer loss (exact match, a second measure: {on_match} ahead)" if on_match else "")
        tied = len(self.too_close_to_tell()) == len(self.labels)
        word += (f" on {self.what.removeprefix('test ')}, at the ratio validation chose "
                 f"({chosen.split()[1]}" + (", though it could not tell the ratios apart" if tied else "") + f") and d = {width}")
        paper = self.paper_ratio_steps()
        if paper:
            word += f"; a further look: {paper[0]} ({paper[1]})"
        target = self.target()
        ratio, low, high = self.steps_ratio(chosen, target, self.past_the_end())
        steps = (f"a further look at speed, the steps to reach validation answer loss {target:.3f}: {chosen} took {ratio:.2f} "
                 f"[{low:.2f}, {high:.2f}] times plain LoRA's ({speed_word(low, high) or 'not told apart'}, a hint, not the verdict)")
        evidence = [line.strip() for line in self.verdicts()] + [steps, self.winners_curse(),
                                                                 f"{len(next(iter(fresh.reports.values())).test_right)} test "
                                                                 f"animals, {len(fresh.runs('LoRA'))} fresh seeds paired by seed",
                                                                 "a measurement at this width, not a test of the paper at its scale"]
        return "Hayou et al. 2024 (abstract): LoRA+ learns faster at the same cost", word, evidence
