"""Exercises of notebook 02 (the SVD and the best low-rank approximation)."""

from __future__ import annotations

import numpy as np

from ...maths.linalg import SVDReconstructor
from .core import (
    ChoiceExercise,
    CodeExercise,
    CodeTrap,
    NumericExercise,
    PredictExercise,
    Trap,
    WrittenExercise,
    compare_exact,
    register,
)

SPECTRUM = (5.0, 4.0, 2.0, 1.0)


def tail_error(k: int) -> float:
    """Frobenius error of the best rank-k approximation of a matrix with singular values SPECTRUM."""
    return SVDReconstructor(np.diag(SPECTRUM)).error(k)


def rotation(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def rotated_two_by_two() -> np.ndarray:
    """The predict-then-run matrix: R(30°) diag(3, 2) R(60°)ᵀ, so no entry is zero and no two columns are orthogonal."""
    return rotation(30.0) @ np.diag([3.0, 2.0]) @ rotation(60.0).T


def best_rank_one_error() -> float:
    return SVDReconstructor(rotated_two_by_two()).error(1)


def energy_rank(M: np.ndarray, keep: float) -> int:
    """The smallest k whose truncated SVD keeps at least ``keep`` of the squared Frobenius norm."""
    s2 = np.linalg.svd(np.asarray(M, dtype=float), compute_uv=False) ** 2
    share = np.cumsum(s2) / np.sum(s2)
    return int(np.searchsorted(share, keep - 1e-12) + 1)


def energy_cases(rng: np.random.Generator) -> list[tuple[np.ndarray, float]]:
    """Spectra that fall at different speeds, so summing s instead of s^2 or an off-by-one gives another k."""
    cases = [(np.diag([4.0, 3.0, 2.0, 1.0]), 0.9), (np.diag([4.0, 3.0, 2.0, 1.0]), 0.5), (np.eye(5), 0.6)]
    for rows, cols, decay, keep in ((30, 20, 0.7, 0.9), (25, 40, 0.85, 0.95), (12, 12, 0.5, 0.99), (40, 30, 0.9, 0.8)):
        q1, _ = np.linalg.qr(rng.standard_normal((rows, min(rows, cols))))
        q2, _ = np.linalg.qr(rng.standard_normal((cols, min(rows, cols))))
        cases.append((q1 @ np.diag(decay ** np.arange(min(rows, cols))) @ q2.T, keep))
    return cases


def energy_rank_of_values(M: np.ndarray, keep: float) -> int:
    """A usual mistake: the share of the singular values themselves, not of their squares."""
    s = np.linalg.svd(np.asarray(M, dtype=float), compute_uv=False)
    return int(np.searchsorted(np.cumsum(s) / np.sum(s), keep - 1e-12) + 1)


register(PredictExercise(
    id="predict-rotated-rank-one",
    prompt="M = R₁ diag(3, 2) R₂ᵀ, where R₁ turns the plane by 30° and R₂ by 60°. Written out, "
    "M ≈ [[2.17, 1.75], [−0.75, 2.17]]: every entry is non-zero. Predict the Frobenius error ‖M − M₁‖_F of the best "
    "rank-1 approximation M₁.",
    expected=best_rank_one_error,
    rel_tol=3e-3,
    traps=(
        Trap(lambda: 3.0, "that is the error of keeping the smaller direction; the best rank-1 matrix keeps the larger."),
        Trap(lambda: float(np.linalg.norm(rotated_two_by_two()[:, 0])), "that drops the weaker column (or row) of M: a "
             "rank-1 matrix, but not the best one. Entries are not directions: the best rank-1 matrix comes from the "
             "SVD."),
        Trap(lambda: 0.75, "zeroing the smallest entry leaves a matrix of rank 2, not an approximation of rank 1."),
        Trap(lambda: float(np.sqrt(13.0)), "that is ‖M‖_F, the error of the zero matrix."),
        Trap(lambda: 4.0, "that is the squared error."),
    ),
    explanation="turning the plane, before or after, changes no singular value: M has singular values 3 and 2, so "
    "the best rank-1 approximation drops s₂ = 2, and the error is 2, however the entries look.",
))
register(NumericExercise(
    id="tail-error",
    prompt="A 4 × 4 matrix has singular values 5, 4, 2 and 1. What is the Frobenius error of its best rank-2 "
    "approximation? (A float; 3 significant digits are enough, rounded or cut off.)",
    expected=lambda: tail_error(2),
    rel_tol=3e-3,  # sqrt(5) = 2.2361: both 2.24 (rounded) and 2.23 (cut off) are 3 significant digits
    traps=(
        Trap(lambda: 2.0, "2 = s_3 is the error in the spectral norm; the Frobenius norm adds every dropped direction."),
        Trap(lambda: 3.0, "norms add squares: sqrt(s_3^2 + s_4^2), not s_3 + s_4."),
        Trap(lambda: 5.0, "that is the squared error; take the square root."),
        Trap(lambda: tail_error(3), "a rank-2 approximation keeps s_1 and s_2, and drops both s_3 and s_4."),
    ),
    explanation="the dropped singular values are 2 and 1: sqrt(4 + 1) = sqrt(5) ≈ 2.236.",
))
register(CodeExercise(
    id="rank-for-energy",
    prompt="Write rank_for_energy(M, keep): the smallest rank k whose truncated SVD keeps at least the fraction keep "
    "(e.g. 0.9) of M's squared Frobenius norm. This is one way to pick a rank for an image, or for LoRA.",
    signature="rank_for_energy(M, keep) -> int",
    reference=energy_rank,
    cases=energy_cases,
    compare=compare_exact,
    traps=(
        CodeTrap(lambda m, keep: energy_rank_of_values(m, keep), "you added up the singular values. The squared "
                 "Frobenius norm is the sum of their squares, s₁² + s₂² + …"),
        CodeTrap(lambda m, keep: energy_rank(m, keep) - 1, "you are one short: you returned the index of the last "
                 "kept value, counting from 0. A rank counts values from 1."),
        CodeTrap(lambda m, keep: energy_rank(m, keep) + 1, "you kept one value too many: stop at the first k whose "
                 "share reaches keep (≥, not >)."),
    ),
    model_solution="""
def rank_for_energy(M, keep):
    s = np.linalg.svd(M, compute_uv=False)
    share = np.cumsum(s**2) / np.sum(s**2)   # share kept by ranks 1, 2, 3, ...
    k = 1
    while share[k - 1] < keep - 1e-12:       # a little slack for rounding
        k += 1
    return k
""",
    explanation="the share kept by rank k is (s₁² + … + s_k²) / Σ s², by Eckart-Young the most any rank-k matrix "
    "keeps; the answer is the first k where it reaches keep.",
    hints=("np.cumsum of the squared singular values, divided by their sum, gives the share kept for k = 1, 2, ...",),
))
register(WrittenExercise(
    id="eckart-young-why",
    prompt="Eckart-Young, the intuition. The SVD writes M as a sum of rank-one layers sᵢ uᵢ vᵢᵀ. Keeping k of the "
    "layers leaves an error. Explain why keeping the k layers with the largest sᵢ gives the smallest error among "
    "all choices of k layers.",
    points=(
        "The layers are orthogonal to each other (the uᵢ are orthonormal and so are the vᵢ), so the squared norms of "
        "the dropped layers add up, like Pythagoras.",
        "Layer i has ‖sᵢ uᵢ vᵢᵀ‖_F = sᵢ, so dropping it costs exactly sᵢ² of squared error.",
        "The error of keeping a set of layers is √(sum of sᵢ² over the dropped ones), which is smallest when the "
        "dropped ones are the smallest sᵢ.",
        "(Eckart-Young says more: no rank-k matrix at all, not only sums of SVD layers, does better.)",
    ),
    explanation="The error of keeping a set S of layers is the sum of the dropped layers. They are orthogonal, so "
    "the squared norm of that sum is the sum of their squared norms, and layer i has norm sᵢ (uᵢ, vᵢ have length 1). "
    "So the squared error is the sum of sᵢ² over the dropped layers, smallest when the dropped ones are the smallest "
    "sᵢ, that is, when the k largest are kept. The theorem goes further: no rank-k matrix does better.",
))
register(ChoiceExercise(
    id="recommender",
    prompt="A users × movies 'liked' matrix X (millions of users, 100,000 movies) is factorised as X ≈ P Q with "
    "P (users × f) and Q (f × movies), and f = 50 already fits X well. What does that tell you about X?",
    options={
        "a": "X has rank 50",
        "b": "the singular values of X beyond the 50th are small next to the first ones",
        "c": "nothing about X: P Q has rank ≤ 50, so any matrix can be fitted this way",
        "d": "each user has liked at most 50 movies, so X has at most 50 non-zero entries per row",
    },
    answer_digest="3e80974630a7c047",
    feedback={
        "a": "X is only close to rank 50: noise makes its exact rank full (section 6's X has rank 500, yet rank 3 "
        "fits it). A good fit says the tail singular values are small, not zero.",
        "c": "P Q has rank ≤ 50 whatever X is, but it fits X well only if X itself is close to rank 50: by Eckart-Young "
        "the best error is the root of the sum of the squared tail singular values.",
        "d": "low rank is not sparsity: a rank-one matrix can have every entry non-zero, and the identity has one "
        "non-zero entry per row yet full rank.",
    },
    explanation="by Eckart-Young the best rank-50 error is √(s₅₁² + s₅₂² + …), so a good fit means the spectrum "
    "falls off after about 50 values: a few shared factors (genres, moods, eras) explain most of the likes. LoRA "
    "makes the same bet about the weight update of a fine-tune.",
))
