"""Fitting a LoRA update to a known target matrix: the smallest complete LoRA training run.

A frozen layer with weight ``W`` is trained so that its outputs match a layer with ``W_target``;
only ``A`` and ``B`` move.  Notebook 04 builds the same loop by hand (explicit gradients) and
checks it against this one (autograd).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .layer import LoRALinear

__all__ = ["FitResult", "fit_lora_to_matrix", "lora_param_grads", "regression_data"]


@dataclass
class FitResult:
    """Learned factors, the loss at every step, and ``scaling * B @ A`` after every step."""

    B: np.ndarray  # (d_out, r)
    A: np.ndarray  # (r, d_in)
    scaling: float
    losses: list[float]
    deltas: list[np.ndarray]

    @property
    def delta_weight(self) -> np.ndarray:
        return self.scaling * self.B @ self.A


def lora_param_grads(x: np.ndarray, grad_y: np.ndarray, w: np.ndarray, a: np.ndarray, b: np.ndarray, alpha: float,
                     r: int) -> tuple[np.ndarray, np.ndarray]:
    """(dL/dA, dL/dB) of the LoRA layer y = x W^T + (alpha/r) x A^T B^T, given grad_y = dL/dy, without autograd.

    x: (n, d_in), grad_y: (n, d_out), A: (r, d_in), B: (d_out, r).  The frozen W does not enter the gradients of A
    and B; it is accepted so that the signature is that of notebook 04's exercise.
    """
    g = alpha / r * grad_y.T @ x  # dL/d(B A): (d_out, d_in)
    return b.T @ g, g @ a.T


def regression_data(w_target: np.ndarray, n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs X: (n, d_in) ~ N(0, 1) and targets Y = X W_target^T: (n, d_out), in float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, w_target.shape[1], generator=g, dtype=torch.float64)
    return x, x @ torch.as_tensor(w_target, dtype=torch.float64).T


def fit_lora_to_matrix(
    w: np.ndarray,
    w_target: np.ndarray,
    r: int = 1,
    alpha: float = 1.0,
    steps: int = 300,
    lr: float = 0.05,
    seed: int = 0,
    a_init: np.ndarray | None = None,
) -> FitResult:
    """Plain gradient descent on the loss 0.5 * mean over rows of ||X (W + s B A)^T - Y||^2.

    B starts at zero; A at ``a_init`` (r, d_in) when given, else LoRALinear's random init.
    """
    if np.shape(w) != np.shape(w_target):
        raise ValueError(f"W {np.shape(w)} and W_target {np.shape(w_target)} must have the same shape.")
    torch.manual_seed(seed)
    base = nn.Linear(w.shape[1], w.shape[0], bias=False).double()
    with torch.no_grad():
        base.weight.copy_(torch.as_tensor(w))
    layer = LoRALinear(base, r=r, alpha=alpha)
    if a_init is not None:
        if np.shape(a_init) != tuple(layer.lora_A.shape):
            raise ValueError(f"a_init has shape {np.shape(a_init)}, A needs {tuple(layer.lora_A.shape)}.")
        with torch.no_grad():
            layer.lora_A.copy_(torch.as_tensor(a_init))
    x, y = regression_data(w_target, seed=seed)
    opt = torch.optim.SGD([layer.lora_A, layer.lora_B], lr=lr)
    losses, deltas = [], []
    for _ in range(steps):
        loss = 0.5 * (layer(x) - y).pow(2).sum(dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        deltas.append(layer.delta_weight().detach().double().numpy())
    return FitResult(layer.lora_B.detach().numpy().copy(), layer.lora_A.detach().numpy().copy(), layer.scaling, losses, deltas)
