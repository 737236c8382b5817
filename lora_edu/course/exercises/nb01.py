"""Exercises of notebook 01 (rank and the rank-one update)."""

from __future__ import annotations

import numpy as np

from ...maths.linalg import rank_by_elimination
from .core import ChoiceExercise, CodeExercise, NumericExercise, Trap, compare_exact, register


def integer_matrix_of_rank(rng: np.random.Generator, rows: int, cols: int, rank: int) -> np.ndarray:
    """rows x cols integer matrix of the given rank (small integer factors, rows mixed, not just proportional)."""
    while True:
        m = rng.integers(-3, 4, size=(rows, rank)) @ rng.integers(-3, 4, size=(rank, cols))
        if np.linalg.matrix_rank(m) == rank:
            return m.astype(float)


def rank_cases(rng: np.random.Generator) -> list[tuple[np.ndarray]]:
    """Hidden inputs of ``rank-by-hand``: dependent rows that are sums, not multiples; zero and thin matrices."""
    cases = [
        (np.zeros((3, 4)),),
        (np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 4.0]]),),
        (np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0], [1.0, 3.0, 1.0]]),),
    ]
    for rows, cols in ((4, 4), (5, 3), (3, 6), (6, 6), (1, 5)):
        for rank in sorted({1, min(rows, cols) - 1, min(rows, cols)} - {0}):
            cases.append((integer_matrix_of_rank(rng, rows, cols, rank),))
    return cases


register(ChoiceExercise(
    id="rank-of-product",
    prompt="ΔW = B A with B (d_out x r) and A (r x d_in), where r < min(d_out, d_in). "
    "Which statement about rank(ΔW) is true for every such B and A?",
    options={"a": "rank(ΔW) = r", "b": "rank(ΔW) ≤ r", "c": "rank(ΔW) ≥ r", "d": "rank(ΔW) = min(d_out, d_in)"},
    answer_digest="fb2b0f96c4177c61",
    feedback={
        "a": "r is only the most it can be: LoRA starts with B = 0, so ΔW = 0 has rank 0, and a B with two equal "
        "columns gives less than r.",
        "c": "the rank can fall below r (B = 0 gives rank 0); r is an upper bound, not a lower one.",
        "d": "that is the largest rank any d_out x d_in matrix can have; every column of B A is a combination of "
        "the r columns of B, so the product cannot have more than r independent columns.",
    },
    explanation="every column of B A is a combination of the r columns of B, so at most r of them are independent; "
    "the rank can be lower (B = 0 at LoRA's start gives 0).",
    hints=("Write column j of B A as B times column j of A.",),
))
register(NumericExercise(
    id="rank-of-sum-rows",
    prompt="No row of M = [[1, 2, 0], [0, 1, 1], [2, 5, 1]] is a multiple of another. What is the rank of M? "
    "Work it out with row operations on paper first.",
    expected=lambda: rank_by_elimination(np.array([[1, 2, 0], [0, 1, 1], [2, 5, 1]])),
    traps=(
        Trap(lambda: 3, "no two rows are proportional, but a dependence can involve several rows: subtract 2 x row 1 "
             "from row 3 and compare what is left with row 2."),
        Trap(lambda: 1, "rows 1 and 2 are not multiples of each other, so the rank is at least 2."),
    ),
    explanation="row 3 = 2 x row 1 + row 2, so elimination leaves two non-zero rows: rank 2.",
    hints=("R3 <- R3 - 2 R1 gives (0, 1, 1). What does R3 <- R3 - R2 give then?",),
))
register(NumericExercise(
    id="lora-storage-rectangular",
    prompt="GPT-2 small's MLP matrix fc_in is 3072 x 768 (d_out x d_in). How many numbers do B and A of a rank-4 "
    "update ΔW = B A store together?",
    expected=lambda: 4 * (3072 + 768),
    traps=(
        Trap(lambda: 2 * 3072 * 4, "2dr holds for a square d x d matrix; here B is d_out x r and A is r x d_in."),
        Trap(lambda: 2 * 768 * 4, "2dr holds for a square d x d matrix; here B is d_out x r and A is r x d_in."),
        Trap(lambda: 3072 * 768, "that is the full matrix; count the entries of B and of A."),
    ),
    explanation="B has d_out r = 12,288 entries and A has r d_in = 3,072: r (d_out + d_in) in all, "
    "against d_out d_in = 2,359,296 for ΔW itself.",
))
register(CodeExercise(
    id="rank-by-hand",
    prompt="Write rank_by_hand(M): the rank of a matrix by Gaussian elimination (count the pivots). It is run on "
    "hidden matrices (some with rows that are sums of other rows) and compared with lora_edu.rank_by_elimination.",
    signature="rank_by_hand(M) -> int",
    reference=rank_by_elimination,
    cases=rank_cases,
    compare=compare_exact,
    explanation="counting pivots after elimination is counting independent rows.",
    hints=("Copy M as floats; for each column find a row (at or below the current one) with a non-zero entry, "
           "swap it up, and subtract multiples of it from every row below.",
           "Treat |entry| < 1e-9 as zero: 0.1 + 0.2 - 0.3 is not exactly 0 in floating point."),
))
