"""Exercises of notebook 05b (LoRA against full fine-tuning: learning and forgetting)."""

from __future__ import annotations

import math

import numpy as np

from ...maths.intervals import wilson_interval
from .core import ChoiceExercise, CodeExercise, CodeTrap, PredictExercise, Trap, WrittenExercise, package_layer, register


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


def package_update_size(W: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float, r: int) -> tuple[float, float]:
    """(||ΔW||_F / ||W||_F, ||ΔW||_F / ||W's top-r part||_F) of the package's ``LoRALinear`` holding W (d_out, d_in),
    A (r, d_in) and B (d_out, r): its ``delta_weight`` measured by ``update_ratio``, as the notebooks measure it."""
    from ...gpt.finetune import update_ratio

    layer = package_layer(W, A, B, alpha, r)
    weight, delta = layer.base_weight().detach(), layer.delta_weight().detach()
    return update_ratio(weight, delta), update_ratio(weight, delta, top_r=r)


def update_size_cases(rng: np.random.Generator) -> list[tuple]:
    """Hidden layers (W, A, B, alpha, r): square and not, scalings 2, 4, 8 and 0.5 (never 1, so a missing
    scaling shows), B trained (not zero)."""
    cases = []
    for d_out, d_in, r, alpha in ((8, 8, 2, 4.0), (6, 10, 3, 6.0), (12, 5, 1, 4.0), (9, 9, 4, 2.0), (16, 16, 8, 16.0), (7, 11, 2, 16.0)):
        cases.append((rng.standard_normal((d_out, d_in)), rng.standard_normal((r, d_in)) / np.sqrt(d_in),
                      0.1 * rng.standard_normal((d_out, r)), alpha, r))
    return cases


def top_r_sum(W: np.ndarray, r: int) -> float:
    """The trap: the sum of the top r singular values (not the root of the sum of their squares)."""
    return float(np.sum(np.linalg.svd(W, compute_uv=False)[:r]))


