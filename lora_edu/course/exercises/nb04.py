"""Exercises of notebook 04 (a LoRA layer by hand)."""

from __future__ import annotations

import numpy as np

from .core import CodeExercise, CodeTrap, PredictExercise, Trap, WrittenExercise, package_layer, register


def package_input_grad(grad_y: np.ndarray, W: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float, r: int) -> np.ndarray:
    """∂L/∂x through the package's layer by autograd, given grad_y = ∂L/∂y: (n, d_out) -> (n, d_in)."""
    import torch

    x = torch.zeros(grad_y.shape[0], W.shape[1], dtype=torch.float64, requires_grad=True)
    package_layer(W, A, B, alpha, r)(x).backward(torch.from_numpy(grad_y))
    return x.grad.numpy()


def package_param_grads(x: np.ndarray, grad_y: np.ndarray, W: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float,
                        r: int) -> tuple[np.ndarray, np.ndarray]:
    """(∂L/∂A, ∂L/∂B) by autograd through the package's layer, given x and grad_y = ∂L/∂y."""
    import torch

    layer = package_layer(W, A, B, alpha, r)
    layer(torch.from_numpy(x)).backward(torch.from_numpy(grad_y))
    return layer.lora_A.grad.numpy(), layer.lora_B.grad.numpy()


def param_grad_cases(rng: np.random.Generator) -> list[tuple]:
    return [(x, rng.standard_normal((x.shape[0], w.shape[0])), w, a, b, alpha, r) for x, w, a, b, alpha, r in forward_cases(rng)]


def first_step_ratio() -> float:
    """‖ΔW‖_F after one Adam-like step with α = 32 over the same with α = 16, at r = 8."""
    from ...lora.variants import update_size_after_one_step

    return update_size_after_one_step(8, alpha=32, use_rslora=False) / update_size_after_one_step(8, alpha=16, use_rslora=False)


def input_grad_cases(rng: np.random.Generator) -> list[tuple]:
    """The first case is square (d_in = d_out), so grad_y @ W.T runs, and is named, instead of failing on a shape."""
    return [(rng.standard_normal((x.shape[0], w.shape[0])), w, a, b, alpha, r)
            for x, w, a, b, alpha, r in forward_cases(rng, SQUARE_FIRST_SHAPES)]


FORWARD_SHAPES = ((3, 6, 5, 2, 4.0), (1, 4, 4, 1, 1.0), (7, 10, 3, 3, 16.0), (2, 8, 12, 4, 8.0), (5, 5, 9, 5, 2.5))
SQUARE_FIRST_SHAPES = ((3, 5, 5, 2, 4.0),) + FORWARD_SHAPES  # (n, d_in, d_out, r, alpha)


def forward_cases(rng: np.random.Generator, shapes: tuple[tuple, ...] = FORWARD_SHAPES) -> list[tuple]:
    cases = []
    for n, d_in, d_out, r, alpha in shapes:
        cases.append((rng.standard_normal((n, d_in)), rng.standard_normal((d_out, d_in)), rng.standard_normal((r, d_in)),
                      rng.standard_normal((d_out, r)), alpha, r))
    return cases


def package_conv1d_merge(W_stored: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float, r: int) -> np.ndarray:
    """The merged weight of a ``lora_edu.LoRALinear`` around a GPT-2 ``Conv1D`` whose weight is stored (d_in, d_out).

    transformers is optional (pyproject.toml does not list it): without it, the same merge through an ``nn.Linear``
    holding W = W_storedᵀ, transposed back to the Conv1D layout.
    """
    import torch

    from ...lora.layer import LoRALinear

    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:
        layer = package_layer(np.ascontiguousarray(W_stored.T), A, B, alpha, r)
        with torch.no_grad():
            layer.merge()
        return layer.base.weight.detach().numpy().T.copy()
    d_in, d_out = W_stored.shape
    layer = LoRALinear(Conv1D(d_out, d_in).double(), r=r, alpha=alpha)
    with torch.no_grad():
        layer.base.weight.copy_(torch.from_numpy(W_stored))
        layer.base.bias.zero_()
        layer.lora_A.copy_(torch.from_numpy(A))
        layer.lora_B.copy_(torch.from_numpy(B))
        layer.merge()
    return layer.base.weight.detach().numpy().copy()


