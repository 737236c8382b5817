"""Exercises of notebook 01 (rank and the rank-one update)."""

from __future__ import annotations

import numpy as np

from ...maths.linalg import rank_by_elimination
from .core import CodeExercise, CodeTrap, NumericExercise, PredictExercise, Trap, WrittenExercise, compare_close, register


def deficient_product_rank() -> int:
    """rank(B A) for the predict-then-run cell: B 5 x 3 random, A 3 x 6 whose third row is the sum of the first two."""
    rng = np.random.default_rng(1)
    b = rng.integers(-3, 4, size=(5, 3)).astype(float)
    a = rng.integers(-3, 4, size=(3, 6)).astype(float)
    a[2] = a[0] + a[1]
    return int(np.linalg.matrix_rank(b @ a))


register(PredictExercise(
    id="predict-rank-deficient-factor",
    prompt="B is 5 × 3 and A is 3 × 6, so r = 3. The entries are random integers, except that row 3 of A is "
    "row 1 + row 2. Predict rank(B A).",
    expected=deficient_product_rank,
    traps=(
        Trap(lambda: 3, "r = 3 is only the most the rank can be, and A has only 2 independent rows. Run the cell, "
             "then explain the drop in the proof exercise at the end."),
        Trap(lambda: 5, "5 = min(d_out, d_in) is the largest rank of any 5 × 6 matrix; the thin factors cap it lower."),
        Trap(lambda: 1, "one dependence among A's rows removes one direction, not two."),
    ),
    explanation="rank(A) = 2, so B A can have rank at most 2: B can never add directions, it only maps what A "
    "produced. It has rank exactly 2 here because B's 3 columns are independent (random integers): B loses none of "
    "the 2 directions A leaves. Why a deficient factor caps the product is the proof exercise at the end.",
))

FOUR_ROWS = ((1, 2, 0, 1), (0, 1, 1, 2), (2, 3, 1, 1), (3, 4, 0, 0))  # row 4 = row 1 - row 2 + row 3


register(NumericExercise(
    id="rank-of-sum-rows",
    prompt="M = [[1, 2, 0, 1], [0, 1, 1, 2], [2, 3, 1, 1], [3, 4, 0, 0]]. No row is a multiple of another. "
    "What is the rank of M? Work it out with row operations on paper first.",
    expected=lambda: rank_by_elimination(np.array(FOUR_ROWS)),
    traps=(
        Trap(lambda: 4, "no two rows are proportional, but a dependence can involve several rows at once. Carry the "
             "elimination through to the last row and see what is left of it."),
        Trap(lambda: 2, "rank 2 would make every row a combination of two of them; check rows 1, 2 and 3 "
             "once more."),
        Trap(lambda: 1, "rows 1 and 2 are not multiples of each other, so the rank is at least 2."),
    ),
    explanation="row 4 = row 1 − row 2 + row 3, and rows 1 to 3 are independent. Elimination: R3 ← R3 − 2 R1, "
    "R4 ← R4 − 3 R1, then R3 ← R3 + R2, R4 ← R4 + 2 R2, then R4 ← R4 − R3 leaves R4 = 0: three pivots, rank 3.",
    hints=("Clear column 1 under row 1, then column 2 under row 2. What is left of rows 3 and 4?",),
))


def rank_one_cases(rng: np.random.Generator) -> list[tuple[np.ndarray]]:
    """Hidden inputs of ``factor-rank-one``: rank-one matrices whose first rows or columns may be zero."""
    cases = [(np.array([[0.0, 0.0, 0.0], [2.0, 4.0, -6.0]]),), (np.array([[0.0, 3.0], [0.0, -1.5], [0.0, 6.0]]),),
             (np.array([[5.0]]),)]
    for rows, cols in ((4, 4), (5, 3), (3, 7), (6, 2)):
        col, row = rng.integers(-3, 4, size=(rows, 1)).astype(float), rng.integers(-3, 4, size=(1, cols)).astype(float)
        col[rng.integers(rows)] = 0.0  # a zero row of the product
        col[0, 0], row[0, rng.integers(cols)] = col[0, 0] or 1.0, 2.0
        cases.append((col @ row,))
    return cases


