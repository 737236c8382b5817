"""The LoRA layer and the functions that put it into (and take it out of) a model.

A frozen linear layer ``y = x W^T + b`` gets a trainable low-rank update::

    y = x W^T + b + scaling * dropout(x) A^T B^T        A: (r, d_in), B: (d_out, r)

so that the effective weight is ``W + scaling * B A``.  ``B`` starts at zero, so the wrapped
model computes exactly what the base model computes until training moves ``B``.

Two kinds of base layer are adapted: ``torch.nn.Linear``, which stores W as (d_out, d_in), and
``transformers.pytorch_utils.Conv1D`` (GPT-2), which computes the same ``x W^T + b`` but stores the
transpose, (d_in, d_out) (PEFT's ``fan_in_fan_out=True``).  ``linear_shape`` is the one place that
reads d_in, d_out and the storage order of either; ``LoRALinear.base_weight`` gives W as (d_out, d_in)
for both, so merging adds ``scaling * (B A)^T`` to a Conv1D weight.  The LoRA branch ``x A^T B^T``
does not depend on the storage at all.  transformers is never imported here: a Conv1D exists only
once its module is loaded, so it is recognised through ``sys.modules``.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn

from ..checks import is_finite_number, is_int, is_number

__all__ = [
    "LinearShape",
    "LoRALinear",
    "ParameterCount",
    "adapted_weight",
    "count_parameters",
    "disable_lora",
    "inject_lora",
    "is_conv1d",
    "linear_shape",
    "lora_layers",
    "mark_only_lora_trainable",
    "merge_lora",
    "remove_lora",
    "unmerge_lora",
]

INITS = ("kaiming", "gaussian")
OUTPUT_HEAD_NAMES = ("lm_head",)
LINEAR_KINDS = "an nn.Linear or a transformers Conv1D"


def is_conv1d(module: object) -> bool:
    """Whether ``module`` is a ``transformers.pytorch_utils.Conv1D`` (GPT-2's linear layer), without importing transformers."""
    loaded = sys.modules.get("transformers.pytorch_utils")  # not loaded: no Conv1D can exist
    conv1d = getattr(loaded, "Conv1D", None)
    return conv1d is not None and isinstance(module, conv1d)


def is_linear(module: object) -> bool:
    """An ``nn.Linear`` or a ``Conv1D``: the layers ``LoRALinear`` wraps."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


class LinearShape(NamedTuple):
    """What ``linear_shape`` returns. ``fan_in_fan_out``: the weight is stored (d_in, d_out), as PEFT names it."""

    d_in: int
    d_out: int
    fan_in_fan_out: bool


def linear_shape(module: nn.Module) -> LinearShape:
    """d_in, d_out and the storage order of an ``nn.Linear``, a ``Conv1D`` or a ``LoRALinear`` around either.

    ``nn.Linear.weight`` is (d_out, d_in); ``Conv1D.weight`` is (d_in, d_out) (``nf`` = d_out), so its
    ``fan_in_fan_out`` is True.  This is the only place in lora_edu that reads the storage order.
    """
    if isinstance(module, LoRALinear):
        return linear_shape(module.base)
    if isinstance(module, nn.Linear):
        return LinearShape(module.in_features, module.out_features, False)
    if is_conv1d(module):
        d_in, d_out = module.weight.shape
        return LinearShape(d_in, d_out, True)
    raise TypeError(f"Expected {LINEAR_KINDS}, got {type(module).__name__}.")


def check_lora_hyperparameters(r: object, alpha: object, dropout: object = 0.0) -> None:
    """Raise a clear error for a rank, alpha or dropout that cannot work."""
    if not is_int(r):
        raise TypeError(f"LoRA rank r must be a positive int, got {r!r} ({type(r).__name__}).")
    if r < 1:
        raise ValueError(f"LoRA rank r must be at least 1, got r={r}. Use r=1 for the smallest update.")
    if not is_finite_number(alpha) or not alpha > 0:
        raise ValueError(f"LoRA alpha must be a positive finite number, got {alpha!r}. A common choice is alpha = r or 2 r.")
    if not is_number(dropout) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be a probability in [0, 1), got {dropout!r}.")


def max_rank(module: nn.Module) -> int:
    """min(d_in, d_out) of a linear layer: the highest rank a product B A of its shape can have."""
    d_in, d_out, _ = linear_shape(module)
    return min(d_in, d_out)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (or GPT-2's ``Conv1D``) plus a trainable rank-``r`` update ``scaling * B @ A``.

    Args:
        base: the pretrained layer, an ``nn.Linear`` or a ``transformers`` ``Conv1D`` (weight stored transposed,
            (d_in, d_out): ``fan_in_fan_out`` is then True and ``merge`` adds ``(scaling B A)^T``; see
            ``linear_shape``); its weight and bias are frozen, never replaced.
        r: rank of the update, ``1 <= r <= min(d_in, d_out)``.
        alpha: scaling numerator: ``scaling = alpha / r`` (or ``alpha / sqrt(r)`` with ``use_rslora``).
        dropout: dropout on the input of the LoRA branch only.
        init: ``"kaiming"`` (Kaiming-uniform A, as in loralib and PEFT) or ``"gaussian"``
            (A ~ N(0, 1/r^2), the paper's "random Gaussian").  B is zero either way.
        use_rslora: rank-stabilised scaling ``alpha / sqrt(r)`` (Kalajdzievski, 2023).

    Shapes: ``x: (..., d_in) -> (..., d_out)``; ``lora_A: (r, d_in)``; ``lora_B: (d_out, r)``, for either base.
    """

    def __init__(
        self,
        base: nn.Module,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        init: str = "kaiming",
        use_rslora: bool = False,
    ) -> None:
        if not is_linear(base):
            raise TypeError(f"LoRALinear wraps {LINEAR_KINDS}, got {type(base).__name__}.")
        check_lora_hyperparameters(r, alpha, dropout)
        d_in, d_out, fan_in_fan_out = linear_shape(base)
        if r > min(d_in, d_out):
            raise ValueError(
                f"LoRA rank r={r} exceeds min(d_in, d_out) = min({d_in}, {d_out}); "
                "a product B A cannot have a higher rank than that. Choose a smaller r."
            )
        if init not in INITS:
            raise ValueError(f"Unknown LoRA init {init!r}; choose one of {INITS}.")
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.r = r
        self.alpha = float(alpha)
        self.init = init
        self.use_rslora = use_rslora
        self.fan_in_fan_out = fan_in_fan_out
        self.scaling = self.alpha / (math.sqrt(r) if use_rslora else r)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, d_in, **factory))
        self.lora_B = nn.Parameter(torch.zeros(d_out, r, **factory))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.disabled = False
        self.reset_lora_parameters()

    @property
    def in_features(self) -> int:
        return self.lora_A.shape[1]

    @property
    def out_features(self) -> int:
        return self.lora_B.shape[0]

    def base_weight(self) -> torch.Tensor:
        """The frozen W as (d_out, d_in) for either base: a transposed view of a Conv1D's (d_in, d_out) weight.

        It shares storage with the layer's weight, so ``copy_`` into it changes the base layer.
        """
        w = self.base.weight
        return w.T if self.fan_in_fan_out else w

    def reset_lora_parameters(self) -> None:
        """A random (Kaiming-uniform or Gaussian), B zero: so ``delta_weight()`` is exactly 0."""
        if self.init == "kaiming":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        else:
            nn.init.normal_(self.lora_A, std=1.0 / self.r)
        nn.init.zeros_(self.lora_B)

    @property
    def compute_dtype(self) -> torch.dtype:
        """fp32 for half-precision factors, else their own dtype (fp32 or fp64)."""
        return torch.promote_types(self.lora_A.dtype, torch.float32)

    def delta_weight(self) -> torch.Tensor:
        """``scaling * B @ A`` in fp32 (fp64 for a double layer): (d_out, d_in)."""
        dt = self.compute_dtype
        return (self.lora_B.to(dt) @ self.lora_A.to(dt)) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., d_in) -> (..., d_out): ``base(x) + scaling * dropout(x) Aᵀ Bᵀ``, with PEFT's rounding."""
        if self.merged or self.disabled:
            return self.base(x)
        if self.one_node_applies(x):
            return FrozenLinearWithLoRA.apply(x, self.base.weight, self.base.bias, self.lora_A, self.lora_B, self.scaling)
        out = self.base(x)
        xa = self.lora_dropout(x).to(self.lora_A.dtype).reshape(-1, x.shape[-1]) @ self.lora_A.T  # (tokens, r)
        return add_lora_branch(out, xa, self.lora_B, self.scaling)

    def one_node_applies(self, x: torch.Tensor) -> bool:
        """Whether ``FrozenLinearWithLoRA`` computes this forward: an ``nn.Linear`` base with W and b frozen, no
        dropout at work, one dtype throughout and no autocast. Anything else takes autograd's ops one by one."""
        w, b = self.base.weight, self.base.bias
        return (
            type(self.base) is nn.Linear
            and not w.requires_grad
            and (b is None or not b.requires_grad)
            and (isinstance(self.lora_dropout, nn.Identity) or not self.training)
            and x.dtype == w.dtype == self.lora_A.dtype
            and not (torch.amp.is_autocast_available(x.device.type) and torch.is_autocast_enabled(x.device.type))
        )

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (``W <- W + scaling B A``, computed in fp32; transposed for a Conv1D)."""
        if self.merged:
            raise ValueError("This LoRA layer is already merged; merging again would add B A twice. Call unmerge() first.")
        w = self.base_weight()
        w.copy_((w.to(self.compute_dtype) + self.delta_weight()).to(w.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update from the base weight again (inverse of ``merge``)."""
        if not self.merged:
            raise ValueError("This LoRA layer is not merged, so there is nothing to unmerge. Call merge() first.")
        w = self.base_weight()
        w.copy_((w.to(self.compute_dtype) - self.delta_weight()).to(w.dtype))
        self.merged = False

    def extra_repr(self) -> str:
        storage = ", fan_in_fan_out=True" if self.fan_in_fan_out else ""
        return f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}, merged={self.merged}{storage}"


