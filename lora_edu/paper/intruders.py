"""How notebook 05c reads the intruder dimensions of the runs ``lora_vs_full`` trained: each count set beside the
null of random directions with the update's own singular values (``intruder_null``), the one pair of about the same
size, the count at other thresholds (``intruders_below``), and whether update size alone orders forgetting
(``size_against_forgetting``). Nothing here trains."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..gpt.model import GPT
from .comparison import Comparison, IntruderCounts
from .experiments import Interval, better, interval, random_direction_intruders, verdict_word
from .lora_vs_full import MIN_VAL_EM, SEEDS, SWEEP_SEEDS

__all__ = ["INTRUDER_CLAIM", "IntruderNull", "NULL_DRAWS", "NullRun", "intruder_null", "intruders_below",
           "size_against_forgetting"]


NULL_DRAWS = 50  # random draws per run for the intruder null: the mean of 50 leaves little noise from the draw itself
INTRUDER_CLAIM = "Shuttleworth et al. (abstract): LoRA's weight matrices have intruder dimensions, full fine-tuning's do not"


@dataclass(frozen=True)
class NullRun:
    """One (method, rate) of the intruder null: per seed, the run's own intruder count in Wq and Wv, and the mean count
    of random directions with the same singular values (``random_direction_intruders``)."""

    label: str
    lr: float
    own: list[int]
    random: list[float]

    @property
    def difference(self) -> Interval:
        """Own minus random, paired by seed: mean and 95% t-interval."""
        return interval(own - chance for own, chance in zip(self.own, self.random, strict=True))

    @property
    def side(self) -> str:
        """Where the own count lies against the random one: "fewer than", "more than" or "not told apart from"."""
        diff = self.difference
        return "fewer than" if diff.high < 0 else "more than" if diff.low > 0 else "not told apart from"

    @property
    def silent(self) -> bool:
        """Own and random counts both 0 in every seed: the null has nothing to compare."""
        return max(self.own) == 0 and max(self.random) == 0

    def against_null(self) -> str:
        """The run against its null, in a few words, for the summary's evidence."""
        if self.silent:
            return f"{self.label} at {self.lr:g}: own and random both 0, so the null says nothing"
        return f"{self.label} at {self.lr:g} {self.side} random directions with its singular values ({self.difference.mean:+.1f} per seed)"

    def __str__(self) -> str:
        diff = self.difference
        reading = ("own and random both 0 in every seed: the null says nothing here" if self.silent
                   else f"own minus random {diff.mean:+.1f} [{diff.low:+.1f}, {diff.high:+.1f}], {self.side} the random count")
        return (f"  {self.label} at {self.lr:g}: its own update {self.own}, random directions "
                f"[{', '.join(f'{x:.1f}' for x in self.random)}] (per seed): {reading}")


