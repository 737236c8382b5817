"""Exercises of notebook 06 (the LoRA paper's experiments at small scale)."""

from __future__ import annotations

import numpy as np

from ...maths.arch import Architecture, lora_parameter_count
from .core import ChoiceExercise, CodeExercise, NumericExercise, Trap, register


def package_phi(a1: np.ndarray, a2: np.ndarray, i: int, j: int) -> float:
    """φ(i, j) from ``lora_edu.paper.analysis.subspace_similarity`` (i, j counted from 1, as in the paper)."""
    from ...paper.analysis import subspace_similarity  # imports torch: only when this exercise is checked

    return float(subspace_similarity(a1, a2)[i - 1, j - 1])


def phi_cases(rng: np.random.Generator) -> list[tuple]:
    cases = []
    for r1, r2, d in ((2, 4, 6), (3, 3, 5), (4, 8, 16), (1, 5, 7), (8, 2, 10)):
        a1 = rng.standard_normal((r1, d))
        a2 = rng.standard_normal((r2, d))
        a2[: min(r1, r2)] += 2 * a1[: min(r1, r2)]  # partly shared directions, so φ is neither 0 nor 1
        cases.append((a1, a2, int(rng.integers(1, r1 + 1)), int(rng.integers(1, r2 + 1))))
    return cases


def placement_count(r: int, targets: tuple[str, ...]) -> int:
    """32 layers, d_model = 2560 (multi-head attention: every projection is 2560 x 2560)."""
    arch = Architecture("exercise", 32, 2560, 32, 32, 10240, 50257, 2048, "gelu", True, True)
    return lora_parameter_count(arch, r, targets)


register(CodeExercise(
    id="subspace-phi",
    prompt="Write phi(A1, A2, i, j): the LoRA paper's subspace similarity ||U_iᵀ V_j||_F² / min(i, j), where U_i holds "
    "the top-i right-singular vectors of A1 (r1 x d) and V_j the top-j of A2 (r2 x d), as columns. Hidden pairs of "
    "subspaces, compared with lora_edu.paper.analysis.subspace_similarity.",
    signature="phi(A1, A2, i, j) -> float",
    reference=package_phi,
    cases=phi_cases,
    explanation="φ is the mean squared cosine of the principal angles between the two subspaces: 1 when the smaller "
    "lies inside the larger, 0 when they are orthogonal.",
    hints=("np.linalg.svd(A1, full_matrices=False) returns Vt; its first i rows are U_iᵀ.",
           "The squared Frobenius norm is the sum of the squared entries."),
))
register(NumericExercise(
    id="placement-budget",
    prompt="Table 5 of the paper fixes the number of trainable parameters and compares placements: r = 8 on Wq alone, "
    "r = 4 on Wq and Wv, r = 2 on Wq, Wk, Wv and Wo. For a model with 32 layers and d_model = 2560 (square "
    "projections), how many parameters does the last placement, r = 2 on the four projections, train?",
    expected=lambda: placement_count(2, ("q", "k", "v", "o")),
    traps=(
        Trap(lambda: placement_count(8, ("q", "k", "v", "o")), "r = 8 belongs to the one-matrix placement; with four "
             "matrices the rank is 2."),
        Trap(lambda: placement_count(2, ("q", "k", "v", "o")) // 32, "that is one layer; there are 32."),
        Trap(lambda: 32 * 4 * 2 * 2560, "each matrix adds r (d_in + d_out) = r x 2 x 2560, not r x 2560."),
    ),
    explanation="each projection adds 2 (2560 + 2560) = 10,240, four per layer, 32 layers: exactly the budget of r = 8 "
    "on Wq alone or r = 4 on Wq and Wv, which is why the table can compare them.",
))
register(ChoiceExercise(
    id="amplification-factor",
    prompt="Table 7 of the paper projects W_q onto the top-r singular directions U, V of the learned ΔW_q (r = 4): "
    "||Uᵀ W_q Vᵀ||_F is small (0.32) while ||ΔW_q||_F is 6.91, an amplification factor of about 21.5, and "
    "projecting on W_q's own top directions gives a far larger value. What does the paper conclude?",
    options={
        "a": "ΔW repeats the top singular directions of W, making the strongest features stronger",
        "b": "ΔW is unrelated to W: the same as a random matrix",
        "c": "ΔW amplifies directions that W already contains but does not emphasise, and amplifies them strongly",
        "d": "ΔW is larger than W, so fine-tuning rewrites most of the pretrained weight",
    },
    answer_digest="5da923774e2e76e3",
    feedback={
        "a": "projected on W's own top directions the value is far larger; on ΔW's directions W is weak: ΔW does not "
        "repeat W's top directions.",
        "b": "the projection on ΔW's directions is larger than on a random matrix's, so ΔW is correlated with W.",
        "d": "||ΔW_q||_F = 6.91 is small next to ||W_q||_F (Table 7 lists both); the change is low rank and small, "
        "but concentrated.",
    },
    explanation="ΔW picks up features already present in W but not emphasised in pretraining and scales them up by a "
    "factor of about 20 (for r = 4): task-specific directions that the pretrained model under-uses.",
))