def add_lora_branch(out: torch.Tensor, xa: torch.Tensor, lora_B: torch.Tensor, scaling: float, in_place: bool = False) -> torch.Tensor:
    """out: (..., d_out), xa = x Aᵀ: (tokens, r) -> ``out + scaling * xa Bᵀ``, rounded as PEFT rounds it.

    ``in_place``: ``out`` is a fresh tensor nothing else holds (no autograd graph), so the sum may be written into it.
    """
    if out.dtype == xa.dtype and math.frexp(scaling)[0] == 0.5:
        # A power-of-two scaling (α = r, α = 2r) is exact on the thin product, and one GEMM adds B's product to
        # out: no pass over (tokens, d_out) to scale it, none to add it.
        if in_place:
            out.view(-1, out.shape[-1]).addmm_(xa * scaling, lora_B.T)
            return out
        return torch.addmm(out.reshape(-1, out.shape[-1]), xa * scaling, lora_B.T).view(out.shape)
    return out + ((xa @ lora_B.T) * scaling).to(out.dtype).view(out.shape)


class FrozenLinearWithLoRA(torch.autograd.Function):
    """``x Wᵀ + b + scaling (x Aᵀ) Bᵀ`` with W and b frozen, as one autograd node.

    The forward is ``LoRALinear``'s, op for op.  The backward is written out so that it makes no pass over a
    (tokens, d) tensor that it can avoid: autograd, left to itself, would compute the base's and the branch's
    gradients of x separately and add them, and W's layout makes one of them transposed, so that the add
    walks memory across rows.  Here the branch's share goes into the base's gradient inside one GEMM::

        g_xa   = scaling * g B             (tokens, r)      the gradient reaching x Aᵀ
        grad_x = g W + g_xa A              (tokens, d_in)
        grad_A = g_xaᵀ x                   (r, d_in)
        grad_B = gᵀ (scaling * x Aᵀ)       (d_out, r)

    x: (..., d_in); weight: (d_out, d_in); bias: (d_out,) or None; lora_A: (r, d_in); lora_B: (d_out, r).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, scaling):  # noqa: D102 (the class says what it computes)
        x2 = x.reshape(-1, x.shape[-1])  # (tokens, d_in)
        xa = x2 @ lora_A.T  # (tokens, r)
        ctx.save_for_backward(x2, xa, weight, lora_A, lora_B)
        ctx.scaling, ctx.x_shape = scaling, x.shape
        return add_lora_branch(nn.functional.linear(x, weight, bias), xa, lora_B, scaling, in_place=True)  # no autograd here

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x2, xa, weight, lora_A, lora_B = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])  # (tokens, d_out)
        # Each thin product is taken as (r, tokens) times (tokens, d) or (r, d) times (d, tokens): BLAS runs those
        # two to three times faster than the same product with the thin side last.
        g_xa = (lora_B.T @ g.T).T * ctx.scaling  # (tokens, r)
        grad_x = grad_A = grad_B = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ weight).addmm_(g_xa, lora_A).view(ctx.x_shape)
        if ctx.needs_input_grad[3]:
            grad_A = g_xa.T @ x2
        if ctx.needs_input_grad[4]:
            grad_B = ((xa * ctx.scaling).T @ g).T
        return grad_x, None, None, grad_A, grad_B, None


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every ``LoRALinear`` in ``model``, by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def output_head_name(model: nn.Module) -> str | None:
    """The qualified name of the output projection that ``"all-linear"`` leaves alone."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    linears = [(n, m) for n, m in model.named_modules() if is_linear(m)]
    for name, module in linears:
        if module is head or name.split(".")[-1] in OUTPUT_HEAD_NAMES:
            return name
    return linears[-1][0] if linears else None


