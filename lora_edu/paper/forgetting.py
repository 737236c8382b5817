"""How notebook 05b reads the comparison that ``lora_vs_full`` trained: what each method learned and forgot, one
verdict a line. Section 2a's matched pair (``matched_report``, ``caught_up``), section 2b's look at the embeddings
(``embedding_look``), the test answer loss as a second measure of learning (``answer_loss_look``), appendix C's
format split and fact probe, section 3's replay (``replay_look``), and the summary (``in_short``, ``summary_columns``).
Nothing here trains: every function reads runs already made."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..gpt.data import World
from ..gpt.evaluate import fact_recall, lm_loss
from ..gpt.finetune import Report
from ..gpt.model import GPT
from ..gpt.pretrain import pretraining_eval_rows
from .comparison import Comparison, LearningForgetting, PairedDifference, evaluation_at, paired_difference, paired_verdict, signed
from .experiments import Interval, LossRatio, better, interval, ratio_verdict, ratio_winner, runs_loss_ratio, verdict, verdict_word
from .lora_vs_full import SEEDS, SWEEP_SEEDS, at_matched_learning

__all__ = ["ANSWER_LOSS_PAIRS", "AnswerLossLook", "EmbeddingLook", "FACT_COLUMNS", "FORGETS_LESS", "FactProbe", "HELD_OUT_PARTS",
           "LEARNS_LESS", "ONE_CURVE", "REPLAYED", "ReplayLook", "answer_loss_look", "best_checkpoint_look", "caught_up",
           "embedding_look", "fact_line_losses", "fact_line_means", "fact_probe", "fact_table", "facts_kept",
           "forgets_less_words", "forgetting_finding", "format_free", "format_share", "format_table", "in_short",
           "matched_report", "matching_grid", "replay_look", "rise_share", "summary_columns", "tied_forgetting", "toward_uniform"]


def matching_grid(comparison: Comparison, labels: Sequence[str], steps: int) -> str:
    """What section 2a's matching reads: each rate's mean validation exact match after ``steps`` steps, over the sweep
    seeds, one line per method."""
    lines = [f"mean validation exact match after {steps} steps, over the {len(SWEEP_SEEDS)} sweep seeds (what the matching reads):"]
    lines += [f"  {label:<11} " + "   ".join(f"{lr:g}: {comparison.along(label, 'val', lr, SWEEP_SEEDS)[steps]:.2f}"
                                          for lr in comparison.arm(label).lrs) for label in labels]
    return "\n".join(lines)


def matched_report(comparison: Comparison, matched: LearningForgetting) -> str:
    """Section 2a's result at the matched rates: the pair and its forgetting verdict, the test animals' exact match there
    (paired by animal; used in no choice) and the validation answer loss, which the matching did not equalise."""
    when = "at each run's best checkpoint" if matched.step is None else f"after all {matched.step} steps"
    test = paired_difference(*(comparison.rights(label, lr) for label, lr in matched.matched_lr.items()))
    return "\n".join([f"at matched learning, every run read {when} (rates matched on {len(SWEEP_SEEDS)} seeds, forgetting "
                      f"compared on {len(SEEDS)}; a held-out loss reads mean ± the half-width of its 95% interval):", str(matched),
                      "the test animals (used in no choice; each run's best checkpoint), at the matched rates: "
                      + paired_verdict(*matched.matched_lr, test, "test exact match"), matched.surety()])


def best_checkpoint_look(comparison: Comparison, world: World, labels: tuple[str, str]) -> str:
    """Section 2a's matching again, read at each run's best checkpoint instead of after its last step: the verdict,
    with the mean step at which the matched rates' runs kept their checkpoints."""
    kept = at_matched_learning(comparison, world, labels, None)
    when = ", ".join(f"{comparison.mean(label, 'best_step', lr):.0f} steps for {label} at {lr:g}" for label, lr in kept.matched_lr.items())
    return f"a second look, at each run's best checkpoint (on average after {when}): {kept.verdict}"


