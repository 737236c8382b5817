"""Exercises of notebook 02 (the SVD and the best low-rank approximation)."""

from __future__ import annotations

import numpy as np

from ...maths.linalg import SVDReconstructor, lora_factors
from .core import ChoiceExercise, CodeExercise, NumericExercise, Trap, compare_close, register

SPECTRUM = (5.0, 4.0, 2.0, 1.0)


def tail_error(k: int) -> float:
    """Frobenius error of the best rank-k approximation of a matrix with singular values SPECTRUM."""
    return SVDReconstructor(np.diag(SPECTRUM)).error(k)


def factor_cases(rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    return [(rng.standard_normal((rows, cols)), r) for rows, cols, r in ((6, 4, 2), (5, 8, 1), (10, 7, 3), (4, 4, 4), (12, 9, 5))]


def same_product(got: object, expected: tuple[np.ndarray, np.ndarray], args: tuple) -> str | None:
    """Any (B, A) with the right shapes and B @ A equal to the truncated SVD is right (the factors are not unique)."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return "return the pair (B, A)"
    (b, a), (b_ref, a_ref) = (np.asarray(g, dtype=float) for g in got), expected
    if b.shape != b_ref.shape or a.shape != a_ref.shape:
        return f"B must be (d_out, r) = {b_ref.shape} and A (r, d_in) = {a_ref.shape}; got {b.shape} and {a.shape}"
    return compare_close(b @ a, b_ref @ a_ref, rtol=1e-6, atol=1e-8)


register(ChoiceExercise(
    id="eckart-young",
    prompt="s_1 ≥ s_2 ≥ ... are the singular values of M. The Frobenius error ||M - M_k||_F of the best rank-k "
    "approximation M_k is:",
    options={"a": "s_k", "b": "sqrt(s_{k+1}^2 + s_{k+2}^2 + ...)", "c": "s_1 + ... + s_k", "d": "0 for every k ≥ 1"},
    answer_digest="ff647f201e2d943d",
    feedback={
        "a": "s_k is kept, not dropped; and the largest dropped value s_{k+1} is the error in the spectral norm, "
        "not in the Frobenius norm, which adds up every dropped direction.",
        "c": "those are the values kept; the error comes from the ones dropped, and norms add squares, not values.",
        "d": "only a matrix of rank ≤ k is reproduced exactly; a generic matrix needs all its directions.",
    },
    explanation="truncating the SVD drops exactly the tail singular values, the squared Frobenius norm is the sum of "
    "the squared singular values, and no rank-k matrix does better (Eckart-Young).",
))
register(NumericExercise(
    id="tail-error",
    prompt="A 4 x 4 matrix has singular values 5, 4, 2 and 1. What is the Frobenius error of its best rank-2 "
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
    id="svd-to-lora",
    prompt="Write svd_to_lora(M, r): LoRA-shaped factors B (d_out x r) and A (r x d_in) of the best rank-r "
    "approximation of M (d_out x d_in), from np.linalg.svd. It is checked on hidden matrices: B @ A must equal the "
    "truncated SVD (any split of the singular values between B and A is accepted).",
    signature="svd_to_lora(M, r) -> (B, A)",
    reference=lora_factors,
    cases=factor_cases,
    compare=same_product,
    explanation="B = U_r diag(s_r)^½ and A = diag(s_r)^½ V_rᵀ split each singular value evenly, so B A is the "
    "Eckart-Young optimum: an SVD gives LoRA's factors directly.",
    hints=("U, s, Vt = np.linalg.svd(M, full_matrices=False); keep the first r of each.",
           "Scale the columns of U_r by sqrt(s_r) and the rows of Vt_r by sqrt(s_r)."),
))
register(ChoiceExercise(
    id="recommender",
    prompt="A users x movies 'liked' matrix X (millions of users, 100,000 movies) is factorised as X ≈ P Q with "
    "P (users x f) and Q (f x movies), and f of only 50-100 works well. Why is so small an f enough?",
    options={
        "a": "because any factorisation P Q has low rank, whatever X is",
        "b": "because f = 1,000 would be too expensive to compute",
        "c": "because tastes are driven by a few shared factors (genres, moods, eras), so X is close to low rank",
        "d": "because it happened to work in experiments, for no reason",
    },
    answer_digest="eddd2dbebb278ce0",
    feedback={
        "a": "P Q has rank ≤ f, true, but that only says the model is low rank; it approximates X well only if X "
        "itself is close to low rank (look at the spectrum).",
        "b": "cost limits f from above, but a small f would still give a bad fit if X needed more directions.",
        "d": "there is a reason, and it is measurable: the spectrum of X falls off after a few singular values.",
    },
    explanation="low rank is a property of the data: a few latent factors explain most of the preferences, and the "
    "spectrum shows it. LoRA makes the same bet about the weight update of a fine-tune.",
))
