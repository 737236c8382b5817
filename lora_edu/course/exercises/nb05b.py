"""Exercises of notebook 05b (LoRA against full fine-tuning: learning and forgetting)."""

from __future__ import annotations

import math
import statistics

import numpy as np

from ...maths.intervals import t95, welch_se_df, wilson_interval
from ...maths.matching import matched_rates
from .core import ChoiceExercise, CodeExercise, CodeTrap, PredictExercise, Trap, WrittenExercise, register


def wilson_cases(rng: np.random.Generator) -> list[tuple[float, int]]:
    """All right, none right and half right on 16 items (the test set), then random rates and sizes."""
    cases = [(1.0, 16), (0.0, 16), (0.5, 16), (15 / 16, 16), (1.0, 8)]
    for _ in range(5):
        n = int(rng.integers(2, 500))
        cases.append((int(rng.integers(0, n + 1)) / n, n))
    return cases


def wilson_at(p: float, n: int, z: float) -> tuple[float, float]:
    """Wilson's interval at another z: the trap of a student who keeps z = 1."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def normal_interval(p: float, n: int) -> tuple[float, float]:
    """The textbook interval p +- 1.96 sqrt(p (1 - p) / n): zero-width at p = 0 or 1, and it can leave [0, 1]."""
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


SECTION_2A_GRIDS = ({0.001: 0.0, 0.003: 0.875, 0.01: 23 / 24, 0.03: 0.0}, {0.0003: 0.75, 0.001: 0.875, 0.003: 13 / 24})


def match_cases(rng: np.random.Generator) -> list[tuple[dict[float, float], dict[float, float], float, float]]:
    """Section 2a's grids, then random grids of mean exact match in steps of 1/16, each method with at least one rate at
    the bar: some with a pair one animal apart, some with ties among the smaller and larger rates."""
    cases = [(*SECTION_2A_GRIDS, 0.75, 1 / 8),
             ({1e-3: 0.8125, 3e-3: 0.9375}, {1e-4: 0.75, 3e-4: 0.875, 1e-3: 1.0}, 0.75, 1 / 8),  # two ties: the smaller rates
             ({1e-3: 0.25, 3e-3: 0.75, 1e-2: 1.0}, {1e-4: 0.5, 3e-4: 0.9375}, 0.75, 1 / 16),  # the closest is not the first
             ({1e-3: 0.8125, 3e-3: 1.0}, {1e-4: 0.9375, 3e-4: 1.0}, 0.75, 1 / 8)]  # an exact tie, and one under one animal
    rates = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
    while len(cases) < 12:
        grids = [{lr: int(rng.integers(0, 17)) / 16 for lr in sorted(rng.choice(rates, size=int(rng.integers(2, 5)), replace=False))}
                 for _ in range(2)]
        bar, one_animal = (0.75, 0.5)[int(rng.integers(0, 2))], (1 / 16, 1 / 8)[int(rng.integers(0, 2))]
        if all(max(grid.values()) >= bar for grid in grids):
            cases.append((*grids, bar, one_animal))
    return cases


def closest_exactly(grid_a: dict[float, float], grid_b: dict[float, float], bar: float, one_animal: float) -> tuple[float, float]:
    """The trap of a student who reads every gap as real: the rule with no allowance for one animal."""
    return matched_rates(grid_a, grid_b, bar, 0.0)


def ties_to_larger(grid_a: dict[float, float], grid_b: dict[float, float], bar: float, one_animal: float) -> tuple[float, float]:
    """The trap of a student who breaks ties towards the larger rates: the rule on negated rates, whose smallest are
    the largest."""
    rate_a, rate_b = matched_rates({-lr: em for lr, em in grid_a.items()}, {-lr: em for lr, em in grid_b.items()}, bar, one_animal)
    return -rate_a, -rate_b


def no_bar(grid_a: dict[float, float], grid_b: dict[float, float], bar: float, one_animal: float) -> tuple[float, float]:
    """The trap of a student who matches every rate, learned or not."""
    return matched_rates(grid_a, grid_b, -math.inf, one_animal)


def welch_by_parts(a: list[float], b: list[float], t_quantile) -> tuple[float, float, float]:
    """(mean of a − mean of b, low, high): the 95% Welch interval of section 2a's forgetting verdicts."""
    se, df = welch_se_df([(statistics.variance(v) / len(v), len(v) - 1) for v in (a, b)])
    difference = statistics.fmean(a) - statistics.fmean(b)
    half = t_quantile(df) * se
    return difference, difference - half, difference + half