def caught_up(comparison: Comparison, matched: LearningForgetting, steps: int) -> str:
    """Section 2a's learning-forgetting figure read at one height. The method that had learned less by the last step
    sets the level (its mean validation answer loss after ``steps`` steps); the first line gives the other's first
    evaluation at that level or better, and both held-out losses (means of all seeds at each matched rate). The second
    reads it seed by seed: each run of the other method at its own first evaluation at that level, against the first
    method's runs after ``steps`` steps, by the 95% Welch interval of the difference (``verdict``)."""
    final = {label: comparison.along(label, "val_loss", lr)[steps] for label, lr in matched.matched_lr.items()}
    behind = max(final, key=final.get)
    ahead = next(label for label in final if label != behind)
    lr_ahead, lr_behind = matched.matched_lr[ahead], matched.matched_lr[behind]
    learned = comparison.along(ahead, "val_loss", lr_ahead)
    step = min(s for s, loss in learned.items() if loss <= final[behind])
    held = {label: comparison.along(label, "held_out", lr) for label, lr in matched.matched_lr.items()}
    means = (f"{behind} ended at validation answer loss {final[behind]:.3f}, with held-out loss {held[behind][steps]:.2f}; "
             f"{ahead} first reached that level at step {step}, with held-out loss {held[ahead][step]:.2f} (means of all "
             f"{len(comparison.runs(behind, lr_behind))} seeds at each matched rate)")
    runs = comparison.runs(ahead, lr_ahead)
    reached = {}  # seed -> its held-out loss at its own first evaluation at the level
    for run in runs:
        at = [s for s, loss in comparison.along(ahead, "val_loss", lr_ahead, [run.seed]).items() if loss <= final[behind]]
        if at:
            reached[run.seed] = evaluation_at(run, "held_out", min(at))
    if len(reached) < 2:
        return f"{means}\nseed by seed: {len(reached)} of {len(runs)} runs of {ahead} reached that level, too few for an interval"
    return (f"{means}\nseed by seed, each {ahead} run at its own first evaluation at that level ({len(reached)} of {len(runs)} "
            f"got there), against {behind} after {steps} steps: "
            + verdict(ahead, interval(reached.values()), behind, comparison.forgetting(behind, lr_behind, step=steps), False,
                      "held-out loss at equal learning"))


def tied_forgetting(comparison: Comparison, label: str, other: str) -> str:
    """For each rate of ``label`` that validation could not tell from its chosen one (``too_close_to_call`` on the sweep
    seeds): its held-out loss, set against ``other``'s at its chosen rate. Empty when there is none."""
    lines = []
    for lr in comparison.too_close_to_call(label, SWEEP_SEEDS):
        if lr != comparison.chosen_lr[label]:
            tied, theirs = comparison.forgetting(label, lr), comparison.forgetting(other)
            side = better(label, tied, other, theirs, False)
            lines.append(f"{label} at {lr:g} (too close to call with the chosen rate on validation): held-out loss {tied}, "
                         f"{len(comparison.runs(label, lr))} seeds; against {other} at its chosen rate ({theirs}): "
                         + (f"{side} forgets less" if side else "not resolved"))
    return "\n".join(lines)


def toward_uniform(comparison: Comparison, label: str, base_loss: float, vocab_size: int) -> str:
    """How far ``label``'s held-out loss went from the base model's (``base_loss``) toward a uniform guess's, ln
    ``vocab_size``: at its chosen rate, and at each rate validation could not tell from it (means over all seeds)."""
    uniform = math.log(vocab_size)

    def share(loss: float) -> str:
        return f"{(loss - base_loss) / (uniform - base_loss):.0%} of the way"

    def seeds(lr: float) -> str:  # every seed run at the rate, where the grid table reads the sweep seeds alone
        return f"{len(comparison.runs(label, lr))} seeds"

    chosen = comparison.chosen_lr[label]
    loss = comparison.mean(label, "pretrain_loss")
    lines = [f"{label} at its chosen rate: held-out loss {loss:.2f} ({seeds(chosen)}), {share(loss)} from the base model's "
             f"{base_loss:.2f} to a uniform guess's {uniform:.2f} (ln {vocab_size})"]
    for lr in comparison.too_close_to_call(label, SWEEP_SEEDS):
        if lr != chosen:
            tied = comparison.mean(label, "pretrain_loss", lr)
            lines.append(f"  at {lr:g}, which validation could not tell apart from it: {tied:.2f} ({seeds(lr)}), {share(tied)}")
    return "\n".join(lines)


FACT_COLUMNS = {("home", False): "any word: homes", ("food", False): "foods", ("home", True): "among the answers: homes",
                ("food", True): "foods"}  # (attribute, among the answers) -> the column's heading


def facts_kept(comparison: Comparison, label: str, lr: float) -> list[list[float]]:
    """(seeds, test animals): the share of each test animal's two facts (home and food) that one arm's runs at ``lr``
    still reach from the old phrasing, choosing among the answers: 0, 0.5 or 1 per animal."""
    return [[(home + food) / 2 for home, food in zip(m["facts"][("home", True)], m["facts"][("food", True)], strict=True)]
            for m in comparison.measures(label, lr)]


def fact_table(base: GPT, world: World, comparison: Comparison, rates: dict[str, float]) -> str:
    """Both fact probes on the test animals: the base model's row, then each arm at its rate in ``rates`` (the mean over
    its seeds and the animals), one column per attribute and probe (``FACT_COLUMNS``)."""
    rows = {"base model": [fact_recall(base, world, a, world.test_animals, among) for a, among in FACT_COLUMNS]}
    for label, lr in rates.items():
        runs = [m["facts"] for m in comparison.measures(label, lr)]
        rows[f"{label} at {lr:g}"] = [float(np.mean([run[key] for run in runs])) for key in FACT_COLUMNS]
    widths = [max(6, len(head)) for head in FACT_COLUMNS.values()]
    lines = [f"{'':<24} " + " ".join(f"{head:>{w}}" for head, w in zip(FACT_COLUMNS.values(), widths, strict=True))]
    lines += [f"{name:<24} " + " ".join(f"{v:>{w}.2f}" for v, w in zip(row, widths, strict=True)) for name, row in rows.items()]
    return "\n".join(lines)


