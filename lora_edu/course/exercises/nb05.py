"""Exercises of notebook 05 (LoRA fine-tuning of the small GPT)."""

from __future__ import annotations

import functools

import numpy as np

from ...maths.arch import DTYPE_BYTES, memory_estimate
from .core import (
    ChoiceExercise,
    CodeExercise,
    CodeTrap,
    NumericExercise,
    PredictExercise,
    Trap,
    WrittenExercise,
    compare_exact,
    register,
)

DTYPE_OF_BYTES = {size: name for name, size in DTYPE_BYTES.items() if name in ("fp32", "bf16", "int8")}


@functools.cache
def tiny_gpt_lora_count(r: int, targets: str | tuple[str, ...]) -> int:
    """Trainable parameters of rank-r LoRA on ``targets`` of the tiny GPT, counted on the meta device.

    ``targets`` is ``"all-linear"`` (every linear layer of every block, the output head left out) or layer names.
    """
    import torch

    from ...gpt.model import GPT, GPT_SIZES
    from ...lora.layer import count_parameters, inject_lora, mark_only_lora_trainable

    with torch.device("meta"):
        model = GPT(GPT_SIZES["tiny"])
    inject_lora(model, targets if isinstance(targets, str) else list(targets), r=r, alpha=2 * r)
    mark_only_lora_trainable(model)
    return count_parameters(model).trainable


def package_state_bytes(n_params: int, n_trainable: int, bytes_per_number: int) -> int:
    """``lora_edu.maths.arch.memory_estimate`` with one precision for weights, gradients and both AdamW moments."""
    dtype = DTYPE_OF_BYTES[bytes_per_number]
    return int(memory_estimate(n_params, n_trainable, dtype, dtype, dtype)["total"])


