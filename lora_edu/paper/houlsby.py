"""Adapter layers (Houlsby et al., 2019), the baseline the LoRA paper compares latency against.

A bottleneck ``h + W_up gelu(W_down h)`` after the attention output and after the MLP of every
block.  Unlike LoRA it cannot be merged away: it adds sequential layers to every forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..gpt.model import GPT

__all__ = ["HoulsbyAdapter", "add_houlsby_adapters"]


class HoulsbyAdapter(nn.Module):
    """x: (..., d) -> x + up(gelu(down(x))), with ``up`` zero at start (the identity)."""

    def __init__(self, d: int, bottleneck: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not 1 <= bottleneck <= d:
            raise ValueError(f"bottleneck must be in [1, {d}], got {bottleneck}.")
        self.down = nn.Linear(d, bottleneck, device=device, dtype=dtype)
        self.up = nn.Linear(bottleneck, d, device=device, dtype=dtype)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.gelu(self.down(x)))


def add_houlsby_adapters(model: GPT, bottleneck: int) -> int:
    """Append an adapter to every block's ``attn.o_proj`` and ``mlp.fc_out``; return the parameters added.

    Each adapter is made on the device and in the dtype of the layer it follows.
    """
    sites = [(parent, name) for block in model.blocks for parent, name in ((block.attn, "o_proj"), (block.mlp, "fc_out"))]
    if any(isinstance(getattr(parent, name), nn.Sequential) for parent, name in sites):
        raise ValueError("This model already has adapter layers; nothing was changed.")
    added = 0
    for parent, name in sites:
        layer = getattr(parent, name)
        weight = next(layer.parameters())  # its device and dtype (an nn.Linear or a LoRALinear)
        adapter = HoulsbyAdapter(layer.out_features, bottleneck, weight.device, weight.dtype)
        setattr(parent, name, nn.Sequential(layer, adapter))
        added += sum(p.numel() for p in adapter.parameters())
    return added
