"""Exercises of notebook 07 (scaling out: accumulation, data parallel, sharding, a 4-bit base, many adapters)."""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...maths.arch import ARCHITECTURES
from .core import (
    ChoiceExercise,
    CodeExercise,
    CodeTrap,
    NumericExercise,
    PredictExercise,
    Trap,
    WrittenExercise,
    register,
)


def gpt2_medium_bytes(r: int | None, targets: tuple[str, ...], grad_dtype: str) -> int:
    from ...scale.distributed import allreduce_bytes  # imports torch: only when this exercise is checked

    return allreduce_bytes(ARCHITECTURES["GPT-2 medium"], r, targets, grad_dtype)


def package_ring_seconds(n_trainable: int, bytes_per_number: int, world_size: int, gbytes_per_s: float) -> float:
    """``lora_edu.scale.distributed.ring_allreduce_seconds`` for the gradients of ``n_trainable`` parameters."""
    from ...scale.distributed import ring_allreduce_seconds

    return ring_allreduce_seconds(n_trainable * bytes_per_number, world_size, gbytes_per_s * 1e9)


def ring_cases(rng: np.random.Generator) -> list[tuple]:
    """GPT-3's r = 4 LoRA gradients in fp32 first: 8 ranks and 4 bytes tell every usual mistake apart."""
    cases = [(18_874_368, 4, 8, 50.0), (175_000_000_000, 2, 8, 50.0), (1_000, 4, 1, 1.0), (1_000_000, 4, 2, 10.0)]
    for _ in range(4):
        cases.append((int(rng.integers(10**4, 10**10)), int(rng.choice([4, 2])), int(rng.integers(2, 65)), float(rng.uniform(1, 400))))
    return cases


SMALL_MERGE_LAYER = "blocks.3.mlp.fc_in"  # a pretrained layer of the tiny GPT, 256 x 64


