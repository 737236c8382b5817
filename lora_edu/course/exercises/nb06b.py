"""Exercises of notebook 06b (after the LoRA paper: adapters' latency, and the variants that came after)."""

from __future__ import annotations

import numpy as np

from .core import ChoiceExercise, CodeExercise, CodeTrap, PredictExercise, Trap, WrittenExercise, register


def linear_layers(n_layer: int, adapters: bool) -> int:
    """Linear layers a forward pass of the course's GPT runs: six per block (Wq, Wk, Wv, Wo, fc_in, fc_out) and the
    output layer; Houlsby adapters add a down and an up projection after attention and after the MLP of each block."""
    return 6 * n_layer + 1 + (4 * n_layer if adapters else 0)


def package_dora(W: np.ndarray, B: np.ndarray, A: np.ndarray, m: np.ndarray, scale: float) -> np.ndarray:
    """The package's ``dora_weight`` on NumPy arrays."""
    import torch  # imported on first use: the quiz itself runs without torch

    from ...lora.variants import dora_weight

    return dora_weight(*(torch.from_numpy(x) for x in (W, B, A, m)), scaling=scale).numpy()


def dora_cases(rng: np.random.Generator) -> list[tuple]:
    """Hidden (W, B, A, m, scale): tall, wide and square weights, m given as a column (d_out, 1), scalings not 1."""
    cases = []
    for d_out, d_in, r in ((6, 4, 2), (4, 7, 3), (5, 5, 1), (9, 3, 2)):
        W = rng.standard_normal((d_out, d_in))
        A, B = rng.standard_normal((r, d_in)), rng.standard_normal((d_out, r))
        m = rng.uniform(0.5, 2.0, (d_out, 1))
        cases.append((W, B, A, m, float(rng.choice([0.5, 2.0, 4.0]))))
    return cases


def lora_weight(W: np.ndarray, B: np.ndarray, A: np.ndarray, scale: float) -> np.ndarray:
    """V = W + scale · B A, what DoRA normalises."""
    return W + scale * B @ A


