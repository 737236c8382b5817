"""Exercises of notebook 06 (the LoRA paper's experiments at small scale)."""

from __future__ import annotations

import functools

import numpy as np

from ...maths.arch import Architecture, lora_parameter_count
from .core import (
    ChoiceExercise,
    CodeExercise,
    CodeTrap,
    NumericExercise,
    PredictExercise,
    Trap,
    WrittenExercise,
    register,
)


def package_phi(a1: np.ndarray, a2: np.ndarray, i: int, j: int) -> float:
    """φ(i, j) from ``lora_edu.paper.analysis.subspace_similarity`` (i, j counted from 1, as in the paper)."""
    from ...paper.analysis import subspace_similarity  # imports torch: only when this exercise is checked

    return float(subspace_similarity(a1, a2)[i - 1, j - 1])


def phi_cases(rng: np.random.Generator) -> list[tuple]:
    """Pairs of A matrices (r1 x d) and (r2 x d) with partly shared rows, so φ is neither 0 nor 1.

    The first case has r1 = r2 and i = j = 2, so that the usual mistakes (left-singular vectors, the columns of
    Vᵀ, no division, no square, the rows of A) all run and all give different wrong numbers.
    """
    cases = []
    for r1, r2, d, i, j in ((3, 3, 5, 2, 2), (2, 4, 6, None, None), (4, 8, 16, None, None), (1, 5, 7, None, None),
                            (8, 2, 10, None, None), (6, 6, 12, 3, 5)):
        a1 = rng.standard_normal((r1, d))
        a2 = rng.standard_normal((r2, d))
        a2[: min(r1, r2)] += 2 * a1[: min(r1, r2)]
        cases.append((a1, a2, i or int(rng.integers(1, r1 + 1)), j or int(rng.integers(1, r2 + 1))))
    return cases


def top_rows(a: np.ndarray, k: int) -> np.ndarray:
    """The top-k right-singular vectors of A, as rows (k, d)."""
    return np.linalg.svd(a, full_matrices=False)[2][:k]


def phi_left(a1: np.ndarray, a2: np.ndarray, i: int, j: int) -> float:
    """A usual mistake: the left-singular vectors (they live in R^r, not R^d; defined only when r1 = r2)."""
    u1 = np.linalg.svd(a1, full_matrices=False)[0][:, :i]
    u2 = np.linalg.svd(a2, full_matrices=False)[0][:, :j]
    return float(np.sum((u1.T @ u2) ** 2) / min(i, j))


def phi_vt_columns(a1: np.ndarray, a2: np.ndarray, i: int, j: int) -> float:
    """A usual mistake: the columns of NumPy's Vᵀ instead of its rows."""
    c1 = np.linalg.svd(a1, full_matrices=False)[2][:, :i]
    c2 = np.linalg.svd(a2, full_matrices=False)[2][:, :j]
    return float(np.sum((c1.T @ c2) ** 2) / min(i, j))


@functools.cache
def random_phi_mean(pairs: int = 500, r: int = 8, d: int = 64, seed: int = 0) -> float:
    """Mean φ(r, r) over ``pairs`` pairs of independent Gaussian A matrices (r x d), drawn as notebook 06 draws them."""
    from ...paper.analysis import subspace_similarity

    draws = np.random.default_rng(seed)
    return float(np.mean([subspace_similarity(draws.standard_normal((r, d)), draws.standard_normal((r, d)))[r - 1, r - 1]
                          for _ in range(pairs)]))


def placement_count(r: int, targets: tuple[str, ...]) -> int:
    """32 layers, d_model = 2560 (multi-head attention: every projection is 2560 x 2560)."""
    arch = Architecture("exercise", 32, 2560, 32, 32, 10240, 50257, 2048, "gelu", True, True)
    return lora_parameter_count(arch, r, targets)