@dataclass(frozen=True)
class FactProbe:
    """Full fine-tuning against lora-all on facts kept (``facts_kept``), paired by animal: at the rates matched on
    learning, at the rates validation chose, and with lora-all at each rate validation could not tell apart."""

    matched: PairedDifference
    chosen: PairedDifference
    tied: dict[float, PairedDifference]  # lora-all's rate -> full at its chosen rate minus lora-all there
    chosen_lr: float  # lora-all's chosen rate

    @property
    def matched_word(self) -> str:
        """The paper's side (LoRA keeps more) at the matched rates, in one word."""
        return verdict_word(self.matched.winner("full", "lora-all"), "lora-all")

    @property
    def chosen_word(self) -> str:
        """The same at the chosen rates; "not resolved" when lora-all's tied rates do not all give one answer."""
        winners = {diff.winner("full", "lora-all") for diff in self.tied.values()}
        return verdict_word(winners.pop(), "lora-all") if len(winners) == 1 else "not resolved (it hangs on a tie-break)"

    def line(self, diff: PairedDifference) -> str:
        return paired_verdict("full", "lora-all", diff, "facts kept")

    def findings(self) -> dict[str, tuple[str, str]]:
        """What the probe adds to the summary's forgetting rows: row key -> (its word, its evidence)."""
        tied = ", ".join(f"{lr:g} {diff}" for lr, diff in self.tied.items())
        return {"learning-forgetting curve": (f"on the fact probe, which chooses among answers as the paper's benchmarks do, "
                                              f"{self.matched_word}", "Fact probe at the matched rates: " + self.line(self.matched)),
                "forgets less than full": (f"on the fact probe against full, {self.chosen_word}",
                                           "Fact probe at the chosen rates: " + self.line(self.chosen) + "; at each of "
                                           "lora-all's rates validation could not tell apart: " + tied)}

    def __str__(self) -> str:
        lines = ["facts kept (among the answers, homes and foods), at the matched rates: " + self.line(self.matched)]
        if self.matched.low > 0:
            lines.append("so the gap in held-out loss is not only format leaking: after full fine-tuning, the old phrasing "
                         "also reaches more of the facts")
        lines.append("facts kept at the chosen rates: " + self.line(self.chosen))
        lines += [f"  with lora-all at {lr:g} instead (validation could not tell it from {self.chosen_lr:g}): " + self.line(diff)
                  for lr, diff in self.tied.items() if lr != self.chosen_lr]
        return "\n".join(lines)


def fact_probe(comparison: Comparison, matched_lr: dict[str, float]) -> FactProbe:
    """Notebook 05b's fact probe: full against lora-all on facts kept at ``matched_lr`` (the rates matched on learning),
    at the chosen rates, and at each of lora-all's rates that validation could not tell from its choice."""
    chosen = {label: comparison.chosen_lr[label] for label in ("full", "lora-all")}
    full = facts_kept(comparison, "full", chosen["full"])
    return FactProbe(
        matched=paired_difference(*(facts_kept(comparison, label, matched_lr[label]) for label in ("full", "lora-all"))),
        chosen=paired_difference(full, facts_kept(comparison, "lora-all", chosen["lora-all"])),
        tied={lr: paired_difference(full, facts_kept(comparison, "lora-all", lr))
              for lr in comparison.too_close_to_call("lora-all", SWEEP_SEEDS)},
        chosen_lr=chosen["lora-all"])


def fact_line_losses(comparison: Comparison, label: str, lr: float) -> list[tuple[float, float]]:
    """Per seed, one arm's held-out loss on the fact lines and the part of it spent on the JSON format's own tokens
    (``measure_run``'s ``held_out_parts["facts"]`` and ``held_out_format``)."""
    return [(m["held_out_parts"]["facts"], m["held_out_format"]) for m in comparison.measures(label, lr)]


def fact_line_means(comparison: Comparison, label: str, lr: float) -> tuple[float, float]:
    """``fact_line_losses`` averaged over the seeds: the loss on the fact lines and its part on the JSON tokens."""
    runs = fact_line_losses(comparison, label, lr)
    return float(np.mean([t for t, _ in runs])), float(np.mean([s for _, s in runs]))


def rise_share(losses: tuple[float, float], base_losses: tuple[float, float]) -> float:
    """The format's share of the rise in the fact lines' loss over the base model's: the rise of the part on the JSON
    tokens over the rise of the whole (``losses`` and ``base_losses``: the whole and that part; NaN with no rise)."""
    (total, spent), (base_total, base_spent) = losses, base_losses
    return (spent - base_spent) / (total - base_total) if total > base_total else float("nan")