def welch_cases(rng: np.random.Generator) -> list[tuple[list[float], list[float], object]]:
    """Held-out losses per seed: five a side with very different spreads (as lora-all and full at the matched rates),
    then random sizes from 3 to 6 seeds a side, means and spreads."""
    cases = [([2.45, 2.34, 2.51, 2.11, 2.06], [1.93, 1.87, 1.84, 1.96, 1.90], t95)]
    while len(cases) < 8:
        n_a, n_b = (int(n) for n in rng.integers(3, 7, size=2))
        a = (rng.uniform(1, 5) + rng.uniform(0.02, 0.6) * rng.standard_normal(n_a)).round(3).tolist()
        b = (rng.uniform(1, 5) + rng.uniform(0.02, 0.6) * rng.standard_normal(n_b)).round(3).tolist()
        cases.append((a, b, t95))
    return cases


def pooled_student(a: list[float], b: list[float], t_quantile) -> tuple[float, float, float]:
    """The trap of a student who pools both spreads into one (Student's two-sample t, n_a + n_b − 2 degrees of freedom)."""
    n_a, n_b = len(a), len(b)
    pooled = ((n_a - 1) * statistics.variance(a) + (n_b - 1) * statistics.variance(b)) / (n_a + n_b - 2)
    difference, half = statistics.fmean(a) - statistics.fmean(b), t_quantile(n_a + n_b - 2) * math.sqrt(pooled * (1 / n_a + 1 / n_b))
    return difference, difference - half, difference + half


def population_spread(a: list[float], b: list[float], t_quantile) -> tuple[float, float, float]:
    """The trap of a student who divides by n, not n − 1 (NumPy's default ``var``)."""
    parts = [(statistics.pvariance(v) / len(v), len(v) - 1) for v in (a, b)]
    se, df = welch_se_df(parts)
    difference = statistics.fmean(a) - statistics.fmean(b)
    return difference, difference - t_quantile(df) * se, difference + t_quantile(df) * se


def normal_quantile(a: list[float], b: list[float], t_quantile) -> tuple[float, float, float]:
    """The trap of a student who uses the normal 1.96 for a handful of seeds."""
    se = math.sqrt(sum(statistics.variance(v) / len(v) for v in (a, b)))
    difference = statistics.fmean(a) - statistics.fmean(b)
    return difference, difference - 1.96 * se, difference + 1.96 * se