register(PredictExercise(
    id="predict-random-phi",
    prompt="Draw two A matrices of shape 8 × 64 with independent random entries, as two LoRA runs start. Their top-8 "
    "right-singular vectors span two random 8-dimensional subspaces of R^64. Predict φ(8, 8), averaged over many such "
    "pairs. (The cell draws 500 pairs.)",
    expected=random_phi_mean,
    rel_tol=0.1,
    traps=(
        Trap(lambda: 0.0, "two random directions in R^64 are nearly orthogonal, but not exactly: each squared cosine is "
             "about 1/64, and ‖U₈ᵀ V₈‖_F² adds up 8 × 8 of them."),
        Trap(lambda: 1 / 64, "1/64 is the mean squared cosine of one pair of random directions in R^64. φ(8, 8) adds up "
             "8 × 8 such squared cosines, then divides by min(8, 8) = 8."),
        Trap(lambda: 1.0, "φ = 1 means one subspace lies inside the other. Two independent random 8-dimensional "
             "subspaces of R^64 share almost nothing."),
    ),
    explanation="‖U₈ᵀ V₈‖_F² adds up 8 × 8 = 64 squared cosines between random directions in R^64. Each is 1/64 on "
    "average, so the sum is 1 on average, and φ(8, 8) is 1/8 = 8/64 on average. In general, random subspaces give φ(i, j) about "
    "max(i, j)/d: the baseline to compare a learned φ with, not 0.",
    hints=("A random unit vector in R^64 keeps about 8/64 of its squared length in any fixed 8-dimensional subspace.",),
))
register(CodeExercise(
    id="subspace-phi",
    prompt="Write phi(A1, A2, i, j): the LoRA paper's subspace similarity ‖U_iᵀ V_j‖_F² / min(i, j), where U_i holds "
    "the top-i right-singular vectors of A1 (r1 × d) and V_j the top-j right-singular vectors of A2 (r2 × d), as "
    "columns. It is run on hidden pairs of A matrices.",
    own_work=("subspace_similarity",),
    signature="phi(A1, A2, i, j) -> float",
    reference=package_phi,
    cases=phi_cases,
    traps=(
        CodeTrap(phi_left, "you used the left-singular vectors (the columns of U). Those live in R^r, one entry per "
                 "rank; the directions of A in the input space R^d are the right-singular vectors."),
        CodeTrap(phi_vt_columns, "np.linalg.svd returns Vᵀ: the right-singular vectors are its rows, vt[:i], not its "
                 "columns."),
        CodeTrap(lambda a1, a2, i, j: float(np.sum((top_rows(a1, i) @ top_rows(a2, j).T) ** 2)), "you did not divide "
                 "by min(i, j). The squared norm adds up to min(i, j) when one subspace contains the other; dividing "
                 "puts φ in [0, 1]."),
        CodeTrap(lambda a1, a2, i, j: float(np.linalg.norm(top_rows(a1, i) @ top_rows(a2, j).T) / min(i, j)),
                 "you used the Frobenius norm without squaring it. φ divides the squared norm, a sum of squared "
                 "cosines, by min(i, j)."),
        CodeTrap(lambda a1, a2, i, j: float(np.sum((a1[:i] @ a2[:j].T) ** 2) / min(i, j)), "you used the rows of A "
                 "themselves. They are neither orthonormal nor ordered by importance: take the right-singular vectors "
                 "from the SVD."),
    ),
    model_solution="""
def phi(A1, A2, i, j):
    U = np.linalg.svd(A1, full_matrices=False)[2][:i].T   # (d, i): the rows of Vᵀ are the right-singular vectors
    V = np.linalg.svd(A2, full_matrices=False)[2][:j].T   # (d, j)
    return np.sum((U.T @ V) ** 2) / min(i, j)              # squared Frobenius norm, divided by min(i, j)
""",
    explanation="φ is the mean squared cosine of the principal angles between the two subspaces: 1 when the smaller "
    "lies inside the larger, 0 when they are orthogonal.",
    hints=("np.linalg.svd(A1, full_matrices=False) returns Vt; its first i rows are U_iᵀ.",
           "The squared Frobenius norm is the sum of the squared entries."),
))
register(NumericExercise(
    id="placement-budget",
    prompt="Table 5 of the paper fixes the number of trainable parameters and compares placements: r = 8 on Wq alone, "
    "r = 4 on Wq and Wv, r = 2 on Wq, Wk, Wv and Wo. For a model with 32 layers and d_model = 2560 (square "
    "projections), how many parameters does the last placement, r = 2 on the four projections, train?",
    expected=lambda: placement_count(2, ("q", "k", "v", "o")),
    traps=(
        Trap(lambda: placement_count(8, ("q", "k", "v", "o")), "r = 8 belongs to the one-matrix placement; with four "
             "matrices the rank is 2."),
        Trap(lambda: placement_count(2, ("q", "k", "v", "o")) // 32, "that is one layer; there are 32."),
        Trap(lambda: 32 * 4 * 2 * 2560, "each matrix adds r (d_in + d_out) = r × 2 × 2560, not r × 2560."),
    ),
    explanation="each projection adds 2 (2560 + 2560) = 10,240, four per layer, 32 layers: exactly the budget of r = 8 "
    "on Wq alone or r = 4 on Wq and Wv, which is why the table can compare them.",
))
register(ChoiceExercise(
    id="amplification-factor",
    prompt="Table 7's measurement on another fine-tune, at r = 4: projecting W onto the top-4 singular directions of ΔW "
    "gives ||Uᵀ W Vᵀ||_F = 3.9; onto W's own top-4 directions, 4.2; onto random directions, 0.3; and ||ΔW||_F = 1.2. "
    "What does this ΔW do?",
    options={
        "a": "it amplifies directions that W has but does not emphasise, as the paper found for GPT-3",
        "b": "nothing related to W: its directions are as good as random",
        "c": "it mostly acts along W's own strongest directions: its amplification factor is below 1",
        "d": "it rewrites most of W, because its directions carry almost all of W's projection",
    },
    answer_digest="5da923774e2e76e3",
    feedback={
        "a": "that is the paper's finding, not what these numbers say: the projection on ΔW's directions (3.9) is close to "
        "the one on W's own top directions (4.2), so ΔW's directions are W's strongest ones, not under-emphasised ones.",
        "b": "random directions give 0.3 and ΔW's give 3.9, thirteen times more: ΔW is strongly correlated with W.",
        "d": "sharing W's directions is not the same as being large: ||ΔW||_F = 1.2 is small next to W's 3.9 along them, "
        "so ΔW nudges W along its strongest directions.",
    },
    explanation="compare the three projections: ΔW's directions capture almost as much of W as W's own top directions, "
    "far more than random ones; so ΔW points along what W already emphasises. The amplification factor "
    "||ΔW||_F / ||Uᵀ W Vᵀ||_F = 1.2 / 3.9 ≈ 0.3 is below 1: unlike GPT-3's 21.5 (the paper's Table 7, Section 7.3), "
    "this update acts along strong features instead of amplifying weak ones (the norms cannot see its sign, so it may "
    "strengthen or weaken them).",
))
register(WrittenExercise(
    id="first-update-scaling",
    prompt="Explain the first-update table of section 2, then check your argument. In the layer of that table, after "
    "one Adam step every entry of B is ±η (η is the learning rate), and A is still its random start: r rows of "
    "length about 1, in nearly orthogonal directions. The update is ΔW = γ B A, with γ the scaling. (1) Show that ‖ΔW‖_F grows like γ √r. "
    "(2) Use it to explain the size ‖ΔW‖_F in the three columns: α fixed (γ = α/r), α = 2r (γ = 2), rsLoRA (γ = α/√r). "
    "(3) Predict the three sizes at r = 128 from the r = 8 row, then add 128 to the ranks in that cell and run it. (4) "
    "What would the rank sweep compare if it used α = 2r instead of a fixed α?",
    points=(
        "B A is a sum of r rank-one pieces (column k of B times row k of A). With random signs and nearly orthogonal "
        "rows of A, their squared norms add up: ‖B A‖_F² ≈ r η² d_out, so ‖ΔW‖_F ≈ γ η √(r d_out), which grows like "
        "γ √r.",
        "α fixed: γ = α/r, so ‖ΔW‖_F falls like 1/√r. α = 2r: γ = 2, so it grows like √r. rsLoRA: γ = α/√r, so it "
        "stays the same at every rank.",
        "From r = 8 to r = 128 (16 times the rank): divided by 4 with α fixed, multiplied by 4 with α = 2r, unchanged "
        "with rsLoRA; the cell prints about 0.032, 0.51 and 0.128.",
        "With α = 2r the first update at r = 32 is about √32 ≈ 5.7 times the size of that at r = 1 (the table "
        "measures about 5.5), and it lowers the loss about 32 times as much, at the same learning rate. "
        "The sweep would compare step sizes as well as ranks: a high rank could look better (or diverge) only "
        "because it takes bigger steps.",
    ),
    explanation="ΔW = γ Σ_k b_k a_kᵀ, a sum of r rank-one pieces whose entries have random signs; the rows a_k of A are "
    "nearly orthogonal, so the squared norms add: ‖ΔW‖_F² ≈ γ² r η² d_out. Hence ‖ΔW‖_F is proportional to γ √r: "
    "α/r with a fixed α gives 1/√r, α = 2r gives √r, and rsLoRA's α/√r gives a constant. At r = 128 the r = 8 value "
    "(about 0.127 in every column) becomes about 0.032, 0.51 and 0.13. A sweep with α = 2r would change the step "
    "size with the rank, so it would not isolate the rank.",
    hints=("Write ‖B A‖_F² as a sum over the rows of B A, and each row as a combination of the rows of A.",
           "Vectors with random signs in nearly orthogonal directions add like Pythagoras: their squared lengths add."),
))
register(ChoiceExercise(
    id="margin-verdict",
    prompt="Reach a verdict yourself. Another run of section 2d's test gave five seeds, each at its own rate, and these "
    "ratios of test answer loss, r = 1 over r = 4, one per seed: 1.05, 1.32, 1.18, 1.41, 1.09. The claim is that r = 1 "
    "is enough, with the margin fixed before looking: a loss at most 1.25 times r = 4's. Compute the geometric mean and "
    "the 95% t-interval of the ratio (take logs, a t-interval over the five seeds, 4 degrees of freedom, t = 2.776, then "
    "exp; leave the animals' luck aside). Which verdict follows?",
    options={
        "a": "agrees: the geometric mean is below the margin of 1.25",
        "b": "disagrees: the whole interval lies above 1, so r = 1 does worse than r = 4",
        "c": "not resolved: the interval reaches both sides of 1.25",
        "d": "disagrees: two of the five seeds lie above 1.25",
    },
    answer_digest="f3151fd9ef194ca0",
    feedback={
        "a": "a point estimate alone decides nothing. With five seeds the interval is wide, and ratios above 1.25 fit the "
        "data as well as ratios below it.",
        "b": "that tests another claim, that r = 1 is exactly as good as r = 4. The claim here is that r = 1 is enough: "
        "a little worse is allowed, up to the margin. Only an interval wholly above 1.25 would show it is not enough.",
        "d": "counting seeds on each side ignores how far each lies from the margin and how many seeds there are; the "
        "interval over the seeds weighs both.",
    },
    explanation="the logs are 0.049, 0.278, 0.166, 0.344 and 0.086: mean 0.184, standard deviation 0.125, standard "
    "error 0.125 / √5 = 0.056, half-width 2.776 × 0.056 = 0.155. So the ratio is exp(0.184) = 1.20 with the interval "
    "[exp(0.029), exp(0.339)] = [1.03, 1.40]. It lies above 1, so r = 1 is a little worse than r = 4, but it reaches "
    "both sides of the margin 1.25: these seeds cannot say whether r = 1 is enough. More seeds would narrow it.",
    hints=("Work on the log scale: the interval of the mean log ratio, then exp of its ends.",
           "The claim is about the margin 1.25, not about 1: compare the interval's ends with 1.25."),
))