def format_table(comparison: Comparison, base_losses: tuple[float, float], rates: Sequence[tuple[str, float]]) -> str:
    """The held-out fact lines' loss split in two, for the base model (``base_losses``: its loss and format part, from
    ``lm_loss_parts``) and each (arm, rate) of ``rates`` (means over its seeds): the part spent on the JSON format's
    tokens, the rest, and the format's share of the rise over the base model."""
    lines = [f"{'':<22} {'loss on fact lines':>18} {'= on JSON tokens':>16} {'+ the rest':>10} {'format share of the rise':>25}"]
    total, spent = base_losses
    lines.append(f"{'base model':<22} {total:>18.3f} {spent:>16.3f} {total - spent:>10.3f}")
    shares = {}
    for label, lr in rates:
        t, s = fact_line_means(comparison, label, lr)
        shares[f"{label} at {lr:g}"] = rise_share((t, s), base_losses)
        lines.append(f"{f'{label} at {lr:g}':<22} {t:>18.3f} {s:>16.3f} {t - s:>10.3f} {shares[f'{label} at {lr:g}']:>25.0%}")
    most = {name: share for name, share in shares.items() if share > 0.5}
    listed = {what: ", ".join(f"{name} {share:.0%}" for name, share in part.items())
              for what, part in (("most", most), ("under", {n: s for n, s in shares.items() if n not in most}))}
    lines.append(f"the format is most of every rise over the base model: {listed['most']}" if len(most) == len(shares) else
                 f"the format is under half of every rise over the base model: {listed['under']}" if not most else
                 f"the format is most of the rise over the base model for {listed['most']}; under half for {listed['under']}")
    return "\n".join(lines)


def format_free(comparison: Comparison, rates: dict[str, float], where: str) -> tuple[str, str]:
    """Full against lora-all on the held-out fact lines' loss without the part spent on the JSON format (per seed),
    each at its rate in ``rates`` (``where`` names them: "chosen", "matched"): the verdict line, and its word for the
    paper's side, lora-all forgetting less ("agrees", "disagrees" or "not resolved")."""
    rest = {label: interval(total - spent for total, spent in fact_line_losses(comparison, label, rates[label]))
            for label in ("full", "lora-all")}
    line = verdict("full", rest["full"], "lora-all", rest["lora-all"], False,
                   f"the fact lines' loss without the format, at the {where} rates, each run's kept checkpoint")
    return line, verdict_word(better("full", rest["full"], "lora-all", rest["lora-all"], False), "lora-all")


def format_share(comparison: Comparison, base_losses: tuple[float, float], label: str, lr: float) -> float:
    """How much of one arm's rise in the fact lines' loss over the base model's is the format: the rise of the part
    spent on the JSON tokens over the rise of the whole (means over seeds; NaN when the loss did not rise)."""
    return rise_share(fact_line_means(comparison, label, lr), base_losses)


LEARNS_LESS = "Biderman et al. (abstract; Section 4.1): LoRA learns less than full fine-tuning"
FORGETS_LESS = "Biderman et al. (title; Section 4.2): LoRA forgets less than full fine-tuning"
ONE_CURVE = "Biderman et al. (Section 4.3): runs of both seem to lie on one learning-forgetting curve, LoRA lower on it"


ANSWER_LOSS_PAIRS = {  # key -> (A, B, the rates, what the pair asks): the pairs whose test answer losses 05b sets side by side
    "chosen": ("lora-all", "full", "chosen", ""),
    "matched": ("lora-all", "full", "matched", "where both learned as much on exact match"),
    "full-linear": ("lora-all", "full-linear", "chosen", "the same matrices: rank 8 against full rank"),
    "embedding": ("full", "full-linear", "chosen", "what training the embedding adds"),
}