register(PredictExercise(
    id="predict-sixteen-of-sixteen",
    prompt="A method answers all 16 test animals right. How low could its true rate of right answers plausibly be? "
    "Predict the lower end of a 95% interval for 16 right out of 16 (a number between 0 and 1). Roughly: a true rate is "
    "still plausible if it gets all 16 right at least 2.5% of the time (a 95% interval leaves 2.5% on each side; "
    "Wilson's interval, used here, lands close to that rule).",
    expected=lambda: wilson_interval(1.0, 16)[0],
    abs_tol=0.05,
    traps=(
        Trap(lambda: 1.0, "16 of 16 right does not prove a perfect method: a method that is right 85% of the time "
             "gets all 16 right in about 7% of tries. (The textbook interval p ± z √(p (1 − p)/n) says 1 here, "
             "because its width is 0 at p = 1: that is its flaw, not a certainty.)"),
        Trap(lambda: 15 / 16, "one animal fewer is not the bound: the interval asks which true rates would make 16 of 16 "
             "an unsurprising result, and rates well below 15/16 still do."),
    ),
    explanation="the Wilson interval for 16 of 16 is (0.81, 1.00): a method right 81% of the time still gets all 16 "
    "right in about 3% of tries, so 16 animals cannot rule it out. (The exact rule of the prompt gives 0.79, since "
    "0.79^16 = 2.5%; Wilson's interval is a close approximation of it.) Only many more animals can.",
    hints=("What is the chance that a method right 90% of the time gets all 16 right? 0.9 to the power 16.",),
))
register(CodeExercise(
    id="wilson-interval",
    prompt="Section 1 widens every exact-match interval to at least the Wilson interval of 16 animals. Wilson's idea: a "
    "true rate q is plausible when the observed rate p lies within z standard errors of it, with the standard error "
    "computed from q, not from p: (p − q)² ≤ z² q (1 − q)/n. The interval is every such q, so its ends are the two "
    "roots of a quadratic in q. Derive them, then write wilson(p, n) -> (low, high) with z = 1.96. It is run on hidden "
    "rates and sizes. Then print wilson(1.0, 16) and wilson(1.0, 1600): what does 16 of 16 right let you claim, and "
    "what does the textbook interval p ± z √(p (1 − p)/n) claim at p = 1?",
    explanation="Wilson's interval inverts the test of each candidate rate instead of putting a normal curve around "
    "the observed p, so it stays inside [0, 1] and never has zero width: 16 of 16 right gives (0.81, 1.00). The "
    "textbook interval gives (1, 1) there, a certainty that 16 animals cannot give.",
    signature="wilson(p, n) -> (low, high)",
    own_work=("wilson_interval",),
    reference=wilson_interval,
    cases=wilson_cases,
    traps=(
        CodeTrap(normal_interval, "that is the textbook (normal) interval p ± z √(p (1 − p)/n). At p = 1 it has zero "
                 "width, as if 16 of 16 right proved a perfect method; Wilson's centre and half-width have the extra "
                 "z² terms."),
        CodeTrap(lambda p, n: (p - 1.96 * math.sqrt(p * (1 - p) / n + 1.96**2 / (4 * n * n)),
                               p + 1.96 * math.sqrt(p * (1 - p) / n + 1.96**2 / (4 * n * n))),
                 "your half-width is not divided by (1 + z²/n), and the interval is centred on p instead of Wilson's "
                 "centre, which is pulled towards 1/2."),
        CodeTrap(lambda p, n: wilson_at(p, n, 1.0), "use z = 1.96 for a 95% interval (z = 1 gives about 68%)."),
    ),
    model_solution="""
def wilson(p, n):
    # (p - q)^2 = z^2 q (1 - q) / n  <=>  (1 + z^2/n) q^2 - (2p + z^2/n) q + p^2 = 0: its two roots
    z = 1.96                                       # 95%
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)  # pulled from p towards 1/2
    half = z * (p * (1 - p) / n + z**2 / (4 * n**2)) ** 0.5 / (1 + z**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)
""",
    worked_solution="With p = 1 the textbook term p (1 − p)/n is 0, but Wilson keeps z²/(4n²), so the interval never "
    "collapses: 16 of 16 right gives (0.81, 1.00), 1600 of 1600 gives (0.998, 1.00). Sixteen animals cannot show that "
    "a method is better than about 81% right.",
    hints=("Expand both sides of (p − q)² = z² q (1 − q)/n and move everything to one side: collect the terms in q², "
           "in q and without q.",
           "You should get a q² + b q + c = 0 with a = 1 + z²/n, b = −(2p + z²/n) and c = p². The quadratic formula "
           "gives the two ends.",
           "Compute the discriminant b² − 4ac first, then (−b ∓ √(b² − 4ac)) / (2a); wilson(1.0, 16) should give about "
           "(0.81, 1.00)."),
))
register(CodeExercise(
    id="welch-interval",
    prompt="Compute section 2a's verdict on forgetting yourself. The line \"full beats lora-all on held-out loss at "
    "matched learning\" comes from a 95% interval for the difference of two means, one held-out loss per seed for each "
    "method. Write welch(a, b, t_quantile) -> (difference, low, high): a and b are lists of per-seed values (their "
    "lengths may differ), t_quantile(df) gives Student's two-sided 95% quantile for df degrees of freedom. Each method "
    "keeps its own spread (Welch's interval): take each mean's variance, add them for the difference's standard error, "
    "and compute the degrees of freedom Welch and Satterthwaite give that sum. It is run on hidden losses. Then run "
    "welch(matched.forgetting[\"lora-all\"].values, matched.forgetting[\"full\"].values, t95), with t95 from "
    "lora_edu.paper.experiments. Does your interval leave out 0, as the verdict says? How many degrees of freedom do "
    "you get, against the 8 of ten pooled seeds, and why fewer?",
    explanation="a verdict on forgetting is one interval for the difference: one method forgets less exactly when it "
    "leaves out 0. Welch's interval lets each method keep its own spread. Where one method's seeds vary much more "
    "than the other's (lora-all's held-out losses spread several times as widely as full's here), the degrees of freedom "
    "fall towards that method's n − 1, and t grows: the interval is honest about resting mostly on five noisy seeds.",
    signature="welch(a, b, t_quantile) -> (difference, low, high)",
    own_work=("difference_interval", "welch_half_width", "welch_se_df", "better", "verdict"),
    reference=welch_by_parts,
    cases=welch_cases,
    traps=(
        CodeTrap(pooled_student, "you pooled the two spreads into one and used n_a + n_b − 2 degrees of freedom "
                 "(Student's two-sample t). That assumes both methods vary alike across seeds; here one varies several "
                 "times as much, so give each mean its own variance and use the Welch-Satterthwaite degrees of freedom."),
        CodeTrap(population_spread, "your variances divide by n. A sample's variance divides by n − 1 (NumPy: "
                 "var(ddof=1)); with five seeds, dividing by n makes every interval too narrow."),
        CodeTrap(normal_quantile, "you used the normal 1.96. With a handful of seeds the spread itself is uncertain, so "
                 "the quantile comes from Student's t at the Welch-Satterthwaite degrees of freedom: call t_quantile(df)."),
    ),
    model_solution="""
def welch(a, b, t_quantile):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    var_a = a.var(ddof=1) / len(a)   # the variance of a's mean (sample variance over n)
    var_b = b.var(ddof=1) / len(b)
    se = (var_a + var_b) ** 0.5      # the difference's standard error: the variances add
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))  # Welch-Satterthwaite
    difference = a.mean() - b.mean()
    half = t_quantile(df) * se
    return difference, difference - half, difference + half
""",
    worked_solution="On the matched pair: lora-all's five losses have a mean of about 2.29, full's about 1.90; the "
    "difference, about +0.40, has a standard error of about 0.09. Full's seeds barely vary, so the degrees of freedom "
    "come out near 4.4, close to lora-all's own 4, not 8; t at 4 (the table rounds down) is 2.78. The interval, about "
    "[+0.14, +0.65], leaves out 0: full forgot less, as the verdict line says.",
    hints=("Each mean's variance is the sample variance (divide by n − 1) over n; the difference's standard error is "
           "the square root of their sum.",
           "Welch-Satterthwaite: df = (v_a + v_b)² / (v_a²/(n_a − 1) + v_b²/(n_b − 1)), where v_a and v_b are the two "
           "variances of the means.",
           "The half-width is t_quantile(df) times the standard error; return (difference, difference − half, "
           "difference + half)."),
))
register(CodeExercise(
    id="match-rates",
    prompt="Match two methods on learning yourself, with section 2a's rule. Write match(grid_a, grid_b, bar, one_animal) "
    "-> (rate_a, rate_b). Each grid maps one method's learning rates to its mean validation exact match. Keep only the "
    "rates whose mean reaches bar. Of all pairs, one kept rate per method, take the pair whose two means are closest; "
    "a gap smaller than one_animal (one validation animal per seed) counts as 0; among pairs equally close, take the "
    "smaller rate of the first method, then the smaller of the second. It is run on hidden grids. Then run it on "
    "section 2a's grid: grids = {label: {lr: comparison.along(label, \"val\", lr, SWEEP_SEEDS)[RUN[\"steps\"]] for lr in "
    "comparison.arm(label).lrs} for label in (\"lora-all\", \"full\")}, then match(grids[\"lora-all\"], "
    "grids[\"full\"], 0.75, 1 / len(world.val_animals)). Is it section 2a's matched pair? Which pair would it give with "
    "one_animal = 0, and why does the rule not trust a gap that small?",
    explanation="the rule looks at validation exact match alone, so forgetting plays no part in choosing the pair. On "
    "8 validation animals and 3 seeds a gap under one animal per seed is one or two answers, so such pairs count as "
    "learning as much, and the smaller rates, which move the weights less for both methods alike, win the tie.",
    signature="match(grid_a, grid_b, bar, one_animal) -> (rate_a, rate_b)",
    own_work=("matched_rates", "at_matched_learning", "learning_forgetting"),
    reference=matched_rates,
    cases=match_cases,
    traps=(
        CodeTrap(closest_exactly, "you took the pair whose means are closest to the last digit. A gap under one "
                 "validation animal per seed is one or two answers out of 24: such pairs count as equally close (gap 0), "
                 "and the smaller rates win among them."),
        CodeTrap(ties_to_larger, "among pairs equally close you took the larger rates. The rule takes the smaller ones: "
                 "for the same validation score they move the weights less, a cautious pick that favours neither method."),
        CodeTrap(no_bar, "you matched rates that never learned the task. Keep only the rates whose mean reaches bar "
                 "first: 'as much learned' must be something both methods learned."),
    ),
    model_solution="""
def match(grid_a, grid_b, bar, one_animal):
    learned_a = {lr: em for lr, em in grid_a.items() if em >= bar}  # the rates that learned the task
    learned_b = {lr: em for lr, em in grid_b.items() if em >= bar}

    def gap(pair):
        apart = abs(learned_a[pair[0]] - learned_b[pair[1]])
        return apart if apart >= one_animal - 1e-12 else 0.0  # under one animal per seed: as much (1e-12: rounding)

    pairs = [(x, y) for x in learned_a for y in learned_b]
    return min(pairs, key=lambda pair: (gap(pair), pair))  # the closest; among ties, the smaller rates
""",
    worked_solution="On section 2a's grid lora-all learned at 0.003 (0.88) and 0.01 (0.96), full at 0.0003 (0.75) and 0.001 "
    "(0.88). The pairs (0.003, 0.001) and (0.01, 0.001) are both under one animal apart, so both count as gap 0, and the "
    "smaller rates give (0.003, 0.001), section 2a's pair. With one_animal = 0 the first is still exactly 0 apart, so the "
    "pair stays; on another grid a gap of one answer could decide it, which is why the rule does not trust it.",
    hints=("First filter each grid: {lr: em for lr, em in grid.items() if em >= bar}.",
           "Loop over every pair (x, y) of kept rates and compute abs(mean of x - mean of y); replace it by 0 when it is "
           "under one_animal.",
           "Python's min with key=lambda pair: (gap(pair), pair) takes the smallest gap, and among equal gaps the pair "
           "with the smaller first rate, then the smaller second."),
))
register(ChoiceExercise(
    id="pareto-learning-rate",
    prompt="Predict before the grid table. Section 1 trained each method at several learning rates, with the same "
    "steps and seeds. Within one method, what does a larger learning rate do to how well the task is learned "
    "(validation exact match) and to how much pretraining text is forgotten (the held-out loss)?",
    options={
        "a": "it improves both: more exact match and a lower pretraining loss",
        "b": "more pretraining text is forgotten; the task is learned better up to some rate, and past it the task is lost too",
        "c": "nothing in the end: the learning rate only changes how fast the same final point is reached",
        "d": "with LoRA nothing is forgotten at any learning rate, because the base weights are frozen",
    },
    answer_digest="127e77005fef8d12",
    feedback={
        "a": "there is no free lunch here: moving further from the pretrained weights is what learns the task, and it is "
        "also what raises the pretraining loss.",
        "c": "with a fixed number of steps the learning rate decides how far the weights move, so it changes where the "
        "run ends, not only how fast.",
        "d": "the frozen base can be restored (disable the adapter), but while the adapter is on, W + (α/r) B A is a "
        "different model, and its loss on pretraining text can rise: LoRA forgets too.",
    },
    explanation="the learning rate sets how far the fine-tune moves from the pretrained model: more learning, more "
    "forgetting, and past a point the learning itself degrades. Biderman et al. (2024, Section 4.3) plot Llama-2 7B fine-tunes of "
    "different lengths this way and report that LoRA and full fine-tuning seem to lie on one trade-off curve, LoRA's "
    "points where less is learned and less is forgotten. Where our runs lie is a measurement: sections 2 and 3 make it.",
))
register(ChoiceExercise(
    id="shared-rate",
    prompt="Suppose section 1 had trained every method at one shared learning rate, lora-all's chosen 1e-2. Read the "
    "grid table of section 2 at that rate: there full-linear learned far less on validation than lora-all, and its "
    "held-out loss was far higher. What should a reader conclude from that comparison?",
    options={
        "a": "little about the methods: the comparison says which method that one rate suits",
        "b": "lora-all learns more and forgets less than full-linear: both had the same rate, so the comparison is fair",
        "c": "the same as at each method's own rate: Adam scales every step to the gradient, so the rate does not "
        "change the outcome",
        "d": "full-linear should have done better than lora-all: it trains more weights, so a large rate helps it more",
    },
    answer_digest="cb2c2372eedb7b74",
    feedback={
        "b": "one rate for all is not fair play: each method has its own best rate (LoRA's zero-started product of two "
        "factors needs a larger one). A shared rate picks a winner before the race, by suiting one method.",
        "c": "Adam divides each gradient by its own running size, so each weight moves by about the learning rate per "
        "step, whatever the gradient: the rate sets how far the weights go, and too far forgets and stops learning.",
        "d": "more trainable weights do not tolerate a larger rate: with Adam every one of them moves by about the rate "
        "per step, so a full-rank update spreads the same step over every direction at once, while LoRA's starts at zero "
        "and grows through a product of two small factors. The grid table shows full-linear learning best at smaller "
        "rates, not larger ones.",
    },
    explanation="a comparison at one shared rate measures which method that rate suits. At 1e-2 full-linear moved "
    "its weights far past where it learns (the grid table's ‖ΔW‖/‖W‖ column). The grid table shows full-linear "
    "learning best at smaller rates than lora-all; at each one's chosen rate the two are not told apart on the test "
    "animals (section 1's paired table). That is why every method gets its own small grid, "
    "and validation, never the test set, picks from it.",
    hints=("Look at full-linear's rows in the grid table: at which rates did it learn?",),
))
register(WrittenExercise(
    id="matched-threshold",
    prompt="Change and explain (no training: a second). Section 2 matches two methods where both reached a mean "
    "validation exact match of 0.75. In a new cell, run the matching again with a looser bar and a stricter one: "
    "`for bar in (0.5, 0.85): print(at_matched_learning(comparison, world, (\"lora-all\", \"full\"), RUN[\"steps\"], "
    "min_val_em=bar))`. Then try the stricter bar with \"full-linear\" in place of \"full\". Which rates are matched at "
    "each bar? Does the verdict on forgetting keep its direction? What does the message for full-linear at 0.85 tell "
    "you, and what does all this say about a bar chosen in advance?",
    points=(
        "A lower bar can only add candidates that learned less; a higher one removes rates. The matched pair moves only "
        "if a new pair is closer, or the old one drops out; read the rate lines at each bar.",
        "Within each method the held-out loss grows with the rate (section 2's grid table), so a pair at smaller rates "
        "forgets less on both sides; the question is whether the gap between the methods keeps its sign.",
        "If the verdict keeps its direction at every bar, it does not hang on the bar; if it flips or turns not "
        "resolved, it does, and a reader must be told the bar with the result.",
        "A bar that one method never reaches leaves no matched comparison at all (the error for full-linear says so): "
        "'as much learned' has to be something both methods learned.",
        "The bar was fixed before looking at forgetting. Choosing it after seeing which one gives the wanted verdict "
        "would be choosing on the outcome, the same mistake as choosing a rate on the test set.",
    ),
    explanation="Matching is a choice, and a result that survives a reasonable change of it is stronger. Lowering the "
    "bar to 0.5 admits less-trained rates, which forget less; the matched pair may move, and the forgetting verdict "
    "either keeps its sign (it does not hang on the bar) or not (then the bar must be reported with it). Fixing the "
    "bar before looking, as section 2 did at 0.75, keeps the choice honest.",
    hints=("Read the \"matched rates\" line and the verdict line of both runs side by side.",),
))