@dataclass(frozen=True)
class IntruderNull:
    """Notebook 05c's null for the intruder counts, and its one size-controlled pair. ``runs``: lora-all at its chosen
    and its matched rate, full and full-linear at their chosen rates. ``same_size``: full-linear at its chosen rate
    against lora-all at its matched rate, full rank against rank 8 on the same matrices, about as far moved."""

    runs: dict[tuple[str, float], NullRun]
    chosen_lr: dict[str, float]
    same_size: dict[str, float]  # "full-linear" and "lora-all" -> the pair's rates
    sizes: dict[str, float]  # the pair's mean ‖ΔW‖/‖W‖ of the Wq and Wv counted
    forgot: dict[str, Interval]  # the pair's held-out loss, every seed
    draws: int = NULL_DRAWS  # random draws per run

    def run(self, label: str, lr: float | None = None) -> NullRun:
        """One method's null, at its chosen rate by default."""
        return self.runs[(label, self.chosen_lr[label] if lr is None else lr)]

    @property
    def apart(self) -> bool:
        """Every full-linear count of the pair below every lora-all count."""
        return max(self.run("full-linear", self.same_size["full-linear"]).own) < min(self.run("lora-all", self.same_size["lora-all"]).own)

    def pair_lines(self) -> list[str]:
        """The size-controlled pair: its counts, its null, and its forgetting."""
        linear, lora = self.run("full-linear", self.same_size["full-linear"]), self.run("lora-all", self.same_size["lora-all"])
        n = min(len(linear.own), len(lora.own))
        hint = ("a controlled hint that rank matters (one pair, the closest in size, not a designed test)"
                if IntruderCounts.resolvable(n) else "a hint that rank matters, not resolved")
        counted = (f": every full-linear count lies below every lora-all count, which chance alone gives 2 times in "
                   f"{1 / IntruderCounts.chance(n):.0f} or less with these seeds: {hint}" if self.apart else ": the counts overlap")
        nulls = (float(np.mean(linear.random)), float(np.mean(lora.random)))
        most = max(linear.own)
        return [f"about the same size, full rank against rank 8 on the same matrices: full-linear at {linear.lr:g} (Wq and Wv moved "
                f"{self.sizes['full-linear']:.2f} of their size) {linear.own}, lora-all at {lora.lr:g} ({self.sizes['lora-all']:.2f}) "
                f"{lora.own} (per seed){counted}",
                f"the null at those two: random directions with full-linear's singular values give {nulls[0]:.1f}, with lora-all's "
                f"{nulls[1]:.1f}: at about the same size, " + ("the rank-8 spectrum makes far more intruders: a hint that rank "
                                                                "matters, not only size" if nulls[1] > 3 * max(nulls[0], 0.5)
                                                                else "the two spectra make similar counts"),
                f"and forgetting without intruders: full-linear at {linear.lr:g}, with "
                + ("no intruders in Wq and Wv" if most == 0 else f"at most {most} intruder{'s' if most > 1 else ''} per seed in Wq and Wv")
                + f", has held-out loss {self.forgot['full-linear']}, lora-all at {lora.lr:g} {self.forgot['lora-all']}"]

    def lora_reading_otherwise(self) -> list[NullRun]:
        """lora-all's runs at its other rates whose count lies on another side of the null than at its chosen rate."""
        chosen = self.run("lora-all")
        return [run for (label, lr), run in self.runs.items() if label == "lora-all" and lr != chosen.lr and run.side != chosen.side]

    def picture(self) -> str:
        """What the null says about the picture's question (the method, or how far the weights moved?), read at
        lora-all's chosen rate; a lora-all rate where the null reads otherwise is named after it."""
        chosen = self.run("lora-all")
        other = "".join(f"; but at {run.lr:g} its own count is {run.side} the random count, so this reading holds at the chosen "
                        "rate only" for run in self.lora_reading_otherwise())
        return "back to the picture: " + {
            "not told apart from": "LoRA's own count is not told apart from what random directions with its singular values give "
                                   f"(own minus random {chosen.difference.mean:+.1f} [{chosen.difference.low:+.1f}, "
                                   f"{chosen.difference.high:+.1f}]), so in these runs the count follows how far, and in how few "
                                   "directions, the weights moved, more than where they point",
            "fewer than": "the count grows with how far the weights moved, in both LoRA methods; and LoRA's own directions give "
                          "fewer intruders than random ones with the same singular values: they lean toward W's own directions",
            "more than": "LoRA's own directions give more intruders than random ones with the same singular values: they avoid "
                         "W's own directions"}[chosen.side] + other

    def second_look(self) -> str:
        """LoRA's own count beside the null's at its chosen rate, for the summary table."""
        lora = self.run("lora-all")
        return (f"LoRA's own {np.mean(lora.own):.1f} per seed, random directions with the same singular values "
                f"{np.mean(lora.random):.1f}: the count follows the update's shape")

    def summary_word(self, counts: IntruderCounts) -> str:
        """The summary table's short entry: the claim on the raw counts (``raw_word``), then where LoRA's own count lies
        against the null at its chosen rate."""
        side = self.run("lora-all").side
        joint = "and" if side == "more than" else "but"
        return f"{self.raw_word(counts)}; {joint} its own count is {side} what its spectrum gives at random"

    def by_run(self) -> dict[str, tuple[list[int], list[float]]]:
        """Each run's own counts and the null's, per seed, labelled for ``plot_intruder_null``: its rate, and which rate
        it is (chosen on validation, or matched on learning)."""
        def name(label: str, lr: float) -> str:
            which = "chosen" if lr == self.chosen_lr[label] else "matched"
            return f"{label} at {lr:g} ({which})"
        return {name(run.label, run.lr): (run.own, run.random) for run in self.runs.values()}

    @staticmethod
    def raw_word(counts: IntruderCounts) -> str:
        """The claim on the raw counts alone (lora-all against full, ``IntruderCounts.fewer``), at the chosen and the
        matched rates, in words: the short entry of the summary table."""
        raw = {where: verdict_word(counts.fewer(where), "full") for where in ("chosen", "matched")}
        if raw["chosen"] == raw["matched"]:
            return f"{raw['chosen']} on the raw counts"
        return f"{raw['chosen']} at the chosen rates, {raw['matched']} at the matched rates, on the raw counts"

    def finding(self, counts: IntruderCounts, width: int) -> tuple[str, str, str]:
        """Shuttleworth et al.'s first claim (``INTRUDER_CLAIM``) on the raw counts (``counts``, lora-all against full),
        set beside the null: (claim, word, evidence). ``width``: the model's d."""
        seeds, matched_seeds = len(counts.chosen["lora-all"]), len(counts.matched["lora-all"])
        lora, full = self.run("lora-all"), self.run("full")
        lean = {"fewer than": "while LoRA's own directions lean toward W's", "not told apart from": "more than where LoRA points",
                "more than": "and LoRA's directions add to it"}[lora.side]
        lean += "".join(f"; at {run.lr:g} LoRA's own count is {run.side} the random one" for run in self.lora_reading_otherwise())
        word = (self.raw_word(counts) + "; but random directions with LoRA's own singular values give about "
                f"{np.mean(lora.random):.0f} (LoRA's own: {np.mean(lora.own):.0f}), with full's {np.mean(full.random):.0f}: the "
                f"count follows the update's shape, a few large directions, {lean} (ε = 0.5, d = {width}, {seeds} seeds at the "
                f"chosen rates, {matched_seeds} at the matched rates)")
        pair = self.run("full-linear", self.same_size["full-linear"]), self.run("lora-all", self.same_size["lora-all"])
        evidence = (("at the chosen rates every count of full fine-tuning lies below every count of lora-all"
                     if counts.fewer("chosen") == "full" else "at the chosen rates neither method's counts all lie below the other's")
                    + f"; chance alone would give that 2 times in {1 / IntruderCounts.chance(seeds):.0f} with {seeds} seeds"
                    + (f" and 2 in {1 / IntruderCounts.chance(matched_seeds):.0f} with {matched_seeds}" if matched_seeds != seeds else "")
                    + f"; at the chosen rates the updates also differ in size. At about the same size (Wq and Wv moved "
                    f"{self.sizes['full-linear']:.2f} and {self.sizes['lora-all']:.2f}), full-linear {pair[0].own} against lora-all "
                    f"{pair[1].own} per seed: " + ("every full-linear count below every lora-all count" if self.apart
                                                   else "the counts overlap")
                    + ". Against the null: " + "; ".join(run.against_null() for run in self.runs.values()))
        return INTRUDER_CLAIM, word, evidence

    def __str__(self) -> str:
        return "\n".join(["the null: each Wq's and Wv's update with its own singular values in random directions, blind to W's "
                          f"(mean of {self.draws} draws per run):", *map(str, self.runs.values()), "", *self.pair_lines(),
                          self.picture()])


