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

UNSORTED_SPECTRUM = (2.0, 9.0, 4.0, 1.0, 6.0, 3.0)


def smallest_rank_below(values: tuple[float, ...], threshold: float) -> int:
    """The smallest k whose best rank-k approximation of a matrix with these singular values has error below threshold."""
    svd = SVDReconstructor(np.diag(values))
    return next(k for k in range(len(values) + 1) if svd.error(k) < threshold)


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
    cases = [(np.diag([4.0, 3.0, 2.0, 1.0]), 0.9), (np.diag([4.0, 3.0, 2.0, 1.0]), 0.5), (np.eye(4), 0.5)]  # shares exact in floats
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
    prompt="A 6 × 6 matrix has singular values 2, 9, 4, 1, 6 and 3, listed here in no particular order. What is the "
    "smallest rank k whose best rank-k approximation has a Frobenius error below 5?",
    expected=lambda: smallest_rank_below(UNSORTED_SPECTRUM, 5.0),
    traps=(
        Trap(lambda: 2, "the Frobenius error is not the largest dropped singular value: it adds the squares of all "
             "the dropped ones."),
        Trap(lambda: 4, "you added the dropped singular values themselves. The error is the square root of the sum of "
             "their squares."),
        Trap(lambda: 5, "sort first: the best rank-k approximation keeps the k largest singular values, in whatever "
             "order they were listed. (And compare the error itself with 5, not its square.)"),
        Trap(lambda: 6, "rank 6 leaves no error at all, but a smaller rank already gets below 5."),
    ),
    explanation="sorted, the values are 9, 6, 4, 3, 2, 1. Keeping 2 drops 4, 3, 2, 1: error √30 ≈ 5.48. Keeping 3 "
    "drops 3, 2, 1: error √14 ≈ 3.74, below 5. So k = 3.",
    hints=("Sort the singular values, then compute the error for k = 1, 2, 3, ... in turn.",),
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
    prompt="Why does Eckart-Young need the SVD's own layers? M = [[4, 1], [1, 1]] is also a sum of two rank-one "
    "pieces that are not its SVD: M = 3 e₁e₁ᵀ + 2 u uᵀ, with e₁ = (1, 0) and u = (1, 1)/√2 (check it in a cell). "
    "Dropping the smaller piece leaves 3 e₁e₁ᵀ, with Frobenius error ‖2 u uᵀ‖_F = 2. Is that the best rank-1 "
    "approximation of M? Compute the error of the truncated SVD (np.linalg.svd), compare, and explain which of "
    "section 2's two facts fails for these pieces, and why that breaks \"drop the smallest piece\".",
    points=(
        "The truncated SVD does much better: M's singular values are (5 ± √13)/2 ≈ 4.30 and 0.70, so the best rank-1 "
        "error is s₂ ≈ 0.70, against 2 for dropping the smaller piece.",
        "Fact 1 still holds (‖2 u uᵀ‖_F = 2, because u has length 1); fact 2 fails: the pieces are not orthogonal. "
        "⟨e₁e₁ᵀ, u uᵀ⟩ = (e₁·u)² = 1/2, not 0.",
        "So their squared sizes do not add: ‖M‖²_F = 16 + 1 + 1 + 1 = 19, not 3² + 2² = 13. The pieces overlap, and "
        "the best rank-1 matrix is neither of them: it mixes both directions.",
        "\"Drop the smallest pieces\" is only optimal for orthogonal pieces, the SVD's layers: a sum of rank-one "
        "pieces says nothing about the best approximation unless it is the SVD.",
    ),
    hints=("Compute ⟨e₁e₁ᵀ, u uᵀ⟩ = (e₁·u)²: are the two pieces orthogonal? Then compare ‖M‖²_F with 3² + 2².",),
    explanation="The SVD of M gives s ≈ (4.30, 0.70), so its best rank-1 approximation errs by 0.70, far less than "
    "the 2 left by dropping the smaller of the two pieces given. Those pieces overlap (⟨e₁e₁ᵀ, u uᵀ⟩ = 1/2), so "
    "Pythagoras does not apply: their squared sizes do not add up to ‖M‖²_F (13 against 19), and keeping the larger "
    "piece is not the same as keeping the most of M. Eckart-Young's argument needs the layers to be orthogonal, which "
    "is what the SVD guarantees.",
))
register(ChoiceExercise(
    id="recommender",
    prompt="A users × movies 'liked' matrix X (100,000 users, 10,000 movies) is approximated by truncated SVDs of rank f. "
    "The relative errors are: "
    "f = 10: 30%; f = 50: 5.0%; f = 200: 4.9%. Which reading of these numbers is right?",
    options={
        "a": "X has rank 50",
        "b": "X is close to a rank-50 matrix plus noise: after the 50th, the singular values are small and fall "
        "slowly",
        "c": "f = 200 overfits: with more factors the approximation gets worse than it should",
        "d": "each user has liked at most 50 movies, so rank 50 is enough",
    },
    answer_digest="3e80974630a7c047",
    feedback={
        "a": "a matrix of rank 50 is matched exactly by its rank-50 truncation: the error would be 0%, not 5%. A small "
        "error says the tail singular values are small, not zero.",
        "c": "the rank-200 truncation is the best rank-200 matrix (Eckart-Young), and it contains the rank-50 one, so "
        "its error cannot be larger. Overfitting is about entries you did not fit, which these numbers do not measure.",
        "d": "low rank is not sparsity: a rank-one matrix can have every entry non-zero, and the identity has one "
        "non-zero entry per row yet full rank.",
    },
    explanation="the error falls fast up to f = 50, then hardly moves: 150 more singular values together hold only "
    "0.050² − 0.049² ≈ 0.01% of ‖X‖²_F, while 0.049² ≈ 0.24% is still left after the 200th. So the noise is spread "
    "thinly over many small singular values. That is the picture of a low-rank matrix plus noise, as in section 5: a "
    "few shared factors explain most of the likes. LoRA makes the same bet about the weight update of a fine-tune.",
))