def state_cases(rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Full fine-tuning first, then nothing trained, then GPT-2 with LoRA; every usual mistake fails on one of them."""
    cases = [(10_000, 10_000, 4), (10_000, 0, 4), (124_439_808, 294_912, 2)]
    for _ in range(5):
        n = int(rng.integers(1_000, 10**9))
        cases.append((n, int(rng.integers(0, n)), int(rng.choice([4, 2, 1]))))
    return cases


# The tiny GPT's blocks: 4 of them, each with Wq, Wk, Wv, Wo (64 x 64), fc_in (64 -> 256) and fc_out (256 -> 64).
TINY_BLOCKS, TINY_D, TINY_FF = 4, 64, 256

register(PredictExercise(
    id="predict-lora-all-count",
    prompt="Section 2 puts rank-8 LoRA on every linear layer of every block. In the tiny GPT these are Wq, Wk, Wv "
    "and Wo (64 × 64 each), the MLP's fc_in (64 → 256) and fc_out (256 → 64), in each of its 4 blocks. The output "
    "head stays frozen. Predict: how many parameters does rank-8 LoRA train on the tiny GPT?",
    expected=lambda: tiny_gpt_lora_count(8, "all-linear"),
    traps=(
        Trap(lambda: tiny_gpt_lora_count(8, "all-linear") // TINY_BLOCKS, "that is one block; LoRA adapts all 4."),
        Trap(lambda: tiny_gpt_lora_count(8, ("q_proj", "k_proj", "v_proj", "o_proj")), "that is attention only: "
             "every linear layer includes the MLP's fc_in and fc_out."),
        Trap(lambda: TINY_BLOCKS * 6 * 8 * 2 * TINY_D, "you counted fc_in and fc_out as 64 × 64. They are 64 → 256 and "
             "256 → 64, so each adds r (64 + 256)."),
        Trap(lambda: tiny_gpt_lora_count(8, "all-linear") // 2, "you counted only A (or only B). Each layer trains "
             "both: A (r × d_in) and B (d_out × r), r (d_in + d_out) numbers."),
        Trap(lambda: TINY_BLOCKS * (4 * TINY_D * TINY_D + 2 * TINY_D * TINY_FF), "that is the size of the adapted "
             "weights W themselves. They stay frozen; LoRA trains only A and B."),
    ),
    explanation="each layer trains r (d_in + d_out): 8 × 128 = 1,024 for each of Wq, Wk, Wv and Wo, and 8 × 320 = 2,560 "
    "for each of fc_in and fc_out. That is 9,216 per block, and 36,864 for the 4 blocks.",
    hints=("A has shape r × d_in and B has shape d_out × r.",),
))
register(NumericExercise(
    id="tiny-gpt-lora-budget",
    prompt="The tiny GPT has n_layer = 4, d_model = 64 and d_ff = 256. How many parameters does rank-4 LoRA on "
    "q_proj, v_proj and the MLP's fc_in (64 → 256) train?",
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
    "AdamW when every number takes bytes_per_number bytes. Count the weights (all n_params), plus a gradient and two "
    "moment buffers for each trainable parameter; leave activations out. It is run on hidden full and LoRA "
    "configurations. Then use it for the tiny GPT: full "
    "fine-tuning against LoRA.",
    signature="training_state_bytes(n_params, n_trainable, bytes_per_number) -> int",
    own_work=("memory_estimate",),
    reference=package_state_bytes,
    cases=state_cases,
    compare=compare_exact,
    traps=(
        CodeTrap(lambda n, t, b: 4 * n * b, "you gave every parameter a gradient and two moments: that is full "
                 "fine-tuning. A frozen weight has no gradient and no optimizer state."),
        CodeTrap(lambda n, t, b: 4 * t * b, "you left out the frozen weights. They have no gradient and no moments, "
                 "but they are in memory: the forward pass needs them."),
        CodeTrap(lambda n, t, b: (n + 2 * t) * b, "you counted two numbers per trainable parameter. There are three: "
                 "its gradient and AdamW's two moments."),
        CodeTrap(lambda n, t, b: (n + t) * b, "you left out AdamW's two moment buffers: a running mean of the "
                 "gradient and one of its square, for each trainable parameter."),
        CodeTrap(lambda n, t, b: (n + 4 * t) * b, "you counted the trainable weights twice: n_params already includes "
                 "them. Each adds three more numbers, not four."),
        CodeTrap(lambda n, t, b: n + 3 * t, "you counted numbers, not bytes: multiply by bytes_per_number."),
    ),
    model_solution="""
def training_state_bytes(n_params, n_trainable, bytes_per_number):
    weights = n_params * bytes_per_number          # every weight, frozen or not
    per_trainable = 3 * bytes_per_number           # its gradient and AdamW's two moments
    return weights + n_trainable * per_trainable
""",
    explanation="weights cost n_params × b whatever is trained; gradients and AdamW's two moments cost 3 × b per "
    "trainable parameter. Full fine-tuning pays 4 b per parameter, LoRA barely more than the frozen weights.",
    hints=("Frozen weights have no gradient and no optimizer state, but they are still in memory.",),
))
register(ChoiceExercise(
    id="pareto-learning-rate",
    prompt="In section 5's plot each point is one fine-tune: validation exact match on the new task against the loss on "
    "held-out pretraining text. Within one method, the points differ in their learning rate. What does a larger "
    "learning rate do?",
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
        "d": "the frozen base can be restored (disable the adapter), but while the adapter is on, W + (α/r) B A is a "
        "different model, and its loss on pretraining text can rise: LoRA forgets too.",
    },
    explanation="the learning rate sets how far the fine-tune moves from the pretrained model: more learning, more "
    "forgetting, and past a point divergence. Biderman et al. (2024, Section 4.3) plot Llama-2 7B fine-tunes of "
    "different lengths this way and find LoRA and full fine-tuning on one and the same trade-off curve, LoRA's points "
    "where less is learned and less is forgotten. Where our runs lie is a measurement: section 5 makes it.",
))
register(WrittenExercise(
    id="disable-lora-exact",
    prompt="Change and explain. Merge the adapter into a copy of the model: `merged = copy.deepcopy(lora_all)`, then "
    "`merge_lora(merged)` (import it from lora_edu.lora.layer). Now run, in a new cell, `with disable_lora(merged): "
    "print(lm_loss(merged, pretrain_rows, tok.pad_id))`. "
    "What happens? Explain why switching the adapter off gives back the pretrained model bit for bit before merging, "
    "and why it cannot after merging: what would it take to get the pretrained model back then, and how exact would "
    "that be?",
    points=(
        "disable_lora refuses the merged model with a ValueError that says the layer is already merged.",
        "Before merging, training had changed only A and B; W, b and every other weight were frozen and are still the "
        "pretrained tensors, bit for bit. Switching the adapter off makes each layer compute base(x) on those numbers.",
        "Merging wrote the update into W itself: W <- W + (α/r) B A. Skipping the branch would then still run "
        "W + (α/r) B A, not the pretrained W: it would look like the base model and silently not be it.",
        "To get the base back one must unmerge, W <- W - (α/r) B A, which is exact only up to floating-point "
        "rounding, or keep a copy of the pretrained weights, as full fine-tuning always needs.",
    ),
    explanation="disable_lora raises a ValueError: the layer is merged. Unmerged, the adapter keeps the change apart "
    "from the frozen W, which training never touched, so skipping the branch runs the pretrained model exactly. "
    "Merged, W itself holds W + (α/r) B A; skipping a branch that is no longer there would change nothing and only "
    "pretend to give the base model. Getting it back needs an unmerge (a subtraction, exact up to rounding) or a "
    "saved copy of the weights, which is what full fine-tuning always needs.",
    hints=("After merge_lora, which tensor holds the update: A and B, or W?",),
))
register(WrittenExercise(
    id="finer-steps",
    prompt="Change and explain (about a minute on a laptop CPU). Would LoRA learn the task with a smaller update if "
    "its steps were cut finer? Predict first, in one line. Then, in a new cell, train lora-all at a third of the rate "
    "for three times the steps, with the three sweep seeds: `longer = Arm(\"lora-all, 3x steps\", \"lora-all\", "
    "(1e-3,), {\"steps\": 3 * RUN[\"steps\"]})` and `comparison.include(compare_methods(base, world, \"json\", [longer], "
    "SWEEP_SEEDS, SWEEP_SEEDS, measure=measure, **RUN))`. Adam moves each weight by about the learning rate per step, "
    "so this run and the grid's lora-all at 3e-3 for 200 steps have the same total step length. Compare the two with "
    "`comparison.mean(label, \"val_exact_match\", lr, SWEEP_SEEDS)`, `comparison.mean(label, \"update_ratio\", lr, "
    "SWEEP_SEEDS)` and `comparison.measured_mean(label, \"top_r\", lr, SWEEP_SEEDS)`. Did the finer run move its "
    "weights less, and did it learn as much? Is that the paper's regime?",
    points=(
        "Cutting the same total step length finer moves the weights a little less (on our 2-core CPU: ‖ΔW‖ / ‖W's "
        "top-8 part‖ 0.37 against 0.44, a factor of 0.85), not several times less.",
        "It also learned less: mean validation exact match 0.79 against 0.96, more than one validation animal per "
        "seed. So this is a smaller move for less learning, not the same learning for a smaller move.",
        "On the top-8 measure the finer run sits at about 1.2 times GPT-3's 0.32, within a factor of 2; on the "
        "whole-weight measure (0.28 against 0.11) it is still more than twice GPT-3's.",
        "Three seeds and no interval: a rough size. A much lower rate trained much longer (3e-4 for 2,000 steps) is "
        "the next thing to try, and the width of the layer (rank 8 in a 64-wide layer is not thin) is an untested "
        "candidate for why LoRA's update is large here.",
    ),
    explanation="The step length is what Adam fixes; how finely it is cut changes the update's size only a little. "
    "A few times more steps at a few times lower rate does not turn this tiny model's large LoRA update into a small "
    "one, and it cost some of the learning. What would: a wider model, where a rank-8 branch is a thin correction, "
    "is the candidate this notebook cannot afford to test.",
    hints=("Read the three numbers for both runs side by side: exact match, ‖ΔW‖/‖W‖ and the top-8 measure.",),
))
