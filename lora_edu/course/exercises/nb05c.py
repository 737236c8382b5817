"""Exercises of notebook 05c (where LoRA's update goes: its size, and intruder dimensions)."""

from __future__ import annotations

import numpy as np

from .core import ChoiceExercise, CodeExercise, CodeTrap, PredictExercise, Trap, WrittenExercise, package_layer, register


def chance_cosine(d: int, samples: int = 1000, seed: int = 0) -> float:
    """The median, over random directions in d dimensions, of the largest |cosine| with any of d orthonormal directions
    (the singular vectors of a d × d weight: any orthonormal basis gives the same, by symmetry)."""
    x = np.random.default_rng(seed).standard_normal((samples, d))
    return float(np.median(np.abs(x).max(axis=1) / np.linalg.norm(x, axis=1)))


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
    prompt="How far did fine-tuning move a LoRA layer's weight? Notebook 05b's table reports ‖ΔW‖_F / ‖W‖_F, and section 1 "
    "also divides by ‖W's top-r part‖_F, the norm of W's best rank-r approximation (notebook 02). Write "
    "update_size(W, A, B, alpha, r) with NumPy: W is the frozen weight (d_out × d_in), A (r × d_in) and B (d_out × r) "
    "the trained factors. Return the pair (‖ΔW‖_F / ‖W‖_F, ‖ΔW‖_F / ‖W's top-r part‖_F) for the update the layer "
    "adds. It is run on hidden layers. Then try it on a trained layer: "
    "`model, _ = finetune(base, world, \"json\", \"lora-all\", r=8, alpha=16, lr=1e-2, seed=0, **RUN)` (a few seconds), "
    "`layer = model.get_submodule(\"blocks.0.attn.q_proj\")` and "
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
    "= 0.32. In this tiny model a trained layer sits above both, far above on the first (section 1 measures it for every run).",
    worked_solution="Two facts do the work. The Frobenius norm is the root of the sum of squared entries, and also of "
    "the squared singular values. And the best rank-r approximation of W keeps its r largest singular values "
    "(Eckart-Young, notebook 02), so its norm is √(σ₁² + … + σ_r²); no need to build the matrix.",
    hints=("The update is the scaled product of the two factors; write down its shape first.",
           "np.linalg.norm(M) is the Frobenius norm; np.linalg.svd(W, compute_uv=False) gives the singular values, "
           "largest first.",
           "The norm of W's top-r part needs only the first r singular values: square, add, take the root."),
))
def package_intruders(W0: np.ndarray, W: np.ndarray, k: int, eps: float) -> int:
    """The package's count (``lora_edu.paper.analysis.intruder_dimensions``) on NumPy arrays."""
    import torch  # imported on first use: the quiz itself runs without torch

    from ...paper.analysis import intruder_dimensions

    return intruder_dimensions(torch.as_tensor(W0), torch.as_tensor(W), k, eps).count


def intruder_cases(rng: np.random.Generator) -> list[tuple]:
    """Hidden (W0, W, k, eps): a pretrained weight and the same weight after a low-rank update, small to large, square
    and wide (d_out <= d_in, as in Wq). Cases where a similarity lies within 1e-3 of eps are skipped: no rounding
    decides them."""
    cases = []
    while len(cases) < 8:
        d_out = int(rng.integers(8, 17))
        d_in = d_out + int(rng.integers(0, 5))
        W0 = rng.standard_normal((d_out, d_in))
        r, size = int(rng.integers(1, 4)), float(rng.choice([0.3, 1.0, 3.0, 10.0]))
        update = rng.standard_normal((d_out, r)) @ rng.standard_normal((r, d_in))
        W = W0 + size * np.linalg.norm(W0) / np.linalg.norm(update) * update
        k, eps = int(rng.integers(3, 7)), float(rng.choice([0.5, 0.7]))
        sims = np.abs(np.linalg.svd(W, full_matrices=False)[0][:, :k].T @ np.linalg.svd(W0, full_matrices=False)[0]).max(axis=1)
        if np.all(np.abs(sims - eps) > 1e-3):
            cases.append((W0, W, k, eps))
    return cases


def left(M: np.ndarray) -> np.ndarray:
    return np.linalg.svd(M, full_matrices=False)[0]


def right(M: np.ndarray) -> np.ndarray:
    return np.linalg.svd(M, full_matrices=False)[2].T

