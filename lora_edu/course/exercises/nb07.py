"""Exercises of notebook 07 (scaling out: accumulation, data parallel, sharding, a 4-bit base, many adapters)."""

from __future__ import annotations

import numpy as np

from ...maths.arch import ARCHITECTURES
from .core import ChoiceExercise, CodeExercise, NumericExercise, Trap, register


def gpt2_medium_bytes(r: int | None, targets: tuple[str, ...], grad_dtype: str) -> int:
    from ...scale.distributed import allreduce_bytes  # imports torch: only when this exercise is checked

    return allreduce_bytes(ARCHITECTURES["GPT-2 medium"], r, targets, grad_dtype)


def package_ring_seconds(n_trainable: int, bytes_per_number: int, world_size: int, gbytes_per_s: float) -> float:
    """``lora_edu.scale.distributed.ring_allreduce_seconds`` for the gradients of ``n_trainable`` parameters."""
    from ...scale.distributed import ring_allreduce_seconds

    return ring_allreduce_seconds(n_trainable * bytes_per_number, world_size, gbytes_per_s * 1e9)


def ring_cases(rng: np.random.Generator) -> list[tuple]:
    cases = [(18_874_368, 2, 8, 50.0), (175_000_000_000, 2, 8, 50.0), (1_000, 4, 1, 1.0), (1_000_000, 4, 2, 10.0)]
    for _ in range(4):
        cases.append((int(rng.integers(10**4, 10**10)), int(rng.choice([4, 2])), int(rng.integers(2, 65)), float(rng.uniform(1, 400))))
    return cases


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
    explanation="per layer two matrices of r (d_in + d_out) = 8 x 2048 parameters, times 24 layers, times 4 bytes: "
    "frozen weights have no gradient, so nothing of them crosses the wire.",
))
register(CodeExercise(
    id="ring-allreduce-seconds",
    prompt="Write allreduce_seconds(n_trainable, bytes_per_number, world_size, gbytes_per_s): the time of a "
    "bandwidth-bound ring all-reduce of the gradients, in which every rank sends 2 (N - 1) / N of the buffer over a "
    "link of gbytes_per_s GB/s (10^9 bytes/s). Hidden cases, from one GPU to 64, compared with "
    "lora_edu.scale.distributed.ring_allreduce_seconds. Then use it: GPT-3's full gradients against its r = 4 LoRA's.",
    signature="allreduce_seconds(n_trainable, bytes_per_number, world_size, gbytes_per_s) -> float",
    reference=package_ring_seconds,
    cases=ring_cases,
    explanation="the ring moves 2 (N - 1) / N x bytes per rank, almost twice the buffer for large N and nothing for "
    "N = 1; the buffer is the trainable parameters' gradients, so LoRA divides the time by total / trainable.",
    hints=("bytes = n_trainable x bytes_per_number; GB/s means 1e9 bytes per second.",
           "With world_size = 1 there is nobody to talk to: the time is 0."),
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
        "d": "W + sum of all B_i A_i is a different model, which none of the customers trained: the answers are wrong.",
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
        "d": "keep the adapter unmerged and merge it again for each batch",
    },
    answer_digest="b735bbd2ac722d28",
    feedback={
        "a": "it gives the right answers, but it pays for the gather and the rank-r matmuls on every row, which a merged "
        "weight does not need.",
        "b": "batch 1 wastes the hardware, and the unmerged branch costs extra on every token.",
        "d": "merging once is enough when the adapter never changes; merging per batch repeats work.",
    },
    explanation="with one adapter, merging (W + (α/r) B A) removes LoRA's inference cost entirely; the batched "
    "multi-adapter forward pays off as the number of distinct adapters in a batch grows.",
))
register(ChoiceExercise(
    id="nf4-merge",
    prompt="After QLoRA training on an NF4 base, why can the adapter not simply be merged into the 4-bit weight?",
    options={
        "a": "because B A has a different shape from W",
        "b": "because the merged W + B A must be quantised again, to 16 levels per block, and that rounding error is "
        "not small next to the update B A itself",
        "c": "because NF4 tensors cannot be changed after they are created",
        "d": "because merging would double the memory of the adapter",
    },
    answer_digest="7623a958391d7b09",
    feedback={
        "a": "B (d_out x r) times A (r x d_in) is d_out x d_in, the shape of W: merging is an addition.",
        "c": "the weight can be re-quantised from W + B A; the problem is what the re-quantisation does to B A.",
        "d": "after merging the adapter is gone: the memory is that of W alone.",
    },
    explanation="the update is small next to W, and each block's rounding step is of a similar size; the "
    "re-quantised weight is not W + B A. Serve the unmerged adapter, or merge into a dequantised bf16 copy of W.",
))