def match_targets(model: nn.Module, targets: str | Sequence[str]) -> list[str]:
    """Qualified names of the modules that ``targets`` selects, in model order.

    ``targets`` is ``"all-linear"`` (every ``nn.Linear`` and ``Conv1D`` but the output head, as PEFT chooses), a regular expression
    that must match the whole qualified name (a single string, as in PEFT), or a list of names
    or name suffixes (``"q_proj"`` matches ``"blocks.0.attn.q_proj"``).
    Raises ``ValueError`` when a target matches nothing and ``TypeError`` when it matches a module
    that is not an ``nn.Linear`` or a ``Conv1D``.
    """
    inside_lora = {f"{n}.base" for n in lora_layers(model)}
    modules = [(n, m) for n, m in model.named_modules() if n and n not in inside_lora]
    linear_names = [n for n, m in modules if is_linear(m) or isinstance(m, LoRALinear)]
    if isinstance(targets, str) and targets == "all-linear":
        head = output_head_name(model)
        chosen = [n for n in linear_names if n != head]
        if not chosen:
            raise ValueError(
                f"targets='all-linear' selects every nn.Linear and Conv1D except the output head ({head!r}), and "
                f"{type(model).__name__} has no other Linear layer. Name the layers to adapt instead."
            )
    elif isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as exc:
            raise ValueError(f"targets={targets!r} is not a valid regular expression: {exc}.") from exc
        chosen = [n for n, _ in modules if pattern.fullmatch(n)]
        if not chosen:
            raise ValueError(
                f"The regex targets={targets!r} matches no module name. Linear layers are named like: "
                f"{', '.join(linear_names[:6])}."
            )
    elif isinstance(targets, Sequence) and targets and all(isinstance(t, str) for t in targets):
        chosen = []
        for t in targets:
            hits = [n for n, _ in modules if n == t or n.endswith("." + t)]
            if not hits:
                suffixes = sorted({n.split(".")[-1] for n in linear_names})
                raise ValueError(
                    f"Target module {t!r} matches no module in {type(model).__name__}. "
                    f"Linear layer names end in: {', '.join(suffixes)}."
                )
            chosen += [n for n in hits if n not in chosen]
    else:
        raise TypeError(f"targets must be 'all-linear', a regex string or a non-empty list of names, got {targets!r}.")
    by_name = dict(modules)
    for name in chosen:
        if not (is_linear(by_name[name]) or isinstance(by_name[name], LoRALinear)):
            raise TypeError(
                f"Target {name!r} is a {type(by_name[name]).__name__}, not {LINEAR_KINDS}; LoRA here wraps those "
                "layers only. Name the Linear layers inside it instead."
            )
    return [n for n, _ in modules if n in chosen]