@dataclass(frozen=True)
class AnswerLossLook:
    """Notebook 05b's second measure of learning: the test answer loss of the pairs in ``ANSWER_LOSS_PAIRS``, A's over
    B's (``runs_loss_ratio``: geometric means over seeds; a 95% interval with seeds and test animals redrawn)."""

    ratios: dict[str, LossRatio]  # key of ANSWER_LOSS_PAIRS -> A's test answer loss over B's

    def winner(self, key: str) -> str | None:
        """The method of the pair with the lower test answer loss, when the interval decides; else None."""
        a, b, _, _ = ANSWER_LOSS_PAIRS[key]
        return ratio_winner(a, b, self.ratios[key])

    @property
    def winners(self) -> dict[str, str | None]:
        """"full" and "full-linear": lora-all against it, at the chosen rates; "embedding": full against full-linear."""
        return {"full": self.winner("chosen"), "full-linear": self.winner("full-linear"), "embedding": self.winner("embedding")}

    @property
    def lines(self) -> dict[str, str]:
        """Each pair's verdict as a line (``ratio_verdict``), for the evidence."""
        return {key: ratio_verdict(a, b, self.ratios[key]) for key, (a, b, _, _) in ANSWER_LOSS_PAIRS.items()}

    @property
    def embedding_explains(self) -> bool:
        """full learned more surely than lora-all, full-linear not told apart from it, and full beats full-linear: the
        edge goes with the weights full trains beyond lora-all's matrices, the shared embedding among them."""
        return self.winners["full"] == "full" and self.winners["full-linear"] is None and self.winners["embedding"] == "full"

    def finding(self, comparison: Comparison, width: int) -> tuple[str, str, str]:
        """Row "learns less" of the summary: (claim, word, evidence), test exact match first, the answer loss a second look."""
        em = {other: verdict_word(comparison.paired_winner("lora-all", other), other) for other in ("full", "full-linear")}
        loss = {other: verdict_word(self.winners[other], other) for other in ("full", "full-linear")}
        word = (f"on test exact match (near its ceiling), {em['full']} against full and {em['full-linear']} against full-linear (the "
                f"same matrices); on the answer loss, a second look, {loss['full']} against full and {loss['full-linear']} against "
                "full-linear" + ("; consistent with the weights full trains beyond lora-all's matrices, the embedding among them: "
                                 "full also beats full-linear on it" if self.embedding_explains else "") + f"; at d = {width}")
        evidence = (f"{comparison.paired_verdict('lora-all', 'full')}; {comparison.paired_verdict('lora-all', 'full-linear')}. A second "
                    f"look, on test answer loss: {self.lines['chosen']}; {self.lines['full-linear']}. Full also trains the token "
                    "embedding, which this GPT's output layer reuses: it may make answers more confident without making more of "
                    f"them right. Full against full-linear, which trains no embedding: {self.lines['embedding']}")
        return LEARNS_LESS, word, evidence

    def __str__(self) -> str:
        lines = ["the test answer loss, one method's over the other's (the lower one on top where the interval decides; 95% "
                 "interval, seeds and test animals redrawn):",
                 f"{'':<24} {'rates':<8} {'loss ratio':<19} verdict"]
        for key, (a, b, rates, what) in ANSWER_LOSS_PAIRS.items():
            ratio, winner = self.ratios[key], self.winner(key)
            if winner == b:  # the lower loss on top, so a resolved ratio reads below 1
                a, b, ratio = b, a, ratio.inverse()
            said = f"{winner} learned the answers more surely" if winner else "not resolved"
            lines.append(f"{a + ' / ' + b:<24} {rates:<8} {str(ratio):<19} {said}" + (f" ({what})" if what else ""))
        return "\n".join(lines)


def answer_loss_look(comparison: Comparison, matched_lr: dict[str, float]) -> AnswerLossLook:
    """``AnswerLossLook`` of notebook 05b's runs: at the chosen rates, and at ``matched_lr`` (lora-all's and full's)."""
    def runs(label: str, where: str) -> list[Report]:
        return comparison.runs(label, matched_lr[label] if where == "matched" else None)

    return AnswerLossLook({key: runs_loss_ratio(runs(a, where), runs(b, where))
                           for key, (a, b, where, _) in ANSWER_LOSS_PAIRS.items()})


