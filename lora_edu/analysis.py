"""Looking inside learned adapters, as in Section 7 of the LoRA paper."""

from __future__ import annotations

import numpy as np

__all__ = ["delta_w_alignment", "subspace_similarity"]


def right_singular_vectors(a: np.ndarray) -> np.ndarray:
    """The right-singular vectors of A (r, d) as columns: (d, r), ordered by singular value."""
    _, _, vt = np.linalg.svd(np.asarray(a, dtype=np.float64), full_matrices=False)
    return vt.T


def subspace_similarity(a1: np.ndarray, a2: np.ndarray) -> np.ndarray:
    """phi(i, j) = ||U_i^T V_j||_F^2 / min(i, j) for the top-i and top-j right-singular vectors of A1 and A2.

    a1: (r1, d), a2: (r2, d) -> (r1, r2) with values in [0, 1]; 1 means one subspace contains the other.
    """
    if np.shape(a1)[1] != np.shape(a2)[1]:
        raise ValueError(f"A1 {np.shape(a1)} and A2 {np.shape(a2)} must have the same input dimension.")
    u, v = right_singular_vectors(a1), right_singular_vectors(a2)
    overlap = (u.T @ v) ** 2  # (r1, r2): squared cosines between singular vectors
    cum = overlap.cumsum(axis=0).cumsum(axis=1)  # ||U_i^T V_j||_F^2 for every i, j
    i = np.arange(1, u.shape[1] + 1)[:, None]
    j = np.arange(1, v.shape[1] + 1)[None, :]
    return cum / np.minimum(i, j)


def delta_w_alignment(w: np.ndarray, delta_w: np.ndarray, r: int, seed: int = 0) -> dict[str, float]:
    """How much of W lies in ΔW's top-r directions (the paper's Table 7).

    Returns ||U^T W V^T||_F for U, V the top-r left/right singular vectors of ΔW, of W itself, and of a
    random matrix, plus ||W||_F, ||ΔW||_F and the amplification factor ||ΔW||_F / ||U^T W V^T||_F (ΔW's U, V).
    """
    w = np.asarray(w, dtype=np.float64)
    delta_w = np.asarray(delta_w, dtype=np.float64)
    if w.shape != delta_w.shape:
        raise ValueError(f"W {w.shape} and ΔW {delta_w.shape} must have the same shape.")

    def projected(m: np.ndarray) -> float:
        u, _, vt = np.linalg.svd(m, full_matrices=False)
        return float(np.linalg.norm(u[:, :r].T @ w @ vt[:r].T))

    rng = np.random.default_rng(seed)
    on_delta = projected(delta_w)
    return {
        "delta_w": on_delta,
        "w": projected(w),
        "random": projected(rng.standard_normal(w.shape)),
        "norm_w": float(np.linalg.norm(w)),
        "norm_delta_w": float(np.linalg.norm(delta_w)),
        "amplification": float(np.linalg.norm(delta_w)) / on_delta,
    }