def reference_rank_one(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """B (d_out x 1) and A (1 x d_in) with B A = M, for a rank-one M."""
    M = np.asarray(M, dtype=float)
    i, j = np.unravel_index(np.argmax(np.abs(M)), M.shape)
    return M[:, j : j + 1] / M[i, j], M[i : i + 1, :]


def same_rank_one_product(got: object, expected: tuple[np.ndarray, np.ndarray], args: tuple) -> str | None:
    """Any split is right: B must be (d_out, 1), A (1, d_in), and B @ A must equal M."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return "return the pair (B, A)"
    b, a = (np.asarray(g, dtype=float) for g in got)
    (m,) = args
    if b.shape != (m.shape[0], 1) or a.shape != (1, m.shape[1]):
        return f"B must be (d_out, 1) = {(m.shape[0], 1)} and A (1, d_in) = {(1, m.shape[1])}; got {b.shape} and {a.shape}"
    return compare_close(b @ a, m)


register(CodeExercise(
    id="factor-rank-one",
    prompt="Write factor_rank_one(M): for a rank-one matrix M (d_out × d_in), return B (d_out × 1) and A (1 × d_in) "
    "with B A = M, as in section 3 but for any rank-one matrix. Some hidden matrices have zero rows, including "
    "the first row. Any correct split is accepted.",
    signature="factor_rank_one(M) -> (B, A)",
    reference=reference_rank_one,
    cases=rank_one_cases,
    compare=same_rank_one_product,
    traps=(
        CodeTrap(lambda m: (np.ones((m.shape[0], 1)), m[:1]), "B A repeats A in every row: B must hold the multiple of "
                 "A that each row of M is."),
        CodeTrap(lambda m: (m[:, :1] / m[0, 0], m[:1]), "you divided by M[0, 0], which can be zero: pick a non-zero "
                 "entry as the pivot."),
    ),
    model_solution="""
def factor_rank_one(M):
    M = np.asarray(M, dtype=float)
    i, j = np.unravel_index(np.argmax(np.abs(M)), M.shape)  # a non-zero entry (the largest)
    A = M[i : i + 1, :]             # row i: every row of M is a multiple of it
    B = M[:, j : j + 1] / M[i, j]   # the multiple of A in each row, read off column j
    return B, A
""",
    explanation="every row of a rank-one M is a multiple of one non-zero row; column j of M divided by M[i, j] gives "
    "those multiples, because M[k, j] = B[k] A[j].",
    hints=("Choose a non-zero entry M[i, j]. Which row can serve as A?",
           "Row k of M equals (M[k, j] / M[i, j]) times row i."),
))
register(WrittenExercise(
    id="proof-rank-of-product",
    prompt="A small proof. Show that rank(B A) ≤ min(rank B, rank A) for any B (d_out × r) and A (r × d_in). "
    "Then say why this gives rank(ΔW) ≤ r for LoRA.",
    points=(
        "Column j of B A is B times column j of A: a combination of the columns of B. So the column space of B A lies "
        "inside the column space of B, and rank(B A) ≤ rank(B).",
        "Row i of B A is row i of B times A: a combination of the rows of A. So the row space of B A lies inside the "
        "row space of A, and rank(B A) ≤ rank(A).",
        "B has only r columns, so rank(B) ≤ r, and therefore rank(ΔW) = rank(B A) ≤ r.",
    ),
    explanation="Column j of B A equals B (column j of A), a combination of B's columns, so col(B A) ⊆ col(B) and "
    "rank(B A) ≤ rank(B). Row i of B A equals (row i of B) A, a combination of A's rows, so row(B A) ⊆ row(A) and "
    "rank(B A) ≤ rank(A). Both bounds hold, so rank(B A) ≤ min(rank B, rank A). Since B has r columns, rank B ≤ r, "
    "hence rank(ΔW) ≤ r.",
    hints=("Write column j of B A as B times column j of A. What kind of vector is that?",
           "Do the same for the rows: row i of B A is row i of B times A."),
))