@dataclass(frozen=True)
class EmbeddingLook:
    """Notebook 05b's section 2b: lora-all against full-linear (the same matrices, full rank) at matched learning, and
    full against full-linear (what training the embedding, norms and biases adds). ``full``: section 2a's lora-all
    against full."""

    full: LearningForgetting
    linear: LearningForgetting
    between: LearningForgetting
    moved: dict[str, float]  # lora-all's and full-linear's mean ‖ΔW‖/‖W‖ at their matched rates

    @property
    def words(self) -> dict[str, str]:
        """Against one shared curve (``against_one_curve``), in a word: against "full" and against "full-linear"."""
        return {name: pair.against_one_curve("lora-all")[0] for name, pair in (("full", self.full), ("full-linear", self.linear))}

    def route(self) -> str:
        """What became of full's edge over lora-all once the embeddings, norms and biases are frozen."""
        return {"full-linear": "remains: full-linear forgets less too", None: "is no longer resolved",
                "lora-all": "reverses: lora-all forgets less"}[self.linear.less_forgetful]

    def answer(self) -> str:
        """The notebook's question in two sentences, read from the verdicts at matched learning: does lora-all forget
        less than full where both learned as much, and does the rank decide it (lora-all against full-linear)?"""
        loss = self.full.forgetting
        first = {"full": "No: where both learned as much (on validation exact match), full fine-tuning forgot less than lora-all",
                 "lora-all": "Yes: where both learned as much (on validation exact match), lora-all forgot less than full fine-tuning",
                 None: "Not resolved: where both learned as much (on validation exact match), our runs could not tell lora-all's "
                       "forgetting from full fine-tuning's"}[self.full.less_forgetful]
        second = {None: "Is it the rank? Against full-linear, which trains lora-all's own matrices at full rank, the two could "
                        "not be told apart, so our runs do not say",
                  "full-linear": "Is it the rank? full-linear, lora-all's own matrices at full rank, also forgot less than "
                                 "lora-all: here the low-rank update itself goes with more forgetting",
                  "lora-all": "Is it the rank? lora-all forgot less than full-linear, its own matrices at full rank: the "
                              "low-rank update itself goes with less forgetting here"}[self.linear.less_forgetful]
        surely = self.full.answer_loss
        caveat = ""
        if len(surely) == 2 and self.full.less_forgetful is not None:
            surer, other = sorted(surely, key=surely.get)
            caveat = (f" Exact match was near its ceiling, and {surer}'s validation answer loss was lower ({surely[surer]:.3f} "
                      f"against {surely[other]:.3f}): 'as much' holds on exact match only, and "
                      + ("the one that forgot less also learned the answers more surely."
                         if surer == self.full.less_forgetful else "the one that forgot less learned the answers less surely."))
        return (f"{first} on the held-out loss ({loss['full']} against {loss['lora-all']}, after all {self.full.step} steps; "
                f"part of that loss is the JSON format leaking in, appendix C).{caveat} {second}.")

    def curve_finding(self, width: int, val_animals: int) -> tuple[str, str, str]:
        """Row "learning-forgetting curve" of the summary: (claim, word, evidence). ``width``: the model's d."""
        why = {name: pair.against_one_curve("lora-all")[1] for name, pair in (("full", self.full), ("full-linear", self.linear))}
        forgot = {(label, pair.matched_lr[label]): pair.forgetting[label] for pair in (self.full, self.linear) for label in pair.matched_lr}
        return (ONE_CURVE,
                f"{self.words['full-linear']} against full-linear (the same matrices), {self.words['full']} against full (which also "
                f"trains the embedding), at matched learning, at d = {width}",
                f"at one matched point of a coarse grid (matched on {len(SWEEP_SEEDS)} seeds and {val_animals} validation animals, "
                f"compared on {len(SEEDS)} seeds, every run after all {self.full.step} steps), held-out loss: "
                + "; ".join(f"{label} at {lr:g} {iv}" for (label, lr), iv in forgot.items())
                + f". Against full: {why['full']}. Against full-linear: {why['full-linear']}")

    def __str__(self) -> str:
        b = self.between
        return "\n".join([
            f"lora-all against full-linear (the same matrices, full rank), at matched learning, after all {self.linear.step} steps:",
            str(self.linear),
            "how far each moved its weights there, ‖ΔW‖/‖W‖: " + ", ".join(f"{label} {v:.2f}" for label, v in self.moved.items()),
            "",
            "full against full-linear at matched learning (what training the embedding, norms and biases adds), at "
            + ", ".join(f"{label} {lr:g}" for label, lr in b.matched_lr.items()) + f": {b.verdict}; validation answer loss "
            + ", ".join(f"{label} {loss:.3f}" for label, loss in b.answer_loss.items()),
            "",
            f"full's edge over lora-all at matched learning (held-out loss {self.full.forgetting['full'].mean:.2f} vs "
            f"{self.full.forgetting['lora-all'].mean:.2f}), set against full-linear instead, which is full with the embeddings, "
            f"norms and biases frozen: it {self.route()}"])


def embedding_look(comparison: Comparison, world: World, full: LearningForgetting, steps: int) -> EmbeddingLook:
    """``EmbeddingLook``: section 2a's matching rule (``at_matched_learning``) for lora-all against full-linear and for
    full against full-linear, beside ``full`` (lora-all against full)."""
    linear = at_matched_learning(comparison, world, ("lora-all", "full-linear"), steps)
    between = at_matched_learning(comparison, world, ("full", "full-linear"), steps)
    moved = {label: comparison.mean(label, "update_ratio", lr) for label, lr in linear.matched_lr.items()}
    return EmbeddingLook(full, linear, between, moved)


def forgets_less_words(comparison: Comparison) -> dict[str, str]:
    """lora-all against "full" and against "full-linear" on the held-out loss, each at its chosen rate, in a word (the
    paper's side: lora-all forgets less)."""
    return {other: verdict_word(better("lora-all", comparison.forgetting("lora-all"), other, comparison.forgetting(other), False),
                                "lora-all") for other in ("full", "full-linear")}


def forgetting_finding(comparison: Comparison, width: int) -> tuple[str, str, str]:
    """Row "forgets less" of the summary: lora-all against full-linear and full on the held-out loss, each at its chosen
    rate (``forgets_less_words``); the rates validation exact match could not tell apart are named (another could give
    another verdict)."""
    labels = ("lora-all", "full", "full-linear")
    at_chosen = forgets_less_words(comparison)
    tied = "; ".join(f"{label} {', '.join(f'{lr:g}' for lr in comparison.too_close_to_call(label, SWEEP_SEEDS))}"
                     for label in labels if len(comparison.too_close_to_call(label, SWEEP_SEEDS)) > 1)
    return (FORGETS_LESS,
            f"on the held-out loss, {at_chosen['full-linear']} against full-linear (the same matrices), {at_chosen['full']} against "
            f"full, each at its chosen rate, at d = {width}",
            "held-out loss at the chosen rates: " + "; ".join(f"{label} at {comparison.chosen_lr[label]:g} {comparison.forgetting(label)}"
                                                               for label in labels)
            + (f". Rates validation exact match could not tell apart, where its answer loss chose: {tied} (another of them could "
               "give another verdict: appendix A lists them)" if tied else ""))


REPLAYED = ("full", "lora-all")  # the methods notebook 05b retrains with replay, at their chosen rates
HELD_OUT_PARTS = ("facts", "filler")


