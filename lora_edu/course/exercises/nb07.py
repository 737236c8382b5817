"""Exercises of notebook 07 (scaling out: accumulation, data parallel, sharding, a 4-bit base, many adapters)."""

from __future__ import annotations

import functools

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
    "24 layers and d_model = 1024. How many bytes does one step all-reduce for rank-8 LoRA on Wq and Wv with fp32 "
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
    "link of gbytes_per_s GB/s (10^9 bytes/s). It is run on hidden cases, from one GPU to 64, and compared with "
    "lora_edu.scale.distributed.ring_allreduce_seconds. Then use it: GPT-3's full gradients against its r = 4 LoRA's.",
    signature="allreduce_seconds(n_trainable, bytes_per_number, world_size, gbytes_per_s) -> float",
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
    "N = 1; the buffer is the trainable parameters' gradients, so LoRA divides the time by total / trainable.",
    hints=("bytes = n_trainable × bytes_per_number; GB/s means 1e9 bytes per second.",
           "With world_size = 1 there is nobody to talk to: the time is 0."),
))
register(WrittenExercise(
    id="accumulation-weights",
    prompt="Prove it. A batch holds N target tokens, and its loss L is the mean of their N token losses. Split it into "
    "k micro-batches: micro-batch m holds N_m of the tokens and has mean loss L_m. (1) Show that calling backward on "
    "(N_m / N) L_m for each m in turn, with the gradients adding up in .grad, gives exactly the gradient of L. (2) When "
    "is every weight N_m / N equal to 1/k? Check section 1's batch: run `[int((y_m != -100).sum()) for y_m in "
    "y.chunk(4)]` in a new cell. (3) What goes wrong if each L_m is divided by k when the micro-batches hold different "
    "numbers of target tokens?",
    points=(
        "N_m L_m is the sum of micro-batch m's token losses, so L = (1/N) Σ_m N_m L_m = Σ_m (N_m / N) L_m.",
        "The gradient is linear: ∇L = Σ_m (N_m / N) ∇L_m. Each backward adds one term to .grad, so after the k calls "
        ".grad holds ∇L. In floating point the sum is taken in another order, so it agrees up to rounding.",
        "N_m / N = 1/k exactly when every micro-batch holds N/k target tokens: the same number of tokens, not only of "
        "rows. Section 1's rows all have the same number of target tokens: the cell prints [208, 208, 208, 208].",
        "Dividing by k with unequal N_m gives the mean of the micro-batch means: a token in a small micro-batch "
        "weighs more than one in a large micro-batch. That is the gradient of a differently weighted loss, not of "
        "the batch's mean loss.",
    ),
    explanation="Write L = (1/N) Σ_t ℓ_t. Micro-batch m contributes N_m L_m to the sum, so L = Σ_m (N_m / N) L_m, and "
    "by linearity ∇L = Σ_m (N_m / N) ∇L_m: k backward calls on the weighted losses, added in .grad, give ∇L (up to "
    "rounding). The weights are 1/k when every micro-batch holds the same number of target tokens, as in section 1 "
    "(208 each). With unequal sizes, dividing by k averages the micro-batch means, which over-weights the tokens of "
    "small micro-batches.",
    hints=("Write L as a sum over all tokens, then group the tokens by micro-batch.",),
))
register(ChoiceExercise(
    id="serve-mixed-adapters",
    prompt="A server runs batches of 32 requests on one base model. 32 customers each have their own LoRA adapter, "
    "and a batch usually holds one request from each. Which way of serving a batch costs least?",
    options={
        "a": "merge-swap: for each request, merge its adapter into W, run it, unmerge",
        "b": "one base forward for the whole batch, plus each row's own B A x from its gathered A and B (batched matmuls)",
        "c": "one request at a time through its own unmerged LoRA model",
        "d": "merge all 32 adapters into W once and run the batch on the merged model",
    },
    answer_digest="a1e64dbc5dab1c9c",
    feedback={
        "a": "with 32 distinct adapters that is 32 merges, 32 unmerges and 32 forwards of batch 1: the base is never "
        "shared across the batch.",
        "c": "batch-1 forwards leave the matrix units idle; the base forward is repeated 32 times.",
        "d": "W plus the sum of all 32 updates is a different model, which none of the customers trained: the answers "
        "are wrong.",
    },
    explanation="the base forward, the expensive part, runs once for all 32 rows; each row adds a rank-r update, "
    "cheap next to it. This is the S-LoRA / Punica design.",
))
register(ChoiceExercise(
    id="serve-one-adapter",
    prompt="Now every request of every batch asks for the same adapter. What is the cheapest way to serve it?",
    options={
        "a": "the batched multi-adapter forward, with every row's id set to that adapter",
        "b": "one request at a time through the unmerged LoRA model",
        "c": "merge the adapter into W once and serve the merged model: exactly the base model's cost per token",
        "d": "merge-swap, as for mixed batches: merge the adapter before each batch and unmerge it after",
    },
    answer_digest="b735bbd2ac722d28",
    feedback={
        "a": "it gives the right answers, but it pays for the gather and the rank-r matmuls on every row, which a merged "
        "weight does not need.",
        "b": "batch 1 wastes the hardware, and the unmerged branch costs extra on every token.",
        "d": "merging once is enough when the adapter never changes; merging and unmerging for each batch repeats "
        "work for nothing.",
    },
    explanation="with one adapter, merging (W + (α/r) B A) removes LoRA's inference cost entirely; the batched "
    "multi-adapter forward pays off as the number of distinct adapters in a batch grows.",
))
register(ChoiceExercise(
    id="nf4-merge",
    prompt="After QLoRA training on an NF4 base, why can the adapter not simply be merged into the 4-bit weight?",
    options={
        "a": "because B A has a different shape from W",
        "b": "because the merged W + (α/r) B A must be quantised again, to 16 levels per block, and that rounding error "
        "is not small next to the update (α/r) B A itself",
        "c": "because NF4 tensors cannot be changed after they are created",
        "d": "because merging would double the memory of the adapter",
    },
    answer_digest="7623a958391d7b09",
    feedback={
        "a": "B (d_out × r) times A (r × d_in) is d_out × d_in, the shape of W: merging is an addition.",
        "c": "the weight can be re-quantised from W + (α/r) B A; the problem is what the re-quantisation does to the "
        "update.",
        "d": "after merging the adapter is gone: the memory is that of W alone.",
    },
    explanation="re-quantising rounds every weight of W + (α/r) B A to one of 16 levels per block, an error of about "
    "a tenth of W (notebook 07 measured 9-10%). On a large model the update itself is about a tenth of W, so the "
    "rounding error is as large as what the adapter learned: the re-quantised weight is not W + (α/r) B A. Serve "
    "the unmerged adapter, or merge into a dequantised bf16 copy of W.",
))