def conv1d_cases(rng: np.random.Generator) -> list[tuple]:
    """W stored (d_in, d_out); the first case is square, so a transposed merge gives a wrong matrix of the right shape."""
    cases = []
    for d_in, d_out, r, alpha in ((5, 5, 2, 4.0), (6, 4, 2, 8.0), (4, 9, 3, 3.0), (8, 3, 1, 16.0), (7, 7, 4, 2.0)):
        cases.append((rng.standard_normal((d_in, d_out)), rng.standard_normal((r, d_in)), rng.standard_normal((d_out, r)),
                      alpha, r))
    return cases


register(CodeExercise(
    id="merge-conv1d",
    prompt="Hugging Face's GPT-2 does not use nn.Linear: its layers are Conv1D modules that store the weight transposed, "
    "W_stored of shape (d_in × d_out), and compute y = x W_stored + b. A LoRA update on such a layer keeps the "
    "usual A (r × d_in) and B (d_out × r). Write merge_conv1d(W_stored, A, B, alpha, r) with NumPy: return the "
    "merged weight, still stored (d_in × d_out), so that x W_merged equals the LoRA layer's output without its bias. "
    "It is run on hidden shapes, square and not.",
    own_work=("LoRALinear", "merge"),
    signature="merge_conv1d(W_stored, A, B, alpha, r) -> W_merged  # (d_in, d_out)",
    reference=package_conv1d_merge,
    cases=conv1d_cases,
    explanation="the update is (α/r) B A in the d_out × d_in layout of nn.Linear; a Conv1D stores every weight "
    "transposed, so the merge adds its transpose: W_stored + (α/r) Aᵀ Bᵀ. The unmerged branch x Aᵀ Bᵀ is the same "
    "for both layouts; only the merge has to know how W is stored.",
    traps=(
        CodeTrap(lambda W, A, B, alpha, r: W + alpha / r * B @ A, "You added (α/r) B A, which is laid out d_out × d_in, "
                 "to a weight stored d_in × d_out: the transposed merge. It only runs when d_in = d_out, and then it "
                 "is wrong. Add the transpose, (α/r) (B A)ᵀ = (α/r) Aᵀ Bᵀ."),
        CodeTrap(lambda W, A, B, alpha, r: W.T + alpha / r * B @ A, "You returned the merged weight in nn.Linear's "
                 "layout (d_out × d_in). A Conv1D keeps W stored d_in × d_out, so the merged weight must be too."),
        CodeTrap(lambda W, A, B, alpha, r: W + (B @ A).T, "Your update is off by exactly the factor α/r: the merge "
                 "adds the scaled update (α/r) (B A)ᵀ."),
        CodeTrap(lambda W, A, B, alpha, r: W + r / alpha * (B @ A).T, "Your scaling is upside down: it is α/r, not r/α."),
        CodeTrap(lambda W, A, B, alpha, r: alpha / r * (B @ A).T, "You returned only the update: the merged weight is "
                 "the frozen W_stored plus it."),
    ),
    model_solution="""
def merge_conv1d(W_stored, A, B, alpha, r):
    update = (alpha / r) * (B @ A)   # (d_out, d_in): the layout of nn.Linear
    return W_stored + update.T       # a Conv1D stores W transposed, (d_in, d_out)
""",
    hints=("Write the shape of each matrix: W_stored is (d_in, d_out), B @ A is (d_out, d_in).",
           "x W_merged must equal x W_stored + (α/r) x Aᵀ Bᵀ for every x."),
))
register(CodeExercise(
    id="lora-param-grads",
    prompt="Apply the one-layer rule twice. The layer computes y = x Wᵀ + (α/r) (x Aᵀ) Bᵀ for a batch x (n × d_in): "
    "its branch is two linear layers in a row, h = x Aᵀ (weight A, input x, output n × r) and then h Bᵀ (weight B, "
    "input h), scaled by α/r. Given grad_y = ∂L/∂y (n × d_out), write lora_param_grads(x, grad_y, W, A, B, alpha, r) "
    "returning (∂L/∂A, ∂L/∂B): ∂L/∂A has A's shape (r × d_in) and ∂L/∂B has B's shape (d_out × r). It is checked on "
    "hidden shapes. (∂L/∂A and ∂L/∂B do not depend on W.)",
    signature="lora_param_grads(x, grad_y, W, A, B, alpha, r) -> (grad_A, grad_B)",
    own_work=("backward", "autograd", "LoRALinear"),
    reference=package_param_grads,
    cases=param_grad_cases,
    traps=(
        CodeTrap(lambda x, gy, W, A, B, alpha, r: (B.T @ gy.T @ x, gy.T @ x @ A.T), "Both gradients are off by exactly "
                 "α/r: the scaling multiplies the branch, so it multiplies its gradients too."),
        CodeTrap(lambda x, gy, W, A, B, alpha, r: (alpha / r * x.T @ (gy @ B), alpha / r * gy.T @ (x @ A.T)),
                 "Your ∂L/∂A is transposed: it must have A's "
                 "shape, r × d_in."),
    ),
    model_solution="""
def lora_param_grads(x, grad_y, W, A, B, alpha, r):
    gamma = alpha / r                # the scaling γ
    h = x @ A.T                      # (n, r): the bottleneck
    grad_B = gamma * grad_y.T @ h    # y = γ h Bᵀ + ...  ->  ∂L/∂B = γ grad_yᵀ h     (d_out, r)
    grad_h = gamma * grad_y @ B      # ∂L/∂h = γ grad_y B                          (n, r)
    grad_A = grad_h.T @ x            # h = x Aᵀ  ->  ∂L/∂A = grad_hᵀ x              (r, d_in)
    return grad_A, grad_B
""",
    explanation="with G = (α/r) grad_yᵀ x, the gradient of the loss with respect to B A, this is ∂L/∂A = Bᵀ G and "
    "∂L/∂B = G Aᵀ, computed without forming G: each has the shape of its factor.",
    worked_solution="""
The derivation. Write γ = α/r, h = x Aᵀ (n × r) and z = h Bᵀ (n × d_out), so that y = x Wᵀ + b + γ z.
- The upstream gradient of z is ∂L/∂z = γ grad_y (n × d_out): z enters y multiplied by γ.
- Outer layer, z = h Bᵀ (weight B, input h). The rule gives ∂L/∂B = (γ grad_y)ᵀ h = γ grad_yᵀ x Aᵀ (d_out × r).
- Its input gradient, passed down to the inner layer: ∂L/∂h = γ grad_y B (n × r).
- Inner layer, h = x Aᵀ (weight A, input x, upstream gradient ∂L/∂h). The rule gives ∂L/∂A = (∂L/∂h)ᵀ x = γ Bᵀ grad_yᵀ x (r × d_in).
With G = γ grad_yᵀ x (d_out × d_in, the gradient with respect to the product B A), both read ∂L/∂A = Bᵀ G and ∂L/∂B = G Aᵀ.
Check the shapes: only Bᵀ G has the shape of A (r × d_in), and only G Aᵀ has the shape of B (d_out × r).
""",
    hints=("Start with the outer layer, z = h Bᵀ with h = x Aᵀ. Since y = x Wᵀ + (α/r) z, its upstream gradient is "
           "∂L/∂z = (α/r) grad_y.",
           "The rule on z = h Bᵀ gives ∂L/∂B (weight gradient) and ∂L/∂h (input gradient, n × r).",
           "Then the inner layer h = x Aᵀ: its input is x and its upstream gradient is the ∂L/∂h you just computed."),
))
register(WrittenExercise(
    id="init-swapped",
    prompt="Change and explain. Swap LoRA's initialisation: A = 0 and B random. In section 2, add this case to the "
    "list in the first_gradients cell and run it. Does ΔW still start at 0? Which factor gets a gradient at the first "
    "step, and why? Would training still work? (Whether it works as well as the usual start is a research question; "
    "the model answer names one study.)",
    points=(
        "ΔW = B A is still exactly 0, because A = 0: the model still starts as the pretrained one.",
        "∂L/∂B = G Aᵀ = 0 at the first step, because A = 0; ∂L/∂A = Bᵀ G is not 0, because B is random.",
        "So A moves first and B follows from the second step: training works, with the roles of A and B swapped.",
        "What must not happen is both factors zero: then both gradients vanish and nothing ever trains.",
        "The two starts are not equivalent in practice. Hayou, Ghosh and Yu (2024, arXiv 2406.08447, abstract) find "
        "that the usual start (B = 0, A random) does better on average, and their analysis suggests why: it allows "
        "larger learning rates before the layer's output becomes unstable.",
    ),
    explanation="ΔW = B A = 0 still holds because A = 0, so the model starts unchanged. ∂L/∂B = G Aᵀ vanishes at the "
    "first step, but ∂L/∂A = Bᵀ G does not, since B is random: A moves first, then B. Training works; only one "
    "factor needs to be zero, and only one may be. The two starts are not equivalent, though: Hayou et al. (2024, "
    "abstract) find the usual one (B = 0) better on average, as it tolerates larger learning rates.",
))
register(PredictExercise(
    id="predict-alpha-doubled",
    prompt="Adam's first step moves every entry of B whose gradient is not zero by exactly the learning rate, whatever "
    "the gradient's size. A "
    "rank-8 LoRALinear with α = 16 takes that first step. Now double α to 32 and change nothing else (same r, same "
    "learning rate). How many times larger is the applied update ‖(α/r) B A‖_F after the step? (The cell measures "
    "this idealised step on a layer of its own, with a random stand-in for the gradient: no data.)",
    expected=first_step_ratio,
    rel_tol=1e-6,
    traps=(
        Trap(lambda: 1.0, "Adam normalises the step on B, not the scaling applied after it: the same step of B gives "
             "twice the applied update (α/r) B A."),
        Trap(lambda: 4.0, "that is plain SGD's answer (the gradient of B carries one factor α/r, the product another). "
             "Adam divides the gradient by its own size, which removes one of the two factors."),
        Trap(lambda: 0.5, "α sits in the numerator of α/r: a larger α gives a larger update."),
    ),
    explanation="Adam's first step moves each entry of B by about the learning rate, whatever the gradient's scale, "
    "so the applied update (α/r) ΔB A is proportional to α. Doubling α acts like doubling the learning rate of the branch.",
    hints=("Write the applied update after one step as (α/r) ΔB A with A unchanged. Which of these factors does Adam fix?",),
))
register(CodeExercise(
    id="lora-input-grad",
    prompt="Backpropagation also needs the gradient with respect to the layer's input, to pass on to the layer below. "
    "Write lora_input_grad(grad_y, W, A, B, alpha, r): ∂L/∂x (n × d_in) for the bias-free LoRA layer y = x Wᵀ + "
    "(α/r) x Aᵀ Bᵀ, given grad_y = ∂L/∂y (n × d_out), without forming the d_out × d_in matrix B A. Checked on hidden "
    "shapes.",
    signature="lora_input_grad(grad_y, W, A, B, alpha, r) -> grad_x  # (n, d_in)",
    own_work=("backward", "autograd", "LoRALinear"),
    reference=package_input_grad,
    cases=input_grad_cases,
    explanation="∂L/∂x = grad_y W + (α/r) (grad_y B) A: the backward pass runs the same thin path in reverse, "
    "through r numbers per row.",
    traps=(
        CodeTrap(lambda gy, W, A, B, alpha, r: gy @ W, "You left out the LoRA branch: the input reaches y through "
                 "(α/r) x Aᵀ Bᵀ as well as through W."),
        CodeTrap(lambda gy, W, A, B, alpha, r: gy @ W + (gy @ B) @ A, "Your LoRA branch is off by exactly the factor "
                 "α/r: you left out the scaling α/r."),
        CodeTrap(lambda gy, W, A, B, alpha, r: gy @ W.T + alpha / r * (gy @ B) @ A, "For y = x Wᵀ the input gradient "
                 "is grad_y W, not grad_y Wᵀ."),
    ),
    model_solution="""
def lora_input_grad(grad_y, W, A, B, alpha, r):
    through_W = grad_y @ W                       # (n, d_in): y = x Wᵀ gives grad_y W
    through_branch = (grad_y @ B) @ A            # (n, r) then (n, d_in): never forms B A
    return through_W + (alpha / r) * through_branch
""",
    hints=("For y = x Mᵀ the input gradient is grad_y M. Here M = W + (α/r) B A.",
           "Multiply grad_y by B first (n x r), then by A."),
))