def tied_weight_names(model: nn.Module, name: str) -> list[str]:
    """Other names of the weight of layer ``name`` (e.g. ``["wte.weight"]`` for a head tied to the embedding)."""
    weight = model.get_submodule(name).weight
    return [n for n, p in model.named_parameters(remove_duplicate=False) if p is weight and n != f"{name}.weight"]


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def inject_lora(
    model: nn.Module,
    targets: str | Sequence[str],
    r: int,
    alpha: float,
    dropout: float = 0.0,
    init: str = "kaiming",
    use_rslora: bool = False,
) -> list[str]:
    """Wrap the ``nn.Linear`` (and GPT-2 ``Conv1D``) layers selected by ``targets`` in ``LoRALinear``, in place.

    Returns the qualified names of the wrapped layers.  Every check runs before the first layer
    is replaced, so a bad call leaves ``model`` exactly as it was.
    """
    names = match_targets(model, targets)
    already = [n for n in names if isinstance(model.get_submodule(n), LoRALinear)]
    if already:
        raise ValueError(
            f"LoRA is already injected into {already[0]!r}" + (f" and {len(already) - 1} more" if len(already) > 1 else "")
            + ". Injecting twice would stack adapters; call remove_lora(model) first."
        )
    for name in names:
        check_untied(model, name)
    trainable = {p: p.requires_grad for p in model.parameters()}
    layers = {}
    try:  # each LoRALinear checks r, alpha, dropout, init and the rank against its layer's shape
        for name in names:
            layers[name] = LoRALinear(model.get_submodule(name), r, alpha, dropout, init, use_rslora)
    except (TypeError, ValueError) as exc:
        for p, flag in trainable.items():  # the bases frozen so far are left as they were
            p.requires_grad_(flag)
        raise type(exc)(f"{exc} (layer {name!r}; the model is unchanged)") from exc
    for name, layer in layers.items():
        set_submodule(model, name, layer)
    return names