register(CodeExercise(
    id="intruder-count",
    prompt="Count intruder dimensions yourself. Write count_intruders(W0, W, k, eps) with NumPy: W0 is the pretrained "
    "weight, W the fine-tuned one (both d_out × d_in). For each of W's top-k left singular vectors (the first k "
    "columns of U in W = U S Vᵀ), find its largest |cosine| with any left singular vector of W0; return how many of "
    "the k have it below eps. It is run on hidden weights. Then try it on a pretrained weight and a simple rank-1 update: "
    "`W0 = base.get_submodule(\"blocks.0.attn.q_proj\").weight.detach().cpu().numpy()`, "
    "`W = W0 + 0.5 * np.linalg.norm(W0) * np.outer(np.ones(W0.shape[0]), np.ones(W0.shape[1])) / W0.size ** 0.5` "
    "(a rank-1 update half the size of W0), and `count_intruders(W0, W, 10, 0.5)`. How many of the top 10 does one "
    "rank-1 update make new, and why not more?",
    signature="count_intruders(W0, W, k, eps) -> int",
    own_work=("intruder_dimensions", "intruder_similarity", "intruder_count"),
    reference=package_intruders,
    cases=intruder_cases,
    traps=(
        CodeTrap(lambda W0, W, k, eps: int((np.abs(right(W)[:, :k].T @ right(W0)).max(axis=1) < eps).sum()),
                 "You compared right singular vectors (rows of Vᵀ, the input side). Shuttleworth et al. and PEFT compare "
                 "the left ones, the columns of U: the directions a weight writes its output along."),
        CodeTrap(lambda W0, W, k, eps: int((np.abs(left(W)[:, :k].T @ left(W0)[:, :k]).max(axis=1) < eps).sum()),
                 "You compared W's top k with W0's top k only. A direction W0 already had lower down is not new: "
                 "compare with every singular vector of W0."),
        CodeTrap(lambda W0, W, k, eps: int(((left(W)[:, :k].T @ left(W0)).max(axis=1) < eps).sum()),
                 "You took the largest cosine, not the largest |cosine|. A singular vector's sign is arbitrary (u and −u "
                 "are the same direction), so a cosine of −0.9 is a close match."),
        CodeTrap(lambda W0, W, k, eps: k - package_intruders(W0, W, k, eps),
                 "You counted the directions W0 already had (largest |cosine| at or above eps). An intruder is one "
                 "whose best match stays below eps."),
    ),
    model_solution="""
def count_intruders(W0, W, k, eps):
    U0 = np.linalg.svd(W0, full_matrices=False)[0]          # every left singular vector of W0, as columns
    U = np.linalg.svd(W, full_matrices=False)[0][:, :k]     # W's top k
    best = np.abs(U.T @ U0).max(axis=1)                     # each one's largest |cosine| with any of W0's
    return int((best < eps).sum())
""",
    explanation="an intruder is a top singular direction of the fine-tuned weight that no singular direction of the "
    "pretrained weight comes close to (|cosine| below ε). Unit columns make U.T @ U0 a table of cosines; the absolute "
    "value ignores the arbitrary sign of each singular vector. A rank-1 update pushes W along one direction, so it "
    "usually adds one new direction at the top, and most other top directions of W stay close to W0's; a large "
    "update can also tilt a neighbouring direction past ε, and a small one may add none.",
    worked_solution="With unit vectors, the cosine is a dot product, so one matrix product compares every pair at once: "
    "entry (i, j) of U.T @ U0 is the cosine of W's i-th and W0's j-th direction. The largest |entry| in row i says how "
    "well W0 already had W's i-th direction.",
    hints=("np.linalg.svd(M, full_matrices=False) returns U, S, Vᵀ; the columns of U are the left singular vectors, "
           "largest first.",
           "U.T @ U0 holds every cosine at once; take the absolute value, then the largest in each row."),
))
register(PredictExercise(
    id="predict-random-cosine",
    prompt="Take 64 orthonormal directions in 64 dimensions (the singular vectors of a 64 × 64 weight) and a random "
    "direction. Its largest |cosine| with any of the 64: what is it, typically? Predict the median over many random "
    "directions (a number between 0 and 1).",
    expected=lambda: chance_cosine(64),
    abs_tol=0.05,
    traps=(
        Trap(lambda: 0.0, "a random direction is nearly orthogonal to any one fixed direction in 64 dimensions, but "
             "not to all 64 at once: its squared cosines with an orthonormal basis add up to 1, so some are sizeable."),
        Trap(lambda: 1 / 8, "1/√64 = 0.125 is the typical |cosine| with one direction (the root of the mean squared "
             "cosine). The largest of 64 of them is well above the typical one."),
        Trap(lambda: 1.0, "64 directions cannot line up with every direction of a 64-dimensional space: a random "
             "direction spreads its length over all of them."),
    ),
    explanation="about 0.32: the 64 squared cosines add up to 1, so they average 1/64, and the largest of 64 such "
    "numbers is about six times the average (0.32² × 64 ≈ 6.5), a cosine of about 0.3. So at ε = 0.5 a random direction already counts "
    "as an intruder in a 64-wide weight: here an intruder means a direction no closer to W's own than chance.",
    hints=("The squared cosines of one unit vector with an orthonormal basis add up to exactly 1.",),
))
register(ChoiceExercise(
    id="rank-is-not-size",
    prompt="Predict before the table. lora-all changes each weight through 8 directions (rank 8); full fine-tuning can "
    "change every entry of it. At their chosen rates, which moved its weights farther from the pretrained ones, by "
    "‖ΔW‖/‖W‖?",
    options={
        "a": "full fine-tuning, by far: a rank-8 update can only hold a small part of a 64-wide weight",
        "b": "lora-all: its 8 directions can each carry a large change",
        "c": "neither more than the other: both learned the same task, so both moved their weights equally far",
        "d": "full fine-tuning: LoRA's base weights are frozen, so lora-all does not move them at all",
    },
    answer_digest="2db8fb8f641f300e",
    feedback={
        "a": "the rank limits how many directions the update has, not how large it is along them: ‖B A‖ can be as large "
        "as the training makes it.",
        "c": "the same task can be learned with very different moves: the size depends on the rate and on how the update "
        "is built, and the table compares them at each method's own chosen rate.",
        "d": "W stays frozen, but the model runs W + (α/r) B A: ΔW = (α/r) B A is the move, and its size is what the "
        "table measures.",
    },
    explanation="the rank counts directions, not size. Validation chose lora-all a larger rate than full, and its few "
    "directions carry the whole move, so its ‖ΔW‖/‖W‖ comes out several times full's here: a low-rank update is not a "
    "small one.",
    hints=("Does the rank of B A bound how large B A can be?",),
))
register(ChoiceExercise(
    id="task-at-zero",
    prompt="Predict before the table. PEFT's edit at λ = 0 removes every intruder dimension (among each adapted weight's "
    "top 10 directions) and refits a rank-8 adapter. How much of the task (nearly every test animal right as trained) will be "
    "left?",
    options={
        "a": "most of it: intruders are a side effect of training, apart from the directions that carry the task",
        "b": "little or none: the intruders are the largest new directions the update wrote, and the task lives in them",
        "c": "all of it: the refitted rank-8 adapter puts back what the edit removed",
        "d": "all of it: the intruders are directions of the pretrained W, and the task is in B A",
    },
    answer_digest="f705ee0c295d892e",
    feedback={
        "a": "an intruder is not noise beside the update: it is one of the top directions of W + ΔW that W did not have, "
        "so it is where the update is largest. Removing it removes the largest part of what fine-tuning wrote.",
        "c": "the refit fits the edited weight, not the original one: it can only keep what the edit left, and may drop "
        "more (the rank-8 limit), never put back what was removed.",
        "d": "an intruder is a direction of the adapted weight W + ΔW far from every direction of W: it is new, so it "
        "comes from ΔW = (α/r) B A, not from the pretrained weight.",
    },
    explanation="the intruders are the strongest directions fine-tuning added that the pretrained weight did not have. "
    "Here the task lives in them: with every intruder removed the model no longer writes the format, and the held-out "
    "loss falls partly for that reason (the table).",
    hints=("Where does an intruder dimension come from: from W, or from the update?",),
))
register(ChoiceExercise(
    id="intruder-null",
    prompt="Suppose a fine-tune's own update put 6 intruder dimensions into the top 10 of its Wq and Wv matrices "
    "(summed), and an update with the same singular values in each matrix (so the same rank and size) but random "
    "directions put 26 there. What does that pair of counts say?",
    options={
        "a": "LoRA damaged the weights: 6 new top directions explain its forgetting",
        "b": "LoRA has fewer intruders than full fine-tuning, so it changes the weights less",
        "c": "what the fine-tune learned lies closer to the pretrained weight's own directions than random directions "
        "with the same singular values would",
        "d": "nothing: a random update is not a fine-tune, so its count is no yardstick",
    },
    answer_digest="eedade5fc332306e",
    feedback={
        "a": "a count alone says nothing until it is set beside a null: here random directions with the same singular "
        "values make four times as many. Whether intruders carry the forgetting is what scaling them down tests.",
        "b": "the random update is not full fine-tuning: it has LoRA's singular values, so its rank and size. Comparing "
        "with full fine-tuning is a different question, with its own counts.",
        "d": "the random update is the yardstick for exactly this question: it keeps what the count depends on besides "
        "the directions (the singular values: rank, size, spectrum) and draws the directions at random, so the gap "
        "between the two is what learning did to the directions.",
    },
    explanation="the null keeps each matrix update's singular values and makes its singular vectors random. A random "
    "direction in 64 dimensions is already an intruder at ε = 0.5, so the null's count is high; the fine-tune's "
    "lower count means its directions lean toward the pretrained weight's own.",
    hints=("What does the random update keep from the fine-tune, and what does it throw away?",),
))
register(WrittenExercise(
    id="finer-steps",
    prompt="Change and explain (about a minute on a laptop CPU). Would LoRA learn the task with a smaller update if "
    "its steps were cut finer? Predict in one line. Then remove the #s in the exercise cell and run it: it trains "
    "lora-all at a third of the rate, 1e-3, for three times the steps, with the three sweep seeds. Adam moves each "
    "weight by about the learning rate per step, so this run has the same total step length as the grid's lora-all at "
    "3e-3 for the grid's 200 steps (on the CPU). Compare the two (label \"lora-all, 3x steps\" at 1e-3 against \"lora-all\" at 3e-3) on "
    "(a) validation exact match, `comparison.mean(label, \"val_exact_match\", lr, SWEEP_SEEDS)`, and (b) ‖ΔW‖ / ‖W's "
    "top-8 part‖, `comparison.measured_mean(label, \"top_r\", lr, SWEEP_SEEDS)`. Did the finer run move its weights "
    "less: is (b) closer to GPT-3's 0.32? Did it still learn: is (a) at least 0.75? Is that the paper's regime?",
    points=(
        "Compare the two runs' `top_r`: if cutting the same total step length finer moved the weights less, say by how "
        "much: a few percent, or several times?",
        "Compare the two validation exact matches too: if the finer run is more than one validation animal per seed "
        "behind, it learned less, and this is a smaller move for less learning, not the same learning for a smaller move.",
        "Set the finer run's top-8 ratio beside GPT-3's 0.32 and its whole-weight ratio beside 0.11: both say how far it "
        "still is from the paper's regime.",
        "Three seeds and no interval: a rough size. A much lower rate trained much longer (3e-4 for 2,000 steps) is "
        "the next thing to try, and the width of the layer (rank 8 in a 64-wide layer is not thin) is an untested "
        "candidate for why LoRA's update is large here.",
    ),
    explanation="Adam moves each weight by about the learning rate per step. Where a weight's gradient keeps its sign "
    "step after step, the moves add up to rate × steps: 1e-3 × 600 = 3e-3 × 200, the same for both runs. Where the "
    "sign flips at random, the moves partly cancel and the drift grows only like rate × √steps: 1e-3 × √600 against "
    "3e-3 × √200, 0.58 times as far. So expect the finer run to move its weights between about 0.6 and 1 times as far: "
    "not several times less. From lora-all at 3e-3 (section 1's table on the CPU: 0.33 of the whole weight, 0.44 of its top-8 "
    "part) that gives about 0.19 to 0.33 against GPT-3's 0.11 on the whole weight, still above it, and about 0.26 to "
    "0.44 against 0.32 on the top-8 measure, which could reach GPT-3's. It may also learn less. Your two runs say where "
    "in that range this model lies. What could make the update small: a wider model, where a rank-8 branch is a thin "
    "correction, the candidate this notebook cannot afford to test.",
    hints=("Read the three numbers for both runs side by side: exact match, ‖ΔW‖/‖W‖ and the top-8 measure.",),
))
