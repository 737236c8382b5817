"""What came after LoRA, each reduced to the formula that defines it and a small runnable check.

- rsLoRA (Kalajdzievski, 2023): scaling alpha / sqrt(r) instead of alpha / r (``LoRALinear(use_rslora=True)``).
- PiSSA (Meng et al., 2024): start A, B from the top-r SVD of W, and freeze the residual W - B A.
- DoRA (Liu et al., 2024): W' = m * (W + B A) / ||W + B A||_col, a learned magnitude m per column.
- QLoRA (Dettmers et al., 2023): the frozen base stored in 4-bit NormalFloat; here as memory arithmetic.
"""

from __future__ import annotations

import torch

from .lora import LoRALinear

__all__ = ["column_norm", "dora_weight", "pissa_init", "quantized_bytes", "update_size_after_one_step"]


@torch.no_grad()
def pissa_init(layer: LoRALinear) -> None:
    """PiSSA: B A <- the top-r SVD part of W (scaled), W <- the residual, so W + s B A is unchanged.

    With W = U S V^T: B = U_r sqrt(S_r) / sqrt(s), A = sqrt(S_r) V_r^T / sqrt(s), W_res = W - s B A.
    """
    if layer.merged:
        raise ValueError("Unmerge the layer before a PiSSA initialisation.")
    w = layer.base.weight.to(layer.compute_dtype)
    u, s, vt = torch.linalg.svd(w, full_matrices=False)
    r, root = layer.r, s[: layer.r].sqrt()
    b = u[:, :r] * root / layer.scaling**0.5
    a = root[:, None] * vt[:r] / layer.scaling**0.5
    layer.lora_B.copy_(b.to(layer.lora_B.dtype))
    layer.lora_A.copy_(a.to(layer.lora_A.dtype))
    layer.base.weight.copy_((w - layer.delta_weight()).to(layer.base.weight.dtype))


def column_norm(w: torch.Tensor) -> torch.Tensor:
    """||W||_c: the norm of each column (over output features), shape (1, d_in) as in the DoRA paper."""
    return w.norm(dim=0, keepdim=True)


def dora_weight(w: torch.Tensor, b: torch.Tensor, a: torch.Tensor, m: torch.Tensor, scaling: float = 1.0) -> torch.Tensor:
    """DoRA's weight: m * (W + s B A) / ||W + s B A||_c.  w: (d_out, d_in), m: (1, d_in)."""
    v = w + scaling * b @ a
    return m * v / column_norm(v)


def quantized_bytes(n_params: int, bits: float = 4, block: int = 64, double_quant: bool = True) -> float:
    """Bytes for weights in ``bits``-bit blocks with one absmax constant per block (QLoRA's NF4).

    Without double quantisation each block of ``block`` weights keeps an fp32 constant (32 / block bits
    per weight); QLoRA quantises those constants to 8 bits in blocks of 256 with one fp32 each.
    """
    if block < 1:
        raise ValueError(f"block must be positive, got {block}.")
    constant_bits = (8 / block + 32 / (block * 256)) if double_quant else 32 / block
    return n_params * (bits + constant_bits) / 8


def update_size_after_one_step(r: int, alpha: float, use_rslora: bool, d: int = 512, lr: float = 1e-3, seed: int = 0) -> float:
    """||ΔW||_F after one Adam-like sign step on B (the first step that moves anything), for a d x d layer.

    With alpha / r the update shrinks as r grows; with alpha / sqrt(r) (rsLoRA) it stays of the same size.
    """
    torch.manual_seed(seed)
    layer = LoRALinear(torch.nn.Linear(d, d), r=r, alpha=alpha, use_rslora=use_rslora, init="gaussian")
    with torch.no_grad():
        layer.lora_A.normal_(std=1 / d**0.5)  # unit-variance rows of A x for unit-variance x, for any r
        grad_b = torch.randn(d, r)
        layer.lora_B.copy_(-lr * grad_b.sign())
    return layer.delta_weight().norm().item()
