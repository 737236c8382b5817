"""A 4-bit NF4 base for LoRA (QLoRA), with torchao's ``NF4Tensor`` (the one torchtune's QLoRA uses).

``quantize_base_nf4(model)`` replaces the frozen ``nn.Linear`` weights by NF4 tensors in place
(blocks of 64 weights share an absmax scale, and the scales are themselves quantised to 8 bits);
``inject_lora`` then wraps those layers as usual, and LoRA's factors train in full precision on top.
The adapter cannot simply be merged back: ``W + B A`` must be re-quantised, and the rounding to 16
levels per block is of the same size as the update itself (``merge_requantization_error``).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .layer import LoRALinear, lora_layers, match_targets, set_submodule
from .peft_bridge import quiet_imports

__all__ = [
    "NF4Linear",
    "dequantized_weight",
    "merge_and_requantize",
    "merge_kept_fraction",
    "merge_requantization_error",
    "nf4_api",
    "nf4_storage_bytes",
    "nf4_levels",
    "quantization_error",
    "ResidualNF4Error",
    "residual_nf4_error",
    "quantize_base_nf4",
    "tensor_bytes",
    "weight_bytes",
]

BLOCK_SIZE = 64  # weights per absmax block, as in QLoRA
SCALER_BLOCK_SIZE = 256  # absmax values per block of the second (8-bit) quantisation


@functools.cache
def nf4_api() -> tuple[type, object, object]:
    """``(NF4Tensor, to_nf4, linear_nf4)`` from the installed torchao, imported without its CUDA-kernel warnings."""
    try:
        with quiet_imports():  # torchao warns about CUDA-only kernels it cannot load on a CPU machine
            try:
                from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import NF4Tensor, linear_nf4, to_nf4
            except ImportError:  # torchao < 0.15 kept it under dtypes
                from torchao.dtypes.nf4tensor import NF4Tensor, linear_nf4, to_nf4
    except ImportError as exc:
        raise ImportError("The NF4 base needs torchao: pip install torchao (see requirements.txt).") from exc
    return NF4Tensor, to_nf4, linear_nf4


def to_nf4_weight(w: torch.Tensor) -> torch.Tensor:
    """Quantise a weight (d_out, d_in) to an NF4Tensor; its size must be a multiple of 64."""
    _, to_nf4, _ = nf4_api()
    if w.numel() % BLOCK_SIZE:
        raise ValueError(f"NF4 quantises blocks of {BLOCK_SIZE} weights; a weight of shape {tuple(w.shape)} has "
                         f"{w.numel()} entries, not a multiple of {BLOCK_SIZE}. Leave this layer out of the targets.")
    n_blocks = w.numel() // BLOCK_SIZE
    return to_nf4(w.detach().contiguous(), block_size=BLOCK_SIZE, scaler_block_size=math.gcd(SCALER_BLOCK_SIZE, n_blocks))


def nf4_levels() -> torch.Tensor:
    """The 16 values an NF4 code stands for, on the scale where a block's largest |weight| is 1: (16,), from -1 to 1,
    spaced like the quantiles of a normal distribution (dense near 0, sparse in the tails)."""
    return to_nf4_weight(torch.zeros(BLOCK_SIZE, 1)).nf4.detach().clone()


class NF4Linear(nn.Linear):
    """A frozen linear layer whose weight is stored in NF4 (bias kept in full precision).

    x: (..., d_in) -> (..., d_out), computed by torchao's ``linear_nf4`` (dequantise, then matmul).
    """

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> NF4Linear:
        if type(linear) is not nn.Linear:
            raise TypeError(f"NF4Linear quantises a plain nn.Linear, got {type(linear).__name__}.")
        return cls.holding(to_nf4_weight(linear.weight), linear.bias)

    @classmethod
    def holding(cls, weight: torch.Tensor, bias: torch.Tensor | None) -> NF4Linear:
        """A layer around an existing NF4 ``weight`` (d_out, d_in) and a copy of ``bias`` (d_out,); both frozen."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.out_features, layer.in_features = weight.shape
        layer.weight = nn.Parameter(weight, requires_grad=False)
        layer.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        return layer

    def __deepcopy__(self, memo: dict) -> NF4Linear:
        """An exact copy of the 4-bit codes and scales (torchao's ``clone`` re-quantises with default block sizes)."""
        NF4Tensor, _, _ = nf4_api()
        names, ctx = self.weight.__tensor_flatten__()
        inner = {n: getattr(self.weight, n).clone() for n in names}
        weight = NF4Tensor.__tensor_unflatten__(inner, ctx, self.weight.shape, self.weight.stride())
        layer = self.holding(weight, self.bias)
        memo[id(self)] = layer
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, linear_nf4 = nf4_api()
        out = linear_nf4(x, self.weight)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight=NF4, bias={self.bias is not None}"


