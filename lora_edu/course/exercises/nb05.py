"""Exercises of notebook 05 (LoRA fine-tuning of the small GPT)."""

from __future__ import annotations

import numpy as np

from ...maths.arch import DTYPE_BYTES, memory_estimate
from .core import ChoiceExercise, CodeExercise, NumericExercise, Trap, compare_exact, register

DTYPE_OF_BYTES = {size: name for name, size in DTYPE_BYTES.items() if name in ("fp32", "bf16", "int8")}


def tiny_gpt_lora_count(r: int, targets: tuple[str, ...]) -> int:
    """Trainable parameters of rank-r LoRA on ``targets`` of the tiny GPT, counted on the meta device."""
    import torch

    from ...gpt.model import GPT, GPT_SIZES
    from ...lora.layer import count_parameters, inject_lora, mark_only_lora_trainable

    with torch.device("meta"):
        model = GPT(GPT_SIZES["tiny"])
    inject_lora(model, list(targets), r=r, alpha=2 * r)
    mark_only_lora_trainable(model)
    return count_parameters(model).trainable


def package_state_bytes(n_params: int, n_trainable: int, bytes_per_number: int) -> int:
    """``lora_edu.maths.arch.memory_estimate`` with one precision for weights, gradients and both AdamW moments."""
    dtype = DTYPE_OF_BYTES[bytes_per_number]
    return int(memory_estimate(n_params, n_trainable, dtype, dtype, dtype)["total"])


def state_cases(rng: np.random.Generator) -> list[tuple[int, int, int]]:
    cases = [(10_000, 10_000, 4), (10_000, 0, 4), (124_439_808, 294_912, 2)]
    for _ in range(5):
        n = int(rng.integers(1_000, 10**9))
        cases.append((n, int(rng.integers(0, n)), int(rng.choice([4, 2, 1]))))
    return cases


register(NumericExercise(
    id="tiny-gpt-lora-budget",
    prompt="The tiny GPT has n_layer = 4, d_model = 64 and d_ff = 256. How many parameters does rank-4 LoRA on "
    "q_proj, v_proj and the MLP's fc_in (64 -> 256) train?",
    expected=lambda: tiny_gpt_lora_count(4, ("q_proj", "v_proj", "fc_in")),
    traps=(
        Trap(lambda: 4 * 3 * 4 * (64 + 64), "fc_in is not square: it maps 64 inputs to 256 outputs, so it adds r (64 + 256)."),
        Trap(lambda: tiny_gpt_lora_count(4, ("q_proj", "v_proj", "fc_in")) // 4, "that is one layer; LoRA adapts all 4."),
    ),
    explanation="per layer 4 (64 + 64) for q_proj and for v_proj and 4 (64 + 256) for fc_in; times 4 layers.",
))
register(CodeExercise(
    id="training-state-bytes",
    prompt="Write training_state_bytes(n_params, n_trainable, bytes_per_number): the bytes of the training state with "
    "AdamW when every number takes bytes_per_number bytes: the weights (all n_params), plus a gradient and two moment "
    "buffers for each trainable parameter (activations left out). Hidden full and LoRA configurations, compared with "
    "lora_edu.maths.arch.memory_estimate. Then use it for the tiny GPT: full fine-tuning against LoRA.",
    signature="training_state_bytes(n_params, n_trainable, bytes_per_number) -> int",
    reference=package_state_bytes,
    cases=state_cases,
    compare=compare_exact,
    explanation="weights cost n_params x b whatever is trained; gradients and AdamW's two moments cost 3 x b per "
    "trainable parameter. Full fine-tuning pays 4 b per parameter, LoRA barely more than the frozen weights.",
    hints=("Frozen weights have no gradient and no optimizer state.",),
))
register(ChoiceExercise(
    id="pareto-learning-rate",
    prompt="Each point of a 'learns less, forgets less' plot is one fine-tune: held-out exact match on the new task "
    "against the loss on the pretraining text, as the learning rate grows. What does a larger learning rate do?",
    options={
        "a": "it improves both: more exact match and a lower pretraining loss",
        "b": "it moves the point along the trade-off: the task is learned more and the pretraining text is forgotten "
        "more, until a rate so large that training becomes unstable and both get worse",
        "c": "nothing in the end: the learning rate only changes how fast the same final point is reached",
        "d": "with LoRA nothing is forgotten at any learning rate, because the base weights are frozen",
    },
    answer_digest="127e77005fef8d12",
    feedback={
        "a": "there is no free lunch here: moving further from the pretrained weights is what learns the task, and it is "
        "also what raises the pretraining loss.",
        "c": "with a fixed number of steps the learning rate decides how far the weights move, so it changes where the "
        "run ends, not only how fast.",
        "d": "the frozen base can be restored (disable the adapter), but while the adapter is on, W + B A is a different "
        "model and its loss on pretraining text can rise: LoRA forgets too.",
    },
    explanation="the learning rate sets how far the fine-tune moves from the pretrained model: more learning, more "
    "forgetting, and past a point divergence. Biderman et al. (2024, Section 4.3) found that for Llama-2 7B the points "
    "of LoRA and of full fine-tuning lie on one such trade-off curve, LoRA's lower on it (less learned, less forgotten); "
    "where our runs lie is a measurement, and notebook 05's sweep makes it.",
))
register(NumericExercise(
    id="tiny-gpt-lora-qv",
    prompt="The tiny GPT has 4 layers with d_model = 64. How many parameters does rank-8 LoRA on Wq and Wv train?",
    expected=lambda: tiny_gpt_lora_count(8, ("q_proj", "v_proj")),
    traps=(Trap(lambda: 4 * 2 * 64 * 64, "that is the size of the full Wq and Wv; count B (64 x 8) and A (8 x 64)."),),
    explanation="2 matrices x 4 layers x r (d_in + d_out) = 8 * 8 * 128.",
))
register(ChoiceExercise(
    id="disable-lora",
    prompt="After LoRA fine-tuning, `with disable_lora(model): ...` runs the model with",
    options={
        "a": "the fine-tuned weights, slightly damped",
        "b": "exactly the pretrained model: every LoRA branch is skipped, the frozen weights never changed",
        "c": "random weights",
        "d": "the merged weights W + B A",
    },
    answer_digest="e0153af5bd746a6d",
    feedback={
        "a": "disabling is not a scaling: the branch (α/r) B A x is skipped entirely.",
        "c": "no weight is re-drawn; the frozen W is the pretrained one.",
        "d": "that is what runs with the adapter on (merged or not); disabling removes B A.",
    },
    explanation="the base weights are frozen, so skipping B A gives back the pretrained model bit for bit: "
    "LoRA's forgetting is reversible.",
))