def check_untied(model: nn.Module, name: str) -> None:
    """Raise if layer ``name`` cannot take a LoRA because its weight is shared with another layer."""
    tied = tied_weight_names(model, name)
    if tied:
        raise ValueError(
            f"The weight of {name!r} is tied to {tied[0]!r} (the same tensor): merging LoRA into it would change "
            f"{tied[0]!r} too. Leave {name!r} out of the targets, or untie it first "
            f"(layer = model.get_submodule({name!r}); layer.weight = nn.Parameter(layer.weight.detach().clone()))."
        )


def remove_lora(model: nn.Module, merge: bool = False) -> list[str]:
    """Put the base ``nn.Linear`` / ``Conv1D`` layers back (with the update folded in when ``merge``)."""
    layers = lora_layers(model)
    for name, layer in layers.items():
        if merge and not layer.merged:
            layer.merge()
        if not merge and layer.merged:
            layer.unmerge()
        set_submodule(model, name, layer.base)
    return list(layers)


def mark_only_lora_trainable(model: nn.Module) -> None:
    """Freeze every parameter except the LoRA factors ``lora_A`` and ``lora_B``."""
    if not lora_layers(model):
        raise ValueError("The model has no LoRA layers; call inject_lora(model, ...) first.")
    for name, p in model.named_parameters():
        p.requires_grad_(name.endswith(("lora_A", "lora_B")))


def require_lora(model: nn.Module, merged: bool) -> dict[str, LoRALinear]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError("The model has no LoRA layers; call inject_lora(model, ...) first.")
    wrong = [n for n, m in layers.items() if m.merged != merged]
    if wrong:
        state = "already merged" if merged is False else "not merged"
        raise ValueError(f"LoRA layer {wrong[0]!r} is {state}; nothing was changed.")
    return layers


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its base weight: inference then costs exactly what the base costs."""
    for layer in require_lora(model, merged=False).values():
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Undo ``merge_lora`` (to keep training, or to save the adapter)."""
    for layer in require_lora(model, merged=True).values():
        layer.unmerge()


@contextmanager
def disable_lora(model: nn.Module) -> Iterator[nn.Module]:
    """Run the base model exactly: inside the block every LoRA branch is skipped.

    >>> with disable_lora(model):
    ...     base_logits = model(x)
    """
    layers = require_lora(model, merged=False)
    for layer in layers.values():
        layer.disabled = True
    try:
        yield model
    finally:
        for layer in layers.values():
            layer.disabled = False


class ParameterCount(NamedTuple):
    """What ``count_parameters`` returns; ``summary`` is one line for a notebook."""

    trainable: int
    total: int
    fraction: float
    summary: str


@torch.no_grad()
def adapted_weight(model: nn.Module, name: str) -> torch.Tensor:
    """The weight a layer applies after fine-tuning: W + s B A for an unmerged LoRA layer, else W. (d_out, d_in)."""
    layer = model.get_submodule(name)
    if isinstance(layer, LoRALinear):
        w = layer.base_weight().detach()
        return w if layer.merged else w + layer.delta_weight().to(w.dtype)
    return layer.weight.detach()


def count_parameters(model: nn.Module) -> ParameterCount:
    """Trainable and total parameters of ``model`` (each shared tensor counted once)."""
    unique = {id(p): p for p in model.parameters()}.values()
    total = sum(p.numel() for p in unique)
    trainable = sum(p.numel() for p in unique if p.requires_grad)
    fraction = trainable / total if total else 0.0
    summary = f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * fraction:.4f}"
    return ParameterCount(trainable, total, fraction, summary)