def intruder_null(base: GPT, comparison: Comparison, matched_lr: dict[str, float], draws: int = NULL_DRAWS) -> IntruderNull:
    """Notebook 05c's null (``IntruderNull``): for lora-all at its chosen and matched rates and for full and full-linear at
    their chosen rates, every seed run there, the count that random directions with each update's own singular values
    give (``random_direction_intruders``, the mean of ``draws``)."""
    chosen = {label: comparison.chosen_lr[label] for label in ("lora-all", "full", "full-linear")}
    runs = {}
    for label, lr in (("lora-all", chosen["lora-all"]), ("lora-all", matched_lr["lora-all"]), ("full", chosen["full"]),
                      ("full-linear", chosen["full-linear"])):
        seeds = [seed for seed in SEEDS if (label, lr, seed) in comparison.reports]
        measured = [comparison.measured[(label, lr, seed)] for seed in seeds]
        runs[(label, lr)] = NullRun(label, lr, [m["intruders"] for m in measured],
                                    [random_direction_intruders(base, m["qv_spectra"], seed=seed, draws=draws)
                                     for m, seed in zip(measured, seeds, strict=True)])
    pair = {"full-linear": chosen["full-linear"], "lora-all": matched_lr["lora-all"]}
    return IntruderNull(runs, chosen, pair, {label: comparison.measured_mean(label, "qv_sizes", lr) for label, lr in pair.items()},
                        {label: comparison.forgetting(label, lr) for label, lr in pair.items()}, draws)