def quantize_base_nf4(model: nn.Module, targets: str | Sequence[str] = "all-linear") -> list[str]:
    """Replace the ``nn.Linear`` layers chosen by ``targets`` (default: all but the output head) by ``NF4Linear``.

    Quantise first, then ``inject_lora`` (QLoRA's order).  All checks run before any layer changes.
    Returns the names of the quantised layers.
    """
    if lora_layers(model):
        raise ValueError("The model already has LoRA layers: quantise the base first, then inject LoRA (QLoRA's order).")
    names = match_targets(model, targets)
    for name in names:
        layer = model.get_submodule(name)
        if isinstance(layer, NF4Linear):
            raise ValueError(f"{name!r} is already NF4; quantising twice would compound the rounding error.")
        if layer.weight.numel() % BLOCK_SIZE:
            raise ValueError(f"{name!r} has {layer.weight.numel()} weights, not a multiple of {BLOCK_SIZE}: leave it out of targets.")
    for name in names:
        set_submodule(model, name, NF4Linear.from_linear(model.get_submodule(name)))
    return names


def dequantized_weight(layer: nn.Module) -> torch.Tensor:
    """The weight a layer actually computes with, in its original dtype: (d_out, d_in)."""
    if isinstance(layer, LoRALinear):
        layer = layer.base
    w = layer.weight
    NF4Tensor, _, _ = nf4_api()
    return w.get_original_weight() if isinstance(w, NF4Tensor) else w.detach()


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor occupies; for an NF4 tensor the packed 4-bit codes plus every scale it stores."""
    NF4Tensor, _, _ = nf4_api()
    if isinstance(t, NF4Tensor):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


# What each tensor inside torchao's NF4Tensor holds, by the name ``__tensor_flatten__`` gives it.
NF4_PARTS = {"quantized_data": "codes", "quantized_scalers": "block scales", "quantization_factor": "scales of the scales",
             "scaler_mean": "scales of the scales", "nf4": "level table"}


def nf4_storage_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the NF4 weights of ``model``, by what they hold: "codes" (4 bits per weight), "block scales" (one int8
    per block of 64 weights), "scales of the scales" (an fp32 factor per group of block scales, and their mean: the
    double quantisation) and "level table" (the 16 NF4 levels in fp32, which torchao stores with every weight)."""
    NF4Tensor, _, _ = nf4_api()
    parts = dict.fromkeys(NF4_PARTS.values(), 0)  # each part once, in the order of NF4_PARTS
    weights = [m.weight for m in model.modules() if isinstance(getattr(m, "weight", None), NF4Tensor)]
    if not weights:
        raise ValueError("The model has no NF4 weights: quantise it first with quantize_base_nf4(model).")
    for w in weights:
        names, _ = w.__tensor_flatten__()
        for name in names:
            parts[NF4_PARTS[name]] += tensor_bytes(getattr(w, name))
    return parts


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights of every linear layer (NF4 or not) except the output head (tied to the embedding)."""
    head = getattr(model, "lm_head", None)
    return sum(tensor_bytes(m.weight) for m in model.modules() if isinstance(m, nn.Linear) and m is not head)


def quantization_error(w: torch.Tensor) -> float:
    """Relative Frobenius error ``|deq(NF4(W)) - W| / |W|`` of quantising W (d_out, d_in)."""
    w = w.detach().float()
    q = to_nf4_weight(w).get_original_weight()
    return float((q - w).norm() / w.norm())


class ResidualNF4Error(NamedTuple):
    """``residual_nf4_error``'s answer for one weight: QLoRA's error, QPiSSA's, and the residual's share of W."""

    qlora: float  # ‖deq(NF4(W)) − W‖_F
    qpissa: float  # ‖deq(NF4(W − W_r)) − (W − W_r)‖_F
    residual_share: float  # ‖W − W_r‖_F / ‖W‖_F: how much of W is left to quantise


def residual_nf4_error(w: torch.Tensor, r: int) -> ResidualNF4Error:
    """The error a 4-bit base puts into one weight W (d_out, d_in) at the start of fine-tuning, QLoRA's against QPiSSA's:
    QLoRA stores W in NF4, so ‖deq(NF4(W)) − W‖_F; QPiSSA stores only PiSSA's residual W − W_r in NF4 (W_r: W's top-r
    SVD part, which its adapter holds exactly), so ‖deq(NF4(W − W_r)) − (W − W_r)‖_F. With them, ‖W − W_r‖_F / ‖W‖_F."""
    if not 0 < r < min(w.shape):
        raise ValueError(f"r must lie between 1 and {min(w.shape) - 1} for a weight of shape {tuple(w.shape)}; got {r!r}.")
    w = w.detach().float()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    residual = w - (u[:, :r] * s[:r]) @ vh[:r]
    qlora, qpissa = (float((to_nf4_weight(x).get_original_weight() - x).norm()) for x in (w, residual))
    return ResidualNF4Error(qlora, qpissa, float(s[r:].norm() / s.norm()))


@torch.no_grad()
def merge_requantization_error(layer: LoRALinear) -> dict[str, float]:
    """What merging a LoRA update into an NF4 base does to it.

    The exact merged weight is ``W' = deq(W_nf4) + scaling B A``; storing it in 4 bits gives
    ``deq(NF4(W'))``.  Returns the norm of the update, the norm of the rounding error, and their
    ratio (``rounding / update``: near or above 1 means the merge destroys the adapter).
    """
    if not isinstance(layer, LoRALinear) or not isinstance(layer.base, NF4Linear):
        raise TypeError("merge_requantization_error takes a LoRALinear whose base is an NF4Linear (see quantize_base_nf4).")
    exact = dequantized_weight(layer).float() + layer.delta_weight().float()
    stored = to_nf4_weight(exact).get_original_weight().float()
    update, rounding = float(layer.delta_weight().norm()), float((stored - exact).norm())
    return {"update_norm": update, "rounding_norm": rounding, "ratio": rounding / update if update else math.inf}


@torch.no_grad()
def merge_kept_fraction(layer: LoRALinear) -> float:
    """The share of the update that a merge into NF4 keeps: ``<deq(NF4(W')) - deq(W_nf4), ΔW> / |ΔW|²``.

    ``ΔW = scaling B A`` and ``W' = deq(W_nf4) + ΔW``, as in ``merge_requantization_error``: 1 when the stored weight
    moved by the whole update, about 0 when rounding to the 16 levels erased it.
    """
    if not isinstance(layer, LoRALinear) or not isinstance(layer.base, NF4Linear):
        raise TypeError("merge_kept_fraction takes a LoRALinear whose base is an NF4Linear (see quantize_base_nf4).")
    base, update = dequantized_weight(layer).float(), layer.delta_weight().float()
    stored = to_nf4_weight(base + update).get_original_weight().float()
    squared = float((update * update).sum())
    if squared == 0:
        raise ValueError("The update (alpha/r) B A is zero: there is nothing to keep.")
    return float(((stored - base) * update).sum()) / squared


@torch.no_grad()
def merge_and_requantize(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each NF4 + LoRA layer replaced by one NF4 layer holding ``NF4(deq(W) + scaling B A)``.

    ``model`` itself is not changed.  This is what "merging" means for a 4-bit base.
    """
    layers = {n: m for n, m in lora_layers(model).items() if isinstance(m.base, NF4Linear)}
    if not layers:
        raise ValueError("The model has no LoRA layer on an NF4 base; quantize_base_nf4 then inject_lora first.")
    merged = copy.deepcopy(model)
    for name in layers:
        layer = merged.get_submodule(name)
        plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.base.bias is not None)
        plain.weight.copy_(dequantized_weight(layer).float() + layer.delta_weight().float())
        if layer.base.bias is not None:
            plain.bias.copy_(layer.base.bias)
        set_submodule(merged, name, NF4Linear.from_linear(plain))
    return merged
