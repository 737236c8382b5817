"""Exercises of notebook 03 (parameter-count arithmetic)."""

from __future__ import annotations

import numpy as np

from ...maths.arch import ARCHITECTURES, Architecture, lora_parameter_count
from .core import ChoiceExercise, CodeExercise, NumericExercise, Trap, compare_exact, register

SWIGLU = ("q", "k", "v", "o", "gate", "up", "down")


def llama_like_lora(n_layer: int, d_model: int, n_head: int, n_kv_head: int, d_ff: int, r: int, targets: tuple[str, ...]) -> int:
    """The package's count for a Llama-style block (grouped-query attention, SwiGLU MLP)."""
    arch = Architecture("exercise", n_layer, d_model, n_head, n_kv_head, d_ff, 32000, 4096, "swiglu", False, False)
    return lora_parameter_count(arch, r, targets)


def llama_cases(rng: np.random.Generator) -> list[tuple]:
    configs = [(2, 512, 8, 2, 1536), (3, 768, 12, 4, 2048), (1, 1024, 16, 16, 2816), (4, 256, 4, 1, 688)]
    cases = []
    for config in configs:
        for _ in range(2):
            chosen = tuple(t for t in SWIGLU if rng.random() < 0.5) or ("k",)
            cases.append((*config, int(rng.integers(1, 17)), chosen))
    return cases


def llama70_kv(square: bool = False) -> int:
    arch = ARCHITECTURES["Llama 3 70B"]
    if square:
        return arch.n_layer * 2 * 16 * (2 * arch.d_model)
    return lora_parameter_count(arch, 16, ("k", "v"))


register(NumericExercise(
    id="llama70-kv-r16",
    prompt="Llama 3 70B has 80 layers, d_model = 8192, 64 query heads and 8 key/value heads (head dimension 128). "
    "How many parameters does rank-16 LoRA on Wk and Wv (every layer) train?",
    expected=llama70_kv,
    traps=(
        Trap(lambda: llama70_kv(square=True), "with grouped-query attention Wk and Wv are not square: they map 8192 "
             "inputs to 8 kv heads x 128 = 1024 outputs."),
        Trap(lambda: llama70_kv() // 80, "that is one layer; LoRA adapts Wk and Wv in all 80."),
        Trap(lambda: llama70_kv() // 2, "that is one of the two matrices."),
    ),
    explanation="each of Wk, Wv is 1024 x 8192, so r (d_in + d_out) = 16 x 9216 per matrix; x 2 matrices x 80 layers.",
    hints=("Shapes first: d_out of Wk is (number of kv heads) x (head dimension).",),
))
register(CodeExercise(
    id="lora-trainable",
    prompt="Write lora_trainable(n_layer, d_model, n_head, n_kv_head, d_ff, r, targets): the parameters rank-r LoRA "
    "trains on the matrices named in targets (a tuple from 'q', 'k', 'v', 'o', 'gate', 'up', 'down') in every layer "
    "of a Llama-style model (grouped-query attention, SwiGLU MLP). Hidden configurations, compared with "
    "lora_edu.lora_parameter_count.",
    signature="lora_trainable(n_layer, d_model, n_head, n_kv_head, d_ff, r, targets) -> int",
    reference=llama_like_lora,
    cases=llama_cases,
    compare=compare_exact,
    explanation="every adapted d_out x d_in matrix adds r (d_out + d_in); only the shapes differ between matrices.",
    hints=("head_dim = d_model // n_head; Wk and Wv have d_out = n_kv_head * head_dim.",
           "gate and up map d_model -> d_ff; down maps d_ff -> d_model."),
))
register(ChoiceExercise(
    id="unmerged-cost",
    prompt="A d x d layer carries an unmerged rank-r LoRA: it computes W x + B (A x) for every token. Compared with "
    "the pretrained layer's W x, its forward pass costs:",
    options={
        "a": "about d / (2r) times fewer multiply-adds, since the factors are small",
        "b": "d² + 2dr multiply-adds: slightly more than W x",
        "c": "2dr multiply-adds",
        "d": "exactly the same as W x, always",
    },
    answer_digest="d9900c1887fed70d",
    feedback={
        "a": "the frozen W x is still computed; the factors are an extra path, not a replacement. What LoRA saves is "
        "memory (no gradients or Adam states for W) and checkpoint size, not forward FLOPs.",
        "c": "2dr is the LoRA branch alone; the frozen W x (d² multiply-adds) runs too.",
        "d": "only once merged, W' = W + B A: then it is a plain d x d layer; unmerged, the branch adds 2dr.",
    },
    explanation="the base path still costs d², and B (A x) adds dr + rd. Merging removes the extra 2dr at inference; "
    "LoRA saves memory and the frozen weight's gradient, not forward compute.",
))
register(ChoiceExercise(
    id="which-matrices",
    prompt="Which of these parameters of a Llama 3 8B block can NOT carry a LoRA update ΔW = B A?",
    options={
        "a": "the query projection Wq (4096 x 4096)",
        "b": "the key projection Wk (1024 x 4096, grouped-query attention)",
        "c": "the MLP's down projection (4096 x 14336)",
        "d": "the RMSNorm gain (a vector of 4096 numbers)",
    },
    answer_digest="26e3f4774e9642ec",
    feedback={
        "a": "Wq is a linear layer: the paper's own choice was Wq and Wv.",
        "b": "a non-square matrix is fine: B is 1024 x r and A is r x 4096.",
        "c": "MLP matrices are linear layers too; QLoRA found adapting every linear layer works best.",
    },
    explanation="LoRA adds a low-rank matrix to a weight matrix; a norm's gain is a vector with nothing to factorise "
    "(it is small enough to train directly if needed).",
))