def size_against_forgetting(comparison: Comparison) -> str:
    """Does the size of the update alone order forgetting? Among the rates that learned (``MIN_VAL_EM`` on the sweep
    seeds), a line per full method (full, full-linear) on the pairs of rates where it moved its weights less than
    lora-all (mean ‖ΔW‖/‖W‖) yet forgot resolvably more (every seed run at the two rates); the pair with the largest
    gap is named. A last line sets last-block's smallest move, which did not learn the task, beside lora-all's nearest."""
    labels = ("lora-all", "full", "full-linear")
    learned = {label: [lr for lr, em in comparison.grid(label, "val_exact_match", SWEEP_SEEDS).items() if em >= MIN_VAL_EM]
               for label in labels}
    moved = {label: {lr: v for lr, v in comparison.grid(label, "update_ratio").items() if lr in learned[label]} for label in labels}
    forgot = {label: comparison.grid(label, "pretrain_loss") for label in labels}  # rate -> mean held-out loss
    lines = []
    for label in labels[1:]:
        pairs = len(moved[label]) * len(moved["lora-all"])
        crossed = [(f, l_) for f in moved[label] for l_ in moved["lora-all"] if moved[label][f] < moved["lora-all"][l_]
                   and better("lora-all", comparison.forgetting("lora-all", l_), label, comparison.forgetting(label, f), False)
                   == "lora-all"]
        if not crossed:
            lines.append(f"{label} against lora-all: in none of the {pairs} pairs of rates that learned did {label} move its "
                         "weights less and forget resolvably more")
            continue
        f, l_ = max(crossed, key=lambda p, lab=label: forgot[lab][p[0]] - forgot["lora-all"][p[1]])
        as_far = "about as far as" if moved[label][f] > 0.9 * moved["lora-all"][l_] else "less than"  # within a tenth: about as far
        lines.append(f"{label} against lora-all: in {len(crossed)} of {pairs} pairs of rates that learned, update size did not order "
                     f"forgetting: {label} at {f:g} moved its weights {as_far} lora-all at {l_:g} ({moved[label][f]:.2f} vs "
                     f"{moved['lora-all'][l_]:.2f}) and forgot more ({comparison.forgetting(label, f)} vs "
                     f"{comparison.forgetting('lora-all', l_)}, every seed run there)")
    last = {lr: tuple(comparison.mean("last-block", metric, lr, SWEEP_SEEDS) for metric in ("update_ratio", "pretrain_loss"))
            for lr in comparison.arm("last-block").lrs}
    lr_b, (move_b, loss_b) = min(last.items(), key=lambda kv: kv[1][0])  # last-block's smallest move
    near = min(moved["lora-all"], key=lambda lr: abs(moved["lora-all"][lr] - move_b))
    lines.append(f"last-block, left out above because it did not learn the validation animals: at {lr_b:g} it moved {move_b:.2f} with "
                 f"held-out loss {loss_b:.2f}; lora-all at {near:g} moved {moved['lora-all'][near]:.2f} with held-out loss "
                 f"{forgot['lora-all'][near]:.2f}"
                 + (": a move of about the same size, spread over fewer matrices, went with less forgetting here, but last-block "
                    f"learned far less (validation exact match {comparison.mean('last-block', 'val_exact_match', lr_b, SWEEP_SEEDS):.2f})"
                    if loss_b < forgot["lora-all"][near] else ""))
    return "\n".join(lines)


def intruders_below(comparison: Comparison, label: str, thresholds: Sequence[float], seeds: Sequence[int]) -> dict[float, float]:
    """The intruder count at other thresholds: at ``label``'s chosen rate, the top 10 singular vectors of every Wq and
    Wv whose best |cosine| with the pretrained weight's falls below each ε of ``thresholds``, summed over the matrices
    and averaged over ``seeds``."""
    lr = comparison.chosen_lr[label]
    per_seed = [comparison.measured[(label, lr, seed)]["qv_similarity"].values() for seed in seeds]
    return {eps: float(np.mean([sum(s < eps for sims in matrices for s in sims) for matrices in per_seed])) for eps in thresholds}