@dataclass(frozen=True)
class ReplayLook:
    """Notebook 05b's section 3: each method in ``REPLAYED`` with and without replay, at its chosen rate. The held-out
    loss, and its two parts (``HELD_OUT_PARTS``: the fact lines, rehearsed by replay in other phrasings, and the filler
    lines, about no animal) beside the base model's."""

    forgetting: dict[str, Interval]  # "full", "full + replay", ... -> held-out loss over every seed
    parts: dict[str, dict[str, Interval]]  # the same labels -> part -> held-out loss on it, over the sweep seeds
    base_loss: float
    base_parts: dict[str, float]

    @property
    def helped(self) -> list[str]:
        """The methods whose held-out loss replay lowered, resolvably."""
        return [label for label in REPLAYED if better(f"{label} + replay", self.forgetting[f"{label} + replay"], label,
                                                      self.forgetting[label], False) == f"{label} + replay"]

    @property
    def below(self) -> list[str]:
        """The methods whose mean held-out loss with replay ended below the base model's."""
        return [label for label in REPLAYED if self.forgetting[f"{label} + replay"].mean < self.base_loss]

    def below_base(self, label: str) -> list[str]:
        """The parts on which ``label`` with replay lies below the base model, the whole 95% interval."""
        return [part for part in HELD_OUT_PARTS if self.parts[f"{label} + replay"][part].high < self.base_parts[part]]

    def only_just(self, label: str) -> list[str]:
        """Of ``below_base``, the parts whose interval's upper end lies within 1% of the base model's."""
        return [part for part in self.below_base(label) if self.parts[f"{label} + replay"][part].high > 0.99 * self.base_parts[part]]

    def loss_line(self) -> str:
        """The held-out loss with replay against the base model's."""
        losses = ", ".join(f"{self.forgetting[f'{label} + replay'].mean:.3f} for {label}" for label in REPLAYED)
        return (f"with replay, held-out loss {losses}"
                + f"; the base model's {self.base_loss:.3f}" + (f". Below it: {' and '.join(self.below)}. Why? The next cell"
                                                                 if self.below else ""))

    def in_short(self) -> str:
        """What replay did, for the notebook's summary (its cost on the task is the caller's to add)."""
        below = self.below
        where = ""
        if below:
            filler = all("filler" in self.below_base(label) for label in below)
            just = any("filler" in self.only_just(label) for label in below)
            where = (f"; {' and '.join(below)} ended below the base model's on the fact lines, "
                     + (f"and on the filler lines too{' (only just)' if just else ''}" if filler else "but not on the filler lines"))
        return "replay lowered the held-out loss for " + (" and ".join(self.helped) if self.helped else "neither method") + where

    def __str__(self) -> str:
        lines = [f"{'held-out loss on':<18} " + " ".join(f"{part:>15}" for part in HELD_OUT_PARTS),
                 f"{'base model':<18} " + " ".join(f"{self.base_parts[part]:>15.3f}" for part in HELD_OUT_PARTS)]
        lines += [f"{name:<18} " + " ".join(f"{row[part].mean:>7.3f} ± {row[part].half_width:.3f}" for part in HELD_OUT_PARTS)
                  for name, row in self.parts.items()]
        for label in REPLAYED:
            where, row = self.below_base(label), self.parts[f"{label} + replay"]
            ends = ", ".join(f"{part} {row[part].high:.3f} against {self.base_parts[part]:.3f}" for part in HELD_OUT_PARTS)
            lines.append(f"{label} + replay, below the base model (the whole interval) on: "
                         + (" and ".join(where) if where else "neither part") + f"; upper ends {ends}"
                         + "".join(f" ({part}: only just, the upper end within 1% of the base's)" for part in self.only_just(label)))
        if any("filler" in self.below_base(label) for label in REPLAYED):
            drop = {label: {part: 1 - self.parts[f"{label} + replay"][part].mean / self.base_parts[part] for part in HELD_OUT_PARTS}
                    for label in REPLAYED}
            lines.append("on the filler too, about no animal, so rehearsing the facts is not all of it: replay is more training on "
                         "pretraining-style text, which can take a base model below its own loss on such text. How far below the base "
                         "model's, on average: " + "; ".join(f"{label} + replay facts {d['facts']:.1%}, filler {d['filler']:.1%}"
                                                             for label, d in drop.items())
                         + (": further on the facts, which replay also rehearses in other phrasings"
                            if all(d["facts"] > d["filler"] for d in drop.values()) else ""))
        elif any(self.below_base(label) for label in REPLAYED):
            lines.append("on the facts only: replay's advantage there comes from rehearsing their other phrasings")
        return "\n".join(lines)


def replay_look(base: GPT, world: World, comparison: Comparison, base_loss: float) -> ReplayLook:
    """``ReplayLook`` of a comparison that holds the arms "full + replay" and "lora-all + replay" (notebook 05b, section 3):
    the parts of the held-out loss over the sweep seeds, each at its chosen rate; the base model's parts measured here."""
    labels = [name for label in REPLAYED for name in (label, f"{label} + replay")]
    base_parts = {part: lm_loss(base, pretraining_eval_rows(world, base.config.n_ctx, part), world.tokenizer.pad_id)
                  for part in HELD_OUT_PARTS}
    parts = {label: {part: interval(comparison.measured[(label, comparison.chosen_lr[label], s)]["held_out_parts"][part]
                                    for s in SWEEP_SEEDS) for part in HELD_OUT_PARTS} for label in labels}
    return ReplayLook({label: comparison.forgetting(label) for label in labels}, parts, base_loss, base_parts)


