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
    "fine-tuning against LoRA. (The package has this count as lora_edu.maths.arch.memory_estimate; write your own. "
    "Section 5's measured state is a few hundred bytes more: AdamW also keeps a step counter per parameter tensor, "
    "biases and norm gains included.)",
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
register(ChoiceExercise(
    id="optimizer-all-parameters",
    prompt="Predict, then run. In section 3's loop, suppose the optimizer were built from every parameter, "
    "`torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1)`, instead of the trainable ones only. What "
    "happens to the frozen weights during training? Test your answer: make the change in a copy of the cell, run it, "
    "and compare a frozen weight with the base model's (torch.equal).",
    options={
        "a": "they shrink a little at every step: AdamW's weight decay pulls every parameter it holds toward zero",
        "b": "they train as well: the optimizer now holds them, so it updates them",
        "c": "nothing: they never get a gradient, and AdamW skips every parameter whose gradient is None",
        "d": "the cell stops with an error: AdamW refuses parameters that do not require a gradient",
    },
    answer_digest="f3ea3418f520716d",
    feedback={
        "a": "the misconception is 'weight decay applies to everything in the optimizer'. AdamW decays a parameter only "
        "in the step that updates it, and it updates only parameters that have a gradient; frozen weights have none.",
        "b": "the misconception is 'the optimizer decides what trains'. What trains is what gets a gradient: "
        "requires_grad=False means backward never fills .grad, and the optimizer has nothing to apply.",
        "d": "PyTorch accepts them without complaint, which is why the mistake is easy to make: the run looks the same, "
        "only the optimizer's list is longer.",
    },
    explanation="the frozen weights have requires_grad=False, so backward leaves their .grad at None, and AdamW skips "
    "them, weight decay included. That holds only while .grad is None: a weight frozen after it once had a gradient "
    "(zero_grad(set_to_none=False), then a switch from full fine-tuning to LoRA) keeps a zero gradient, and weight "
    "decay would shrink it. Passing only the trainable parameters is the habit to keep: it says what trains, and it "
    "keeps the optimizer's state small.",
    hints=("After loss.backward(), what is a frozen weight's .grad?",),
))

