"""What came after LoRA, each reduced to the formula that defines it and a small runnable check.

Notation as in ``LoRALinear``: W (d_out, d_in), ΔW = s B A with B (d_out, r), A (r, d_in), s = α/r.

- rsLoRA (Kalajdzievski, 2023): scaling α/√r instead of α/r (``LoRALinear(use_rslora=True)``).
- PiSSA (Meng et al., 2024): start A, B from the top-r SVD of W, and freeze the residual W - s B A.
- DoRA (Liu et al., 2024): W' = m ⊙ (W + s B A) / ||W + s B A||, one learned magnitude per output unit.
- LoRA+ (Hayou et al., 2024): B gets a larger learning rate than A (``lr * ratio``).
- QLoRA (Dettmers et al., 2023): the frozen Linear weights stored in 4-bit NormalFloat; here as memory arithmetic.

Every tensor made here follows the device and dtype of the weights it meets.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..checks import is_number
from ..maths.arch import ARCHITECTURES, DTYPE_BYTES, Architecture, weight_shapes
from .layer import LoRALinear, lora_layers

__all__ = [
    "QLoRAMemory",
    "dora_weight",
    "first_step_delta_weight",
    "loraplus_optimizer",
    "loraplus_param_groups",
    "pissa_init",
    "qlora_base_bytes",
    "quantized_bytes",
    "row_norm",
    "loss_drop_after_one_step",
    "update_size_after_one_step",
]


@torch.no_grad()
def pissa_init(layer: LoRALinear) -> None:
    """PiSSA: B A <- the top-r SVD part of W (scaled), W <- the residual, so W + s B A is unchanged.

    With W = U S V^T: B = U_r sqrt(S_r) / sqrt(s), A = sqrt(S_r) V_r^T / sqrt(s), W_res = W - s B A.
    The SVD runs on the weight's device in fp32 (fp64 for a double layer).
    """
    if layer.merged:
        raise ValueError("Unmerge the layer before a PiSSA initialisation.")
    w = layer.base_weight().to(layer.compute_dtype)  # (d_out, d_in), also for a Conv1D base
    u, s, vt = torch.linalg.svd(w, full_matrices=False)
    r, root = layer.r, s[: layer.r].sqrt()
    b = u[:, :r] * root / layer.scaling**0.5
    a = root[:, None] * vt[:r] / layer.scaling**0.5
    layer.lora_B.copy_(b.to(layer.lora_B.dtype))
    layer.lora_A.copy_(a.to(layer.lora_A.dtype))
    layer.base_weight().copy_((w - layer.delta_weight()).to(layer.base.weight.dtype))


def row_norm(w: torch.Tensor) -> torch.Tensor:
    """||W|| per output unit: the norm of each row over the input dimension. w: (d_out, d_in) -> (d_out, 1).

    This is DoRA's magnitude, one per output unit: the paper's "column-wise" norm is, for ``nn.Linear.weight``
    stored (d_out, d_in), the norm of each row, as DoRA's reference code and PEFT compute it (``norm(dim=1)``).
    """
    if w.dim() != 2:
        raise ValueError(f"row_norm needs a 2-D weight (d_out, d_in), got shape {tuple(w.shape)}.")
    return torch.linalg.vector_norm(w, dim=1, keepdim=True)


def dora_weight(w: torch.Tensor, b: torch.Tensor, a: torch.Tensor, m: torch.Tensor, scaling: float = 1.0) -> torch.Tensor:
    """DoRA's weight W' = m ⊙ V / ||V|| with V = W + s B A, normed per output unit (row).

    w: (d_out, d_in), b: (d_out, r), a: (r, d_in), m: (d_out, 1) or (d_out,) -> (d_out, d_in).
    Every row of W' has norm m: B A changes directions only, m sets the lengths.
    """
    if w.dim() != 2:
        raise ValueError(f"DoRA needs a 2-D weight W (d_out, d_in), got shape {tuple(w.shape)}.")
    d_out, d_in = w.shape
    if b.dim() != 2 or a.dim() != 2 or b.shape[0] != d_out or a.shape[1] != d_in or b.shape[1] != a.shape[0]:
        raise ValueError(
            f"Shapes do not fit W (d_out, d_in) = {tuple(w.shape)}: B must be (d_out, r) and A (r, d_in), "
            f"got B {tuple(b.shape)} and A {tuple(a.shape)}."
        )
    if m.numel() != d_out:
        raise ValueError(f"The magnitude m needs one entry per output unit, (d_out, 1) = ({d_out}, 1); got {tuple(m.shape)}.")
    v = w + scaling * (b @ a)
    return m.reshape(d_out, 1) * v / row_norm(v)


def loraplus_param_groups(model: nn.Module, lr: float, ratio: float = 16.0, weight_decay: float = 0.0) -> list[dict]:
    """LoRA+ optimiser groups: every lora_A at ``lr``, every lora_B at ``lr * ratio``, other trainable parameters at ``lr``.

    Hayou et al. (2024) show B should learn faster than A; they suggest ratio = 2^4 = 16.
    Only parameters with ``requires_grad`` are included. Pass the result to ``torch.optim.AdamW``.
    """
    for name, value in (("lr", lr), ("ratio", ratio)):
        if not is_number(value) or not 0 < value < math.inf:
            raise ValueError(f"LoRA+ needs a positive finite {name}, got {value!r}. The paper's default ratio is 16 (lr_B = 16 lr_A).")
    layers = lora_layers(model)
    if not layers:
        raise ValueError("The model has no LoRA layers, so LoRA+ has no A and B to separate; call inject_lora(model, ...) first.")
    a_ids = {id(m.lora_A) for m in layers.values()}
    b_ids = {id(m.lora_B) for m in layers.values()}
    groups: dict[str, list[nn.Parameter]] = {"lora_A": [], "lora_B": [], "other": []}
    for p in {id(p): p for p in model.parameters() if p.requires_grad}.values():
        groups["lora_A" if id(p) in a_ids else "lora_B" if id(p) in b_ids else "other"].append(p)
    if not groups["lora_A"] and not groups["lora_B"]:
        raise ValueError("Every LoRA factor is frozen (requires_grad=False); call mark_only_lora_trainable(model) first.")
    rates = {"lora_A": lr, "lora_B": lr * ratio, "other": lr}
    return [{"params": ps, "lr": rates[k], "weight_decay": weight_decay, "name": k} for k, ps in groups.items() if ps]


def loraplus_optimizer(model: nn.Module, lr: float, ratio: float = 16.0, weight_decay: float = 0.0, **adamw: object) -> torch.optim.AdamW:
    """AdamW over ``loraplus_param_groups(model, lr, ratio, weight_decay)``; extra keywords go to AdamW."""
    return torch.optim.AdamW(loraplus_param_groups(model, lr, ratio, weight_decay), lr=lr, **adamw)


def quantized_bytes(n_params: int, bits: float = 4, block: int = 64, double_quant: bool = True) -> float:
    """Bytes for weights in ``bits``-bit blocks with one absmax constant per block (QLoRA's NF4).

    Without double quantisation each block of ``block`` weights keeps an fp32 constant (32 / block bits
    per weight); QLoRA quantises those constants to 8 bits in blocks of 256 with one fp32 each.
    """
    if block < 1:
        raise ValueError(f"block must be positive, got {block}.")
    constant_bits = (8 / block + 32 / (block * 256)) if double_quant else 32 / block
    return n_params * (bits + constant_bits) / 8


class QLoRAMemory(NamedTuple):
    """Base-weight memory under QLoRA: the blocks' Linear weights in NF4, everything else kept (bytes)."""

    n_quantized: int  # weights of the Linear layers inside the blocks
    n_kept: int  # embeddings, output head, norms, biases
    quantized: float
    kept: float
    total: float


def qlora_base_bytes(
    arch: Architecture | str, bits: float = 4, block: int = 64, double_quant: bool = True, kept_dtype: str = "bf16"
) -> QLoRAMemory:
    """Bytes of an architecture's frozen base under QLoRA.

    Only the Linear layers of the blocks are quantised (as bitsandbytes' ``Linear4bit`` does with PEFT);
    the token embedding, an untied output head, norms and biases stay in ``kept_dtype``.
    """
    if isinstance(arch, str):
        if arch not in ARCHITECTURES:
            raise ValueError(f"Unknown architecture {arch!r}; choose one of {list(ARCHITECTURES)}.")
        arch = ARCHITECTURES[arch]
    if not isinstance(arch, Architecture):
        raise TypeError(f"arch must be an Architecture or a name in ARCHITECTURES, got {type(arch).__name__}.")
    if kept_dtype not in DTYPE_BYTES:
        raise ValueError(f"Unknown kept_dtype {kept_dtype!r}; choose from {list(DTYPE_BYTES)}.")
    n_quantized = arch.n_layer * sum(o * i for o, i in weight_shapes(arch).values())
    n_kept = arch.total_parameters() - n_quantized
    quantized, kept = quantized_bytes(n_quantized, bits, block, double_quant), n_kept * DTYPE_BYTES[kept_dtype]
    return QLoRAMemory(n_quantized, n_kept, quantized, kept, quantized + kept)


def first_step_delta_weight(
    r: int,
    alpha: float,
    use_rslora: bool,
    d: int = 512,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """ΔW = s B A (d, d) after one Adam-like sign step on B (the first step that moves anything), on ``device``."""
    torch.manual_seed(seed)
    layer = LoRALinear(nn.Linear(d, d, device=device, dtype=dtype), r=r, alpha=alpha, use_rslora=use_rslora, init="gaussian")
    with torch.no_grad():
        layer.lora_A.normal_(std=1 / d**0.5)  # unit-variance rows of A x for unit-variance x, for any r
        grad_b = torch.randn(d, r, device=layer.lora_B.device, dtype=layer.lora_B.dtype)
        layer.lora_B.copy_(-lr * grad_b.sign())
    return layer.delta_weight()


def update_size_after_one_step(r: int, alpha: float, use_rslora: bool, d: int = 512, lr: float = 1e-3, seed: int = 0) -> float:
    """||ΔW||_F after one Adam-like sign step on B, for a d x d layer.

    With alpha / r the update shrinks as r grows; with alpha / sqrt(r) (rsLoRA) it stays of the same size.
    """
    return first_step_delta_weight(r, alpha, use_rslora, d, lr, seed).norm().item()


def loss_drop_after_one_step(r: int, alpha: float, use_rslora: bool, d: int = 512, lr: float = 1e-3, seed: int = 0,
                             rows: int = 64) -> float:
    """How much one Adam-like sign step on B lowers the loss, to first order, when B follows its real gradient.

    The layer's weight gradient is G = ∂L/∂W = grad_yᵀ x (d x d, from a random batch of ``rows``). B's gradient is
    s G Aᵀ, so the step is B = -lr sign(G Aᵀ) and the loss falls by <G, -ΔW> = s lr ||G Aᵀ||_1: a sum over the r
    columns of G Aᵀ, so it grows like s r. Flat in r with alpha / r and a fixed alpha; like sqrt(r) with rsLoRA;
    like r with alpha = 2r. (``update_size_after_one_step`` draws B's signs at random instead, and so measures only
    the size of ΔW, not how well it points downhill.)
    """
    torch.manual_seed(seed)
    layer = LoRALinear(nn.Linear(d, d), r=r, alpha=alpha, use_rslora=use_rslora, init="gaussian")
    x, grad_y = torch.randn(rows, d), torch.randn(rows, d)
    with torch.no_grad():
        layer.lora_A.normal_(std=1 / d**0.5)
        g = grad_y.T @ x / rows  # ∂L/∂W of the mean loss
        layer.lora_B.copy_(-lr * (layer.scaling * g @ layer.lora_A.T).sign())
        return -(g * layer.delta_weight()).sum().item()
