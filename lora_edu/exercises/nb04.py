"""Exercises of notebook 04 (a LoRA layer by hand)."""

from __future__ import annotations

import numpy as np

from .core import ChoiceExercise, CodeExercise, register


def package_lora_forward(x: np.ndarray, W: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float, r: int) -> np.ndarray:
    """``lora_edu.LoRALinear`` (bias-free, float64) with the given weights: x (n, d_in) -> (n, d_out)."""
    import torch
    from torch import nn

    from ..lora import LoRALinear

    d_out, d_in = W.shape
    layer = LoRALinear(nn.Linear(d_in, d_out, bias=False, dtype=torch.float64), r=r, alpha=alpha)
    with torch.no_grad():
        layer.base.weight.copy_(torch.from_numpy(W))
        layer.lora_A.copy_(torch.from_numpy(A))
        layer.lora_B.copy_(torch.from_numpy(B))
        return layer(torch.from_numpy(x)).numpy()


def forward_cases(rng: np.random.Generator) -> list[tuple]:
    cases = []
    for n, d_in, d_out, r, alpha in ((3, 6, 5, 2, 4.0), (1, 4, 4, 1, 1.0), (7, 10, 3, 3, 16.0), (2, 8, 12, 4, 8.0), (5, 5, 9, 5, 2.5)):
        cases.append((rng.standard_normal((n, d_in)), rng.standard_normal((d_out, d_in)), rng.standard_normal((r, d_in)),
                      rng.standard_normal((d_out, r)), alpha, r))
    return cases


register(CodeExercise(
    id="lora-forward",
    prompt="Write lora_forward(x, W, A, B, alpha, r) with NumPy: the output of a bias-free LoRA layer for a batch of "
    "row vectors x (n x d_in), frozen W (d_out x d_in), A (r x d_in), B (d_out x r). It is run on hidden shapes "
    "(d_in ≠ d_out included) and compared with lora_edu.LoRALinear holding the same weights.",
    signature="lora_forward(x, W, A, B, alpha, r) -> y  # y: (n, d_out)",
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
    id="alpha-over-r",
    prompt="LoRALinear scales the update by α/r. With α and the learning rate fixed, you raise r from 1 to 64. "
    "What happens to the size of the update after the first training step?",
    options={
        "a": "it stays about the same: that is what α/r is for",
        "b": "it shrinks: α/r falls like 1/r while (with Adam) B A grows only like √r, so larger ranks learn slower "
        "(rsLoRA's α/√r keeps it steady)",
        "c": "it grows about 64 times, one factor per rank",
        "d": "it is zero at every rank, because B starts at zero",
    },
    answer_digest="4f2689a159d08a26",
    feedback={
        "a": "that is the common claim, but it does not hold: measured in notebook 06, the first-step update shrinks "
        "several times from r = 1 to r = 64 under α/r. α/r avoids re-tuning α, not the learning rate.",
        "c": "the 1/r in the scaling more than cancels the extra ranks.",
        "d": "B starts at zero, but after one step B has moved (its gradient is proportional to A), so B A is not zero.",
    },
    explanation="α/r over-corrects: the step's size grows like √r with more random directions, the scaling falls like "
    "1/r. Kalajdzievski (2023, rsLoRA) proposes α/√r, `LoRALinear(..., use_rslora=True)`.",
))