register(PredictExercise(
    id="predict-adapter-layers",
    prompt="Our GPT runs 25 linear layers per forward pass: six in each of its 4 blocks and the output layer. Houlsby "
    "adapters add a bottleneck, a down and an up projection, after the attention and after the MLP of every block. At "
    "batch 1, part of the time goes into running layers one after another, however small. Predict the ratio: linear layers run with "
    "adapters / without (a number).",
    expected=lambda: linear_layers(4, True) / linear_layers(4, False),
    abs_tol=0.05,
    traps=(
        Trap(lambda: (25 + 8) / 25, "one bottleneck is two layers, a down and an up projection: each of the 8 sites "
             "adds two."),
        Trap(lambda: (25 + 4) / 25, "adapters sit in every block, after attention and after the MLP: 8 sites of two "
             "layers each, not one adapter per block."),
        Trap(lambda: 1.0, "adapters cannot be merged into W: each one is a small MLP with a nonlinearity, run after "
             "the layer it follows, so its layers are extra work in every pass."),
    ),
    explanation="4 blocks × 2 sites × 2 projections = 16 more layers: 41 / 25 = 1.64. Each is small, but at batch 1 "
    "a small model's forward pass is a chain of small steps, so the number of steps matters more than their "
    "arithmetic: compare the time ratio the next cells measure with this one.",
    hints=("Count the sites first (two per block), then the layers per site.",),
))
register(PredictExercise(
    id="predict-rslora-slope",
    prompt="The next cell draws γ² ‖A x‖² against the rank r on log-log axes, for r = 4 to 64, at the start of training "
    "(A random, as LoRA starts it). Take γ = α/r, LoRA's usual scaling. Predict the slope of its line: when r doubles, "
    "by how many doublings does γ² ‖A x‖² change? (A number; negative means it falls: −1 means it halves.)",
    expected=lambda: -1.0,
    abs_tol=0.15,
    traps=(
        Trap(lambda: -2.0, "γ = α/r enters squared, and that alone halves twice per doubling of r; but ‖A x‖² is a sum "
             "over A's r rows, so it doubles with r and takes one of those halvings back."),
        Trap(lambda: 0.0, "a flat line is α/√r's: there γ² = α²/r halves once and ‖A x‖² doubles once, which cancel. "
             "Under α/r, γ² halves twice."),
        Trap(lambda: 1.0, "‖A x‖² alone grows like r, but the scaling shrinks faster: γ² = α²/r² falls by 4 per "
             "doubling of r."),
    ),
    explanation="γ² = α²/r² falls by a factor of 4 each time r doubles, and ‖A x‖², a sum over A's r rows, grows by 2: "
    "the product halves, a slope of −1 on log-log axes. Under α/√r, γ² = α²/r falls by 2 and cancels the growth: slope 0. "
    "That flat line is rsLoRA's point.",
    hints=("Split the product: how does γ² = (α/r)² change when r doubles? And ‖A x‖², a sum of r terms of about the "
           "same size?",),
))
register(WrittenExercise(
    id="adapter-bottleneck",
    prompt="Change and explain (about a minute). In a new cell, build adapters with a bottleneck of 64 instead of 8 and "
    "time them beside section 1's: wide = copy.deepcopy(base); add_houlsby_adapters(wide, bottleneck=64); "
    "t = compare_latency({\"base\": base, \"adapters 8\": adapted, \"adapters 64\": wide}, tokens); then print "
    "t[\"adapters 8\"].versus(t[\"base\"]) and t[\"adapters 64\"].versus(t[\"base\"]). Before you run it, predict: the "
    "bottleneck is 8 times wider, and the adapters' multiply-adds per token go from about 1.04 to about 1.29 times the "
    "base's. Will the time ratio at batch 1 grow by as much? Run it, then explain what you see with the layers a pass runs.",
    points=(
        "The number of layers a pass runs does not change (41 against 25): the bottleneck sets each layer's size, not "
        "how many run one after another.",
        "The arithmetic does grow: each site's two projections go from 2 × 64 × 8 to 2 × 64 × 64 weights, so the "
        "adapters' multiply-adds rise from about 1.04 to about 1.29 times the base's.",
        "At batch 1 on a 64-wide model a layer's time is mostly the fixed cost of running it, not its arithmetic, so the "
        "time ratio moves far less than the arithmetic: compare your two printed ratios.",
        "With longer passes (section 1's batch 16 × 64) the arithmetic weighs more, so there a wider bottleneck costs "
        "relatively more.",
    ),
    explanation="The wider bottleneck runs the same 16 extra layers, each with more arithmetic. At batch 1 the cost of "
    "a small layer is mostly the cost of running it at all, so the time ratio barely follows the multiply-adds: the "
    "number of layers in series is what adapters cost when serving one user, as the paper's Table 1 shows at small "
    "batches.",
    hints=("What does the bottleneck change: the number of layers, or the size of each?",),
))
register(ChoiceExercise(
    id="merged-latency",
    prompt="Before the timing: why can LoRA add no latency at all when serving, while adapter layers always do?",
    options={
        "a": "LoRA's matrices are small, so the time they add is too small to measure",
        "b": "LoRA's branch runs in parallel with W, so it finishes when W does",
        "c": "LoRA trains fewer weights, and fewer trained weights make a faster pass",
        "d": "LoRA's update is linear, so it can be added into W once before serving",
    },
    answer_digest="5d121c0fdee3804b",
    feedback={
        "a": "size is not the point: an unmerged LoRA branch still runs two extra matrix products in every pass. Only "
        "merging removes them.",
        "b": "an unmerged branch is extra work beside W, launched as its own kernels; at batch 1 those launches cost "
        "time even when the arithmetic is tiny. Merging removes the branch altogether.",
        "c": "the time of a forward pass depends on the layers run and their shapes, not on which weights were "
        "trained: a merged model has exactly as many parameters as the base.",
    },
    explanation="the update is linear, so it folds into W: (W + (α/r) B A) x = W x + (α/r) B A x. An adapter has a "
    "nonlinearity between its two projections, so it cannot be folded into anything and must run in every pass.",
    hints=("Which of the two can be written as one matrix of W's shape?",),
))
register(CodeExercise(
    id="dora-weight",
    prompt="Write DoRA's weight yourself. dora(W, B, A, m, scale) with NumPy: V = W + scale · B A, then every row of V "
    "(one row per output unit in nn.Linear's layout, d_out × d_in) divided by its own norm and multiplied by that "
    "unit's magnitude m (a column, d_out × 1). It is run on hidden weights, tall, wide and square. Then check the "
    "property of the section on your own function: the rows of the result have norms m, whatever B A is.",
    signature="dora(W, B, A, m, scale) -> W_new",
    own_work=("dora_weight", "row_norm"),
    reference=package_dora,
    cases=dora_cases,
    traps=(
        CodeTrap(lambda W, B, A, m, scale: m * lora_weight(W, B, A, 1.0) / np.linalg.norm(lora_weight(W, B, A, 1.0), axis=1, keepdims=True),
                 "You left out the scaling: V = W + scale · B A, as in LoRA's forward pass."),
        CodeTrap(lambda W, B, A, m, scale: m * lora_weight(W, B, A, scale) / np.linalg.norm(W, axis=1, keepdims=True),
                 "You divided by the norms of W's rows. DoRA normalises V = W + scale · B A, so that B A can only turn "
                 "the rows and m alone sets their lengths."),
        CodeTrap(lambda W, B, A, m, scale: m * lora_weight(W, B, A, scale) / np.linalg.norm(lora_weight(W, B, A, scale), axis=0,
                                                                                            keepdims=True),
                 "You normalised the columns (axis=0). In nn.Linear's layout, d_out × d_in, an output unit's weights "
                 "are a row: take the norm over axis=1."),
        CodeTrap(lambda W, B, A, m, scale: lora_weight(W, B, A, scale),
                 "You returned V itself: DoRA then divides each row by its norm and multiplies it by m."),
    ),
    model_solution="""
def dora(W, B, A, m, scale):
    V = W + scale * B @ A                               # LoRA's weight, (d_out, d_in)
    lengths = np.linalg.norm(V, axis=1, keepdims=True)  # one norm per output unit (row), (d_out, 1)
    return m * V / lengths                               # unit rows, then each set to its length m
""",
    explanation="DoRA separates what a row points at (the direction, changed through B A) from how long it is (m, "
    "trained directly). Each row of the result has norm exactly m, whatever B A did to its direction.",
    worked_solution="Broadcasting does the bookkeeping: V has shape (d_out, d_in), its row norms (d_out, 1), and m "
    "(d_out, 1), so V / lengths scales every row to length 1 and m * ... sets each row's length.",
    hints=("np.linalg.norm(V, axis=1, keepdims=True) gives one norm per row, as a column.",
           "Divide V by those norms, then multiply by m: both broadcast over the columns."),
))
register(WrittenExercise(
    id="pissa-tail",
    prompt="A small proof. PiSSA starts the adapter from W's top-r SVD part, γ B A = U_r S_r V_rᵀ, and freezes the "
    "residual W − γ B A. Show that no start of a rank-r adapter could leave a smaller frozen residual: for every B "
    "(d_out × r) and A (r × d_in), ‖W − γ B A‖_F ≥ √(σ_{r+1}² + … + σ_n²), with equality for PiSSA's start. Then say "
    "what the section's check printed, and why the model's output is unchanged at the start.",
    points=(
        "γ B A has rank at most r (notebook 01: the rank of a product is at most the inner size r).",
        "Eckart-Young (notebook 02): among all matrices of rank at most r, the truncated SVD U_r S_r V_rᵀ is closest "
        "to W in the Frobenius norm, and its error is √(σ_{r+1}² + … + σ_n²).",
        "So every rank-r start leaves at least that residual, and PiSSA's start, which is the truncated SVD, leaves "
        "exactly that: the section's cell printed the two numbers equal.",
        "The model is unchanged because the frozen residual plus the adapter's start is W again: (W − γ B A) + γ B A = W.",
    ),
    explanation="rank(γ B A) ≤ r, and by Eckart-Young the best rank-r approximation of W is its truncated SVD, whose "
    "error is the root of the sum of the squared tail singular values. PiSSA chooses exactly that start, so its "
    "residual attains the bound; and since the residual and the adapter add back to W, the model starts unchanged.",
    hints=("Which notebook proved that the truncated SVD is the best rank-r approximation?",),
))
