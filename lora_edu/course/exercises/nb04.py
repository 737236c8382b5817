"""Exercises of notebook 04 (a LoRA layer by hand)."""

from __future__ import annotations

import numpy as np

from .core import ChoiceExercise, CodeExercise, register


def package_layer(W: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float, r: int):
    """A bias-free float64 ``lora_edu.LoRALinear`` holding W (d_out, d_in), A (r, d_in) and B (d_out, r)."""
    import torch
    from torch import nn

    from ...lora.layer import LoRALinear

    d_out, d_in = W.shape
    layer = LoRALinear(nn.Linear(d_in, d_out, bias=False, dtype=torch.float64), r=r, alpha=alpha)
    with torch.no_grad():
        layer.base.weight.copy_(torch.from_numpy(W))
        layer.lora_A.copy_(torch.from_numpy(A))
        layer.lora_B.copy_(torch.from_numpy(B))
    return layer


def package_lora_forward(x: np.ndarray, W: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float, r: int) -> np.ndarray:
    """The package's layer on x: (n, d_in) -> (n, d_out)."""
    import torch

    with torch.no_grad():
        return package_layer(W, A, B, alpha, r)(torch.from_numpy(x)).numpy()


def package_input_grad(grad_y: np.ndarray, W: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float, r: int) -> np.ndarray:
    """∂L/∂x through the package's layer by autograd, given grad_y = ∂L/∂y: (n, d_out) -> (n, d_in)."""
    import torch

    x = torch.zeros(grad_y.shape[0], W.shape[1], dtype=torch.float64, requires_grad=True)
    package_layer(W, A, B, alpha, r)(x).backward(torch.from_numpy(grad_y))
    return x.grad.numpy()


def input_grad_cases(rng: np.random.Generator) -> list[tuple]:
    return [(rng.standard_normal((n, d_out)), *args[1:]) for n, d_out, args in
            ((x.shape[0], w.shape[0], (x, w, a, b, alpha, r)) for x, w, a, b, alpha, r in forward_cases(rng))]


def forward_cases(rng: np.random.Generator) -> list[tuple]:
    cases = []
    for n, d_in, d_out, r, alpha in ((3, 6, 5, 2, 4.0), (1, 4, 4, 1, 1.0), (7, 10, 3, 3, 16.0), (2, 8, 12, 4, 8.0), (5, 5, 9, 5, 2.5)):
        cases.append((rng.standard_normal((n, d_in)), rng.standard_normal((d_out, d_in)), rng.standard_normal((r, d_in)),
                      rng.standard_normal((d_out, r)), alpha, r))
    return cases


