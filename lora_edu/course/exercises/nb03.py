"""Exercises of notebook 03 (parameter-count arithmetic)."""

from __future__ import annotations

import numpy as np

from ...maths.arch import ARCHITECTURES, Architecture, lora_parameter_count, weight_shapes
from .core import ChoiceExercise, CodeExercise, CodeTrap, NumericExercise, PredictExercise, Trap, WrittenExercise, compare_exact, register

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


def down_proj_forward_cost(kind: str = "right") -> int:
    """Multiply-adds per token of Llama 3 8B's down projection (d_out 4096, d_in 14336) with an unmerged rank-16 LoRA."""
    d_out, d_in = weight_shapes(ARCHITECTURES["Llama 3 8B"])["down"]
    r = 16
    return {
        "right": d_out * d_in + r * (d_in + d_out),
        "square": d_out * d_out + 2 * d_out * r,
        "branch": r * (d_in + d_out),
        "base": d_out * d_in,
    }[kind]


def qk_lora_ratio() -> float:
    """LoRA parameters on Wq over LoRA parameters on Wk, at the same rank, for Llama 3 70B."""
    arch = ARCHITECTURES["Llama 3 70B"]
    return lora_parameter_count(arch, 8, ("q",)) / lora_parameter_count(arch, 8, ("k",))


