"""Rank, row echelon form and the best low-rank approximation (SVD, Eckart-Young)."""

from __future__ import annotations

import numpy as np

from ..checks import is_int, require_int

__all__ = [
    "SVDReconstructor",
    "factorize_by_gradient_descent",
    "low_rank_approx",
    "lora_factors",
    "null_space",
    "rank_by_elimination",
    "row_echelon",
    "svd_storage",
]


def row_echelon(m: np.ndarray, tol: float = 1e-10) -> tuple[np.ndarray, list[int]]:
    """Gaussian elimination with partial pivoting.

    m: (rows, cols).  Returns the row echelon form (leading entries scaled to 1) and the pivot
    columns.  Entries with magnitude below ``tol`` times the largest entry count as zero.
    """
    a = np.array(m, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"row_echelon needs a 2-D matrix, got shape {a.shape}.")
    rows, cols = a.shape
    eps = tol * max(1.0, np.abs(a).max(initial=0.0))
    pivots: list[int] = []
    row = 0
    for col in range(cols):
        if row == rows:
            break
        best = row + int(np.argmax(np.abs(a[row:, col])))
        if abs(a[best, col]) <= eps:
            a[row:, col] = 0.0
            continue
        a[[row, best]] = a[[best, row]]  # swap the largest entry up (stability)
        a[row] /= a[row, col]
        a[row + 1 :] -= np.outer(a[row + 1 :, col], a[row])
        a[row + 1 :, col] = 0.0
        pivots.append(col)
        row += 1
    a[np.abs(a) <= eps] = 0.0
    return a, pivots


def rank_by_elimination(m: np.ndarray, tol: float = 1e-10) -> int:
    """The number of pivots (non-zero rows) in the row echelon form of m."""
    return len(row_echelon(m, tol)[1])


def svd_storage(rows: int, cols: int, k: int) -> int:
    """Numbers stored for a rank-k factorisation U_k (rows x k), s_k (k), V_k (cols x k)."""
    return k * (rows + cols + 1)


def low_rank_approx(m: np.ndarray, k: int) -> np.ndarray:
    """The best rank-k approximation of m in Frobenius and spectral norm (truncated SVD)."""
    return SVDReconstructor(m).reconstruct(k)


def lora_factors(m: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """LoRA-shaped factors of the best rank-r approximation: B = U_r diag(s_r)^(1/2), A = diag(s_r)^(1/2) V_r^T.

    m: (d_out, d_in) -> B: (d_out, r), A: (r, d_in), with B @ A == low_rank_approx(m, r).
    """
    svd = SVDReconstructor(m)
    r = svd.check_rank(r, name="The LoRA rank r", low=1)
    root = np.sqrt(svd.s[:r])
    return svd.u[:, :r] * root, root[:, None] * svd.vt[:r]


def factorize_by_gradient_descent(
    m: np.ndarray, r: int, steps: int = 400, lr: float | None = None, seed: int = 0, init_scale: float = 0.1
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Plain gradient descent on f(B, A) = ½ ||M - B A||_F² from LoRA's start (B = 0, A small and random).

    m: (d_out, d_in) -> B: (d_out, r), A: (r, d_in) and the Frobenius error ||M - B A||_F before each step.
    The gradients are ∂f/∂B = -(M - B A) Aᵀ and ∂f/∂A = -Bᵀ (M - B A); ``lr`` defaults to 5 / s_1².
    """
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"factorize_by_gradient_descent needs a 2-D matrix, got shape {m.shape}.")
    if not is_int(r) or not 1 <= r <= min(m.shape):
        raise ValueError(f"r must be an integer in [1, {min(m.shape)}], got {r!r}.")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    top = float(np.linalg.norm(m, 2))
    lr = 5.0 / top**2 if lr is None and top > 0 else (lr or 0.1)
    if lr <= 0:
        raise ValueError(f"The learning rate must be positive, got {lr}.")
    b = np.zeros((m.shape[0], r))
    a = init_scale * np.random.default_rng(seed).standard_normal((r, m.shape[1]))
    errors = []
    for _ in range(steps):
        residual = m - b @ a
        errors.append(float(np.linalg.norm(residual)))
        b, a = b + lr * residual @ a.T, a + lr * b.T @ residual
    return b, a, errors


def null_space(m: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """An orthonormal basis of {v : m v = 0} as columns: m (rows, cols) -> (cols, cols - rank).

    Singular values below ``tol`` times the largest count as zero (the *numerical* rank).
    """
    a = np.asarray(m, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"null_space needs a 2-D matrix, got shape {a.shape}.")
    _, s, vt = np.linalg.svd(a, full_matrices=True)
    rank = int(np.sum(s > tol * max(1.0, s.max(initial=0.0))))
    return vt[rank:].T


class SVDReconstructor:
    """Factorise once (``m = U diag(s) V^T``), then rebuild any rank quickly: what a slider needs.

    m: (rows, cols).
    """

    def __init__(self, m: np.ndarray) -> None:
        m = np.asarray(m, dtype=np.float64)
        if m.ndim != 2:
            raise ValueError(f"SVDReconstructor needs a 2-D matrix, got shape {m.shape}.")
        self.shape = m.shape
        self.u, self.s, self.vt = np.linalg.svd(m, full_matrices=False)
        self.us = self.u * self.s  # columns of U scaled by the singular values
        self.total_energy = float(np.sum(self.s**2))

    @property
    def max_rank(self) -> int:
        return len(self.s)

    def check_rank(self, k: int, name: str = "The rank k", low: int = 0) -> int:
        """``k`` as an int in [low, max_rank], else a ValueError that calls it ``name`` (the caller's word for it)."""
        return require_int(name, k, low, self.max_rank)

    def reconstruct(self, k: int) -> np.ndarray:
        """U_k diag(s_k) V_k^T: (rows, cols)."""
        k = self.check_rank(k)
        return self.us[:, :k] @ self.vt[:k]

    def error(self, k: int) -> float:
        """Frobenius error of the rank-k reconstruction: sqrt(sum of the squared tail singular values)."""
        k = self.check_rank(k)
        return float(np.sqrt(np.sum(self.s[k:] ** 2)))

    def relative_error(self, k: int) -> float:
        return self.error(k) / np.sqrt(self.total_energy) if self.total_energy else 0.0

    def storage(self, k: int) -> int:
        """Numbers stored for rank k: k (rows + cols + 1), against rows * cols for the full matrix."""
        return svd_storage(*self.shape, self.check_rank(k))