register(CodeExercise(
    id="update-size",
    prompt="How far did fine-tuning move a LoRA layer's weight? Section 1's table reports ‖ΔW‖_F / ‖W‖_F, and section 4 "
    "also divides by ‖W's top-r part‖_F, the norm of W's best rank-r approximation (notebook 02). Write "
    "update_size(W, A, B, alpha, r) with NumPy: W is the frozen weight (d_out × d_in), A (r × d_in) and B (d_out × r) "
    "the trained factors. Return the pair (‖ΔW‖_F / ‖W‖_F, ‖ΔW‖_F / ‖W's top-r part‖_F) for the update the layer "
    "adds. It is run on hidden layers. Then try it on a trained layer of this notebook: "
    "`layer = lora_all.get_submodule(\"blocks.0.attn.q_proj\")` and "
    "`update_size(*(t.detach().cpu().numpy() for t in (layer.base.weight, layer.lora_A, layer.lora_B)), layer.alpha, layer.r)`. "
    "Is this layer's update small next to W, as GPT-3's was (0.11 and 0.32)?",
    signature="update_size(W, A, B, alpha, r) -> (whole, top_r)",
    own_work=("update_ratio", "update_ratios", "delta_weight"),
    reference=package_update_size,
    cases=update_size_cases,
    traps=(
        CodeTrap(lambda W, A, B, alpha, r: package_update_size(W, A, B, r, r), "Both ratios are off by exactly the factor α/r: "
                 "the layer adds (α/r) B A, not B A."),
        CodeTrap(lambda W, A, B, alpha, r: package_update_size(W, A, B, r * r / alpha, r), "Your scaling is upside down: it is "
                 "α/r, not r/α."),
        CodeTrap(lambda W, A, B, alpha, r: package_update_size(W, A, B, alpha * r * r, r), "Your scaling is α·r: the layer "
                 "scales its update by α divided by r."),
        CodeTrap(lambda W, A, B, alpha, r: (float(np.linalg.norm(alpha / r * B @ A, 2) / np.linalg.norm(W, 2)),
                                            package_update_size(W, A, B, alpha, r)[1]),
                 "Your first ratio uses the spectral norm (the largest singular value). Both ratios use the Frobenius "
                 "norm, the root of the sum of all squared entries: np.linalg.norm(M) with no second argument."),
        CodeTrap(lambda W, A, B, alpha, r: (package_update_size(W, A, B, alpha, r)[0],
                                            float(np.linalg.norm(alpha / r * B @ A)
                                                  / np.sqrt(np.sum(np.linalg.svd(W, compute_uv=False)[-r:] ** 2)))),
                 "Your second ratio uses W's r smallest singular values. np.linalg.svd returns them largest first: "
                 "the top-r part keeps the first r."),
        CodeTrap(lambda W, A, B, alpha, r: (package_update_size(W, A, B, alpha, r)[0],
                                            float(np.linalg.norm(alpha / r * B @ A)) / top_r_sum(W, r)),
                 "Your second ratio divides by the sum of W's top r singular values. The Frobenius norm of W's top-r "
                 "part is the root of the sum of their squares: √(σ₁² + … + σ_r²)."),
        CodeTrap(lambda W, A, B, alpha, r: (package_update_size(W, A, B, alpha, r)[0],
                                            float(np.linalg.norm(alpha / r * B @ A)) / float(np.linalg.svd(W, compute_uv=False)[0])),
                 "Your second ratio divides by W's largest singular value alone: the top-r part keeps r directions, "
                 "√(σ₁² + … + σ_r²)."),
        CodeTrap(lambda W, A, B, alpha, r: package_update_size(W + alpha / r * B @ A, A, B, alpha, r),
                 "You measured against the fine-tuned weight W + ΔW: the question is how far the update moved the "
                 "pretrained W, so divide by W's own norms."),
    ),
    model_solution="""
def update_size(W, A, B, alpha, r):
    delta = (alpha / r) * B @ A                          # the update the layer adds, (d_out, d_in)
    sigma = np.linalg.svd(W, compute_uv=False)           # W's singular values, largest first
    top_r = np.sqrt(np.sum(sigma[:r] ** 2))              # ||W's best rank-r approximation||_F (Eckart-Young)
    return np.linalg.norm(delta) / np.linalg.norm(W), np.linalg.norm(delta) / top_r
""",
    explanation="ΔW = (α/r) B A, and ‖W's top-r part‖_F = √(σ₁² + … + σ_r²) ≤ ‖W‖_F, so the second ratio is the larger "
    "one: it measures the update against the r directions W itself uses most, a yardstick that depends less on "
    "the width of the layer. In Table 7 of the LoRA paper, GPT-3's Wq at r = 4 has 6.91 / 61.95 = 0.11 and 6.91 / 21.67 "
    "= 0.32. In this tiny model a trained layer sits above both, far above on the first (section 4 measures it for every run).",
    worked_solution="Two facts do the work. The Frobenius norm is the root of the sum of squared entries, and also of "
    "the squared singular values. And the best rank-r approximation of W keeps its r largest singular values "
    "(Eckart-Young, notebook 02), so its norm is √(σ₁² + … + σ_r²); no need to build the matrix.",
    hints=("The update is the scaled product of the two factors; write down its shape first.",
           "np.linalg.norm(M) is the Frobenius norm; np.linalg.svd(W, compute_uv=False) gives the singular values, "
           "largest first.",
           "The norm of W's top-r part needs only the first r singular values: square, add, take the root."),
))
register(PredictExercise(
    id="predict-sixteen-of-sixteen",
    prompt="A method answers all 16 test animals right. How low could its true rate of right answers plausibly be? "
    "Predict the lower end of a 95% interval for 16 right out of 16 (a number between 0 and 1).",
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
    "right in about 3% of tries, so 16 animals cannot rule it out. Only many more animals can.",
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
    hints=("Expand (p − q)² = z² q (1 − q)/n into a q² + b q + c = 0: a = 1 + z²/n, b = −(2p + z²/n), c = p². The "
           "quadratic formula gives the two ends.",
           "Divided through by a, the roots are centre ± half, with centre = (p + z²/(2n)) / (1 + z²/n) and half = "
           "z √(p (1 − p)/n + z²/(4n²)) / (1 + z²/n).",
           "Compute the centre and the half-width as two numbers first, then return (centre − half, centre + half)."),
))
register(ChoiceExercise(
    id="pareto-learning-rate",
    prompt="Predict before the grid table. Section 1 trained each method at several learning rates, with the same "
    "steps and seeds. Within one method, what does a larger learning rate do to how well the task is learned "
    "(validation exact match) and to how much pretraining text is forgotten (the held-out loss)?",
    options={
        "a": "it improves both: more exact match and a lower pretraining loss",
        "b": "more of the task is learned and more pretraining text is forgotten, until training turns unstable",
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
    "forgetting, and past a point divergence. Biderman et al. (2024, Section 4.3) plot Llama-2 7B fine-tunes of "
    "different lengths this way and find LoRA and full fine-tuning on one and the same trade-off curve, LoRA's points "
    "where less is learned and less is forgotten. Where our runs lie is a measurement: sections 2 and 3 make it.",
))
register(WrittenExercise(
    id="finer-steps",
    prompt="Change and explain (about a minute on a laptop CPU). Would LoRA learn the task with a smaller update if "
    "its steps were cut finer? Predict in one line. Then remove the #s in the exercise cell and run it: it trains "
    "lora-all at a third of the rate, 1e-3, for three times the steps, with the three sweep seeds. Adam moves each "
    "weight by about the learning rate per step, so this run has the same total step length as the grid's lora-all at "
    "3e-3 for 200 steps. Compare the two (label \"lora-all, 3x steps\" at 1e-3 against \"lora-all\" at 3e-3) on "
    "(a) validation exact match, `comparison.mean(label, \"val_exact_match\", lr, SWEEP_SEEDS)`, and (b) ‖ΔW‖ / ‖W's "
    "top-8 part‖, `comparison.measured_mean(label, \"top_r\", lr, SWEEP_SEEDS)`. Did the finer run move its weights "
    "less: is (b) closer to GPT-3's 0.32? Did it still learn: is (a) at least 0.75? Is that the paper's regime?",
    points=(
        "Cutting the same total step length finer moves the weights somewhat less on the top-8 measure (compare the "
        "two runs' `top_r`), not several times less.",
        "Compare the two validation exact matches too: if the finer run is more than one validation animal per seed "
        "behind, it learned less, and this is a smaller move for less learning, not the same learning for a smaller move.",
        "Set the finer run's top-8 ratio beside GPT-3's 0.32 and its whole-weight ratio beside 0.11: both say how far it "
        "still is from the paper's regime.",
        "Three seeds and no interval: a rough size. A much lower rate trained much longer (3e-4 for 2,000 steps) is "
        "the next thing to try, and the width of the layer (rank 8 in a 64-wide layer is not thin) is an untested "
        "candidate for why LoRA's update is large here.",
    ),
    explanation="The step length is what Adam fixes; how finely it is cut changes the update's size only a little. "
    "A few times more steps at a few times lower rate keeps the step length, so it is not expected to turn this tiny "
    "model's large LoRA update into a small one, and it may cost some of the learning. What would: a wider model, "
    "where a rank-8 branch is a thin correction, is the candidate this notebook cannot afford to test.",
    hints=("Read the three numbers for both runs side by side: exact match, ‖ΔW‖/‖W‖ and the top-8 measure.",),
))