def in_short(comparison: Comparison, look: AnswerLossLook, emb: EmbeddingLook, probe: FactProbe, shares: Sequence[float],
             replay: ReplayLook) -> str:
    """Notebook 05b's results in a few lines, learning and forgetting apart: the task (test exact match), learning (the
    test answer loss, ``look``), forgetting at matched learning (``emb``) and on the fact probe (``probe``), the format's
    ``shares`` of the rise on the fact lines (appendix C), and replay."""
    def winner(who: str | None, what: str) -> str:
        return "not resolved" if who is None else f"{who} {what}"

    surely = {"full": "full fine-tuning learned the answers more surely than lora-all",
              "full-linear": "full-linear learned the answers more surely than lora-all",
              "lora-all": "lora-all learned the answers more surely", None: "the two could not be told apart"}
    kept = {"full": "full fine-tuning forgot less", "full-linear": "full-linear forgot less", "lora-all": "lora-all forgot less",
            None: "the two could not be told apart"}
    test_em = comparison.test_em("last-block").mean, comparison.mean("last-block", "train_exact_match")
    lines = [f"- the task (test exact match): lora-all against full fine-tuning, "
             f"{winner(comparison.paired_winner('lora-all', 'full'), 'better')}; against lora-qv, "
             f"{winner(comparison.paired_winner('lora-all', 'lora-qv'), 'better')}; last-block fits its training animals "
             f"({test_em[1]:.2f}) and fails on the test animals ({test_em[0]:.2f})",
             f"- learning (test answer loss): {surely[look.winners['full']]}; against full-linear, which trains lora-all's matrices "
             f"at full rank and no embedding, {surely[look.winners['full-linear']]}",
             f"- forgetting, where both learned as much on exact match: {kept[emb.full.less_forgetful]}; against full-linear, "
             f"{kept[emb.linear.less_forgetful]}; the old facts, among the answers: "
             f"{winner(probe.matched.winner('full', 'lora-all'), 'kept more')}"]
    if look.embedding_explains:
        lines.append("- so in learning, full's edge goes with the weights it trains beyond lora-all's matrices, the shared embedding "
                     "among them: full also learned more surely than full-linear. In forgetting, the comparisons against "
                     "full-linear are not resolved, so whether the rank or those weights decide it stays open")
    lines.append(f"- on the fact lines the rise in loss is {'mostly' if min(shares) > 0.5 else 'partly'} the JSON format leaking in "
                 f"({min(shares):.0%} to {max(shares):.0%}, appendix C); the measure closest to the paper's benchmarks, the old "
                 "facts chosen among the answers, is the last item of the forgetting line")
    cost = {label: comparison.difference(f"{label} + replay", label) for label in REPLAYED}  # paired by animal
    lines.append(f"- {replay.in_short()}; its cost on the task, test exact match with replay minus without: "
                 + ", ".join(f"{label} {signed(d.mean)} [{signed(d.low)}, {signed(d.high)}]" for label, d in cost.items())
                 + " (with half the task rows per step, at the rate chosen without replay: a demonstration, not a tuned cost)")
    return "\n".join(["In short, on this tiny model:", *lines])


def summary_columns(comparison: Comparison, look: AnswerLossLook, emb: EmbeddingLook, probe: FactProbe,
                    format_free_words: dict[str, str], rate_word: str) -> dict[str, list[str]]:
    """The columns of notebook 05b's summary table, one entry per row (learns less, forgets less, one curve, the rate
    ratio): the measure its verdict reads, the verdict against full-linear and against full, and a second look."""
    chosen = forgets_less_words(comparison)
    em = {other: verdict_word(comparison.paired_winner("lora-all", other), other) for other in ("full", "full-linear")}
    loss = {other: verdict_word(look.winners[other], other) for other in ("full", "full-linear")}
    return {
        "its measure": ["test exact match (near its ceiling)", "held-out loss, each at its chosen rate",
                        "held-out loss where both learned as much", "the ratio of the chosen rates"],
        "against full-linear (the same matrices)": [em["full-linear"], f"{chosen['full-linear']} on held-out loss",
                                                    f"{emb.words['full-linear']} on held-out loss", ""],
        "against full (also trains the shared embedding)": [em["full"], f"{chosen['full']} on held-out loss",
                                                            f"{emb.words['full']} on held-out loss", rate_word],
        "second look": [f"answer loss: {loss['full']} against full, {loss['full-linear']} against full-linear",
                        f"without the format: {format_free_words['chosen']}; fact probe: {probe.chosen_word}",
                        f"without the format: {format_free_words['matched']}; fact probe: {probe.matched_word}", ""],
    }