def small_update_layer():
    """The tiny GPT's pretrained ``blocks.3.mlp.fc_in`` (256 x 64) on an NF4 base, with a random LoRA update
    (α/r) B A scaled to 1% of the stored weight's norm.

    Built as notebook 07's cell builds it, seed 0; the caller's random state is left as it was.
    """
    import copy

    import torch

    from ...gpt.pretrain import load_pretrained
    from ...lora.layer import LoRALinear
    from ...lora.quant import NF4Linear, dequantized_weight

    base, _ = load_pretrained("tiny", "cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layer = LoRALinear(NF4Linear.from_linear(copy.deepcopy(base.get_submodule(SMALL_MERGE_LAYER))), r=8, alpha=16)
        with torch.no_grad():
            layer.lora_B.normal_()
            layer.lora_B.mul_(0.01 * dequantized_weight(layer).norm() / layer.delta_weight().norm())
    return layer


@functools.cache
def small_update_kept() -> float:
    """The share of a 1% update that survives a merge into NF4, measured as notebook 07 does."""
    from ...lora.quant import merge_kept_fraction

    return merge_kept_fraction(small_update_layer())


def branch_cost(r: int, d_in: int, d_out: int) -> float:
    """Multiply-adds per token of the branch (x Aᵀ) Bᵀ over those of x Wᵀ: r (d_in + d_out) / (d_in d_out)."""
    return r * (d_in + d_out) / (d_in * d_out)


LLAMA_8B_D = ARCHITECTURES["Llama 3 8B"].d_model  # Wq of Llama 3 8B is d_model x d_model


@functools.cache
def tiny_nf4_shrink() -> float:
    """fp32 bytes / NF4 bytes of the tiny GPT's linear weights (output head excluded), measured as notebook 07 does.

    The bytes depend on the shapes only. The model is drawn inside ``fork_rng``, so the caller's random state
    (a notebook's) is left as it was.
    """
    import torch

    from ...gpt.model import GPT, GPT_SIZES
    from ...lora.quant import quantize_base_nf4, weight_bytes

    with torch.random.fork_rng(devices=[]):
        model = GPT(GPT_SIZES["tiny"])
    fp32 = weight_bytes(model)
    quantize_base_nf4(model)
    return fp32 / weight_bytes(model)


register(PredictExercise(
    id="predict-nf4-shrink",
    prompt="The next cell stores the tiny GPT's linear weights in NF4, as just described: every linear layer of its 4 "
    "blocks, with the output head left as it is. Then it measures their bytes. Predict: how many times fewer bytes "
    "do they take than in fp32?",
    expected=tiny_nf4_shrink,
    rel_tol=0.025,
    traps=(
        Trap(lambda: 32 / 4, "4 bits is an eighth of 32, but each block of 64 weights also stores its scale."),
        Trap(lambda: 32 / (4 + 32 / 64), "that keeps one fp32 scale per block of 64 weights, half a bit per weight. "
             "QLoRA stores the scales in 8 bits (double quantisation): an eighth of a bit per weight."),
        Trap(lambda: 16 / 4, "that is the ratio to bf16, 16 bits per weight. fp32 takes 32."),
        Trap(lambda: 1 / tiny_nf4_shrink(), "that is NF4 / fp32, the fraction that is left. The question asks how "
             "many times smaller: fp32 / NF4."),
    ),
    explanation="each weight takes 4 bits, and each block of 64 weights one 8-bit scale: 4.125 bits per weight. Each "
    "layer also stores a few fixed numbers (the 16 NF4 levels, the scales' own scale factors), which in layers this "
    "small add about 0.07 bit more. So about 4.2 bits per weight, and 32 / 4.2 ≈ 7.6.",
    hints=("Count bits per weight: the 4-bit code, plus the block's 8-bit scale shared by 64 weights.",),
))
register(NumericExercise(
    id="allreduce-bytes-gpt2-medium",
    prompt="Data parallelism all-reduces the gradient of every trainable parameter at each step. GPT-2 medium has "
    "24 layers and d_model = 1024. How many bytes of gradients does one step hand to all-reduce (the buffer, not what the ring "
    "sends) for rank-8 LoRA on Wq and Wv with fp32 "
    "gradients?",
    expected=lambda: gpt2_medium_bytes(8, ("q", "v"), "fp32"),
    traps=(
        Trap(lambda: gpt2_medium_bytes(8, ("q", "v"), "fp32") // 4, "that is the number of parameters; each fp32 "
             "gradient takes 4 bytes."),
        Trap(lambda: gpt2_medium_bytes(8, ("q", "v"), "fp32") // 24, "that is one layer; there are 24."),
        Trap(lambda: gpt2_medium_bytes(None, ("q", "v"), "fp32"), "that is full fine-tuning: every weight's gradient. "
             "With LoRA only A and B have gradients."),
    ),
    explanation="per layer two matrices of r (d_in + d_out) = 8 × 2048 parameters, times 24 layers, times 4 bytes: "
    "frozen weights have no gradient, so nothing of them crosses the wire.",
))
register(CodeExercise(
    id="ring-allreduce-seconds",
    prompt="Write allreduce_seconds(n_trainable, bytes_per_number, world_size, gbytes_per_s): the time of a "
    "bandwidth-bound ring all-reduce of the gradients, in which every rank sends 2 (N − 1) / N of the buffer over a "
    "link of gbytes_per_s GB/s (10^9 bytes/s). It is run on hidden cases, from one GPU to 64. Then use it on a case "
    "section 2 did not print: GPT-3's "
    "full gradients (174,604,259,328 parameters) against its r = 4 LoRA's on Wq and Wv (18,874,368, notebook 03), in "
    "fp32, on 64 GPUs with 25 GB/s links.",
    signature="allreduce_seconds(n_trainable, bytes_per_number, world_size, gbytes_per_s) -> float",
    own_work=("ring_allreduce_seconds",),
    reference=package_ring_seconds,
    cases=ring_cases,
    traps=(
        CodeTrap(lambda n, b, w, g: n * b / (g * 1e9), "you sent the buffer once. A ring all-reduce is a "
                 "reduce-scatter, then an all-gather: each rank sends 2 (N − 1) / N of the buffer."),
        CodeTrap(lambda n, b, w, g: 2 * n * b / (g * 1e9), "you sent exactly twice the buffer: that is the limit for "
                 "large N. Each rank sends 2 (N − 1) / N of it (and nothing when N = 1)."),
        CodeTrap(lambda n, b, w, g: 2 * (w - 1) * n * b / (g * 1e9), "you sent the whole buffer at each of the "
                 "2 (N − 1) ring steps. Each step sends one chunk, 1/N of the buffer."),
        CodeTrap(lambda n, b, w, g: (w - 1) * n * b / (g * 1e9), "you sent the whole buffer to each of the other "
                 "N − 1 ranks: the naive all-reduce. The ring splits it into N chunks, so each rank sends "
                 "2 (N − 1) / N of it."),
        CodeTrap(lambda n, b, w, g: (w - 1) / w * n * b / (g * 1e9), "that is only the reduce-scatter half. The "
                 "all-gather sends as much again: 2 (N − 1) / N in all."),
        CodeTrap(lambda n, b, w, g: 2 * (w - 1) / w * n / (g * 1e9), "you all-reduced numbers, not bytes: multiply by "
                 "bytes_per_number."),
        CodeTrap(lambda n, b, w, g: 2 * (w - 1) / w * n * b / (g * 2**30), "a GB/s here is 10^9 bytes per second, "
                 "not 2^30."),
        CodeTrap(lambda n, b, w, g: 2 * (w - 1) / w * n * b / g, "you divided by gbytes_per_s as if it were bytes per "
                 "second: 1 GB/s is 10^9 bytes per second."),
    ),
    model_solution="""
def allreduce_seconds(n_trainable, bytes_per_number, world_size, gbytes_per_s):
    buffer = n_trainable * bytes_per_number                 # the gradients, in bytes
    sent = 2 * (world_size - 1) / world_size * buffer       # reduce-scatter, then all-gather
    return sent / (gbytes_per_s * 1e9)                      # 1 GB/s = 1e9 bytes per second
""",
    explanation="the ring moves 2 (N − 1) / N × bytes per rank, almost twice the buffer for large N and nothing for "
    "N = 1; the buffer is the trainable parameters' gradients, so LoRA divides the time by total / trainable. The "
    "GPT-3 case: 2 × 63/64 × 174,604,259,328 × 4 bytes / 25 GB/s ≈ 55.0 s per step for full fine-tuning, against "
    "2 × 63/64 × 18,874,368 × 4 / 25e9 ≈ 5.9 ms for LoRA: 9,251 times less, the ratio of the parameter counts.",
    hints=("bytes = n_trainable × bytes_per_number; GB/s means 1e9 bytes per second.",
           "With world_size = 1 there is nobody to talk to: the time is 0."),
))
def package_batched_lora(x: np.ndarray, W: np.ndarray, A: np.ndarray, B: np.ndarray, scaling: np.ndarray,
                         ids: np.ndarray) -> np.ndarray:
    """The package's ``MultiLoRALinear`` (bias-free, float64) serving a batch: row i gets x_i Wᵀ + s_k (x_i A_kᵀ) B_kᵀ,
    k = ids[i] (k = -1: x_i Wᵀ alone). x: (batch, seq, d_in), W: (d_out, d_in), A: (n, r, d_in), B: (n, d_out, r),
    scaling: (n,), ids: (batch,) -> (batch, seq, d_out)."""
    import torch
    from torch import nn

    from ...scale.serving import MultiLoRALinear, use_adapters

    base = nn.Linear(W.shape[1], W.shape[0], bias=False, dtype=torch.float64)
    with torch.no_grad():
        base.weight.copy_(torch.from_numpy(W))
    layer = MultiLoRALinear(base, torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(np.asarray(scaling, dtype=float)))
    with use_adapters(layer, ids.tolist()), torch.no_grad():
        return layer(torch.from_numpy(x)).numpy()


def batched_lora_cases(rng: np.random.Generator) -> list[tuple]:
    """Hidden batches: several adapters with different scalings, every batch with a row asking for none (-1)."""
    cases = []
    for batch, seq, d_in, d_out, r, n, ids in ((4, 3, 7, 5, 2, 3, (2, 0, -1, 2)), (5, 2, 6, 6, 3, 4, (-1, 3, 1, 1, 0)),
                                               (3, 4, 5, 9, 1, 2, (1, -1, 0)), (6, 1, 8, 8, 4, 5, (4, 4, -1, 2, 0, 3))):
        cases.append((rng.standard_normal((batch, seq, d_in)), rng.standard_normal((d_out, d_in)),
                      rng.standard_normal((n, r, d_in)), rng.standard_normal((n, d_out, r)),
                      rng.uniform(0.5, 4.0, n).round(2), np.array(ids)))
    return cases


def every_row_with(k: int):
    """The trap of a batch served as if every row asked for adapter k."""
    return lambda x, W, A, B, s, ids: package_batched_lora(x, W, A, B, s, np.full_like(ids, k))


register(CodeExercise(
    id="batched-lora-rows",
    prompt="Write the batched layer yourself, with NumPy. A batch x (batch × seq × d_in) goes through one layer with "
    "frozen W (d_out × d_in) and n adapters stacked: A (n × r × d_in), B (n × d_out × r), their scalings α/r in "
    "scaling (n,). Row i asks for adapter ids[i], or for none with −1. Write batched_lora(x, W, A, B, scaling, ids) "
    "returning (batch × seq × d_out): every row gets x_i Wᵀ, and the rows with an adapter k also get "
    "s_k (x_i A_kᵀ) B_kᵀ. One product for the base, one gather of A and B, no loop over rows needed (matmul on "
    "stacked arrays multiplies them row by row, as bmm does). It is run on hidden batches. Then run it on the real "
    "layer of this section, the 8-adapter model's first Wq (the cell after the exercise): the layer's output should "
    "be your function plus the layer's bias.",
    signature="batched_lora(x, W, A, B, scaling, ids) -> (batch, seq, d_out)",
    own_work=("MultiLoRALinear", "serve_batched", "use_adapters"),
    reference=package_batched_lora,
    cases=batched_lora_cases,
    traps=(
        CodeTrap(lambda x, W, A, B, s, ids: (x @ W.T + s[ids][:, None, None]
                                             * ((x @ A[ids].transpose(0, 2, 1)) @ B[ids].transpose(0, 2, 1))),
                 "The row that asked for no adapter (−1) got one: in NumPy (and torch) index −1 picks the LAST "
                 "adapter. Gather with the ids clipped at 0, and give those rows a scaling of 0."),
        CodeTrap(lambda x, W, A, B, s, ids: package_batched_lora(x, W, A, B, np.ones_like(s), ids),
                 "Each update is off by its scaling: row i adds s_k (x_i A_kᵀ) B_kᵀ, with the α/r of its own "
                 "adapter k."),
        CodeTrap(lambda x, W, A, B, s, ids: package_batched_lora(x, W, A, B, s, np.clip(ids, 0, None)),
                 "The row with −1 got adapter 0's update: clipping the ids at 0 makes the gather safe, but that row's "
                 "scaling must then be 0."),
        CodeTrap(every_row_with(0), "Every row got adapter 0: gather each row's own A and B, A[ids] and B[ids]."),
        CodeTrap(lambda x, W, A, B, s, ids: (x @ W.T + s[np.arange(len(ids)) % len(s)][:, None, None]
                                             * package_batched_lora(x, 0 * W, A, B, np.ones_like(s), ids)),
                 "Your scalings follow the rows' positions, not their adapters: row i needs the α/r of adapter ids[i], "
                 "scaling[ids[i]], (and 0 where ids[i] is −1)."),
        CodeTrap(lambda x, W, A, B, s, ids: (ids >= 0)[:, None, None] * package_batched_lora(x, W, A, B, s, ids),
                 "The rows without an adapter (−1) came out as zeros: they still get the base product x Wᵀ, only no "
                 "update."),
        CodeTrap(lambda x, W, A, B, s, ids: x @ W.T,
                 "Your output is the base product alone: every row with an adapter also adds s_k (x_i A_kᵀ) B_kᵀ."),
    ),
    model_solution="""
def batched_lora(x, W, A, B, scaling, ids):
    rows = np.clip(ids, 0, None)                    # a safe index for every row (-1 would pick the last adapter)
    scale = scaling[rows] * (ids >= 0)              # (batch,): each row's α/r, or 0 for "no adapter"
    h = x @ A[rows].transpose(0, 2, 1)              # (batch, seq, r): row i times its own A_iᵀ
    update = h @ B[rows].transpose(0, 2, 1)         # (batch, seq, d_out): then its own B_iᵀ
    return x @ W.T + scale[:, None, None] * update  # one shared base product for the whole batch
""",
    explanation="the base product x Wᵀ is shared by every row, so it runs once for the batch; each row's update "
    "needs only its own r × d_in and d_out × r factors, gathered by id. That is why one batch can serve many "
    "customers: the extra work is the thin branch, r (d_in + d_out) multiply-adds per token.",
    hints=("Start with the rows' own factors: A[ids] has shape (batch, r, d_in). What does index −1 give?",
           "x @ A_rows.transpose(0, 2, 1) multiplies row i of x by its own A_iᵀ: (batch, seq, r).",
           "Multiply each row's update by its own scaling: scale[:, None, None] broadcasts over seq and d_out."),
))
register(WrittenExercise(
    id="accumulation-weights",
    prompt="Prove it. A batch holds T target tokens, and its loss L is the mean of their T token losses. Split it into "
    "k micro-batches: micro-batch m holds T_m of the tokens and has mean loss L_m. (1) Show that calling backward on "
    "(T_m / T) L_m for each m in turn, with the gradients adding up in .grad, gives exactly the gradient of L. (2) When "
    "is every weight T_m / T equal to 1/k? Check section 1's batch: run `[int((y_m != -100).sum()) for y_m in "
    "y.chunk(4)]` in a new cell (−100 marks a position with no target, the prompt or padding: the loss skips it, as "
    "cross_entropy's ignore_index). (3) What goes wrong if each L_m is divided by k when the micro-batches hold different "
    "numbers of target tokens?",
    points=(
        "T_m L_m is the sum of micro-batch m's token losses, so L = (1/T) Σ_m T_m L_m = Σ_m (T_m / T) L_m.",
        "The gradient is linear: ∇L = Σ_m (T_m / T) ∇L_m. Each backward adds one term to .grad, so after the k calls "
        ".grad holds ∇L. In floating point the sum is taken in another order, so it agrees up to rounding.",
        "T_m / T = 1/k exactly when every micro-batch holds T/k target tokens: the same number of tokens, not only of "
        "rows. Section 1's rows all have the same number of target tokens: the cell prints [208, 208, 208, 208].",
        "Dividing by k with unequal T_m gives the mean of the micro-batch means: a token in a small micro-batch "
        "weighs more than one in a large micro-batch. That is the gradient of a differently weighted loss, not of "
        "the batch's mean loss.",
    ),
    explanation="Write L = (1/T) Σ_t ℓ_t. Micro-batch m contributes T_m L_m to the sum, so L = Σ_m (T_m / T) L_m, and "
    "by linearity ∇L = Σ_m (T_m / T) ∇L_m: k backward calls on the weighted losses, added in .grad, give ∇L (up to "
    "rounding). The weights are 1/k when every micro-batch holds the same number of target tokens, as in section 1 "
    "(208 each). With unequal sizes, dividing by k averages the micro-batch means, which over-weights the tokens of "
    "small micro-batches.",
    hints=("Write L as a sum over all tokens, then group the tokens by micro-batch.",),
))
register(PredictExercise(
    id="predict-nf4-small-merge",
    prompt="The next cell takes a pretrained layer of the tiny GPT (the last block's first MLP layer, 256 × 64), puts it "
    "on an NF4 base and gives it a random LoRA update (α/r) B A whose norm is 1% of the stored weight's, a tenth of what "
    "the LoRA paper measured for GPT-3 (0.11). Then it merges: it stores "
    "W + (α/r) B A in NF4 again. Predict: what share of the update does the stored weight keep? 1 means the stored "
    "weight moved by the whole update, 0 means the rounding erased it. (The cell measures ⟨W_stored − W, ΔW⟩ / ‖ΔW‖², "
    "with ΔW = (α/r) B A: how far the stored weight moved along the update, as a share of it.)",
    expected=small_update_kept,
    rel_tol=0.0,
    abs_tol=0.05,
    traps=(
        Trap(lambda: 1.0, "that is what a merge keeps in fp32 or bf16, and what rounding keeps on average for numbers "
             "that sit anywhere between levels. Here every weight was read back from NF4, so it sits exactly on a level, "
             "half of each neighbouring gap from the edges where rounding would switch level: a change much smaller "
             "than that rounds back to the same level."),
        Trap(lambda: 0.9, "NF4's error of about a tenth (section 4) is relative to W, not to the update. Here the "
             "update is far smaller than that error."),
        Trap(lambda: 0.8, "the trained adapter above kept most of its update because its update was large next to W. "
             "This one is 1% of W: far below the gap between two levels."),
    ),
    explanation="NF4 stores each weight as one of 16 levels times its block's scale, the block's largest |weight|. Two "
    "neighbouring levels are 8% to 30% of that scale apart. An update of 1% of ‖W‖ changes each weight by about 1% of "
    "its typical size. Each weight was read back from NF4, so it sits exactly on a level, half of each neighbouring "
    "gap from the edges where rounding would switch level, "
    "and a change far less than that leaves almost every weight on its level: the merge keeps about a "
    "hundredth of the update. What the stored weight does change comes from the block scales: each block's largest "
    "weight moved a little, so every weight of its block is rescaled with it, along W's own direction, not the update's.",
    hints=("Compare the change in one weight (about 1% of its size) with the distance between two of NF4's 16 levels.",),
))
register(NumericExercise(
    id="branch-cost-per-token",
    prompt="An unmerged adapter, or a batch of rows with different adapters, pays the branch (α/r) (x Aᵀ) Bᵀ on "
    f"top of x Wᵀ for every token. Take Llama 3 8B's query projection, {LLAMA_8B_D} × {LLAMA_8B_D}, with r = 16. "
    "Count multiply-adds per token (one per weight a product uses). What does the branch cost, as a fraction of the "
    "base product x Wᵀ? Answer as a fraction: 0.5 would mean half.",
    expected=lambda: branch_cost(16, LLAMA_8B_D, LLAMA_8B_D),
    rel_tol=0.02,
    traps=(
        Trap(lambda: 16 * LLAMA_8B_D / LLAMA_8B_D**2, "you counted x Aᵀ only (r d_in). Bᵀ then maps those r numbers "
             "to d_out outputs: another r d_out."),
        Trap(lambda: 16.0, "you formed each row's B A, a d_out × d_in matrix: r d_in d_out multiply-adds, 16 times "
             "the base. The branch never forms it: x Aᵀ gives r numbers, then Bᵀ maps them to the output."),
        Trap(lambda: 1 / branch_cost(16, LLAMA_8B_D, LLAMA_8B_D), "that is the base's cost over the branch's. The "
             "question asks for the branch over the base."),
        Trap(lambda: 100 * branch_cost(16, LLAMA_8B_D, LLAMA_8B_D), "that is a percentage. Answer as a fraction."),
        Trap(lambda: 1 + branch_cost(16, LLAMA_8B_D, LLAMA_8B_D), "that is the whole unmerged layer over the base. "
             "The question asks for the branch alone."),
    ),
    explanation="x Aᵀ costs r d_in multiply-adds and (x Aᵀ) Bᵀ costs r d_out: r (d_in + d_out) = 131,072 against "
    "d_in d_out = 16,777,216 for x Wᵀ, so 1/128, under 1%. With one adapter for every request, merging removes even "
    "this: W + (α/r) B A costs what W costs. With many adapters in a batch, this small extra is what each row pays to "
    "share one base product. Two separate facts lie behind section 5: batched serving's cost hardly depends on how many "
    "adapters a batch mixes, since each row pays for one branch whichever adapter it uses, and at Llama's size that "
    "branch is cheap. On section 5's tiny model it is not: r = 8 on a 64 × 64 weight is 8 × 128 / 4096, a quarter.",
    hints=("x Aᵀ turns d_in numbers into r numbers; then Bᵀ turns r numbers into d_out numbers.",),
))
def fsdp_gathered_copies() -> float:
    """What section 3's FSDP2 run gathers per step, in copies of the model, counted from the model's parameters: each
    block twice (before its forward pass and again before its backward pass), the outermost module's once."""
    from ...gpt.finetune import prepare
    from ...gpt.pretrain import load_pretrained
    from ...scale.distributed import DistributedConfig

    cfg = DistributedConfig(strategy="fsdp")
    base, _ = load_pretrained(cfg.size, "cpu")
    model = prepare(base, cfg.method, r=cfg.r, alpha=cfg.alpha, seed=cfg.seed)
    size = {name: p.numel() * p.element_size() for name, p in model.named_parameters()}
    blocks = sum(b for name, b in size.items() if name.startswith("blocks."))
    return (2 * blocks + (sum(size.values()) - blocks)) / sum(size.values())


register(PredictExercise(
    id="predict-fsdp-gathers",
    prompt="FSDP2 shards every block's weights over the processes (section 3's run: each block wrapped, then the whole "
    "model, the defaults kept). Predict: in one training step of LoRA, how many copies of the model does each process "
    "all-gather? Count the bytes gathered over the bytes of one whole model: 1 means every weight was gathered once. "
    "Think about what the forward pass needs, and what the backward pass needs to pass the gradient down through a "
    "frozen W.",
    expected=fsdp_gathered_copies,
    rel_tol=0.05,
    traps=(
        Trap(lambda: 1.0, "that counts the forward pass only. A frozen W gets no gradient, but the gradient still has to "
             "pass down through its layer to reach the adapters below, and ∂L/∂x = (∂L/∂y) W needs W. FSDP2 freed each "
             "block after its forward pass, so it gathers it again."),
        Trap(lambda: 0.5, "a process holds half the model (its shard) between uses, but a matrix product needs the "
             "layer's whole W: before a block runs, each process fetches the other shards."),
        Trap(lambda: 3.0, "the optimizer step needs no gather: each process updates its own shard of the trainable "
             "parameters with its own shard of the gradients (after one reduce-scatter)."),
    ),
    explanation="each block is gathered before its forward pass, freed to save memory, and gathered again before its "
    "backward pass, since passing the gradient down needs W even when W is frozen. The outermost module's weights (the "
    "embedding tables and the final layer norm, outside the blocks) are gathered once and kept, so the count is a "
    "little under two. `fully_shard(..., reshard_after_forward=False)` keeps each block gathered from forward to "
    "backward: one gather fewer, for more memory held.",
    hints=("What does the backward pass of y = x Wᵀ compute to pass the gradient on to x?",),
))
register(ChoiceExercise(
    id="serve-mixed-adapters",
    prompt="A server answers batches of 32 requests on one base model. 32 customers each have their own LoRA adapter, "
    "and a batch usually holds one request from each. Which way of serving a batch costs least while every customer "
    "still gets the answers of their own adapter?",
    options={
        "a": "merge-swap: group the requests by adapter; for each group, merge its adapter into W, run the group, unmerge",
        "b": "batched: run the base product x Wᵀ once for all 32 rows, then add each row's own adapter branch",
        "c": "one at a time: run each request alone, at batch 1, through its own unmerged LoRA model",
        "d": "merged once: merge all 32 adapters into W together, then run the whole batch through that model",
    },
    answer_digest="a1e64dbc5dab1c9c",
    feedback={
        "a": "the misconception is \"a merged model is always the fastest\". A merge pays off when it serves many "
        "requests. Here each group holds one request, so each merge serves one: 32 merges and 32 unmerges of a "
        "d_out × d_in matrix, and 32 base "
        "products of one row each. The base is never shared across the batch.",
        "c": "the misconception is \"rows with different adapters cannot share a matrix product\". They all use the "
        "same W, the expensive part; only the thin branch differs from row to row. One row at a time runs the base "
        "32 times and leaves the batch unused.",
        "d": "the misconception is \"adapters add up like features\". W plus the sum of 32 updates is a model that no "
        "customer trained: every answer would also carry the other 31 customers' updates.",
    },
    explanation="the base product, the expensive part, runs once for all 32 rows. Each row then adds its own rank-r "
    "branch, under 1% of the base's cost for a large layer (the exercise branch-cost-per-token counts it). This is the design of "
    "S-LoRA and Punica, and section 5's batched forward.",
))


ACCUMULATE_UNDER_DDP = '''
def accumulate_under_ddp(ddp, x, y, k):
    """x, y: (batch, seq). The whole batch's gradient in .grad, from k micro-batches, all-reduced once."""
    for p in ddp.parameters():
        p.grad = None  # start from nothing: backward() adds to .grad
    total_tokens = (y != -100).sum()  # the batch's target tokens
    pieces = list(zip(x.chunk(k), y.chunk(k)))
    for xs, ys in pieces[:-1]:
        with ddp.no_sync():  # forward and backward in here: .grad adds up, nothing is sent
            _, loss = ddp(xs, ys)
            (loss * (ys != -100).sum() / total_tokens).backward()
    xs, ys = pieces[-1]  # the last micro-batch, outside no_sync: its backward all-reduces the summed .grad, once
    _, loss = ddp(xs, ys)
    (loss * (ys != -100).sum() / total_tokens).backward()
'''


def solution_function(source: str, name: str) -> Callable[..., Any]:
    """The function a model solution's source defines (it needs nothing imported)."""
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    return namespace[name]


def accumulate_with_mistake(ddp: Any, x: Any, y: Any, k: int, mistake: str) -> None:
    """The model solution with one usual mistake: "no no_sync" (every backward pass sends), "last inside" (every
    micro-batch inside no_sync, so nothing is sent), "unweighted" (each mean loss at full weight), "mean of means"
    (each mean loss divided by k, whatever its number of target tokens)."""
    for p in ddp.parameters():
        p.grad = None
    total_tokens = (y != -100).sum()
    pieces = list(zip(x.chunk(k), y.chunk(k), strict=True))
    for i, (xs, ys) in enumerate(pieces):
        quiet = mistake == "last inside" or (i < len(pieces) - 1 and mistake != "no no_sync")
        with ddp.no_sync() if quiet else contextlib.nullcontext():
            _, loss = ddp(xs, ys)
            weight = 1 if mistake == "unweighted" else 1 / k if mistake == "mean of means" else (ys != -100).sum() / total_tokens
            (loss * weight).backward()


@contextlib.contextmanager
def one_process_group() -> Iterator[None]:
    """A gloo process group of one process (world size 1), removed on leaving, so DDP can wrap a model in this kernel.
    Refused if a group exists already: the exercise must not replace one a notebook is using."""
    import torch.distributed as dist

    if dist.is_initialized():
        raise RuntimeError("A process group is already running in this process; the DDP exercise needs its own. Restart "
                           "the kernel, or check the exercise in a fresh one.")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@functools.cache
def accumulation_base():
    """The shipped tiny GPT and its world (loaded once)."""
    from ...gpt.pretrain import load_pretrained

    return load_pretrained("tiny", "cpu")


def accumulation_batch(uneven: bool, k: int):
    """LoRA r = 8 on Wq and Wv of the tiny GPT (seed 0) and a batch of 8 JSON rows; ``uneven``: the first of the k
    micro-batches keeps only 4 targets a row, as section 1's check does. Returns (model, x, y)."""
    from ...gpt.data import task_data
    from ...gpt.finetune import prepare

    base, world = accumulation_base()
    model = prepare(base, "lora-qv", r=8, alpha=16, seed=0, targets=None)
    x, y = task_data(world, "json", world.animals, base.config.n_ctx)
    x, y = x[:8], y[:8].clone()
    if uneven:
        first = y[: len(y) // k]  # a view: editing it edits y
        first[(first != -100).cumsum(dim=1) > 4] = -100
    return model, x, y


def ddp_accumulation(fn: Callable[..., Any], k: int, uneven: bool) -> tuple[dict[str, Any], int, int]:
    """Run ``fn(ddp, x, y, k)`` on the tiny GPT wrapped in DDP (one process, section 2's counting hook). Returns
    (each trainable parameter's .grad, None where it has none; all-reduce calls; bytes handed to them)."""
    from torch.nn.parallel import DistributedDataParallel

    from ...scale.distributed import ByteCounter, counting_allreduce_hook

    model, x, y = accumulation_batch(uneven, k)
    counter = ByteCounter()
    with one_process_group():
        ddp = DistributedDataParallel(model)
        ddp.register_comm_hook(counter, counting_allreduce_hook)
        try:
            fn(ddp, x, y, k)
        finally:  # DDP's reducer must go before its process group does, or freeing it later can hang
            del ddp
            gc.collect()
    grads = {name: None if p.grad is None else p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return grads, counter.buckets, counter.bytes


def whole_batch_grads(k: int, uneven: bool) -> dict[str, Any]:
    """The gradient of the whole batch's mean token loss, in one pass without DDP: what accumulation must give."""
    model, x, y = accumulation_batch(uneven, k)
    _, loss = model(x, y)
    loss.backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


SENT_EVERY_TIME = ("Your step all-reduced the gradients once per micro-batch: every backward pass outside `no_sync()` "
                   "sends them. Run every micro-batch but the last inside `with ddp.no_sync():`, its forward pass included.")
NOTHING_SENT = ("Nothing was all-reduced: every backward pass ran inside `no_sync()`, so the gradients never left this "
                "process. Run the last micro-batch outside it: its backward pass sends the summed gradients, once.")
NO_GRADIENT = "Some trainable parameters have no gradient: did every micro-batch run a backward pass on its loss?"
UNWEIGHTED = ("Your gradients are k times the whole batch's: each micro-batch's mean loss went in at full weight. "
              "Weight it by its share of the batch's target tokens.")
MEAN_OF_MEANS = ("Your gradients are not the whole batch's when the micro-batches hold different numbers of target "
                 "tokens: dividing each mean loss by k gives every micro-batch the same say. Weight each by its share "
                 "of the batch's target tokens, as section 1 does.")
ACCUMULATION_CASES = ((2, False), (4, True), (4, False))  # (k, uneven): the second tells token weighting from 1/k


@dataclass(frozen=True)
class DDPAccumulationExercise(CodeExercise):
    """Gradient accumulation under DDP, checked by running the student's function on a one-process DDP model: the
    all-reduce calls are counted by section 2's hook and .grad is compared with the whole batch's gradient."""

    def run_cases(self, answer: object) -> tuple[bool, str]:
        import torch

        from ...scale.distributed import relative_gradient_error

        if not callable(answer):
            raise TypeError(f"This exercise wants a function, e.g. `answer = {self.signature.split('(')[0]}` "
                            f"(no parentheses), got {answer!r}.")
        right = solution_function(self.model_solution, self.signature.split("(")[0])
        _, once, once_bytes = ddp_accumulation(right, *ACCUMULATION_CASES[0])  # one all-reduce a step, whatever k
        for n, (k, uneven) in enumerate(ACCUMULATION_CASES, start=1):
            where = f"hidden case {n} of {len(ACCUMULATION_CASES)} (k = {k}, {'un' if uneven else ''}even target tokens)"
            try:
                grads, calls, sent = ddp_accumulation(answer, k, uneven)
            except Exception as err:  # the student's code: report it, do not crash the check
                return False, f"{where} raised {type(err).__name__}: {err}"
            if calls == 0:
                return False, f"{NOTHING_SENT} Details: {where}: 0 all-reduces."
            if calls > once:
                return False, (f"{SENT_EVERY_TIME} Details: {where}: {calls} all-reduces ({sent:,} bytes) instead of {once} "
                               f"({once_bytes:,}).")
            if any(g is None for g in grads.values()):
                return False, f"{NO_GRADIENT} Details: {where}."
            whole = whole_batch_grads(k, uneven)
            if all(torch.allclose(grads[name], g, rtol=1e-4, atol=1e-6) for name, g in whole.items()):
                continue
            scaled = all(torch.allclose(grads[name], k * g, rtol=1e-4, atol=1e-6) for name, g in whole.items())
            error = relative_gradient_error(grads, whole)
            return False, f"{UNWEIGHTED if scaled else MEAN_OF_MEANS} Details: {where}: relative error {error:.1%}."
        worked = f"\n{self.worked_solution.strip()}" if self.worked_solution else ""
        return True, (f"passed all {len(ACCUMULATION_CASES)} hidden cases, one all-reduce of {once_bytes:,} bytes per step "
                      f"whatever k. {self.explanation[:1].upper()}{self.explanation[1:]}{worked}")


register(DDPAccumulationExercise(
    id="ddp-accumulate",
    prompt="Section 1's accumulate_by_hand runs k micro-batches in turn. Wrapped in DDP, a model all-reduces its "
    "gradients in every backward pass, so that loop would send them k times per step. Write "
    "accumulate_under_ddp(ddp, x, y, k): the same token-weighted accumulation for a model wrapped in DDP (`ddp(xs, ys)` "
    "returns the logits and the micro-batch's mean loss), with the gradients all-reduced once per step. "
    "`with ddp.no_sync():` turns the all-reduce off for the forward and backward passes run inside it, while .grad "
    "keeps adding up. The check wraps the tiny GPT (LoRA on Wq and Wv) in DDP in this one process, counts the "
    "all-reduces with section 2's hook and compares .grad with the whole batch's gradient. Before you run it: for "
    "k = 4, how many bytes would one step hand to all-reduce without no_sync, and how many with it?",
    signature="accumulate_under_ddp(ddp, x, y, k) -> None",
    model_solution=ACCUMULATE_UNDER_DDP,
    worked_solution="Inside `no_sync()`, DDP skips the all-reduce and each backward pass adds to .grad. The first "
    "backward pass outside it all-reduces what .grad holds, the sum over the micro-batches. Token weighting makes that "
    "sum the whole batch's gradient, as in section 1.",
    explanation="with no_sync a step sends its gradients once, like a step without accumulation: 32,768 bytes for "
    "this LoRA whatever k, against k times that without it (131,072 at k = 4). On many GPUs the same k-fold saving "
    "holds for the ring's traffic.",
    hints=("Keep section 1's loop; only the all-reduce moves. Which micro-batch's backward pass should send the "
           "gradients?",
           "pieces = list(zip(x.chunk(k), y.chunk(k))): run pieces[:-1] inside `with ddp.no_sync():`, the last one "
           "outside."),
    traps=tuple(CodeTrap(functools.partial(accumulate_with_mistake, mistake=mistake), message) for mistake, message in (
        ("no no_sync", SENT_EVERY_TIME), ("last inside", NOTHING_SENT), ("unweighted", UNWEIGHTED),
        ("mean of means", MEAN_OF_MEANS))),
))
