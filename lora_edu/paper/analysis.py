"""Looking inside learned adapters: Section 7 of the LoRA paper, and intruder dimensions.

``subspace_similarity`` and ``delta_w_alignment`` take NumPy arrays or tensors on any device (a tensor is
copied to the host in fp64: the results are small). ``intruder_dimensions`` stays on the weights' device.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..checks import is_int, is_number
from ..lora.layer import lora_layers

__all__ = ["IntruderDimensions", "delta_w_alignment", "intruder_dimensions", "intruder_similarity", "random_best_cosine",
           "scale_updates", "update_norm_ratios",
           "subspace_similarity"]


def as_float64(a: np.ndarray | torch.Tensor) -> np.ndarray:
    """A NumPy fp64 copy of an array or of a tensor on any device."""
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def right_singular_vectors(a: np.ndarray | torch.Tensor) -> np.ndarray:
    """The right-singular vectors of A (r, d) as columns: (d, r), ordered by singular value."""
    _, _, vt = np.linalg.svd(as_float64(a), full_matrices=False)
    return vt.T


def subspace_similarity(a1: np.ndarray | torch.Tensor, a2: np.ndarray | torch.Tensor) -> np.ndarray:
    """phi(i, j) = ||U_i^T V_j||_F^2 / min(i, j) for the top-i and top-j right-singular vectors of A1 and A2.

    a1: (r1, d), a2: (r2, d) -> (r1, r2) with values in [0, 1]; 1 means one subspace contains the other.
    """
    if np.shape(a1)[1] != np.shape(a2)[1]:
        raise ValueError(f"A1 {tuple(np.shape(a1))} and A2 {tuple(np.shape(a2))} must have the same input dimension.")
    u, v = right_singular_vectors(a1), right_singular_vectors(a2)
    overlap = (u.T @ v) ** 2  # (r1, r2): squared cosines between singular vectors
    cum = overlap.cumsum(axis=0).cumsum(axis=1)  # ||U_i^T V_j||_F^2 for every i, j
    i = np.arange(1, u.shape[1] + 1)[:, None]
    j = np.arange(1, v.shape[1] + 1)[None, :]
    return cum / np.minimum(i, j)


def delta_w_alignment(w: np.ndarray | torch.Tensor, delta_w: np.ndarray | torch.Tensor, r: int, seed: int = 0,
                      draws: int = 100) -> dict[str, float]:
    """How much of W lies in ΔW's top-r directions (the paper's Table 7).  w, delta_w: (d_out, d_in).

    Returns ||U^T W V^T||_F for U, V the top-r left/right singular vectors of ΔW, of W itself, and of a
    random matrix (the mean over ``draws`` Gaussian matrices: one draw alone scatters by tens of percent), plus
    ||W||_F, ||ΔW||_F and the amplification factor ||ΔW||_F / ||U^T W V^T||_F (ΔW's U, V).
    Needs r < min(d_out, d_in): at full rank U and V span everything and each projection is just ||W||_F.
    """
    w, delta_w = as_float64(w), as_float64(delta_w)
    if w.shape != delta_w.shape or w.ndim != 2:
        raise ValueError(f"W {w.shape} and ΔW {delta_w.shape} must be matrices of the same shape.")
    if not is_int(r) or r < 1:
        raise ValueError(f"r must be a positive int (the rank of the subspace), got {r!r}.")
    if not is_int(draws) or draws < 1:
        raise ValueError(f"draws must be a positive int (random matrices to average), got {draws!r}.")
    if r >= min(w.shape):
        raise ValueError(
            f"r={r} >= min(d_out, d_in) = {min(w.shape)}: the top-r singular vectors span the whole space, so every "
            f"projection equals ||W||_F and Table 7's comparison says nothing. Use r < {min(w.shape)}."
        )

    def projected(m: np.ndarray) -> float:
        u, _, vt = np.linalg.svd(m, full_matrices=False)
        return float(np.linalg.norm(u[:, :r].T @ w @ vt[:r].T))

    rng = np.random.default_rng(seed)
    on_delta = projected(delta_w)
    return {
        "delta_w": on_delta,
        "w": projected(w),
        "random": float(np.mean([projected(rng.standard_normal(w.shape)) for _ in range(draws)])),
        "norm_w": float(np.linalg.norm(w)),
        "norm_delta_w": float(np.linalg.norm(delta_w)),
        "amplification": float(np.linalg.norm(delta_w)) / on_delta,
    }


def singular_vectors(w: torch.Tensor, side: str) -> torch.Tensor:
    """Left (columns of U, (d_out, k)) or right (rows of V^T as columns, (d_in, k)) singular vectors, fp32 or wider."""
    u, _, vt = torch.linalg.svd(w.detach().to(torch.promote_types(w.dtype, torch.float32)), full_matrices=False)
    return u if side == "left" else vt.T


def intruder_similarity(w0: torch.Tensor, w: torch.Tensor, k: int = 10, side: str = "left") -> torch.Tensor:
    """For each of the fine-tuned W's top-k singular vectors, its largest |cosine| with any singular vector of W0.

    w0, w: (d_out, d_in) tensors on one device, or NumPy arrays (moved to the other's device) -> (k,) on that
    device, in [0, 1]. Near 1: W kept a direction of W0; near 0: a new direction (an intruder dimension,
    Shuttleworth et al., 2024).
    """
    for m in (w0, w):
        if not isinstance(m, (torch.Tensor, np.ndarray)):
            raise TypeError(f"W0 and W must be tensors or NumPy arrays, got {type(w0).__name__} and {type(w).__name__}.")
    device = next((m.device for m in (w0, w) if isinstance(m, torch.Tensor)), torch.device("cpu"))
    w0, w = (torch.as_tensor(m, device=device) if isinstance(m, np.ndarray) else m for m in (w0, w))  # an array joins the tensor
    if w0.dim() != 2 or w0.shape != w.shape:
        raise ValueError(f"W0 {tuple(w0.shape)} and W {tuple(w.shape)} must be matrices of the same shape.")
    if w0.device != w.device:
        raise ValueError(f"W0 is on {w0.device} and W on {w.device}; move one of them first, e.g. w0.to(w.device).")
    if not is_int(k) or not 1 <= k <= min(w.shape):
        raise ValueError(f"k must be an int in [1, min(d_out, d_in)] = [1, {min(w.shape)}], got {k!r}.")
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' (output space, as in the paper and PEFT) or 'right', got {side!r}.")
    tuned = singular_vectors(w, side)[:, :k]  # (d, k), unit columns
    pre = singular_vectors(w0, side).to(tuned.dtype)  # (d, min(d_out, d_in))
    return (tuned.T @ pre).abs().amax(dim=1)


class IntruderDimensions(NamedTuple):
    """What ``intruder_dimensions`` returns: how many, which of the top k, and each one's best match in W0."""

    count: int
    is_intruder: torch.Tensor  # (k,) bool
    max_similarity: torch.Tensor  # (k,)


def random_best_cosine(width: int, n: int = 200, seed: int = 0) -> float:
    """Chance for ``intruder_similarity``: the median, over ``n`` random directions in ``width`` dimensions, of a
    direction's largest |cosine| with an orthonormal basis (any basis gives the same, by symmetry)."""
    directions = np.random.default_rng(seed).standard_normal((n, width))
    return float(np.median(np.abs(directions).max(axis=1) / np.linalg.norm(directions, axis=1)))


def intruder_dimensions(w0: torch.Tensor, w: torch.Tensor, k: int = 10, threshold: float = 0.5, side: str = "left") -> IntruderDimensions:
    """Intruder dimensions (Shuttleworth et al., 2024, arXiv 2410.21228): top-k singular vectors of the fine-tuned
    W whose largest |cosine similarity| with every singular vector of the pretrained W0 is below ``threshold`` (ε).

    The paper sweeps ε (about 0.5 to 0.9) and looks at k = 10 or so; PEFT's mitigation uses k = 10, ε = 0.5.
    """
    if not is_number(threshold) or not 0 < threshold <= 1:
        raise ValueError(f"threshold ε must be a cosine similarity in (0, 1], got {threshold!r}; the paper uses 0.5 to 0.9.")
    sim = intruder_similarity(w0, w, k, side)
    is_intruder = sim < threshold
    return IntruderDimensions(int(is_intruder.sum().item()), is_intruder, sim)


def update_norm_ratios(peft_model: torch.nn.Module, adapter: str, reference: str = "default") -> dict[str, float]:
    """Per adapted layer of a PEFT model, how far ``adapter`` leaves the weight from the base, as a share of how far the
    ``reference`` adapter does: ||ΔW_adapter||_F / ||ΔW_reference||_F (1: as far). Names drop PEFT's
    ``base_model.model.`` prefix, so they are the names of ``lora_layers`` in the model PEFT wrapped (e.g. after
    ``reduce_intruder_dimension``, how far from the base weight scaling the intruders down left each update)."""
    ratios = {}
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            adapters = getattr(module, "lora_A", {})
            if hasattr(module, "get_delta_weight") and adapter in adapters and reference in adapters:
                ref = module.get_delta_weight(reference).float()
                ratios[name.removeprefix("base_model.model.")] = float(module.get_delta_weight(adapter).float().norm() / ref.norm())
    if not ratios:
        raise ValueError(f"No layer of the model holds both adapters {reference!r} and {adapter!r}; pass the names that "
                         "PeftModel.peft_config lists.")
    return ratios


def scale_updates(model: torch.nn.Module, factors: dict[str, float]) -> None:
    """Multiply the update (α/r) B A of each named ``LoRALinear`` by its factor, in place (through B): every direction
    of the update alike. With ``update_norm_ratios`` of an edit as the factors, each update ends as far from the base
    weight as the edit left it: a control for an edit that changes a few chosen directions."""
    layers = lora_layers(model)
    missing = sorted(set(factors) - set(layers))
    if missing:
        raise ValueError(f"No LoRALinear named {missing[:3]} in the model; use the names of lora_layers(model).")
    bad = {name: f for name, f in factors.items() if not (is_number(f) and f >= 0)}
    if bad:
        raise ValueError(f"Each factor must be a number, 0 or more (1 keeps the update), got {bad}.")
    with torch.no_grad():
        for name, factor in factors.items():
            layers[name].lora_B.mul_(factor)