register(PredictExercise(
    id="predict-gqa-lora-ratio",
    prompt="In Llama 3 70B, Wq is 8192 × 8192 and Wk is 1024 × 8192 (grouped-query attention): Wq has 8 times as "
    "many entries. Predict: at the same rank r, how many times more parameters does LoRA train on Wq than on Wk?",
    expected=qk_lora_ratio,
    rel_tol=5e-3,
    traps=(
        Trap(lambda: 8.0, "8 is the ratio of the matrices' entries, d_out · d_in. LoRA's factors hold r (d_out + d_in): "
             "a sum of the two sides, not a product."),
        Trap(lambda: 1.0, "the two factors of Wk are not the same size as those of Wq: B is d_out × r, and d_out differs."),
    ),
    explanation="r (8192 + 8192) against r (1024 + 8192): a ratio of 16384 / 9216 ≈ 1.78. The factors grow with the "
    "sum of the sides, so shrinking one side 8 times shrinks LoRA's count far less.",
))
register(NumericExercise(
    id="llama70-kv-r16",
    prompt="Llama 3 70B has 80 layers, d_model = 8192, 64 query heads and 8 key/value heads (head dimension 128). "
    "How many parameters does rank-16 LoRA on Wk and Wv (every layer) train?",
    expected=llama70_kv,
    traps=(
        Trap(lambda: llama70_kv(square=True), "with grouped-query attention Wk and Wv are not square: they map 8192 "
             "inputs to 8 kv heads × 128 = 1024 outputs."),
        Trap(lambda: llama70_kv() // 80, "that is one layer; LoRA adapts Wk and Wv in all 80."),
        Trap(lambda: llama70_kv() // 2, "that is one of the two matrices."),
    ),
    explanation="each of Wk, Wv is 1024 × 8192, so r (d_in + d_out) = 16 × 9216 per matrix; × 2 matrices × 80 layers.",
    hints=("Shapes first: d_out of Wk is (number of kv heads) x (head dimension).",),
))
register(CodeExercise(
    id="lora-trainable",
    prompt="Write lora_trainable(n_layer, d_model, n_head, n_kv_head, d_ff, r, targets): the parameters rank-r LoRA "
    "trains on the matrices named in targets (a tuple from 'q', 'k', 'v', 'o', 'gate', 'up', 'down') in every layer "
    "of a Llama-style model (grouped-query attention, SwiGLU MLP). It is run on hidden configurations.",
    own_work=("lora_parameter_count",),
    signature="lora_trainable(n_layer, d_model, n_head, n_kv_head, d_ff, r, targets) -> int",
    reference=llama_like_lora,
    cases=llama_cases,
    compare=compare_exact,
    traps=(
        CodeTrap(lambda n_layer, d_model, n_head, n_kv_head, d_ff, r, targets: n_layer * len(targets) * 2 * d_model * r,
                 "You counted every matrix as square d_model × d_model. With grouped-query attention Wk and Wv map "
                 "d_model to n_kv_head · head_dim, and the MLP matrices involve d_ff."),
        CodeTrap(lambda n_layer, d_model, n_head, n_kv_head, d_ff, r, targets: llama_like_lora(
            1, d_model, n_head, n_kv_head, d_ff, r, targets), "That is one layer: LoRA adapts the matrices in every layer."),
    ),
    model_solution="""
def lora_trainable(n_layer, d_model, n_head, n_kv_head, d_ff, r, targets):
    head_dim = d_model // n_head
    kv = n_kv_head * head_dim                   # grouped-query attention: Wk, Wv are kv × d_model
    shapes = {                                  # (d_out, d_in) of each matrix
        "q": (d_model, d_model), "k": (kv, d_model), "v": (kv, d_model), "o": (d_model, d_model),
        "gate": (d_ff, d_model), "up": (d_ff, d_model), "down": (d_model, d_ff),
    }
    per_layer = sum(r * (d_out + d_in) for d_out, d_in in (shapes[t] for t in targets))
    return n_layer * per_layer
""",
    explanation="every adapted d_out × d_in matrix adds r (d_out + d_in); only the shapes differ between matrices.",
    hints=("head_dim = d_model // n_head; Wk and Wv have d_out = n_kv_head * head_dim.",
           "gate and up map d_model -> d_ff; down maps d_ff -> d_model."),
))
def mistral7_total(variant: str = "") -> int:
    """Mistral 7B's parameters from its hyperparameters; ``variant`` gives a usual mistake's count instead."""
    d, vocab, layers, kv, ff = 4096, 32_000, 32, 1024, 14_336
    attention = 2 * d * d + 2 * (d * d if variant == "square-kv" else kv * d)  # Wq, Wo; Wk, Wv
    mlp = (2 if variant == "two-mlp" else 3) * d * ff  # gate, up, down
    norms = 0 if variant == "no-norms" else 2 * d  # two RMSNorm gains per block
    head = 0 if variant == "tied" else vocab * d  # an untied output head
    return vocab * d + layers * (attention + mlp + norms) + (0 if variant == "no-norms" else d) + head


register(NumericExercise(
    id="mistral7-total",
    prompt="Count Mistral 7B's parameters from its hyperparameters (not in the table above, but built like Llama 3): "
    "a vocabulary of 32,000 tokens, d_model = 4096, "
    "32 blocks, 32 query heads and 8 key/value heads of dimension 128, an MLP of three matrices (gate, up, down) with "
    "hidden width 14,336, two RMSNorm gains per block and one before the head, no biases, and an output head that is "
    "not tied to the embedding.",
    expected=mistral7_total,
    traps=(
        Trap(lambda: mistral7_total("tied"), "the output head is not tied to the embedding: it is a second "
             "32,000 × 4096 matrix."),
        Trap(lambda: mistral7_total("square-kv"), "with grouped-query attention Wk and Wv map 4096 inputs to 8 × 128 = "
             "1024 outputs, not 4096."),
        Trap(lambda: mistral7_total("two-mlp"), "this MLP has three matrices (gate, up and down), not GPT-2's two."),
        Trap(lambda: mistral7_total("no-norms"), "close: add the RMSNorm gains, 4096 each, two per block and one at the end."),
    ),
    explanation="embedding and head 2 × 32,000 × 4096 = 262,144,000; per block Wq, Wo 2 × 4096² plus Wk, Wv "
    "2 × 1024 × 4096, the MLP 3 × 4096 × 14,336 and two gains of 4096: 218,112,000; × 32 blocks, plus the final gain: "
    "7,241,732,096, the 7B of the name. Llama 3 8B has the same blocks; its larger vocabulary (128,256) makes the rest.",
    hints=("Count one block first (attention, MLP, norms), then the parts outside the blocks.",),
))
register(NumericExercise(
    id="unmerged-cost-rectangular",
    prompt="Llama 3 8B's MLP down projection W is 4096 × 14336 (d_out × d_in). It carries an unmerged rank-16 LoRA, so "
    "for every token it computes W x + B (A x). How many multiply-adds is that per token?",
    expected=down_proj_forward_cost,
    traps=(
        Trap(lambda: down_proj_forward_cost("square"), "d² + 2dr holds for a square d × d layer; here A is "
             "r × d_in and B is d_out × r, with d_in ≠ d_out."),
        Trap(lambda: down_proj_forward_cost("branch"), "that is the LoRA branch alone; the frozen W x still runs."),
        Trap(lambda: down_proj_forward_cost("base"), "that is W x alone; the unmerged branch adds A x, then B (A x)."),
    ),
    explanation="W x costs d_out · d_in = 58,720,256; A x costs r · d_in and B (A x) costs d_out · r, "
    "so the branch adds r (d_in + d_out) = 294,912 (+0.5%). Merging removes it.",
    hints=("Count W x, A x and B (A x) separately: an (m × n) matrix times a vector is m · n multiply-adds.",),
))
register(WrittenExercise(
    id="rank-barely-matters",
    prompt="Change and explain. In the budget calculator above, keep GPT-3 175B with Wq and Wv and bf16, and move the "
    "rank r from 4 to 64. First compute, by hand, the new total in GB; then move the slider. The trainable "
    "parameters grow 16 times, yet the training memory barely moves. Why?",
    points=(
        "The frozen weights (2 bytes each, about 349 GB for 175 B parameters) dominate the total at any small rank.",
        "Only the trainable parameters pay 16 bytes each (gradient, fp32 master copy, two Adam moments).",
        "At r = 64 on Wq and Wv there are about 0.3 B trainable parameters, about 4.8 GB: still about 1% of the total.",
        "(Activations, which the calculator leaves out, do not depend on r much either.)",
    ),
    explanation="The total is 2 bytes for every frozen weight plus 16 bytes for every trainable one. The frozen "
    "part, about 349 GB, does not change with r. At r = 64 on Wq, Wv LoRA trains 16 × 18.9 M ≈ 302 M parameters, "
    "16 bytes each ≈ 4.8 GB: the total moves from about 349.5 GB to about 354 GB.",
))
register(ChoiceExercise(
    id="which-matrices",
    prompt="Three of these parameters of Llama 3 8B can usefully take a LoRA update ΔW = B A in place of their own full "
    "update. For which one is it ill-defined or pointless?",
    options={
        "a": "the token embedding table E (128256 × 4096), from which each token reads its row",
        "b": "the key projection Wk (1024 × 4096), which is not square because of grouped-query attention",
        "c": "the MLP's down projection (4096 × 14336), which is not part of attention",
        "d": "the RMSNorm gain g, stored as a vector of 4096 numbers that scale the features one by one",
    },
    answer_digest="26e3f4774e9642ec",
    feedback={
        "a": "the misconception is 'a lookup is not a matrix product, so LoRA cannot touch it'. Reading row t of "
        "E + B A gives row t of E plus (row t of B) A: the update works just as well. It is adapted less often, "
        "not never.",
        "b": "the misconception is 'LoRA needs a square matrix'. B is 1024 × r and A is r × 4096; only the inner "
        "size r has to match.",
        "c": "the misconception is 'LoRA is for attention only'. The paper's experiments adapted Wq and Wv, but any "
        "weight matrix of a linear layer can carry B A; section 3 counts r = 8 on all linear layers.",
    },
    explanation="g is stored as 4096 numbers. Read as the diagonal matrix diag(g), a rank-r update B A is a full "
    "4096 × 4096 matrix: it does not fit in g, and adding it would turn the norm into a different layer. Read as a "
    "1 × 4096 row, B (1 × r) A (r × 4096) fits but has r · 4097 numbers, more than g itself. Either way there is "
    "nothing to save: if the gain must change, train it directly.",
))