register(CodeExercise(
    id="lora-forward",
    prompt="Write numpy_lora_forward(x, W, A, B, alpha, r) with NumPy: the output of a bias-free LoRA layer for a batch of "
    "row vectors x (n x d_in), frozen W (d_out x d_in), A (r x d_in), B (d_out x r). It is run on hidden shapes "
    "(d_in ≠ d_out included) and compared with lora_edu.LoRALinear holding the same weights.",
    signature="numpy_lora_forward(x, W, A, B, alpha, r) -> y  # y: (n, d_out)",
    reference=package_lora_forward,
    cases=forward_cases,
    explanation="y = x Wᵀ + (α/r) (x Aᵀ) Bᵀ: A reads r features of each input, B writes them along r output "
    "directions, and the d_out x d_in matrix B A is never formed.",
    hints=("Row vectors: a linear layer computes x @ W.T.", "Do not forget the scaling alpha / r on the LoRA branch."),
))
register(ChoiceExercise(
    id="why-b-zero",
    prompt="Why does LoRA start with B = 0 and A random?",
    options={
        "a": "any start works; A = B = 0 would do as well",
        "b": "so that B A = 0 (the model starts as the base model) while the gradient of B, which is proportional to A, "
        "is not zero",
        "c": "so that the update ΔW starts random and small",
        "d": "because B is larger than A",
    },
    answer_digest="b302318c9b3c224f",
    feedback={
        "a": "with A = B = 0 both gradients vanish (each is proportional to the other factor), so nothing ever trains.",
        "c": "ΔW = B A is exactly zero at the start, not small and random: B = 0 makes the product vanish.",
        "d": "the sizes of B (d_out x r) and A (r x d_in) depend on the layer; the choice is about gradients, not size.",
    },
    explanation="with A = B = 0 both gradients vanish and nothing ever trains; with B = 0 and A random the "
    "update starts at exactly zero and B moves at the first step.",
))
register(ChoiceExercise(
    id="gradient-of-a",
    prompt="ΔW = B A with B (d_out x r), A (r x d_in), and G = ∂L/∂(ΔW) (d_out x d_in). Which is ∂L/∂A?",
    options={"a": "G Bᵀ", "b": "Bᵀ G", "c": "Gᵀ A", "d": "G Aᵀ"},
    answer_digest="622eb29d8ab7027e",
    feedback={
        "a": "G Bᵀ would multiply (d_out x d_in) by (r x d_out): the inner sizes do not match unless d_in = r.",
        "c": "Gᵀ A is (d_in x d_out)(r x d_in): not even defined in general.",
        "d": "G Aᵀ is (d_out x r), the shape of B: it is ∂L/∂B.",
    },
    explanation="∂L/∂A = Bᵀ G (r x d_in, the shape of A) and ∂L/∂B = G Aᵀ (d_out x r, the shape of B). "
    "Shapes alone rule the other options out.",
))
register(ChoiceExercise(
    id="alpha-doubled",
    prompt="A rank-8 LoRALinear with α = 16 is trained with Adam. You double α to 32 and change nothing else (same r, "
    "same learning rate, same data). What happens to ‖ΔW‖_F after the first step?",
    options={
        "a": "nothing: Adam normalises the gradient, so the scaling cancels",
        "b": "it doubles: Adam's first step on B has a size set by the learning rate, and ΔW = (α/r) B A multiplies it by "
        "the doubled scaling",
        "c": "it grows 4 times: the gradient of B doubles and the branch's output doubles too",
        "d": "it halves, because α/r is divided by the rank",
    },
    answer_digest="62055d9641421ccf",
    feedback={
        "a": "Adam normalises the step on B, not the scaling applied after it: the same ΔB gives twice the ΔW.",
        "c": "that is plain SGD's answer (the gradient of B carries one factor α/r, the product another); Adam divides "
        "the gradient by its own size, removing one of the two factors.",
        "d": "r did not change; only α did, and it sits in the numerator.",
    },
    explanation="with Adam the first step moves each entry of B by about the learning rate, whatever the gradient's "
    "scale, so ΔW = (α/r) ΔB A is proportional to α. Doubling α acts like doubling the learning rate of the branch.",
    hints=("Write ΔW after one step as (α/r) ΔB A with A unchanged. Which of these factors does Adam fix?",),
))
register(CodeExercise(
    id="lora-input-grad",
    prompt="Backpropagation also needs the gradient with respect to the layer's input, to pass on to the layer below. "
    "Write lora_input_grad(grad_y, W, A, B, alpha, r): ∂L/∂x (n x d_in) for the bias-free LoRA layer y = x Wᵀ + "
    "(α/r) x Aᵀ Bᵀ, given grad_y = ∂L/∂y (n x d_out), without forming the d_out x d_in matrix B A. Checked on hidden "
    "shapes against autograd through lora_edu.LoRALinear.",
    signature="lora_input_grad(grad_y, W, A, B, alpha, r) -> grad_x  # (n, d_in)",
    reference=package_input_grad,
    cases=input_grad_cases,
    explanation="∂L/∂x = grad_y W + (α/r) (grad_y B) A: the backward pass runs the same thin path in reverse, "
    "through r numbers per row.",
    hints=("For y = x Mᵀ the input gradient is grad_y M. Here M = W + (α/r) B A.",
           "Multiply grad_y by B first (n x r), then by A."),
))
