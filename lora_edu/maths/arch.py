"""Parameter and memory arithmetic for real architectures (GPT-2, GPT-3, Llama 3).

Configurations are data (published hyperparameters); every count is computed from them.
With grouped-query attention (Llama 3) the key and value projections are
``d_model x (n_kv_heads * head_dim)``, smaller than the query projection.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ARCHITECTURES",
    "DTYPE_BYTES",
    "Architecture",
    "format_bytes",
    "lora_parameter_count",
    "memory_estimate",
    "training_memory",
    "weight_shapes",
]

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1, "nf4": 0.5}
ATTENTION = ("q", "k", "v", "o")
MLP_GELU = ("fc_in", "fc_out")
MLP_SWIGLU = ("gate", "up", "down")


@dataclass(frozen=True)
class Architecture:
    """Published hyperparameters of a decoder-only transformer."""

    name: str
    n_layer: int
    d_model: int
    n_head: int
    n_kv_head: int
    d_ff: int
    vocab_size: int
    n_ctx: int
    mlp: str  # "gelu" (2 matrices, biases, LayerNorm) or "swiglu" (3 matrices, no biases, RMSNorm)
    tied_embeddings: bool
    learned_positions: bool

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def matrices(self) -> tuple[str, ...]:
        return ATTENTION + (MLP_GELU if self.mlp == "gelu" else MLP_SWIGLU)

    def total_parameters(self) -> int:
        """Every weight, bias, norm and embedding parameter."""
        d, gelu = self.d_model, self.mlp == "gelu"
        shapes = weight_shapes(self)
        per_layer = sum(o * i for o, i in shapes.values())
        if gelu:
            per_layer += sum(o for o, _ in shapes.values())  # biases
            per_layer += 2 * 2 * d  # two LayerNorms, weight and bias
        else:
            per_layer += 2 * d  # two RMSNorms, weight only
        embeddings = self.vocab_size * d + (self.n_ctx * d if self.learned_positions else 0)
        head = 0 if self.tied_embeddings else self.vocab_size * d
        final_norm = 2 * d if gelu else d
        return self.n_layer * per_layer + embeddings + head + final_norm


def weight_shapes(arch: Architecture) -> dict[str, tuple[int, int]]:
    """(d_out, d_in) of each linear layer in one block, by short name (q, k, v, o, ...)."""
    d, kv = arch.d_model, arch.n_kv_head * arch.head_dim
    shapes = {"q": (d, d), "k": (kv, d), "v": (kv, d), "o": (d, d)}
    if arch.mlp == "gelu":
        shapes |= {"fc_in": (arch.d_ff, d), "fc_out": (d, arch.d_ff)}
    else:
        shapes |= {"gate": (arch.d_ff, d), "up": (arch.d_ff, d), "down": (d, arch.d_ff)}
    return shapes


def lora_parameter_count(arch: Architecture, r: int, targets: tuple[str, ...] | list[str] = ("q", "v")) -> int:
    """Trainable parameters of rank-``r`` LoRA on ``targets`` in every layer: sum of r (d_in + d_out)."""
    shapes = weight_shapes(arch)
    unknown = [t for t in targets if t not in shapes]
    if unknown:
        raise ValueError(f"{arch.name} has no matrix {unknown[0]!r}; choose from {list(shapes)}.")
    if r < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {r}.")
    return arch.n_layer * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


def memory_estimate(
    n_params: int,
    n_trainable: int,
    weight_dtype: str = "fp16",
    grad_dtype: str = "fp16",
    optimizer_dtype: str = "fp16",
) -> dict[str, float]:
    """Bytes for weights, gradients and Adam's two moment buffers (activations not included).

    Only trainable parameters have gradients and optimizer state.
    """
    for dt in (weight_dtype, grad_dtype, optimizer_dtype):
        if dt not in DTYPE_BYTES:
            raise ValueError(f"Unknown dtype {dt!r}; choose from {list(DTYPE_BYTES)}.")
    parts = {
        "weights": n_params * DTYPE_BYTES[weight_dtype],
        "gradients": n_trainable * DTYPE_BYTES[grad_dtype],
        "adam states": 2 * n_trainable * DTYPE_BYTES[optimizer_dtype],
    }
    parts["total"] = sum(parts.values())
    return parts


TRAINING_PRECISIONS = ("fp32", "bf16", "fp16")


def training_memory(n_params: int, n_trainable: int, precision: str = "bf16") -> dict[str, float]:
    """Bytes of the training state with Adam, activations left out, in the common accounting.

    ``"fp32"``: weights, gradients and both Adam moments in fp32 (16 bytes per trainable parameter, 4 per frozen one).
    ``"bf16"``/``"fp16"`` (mixed precision): half-precision weights and gradients, plus an fp32 master copy and fp32
    Adam moments of the trainable parameters: 2 + 2 + 4 + 8 = 16 bytes per trainable parameter, 2 per frozen one.
    """
    if precision not in TRAINING_PRECISIONS:
        raise ValueError(f"Unknown training precision {precision!r}; choose from {list(TRAINING_PRECISIONS)} "
                         "(int8/nf4 store a frozen base, not an optimizer).")
    if not 0 <= n_trainable <= n_params:
        raise ValueError(f"Need 0 <= n_trainable <= n_params, got {n_trainable:,} and {n_params:,}.")
    half = precision != "fp32"
    width = DTYPE_BYTES[precision]
    parts = {
        "weights": n_params * width,
        "gradients": n_trainable * width,
        "fp32 master weights": n_trainable * 4 if half else 0,
        "adam states": n_trainable * 2 * 4,
    }
    parts["total"] = sum(parts.values())
    return parts


def format_bytes(n: float) -> str:
    """Decimal units, as the LoRA paper uses them: 350 GB, 35 MB."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


def _arch(name, n_layer, d_model, n_head, n_kv_head, d_ff, vocab, n_ctx, mlp) -> Architecture:
    gelu = mlp == "gelu"
    return Architecture(name, n_layer, d_model, n_head, n_kv_head, d_ff, vocab, n_ctx, mlp, gelu, gelu)


# name, layers, d_model, heads, kv heads, d_ff, vocabulary, context, MLP kind
ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        _arch("GPT-2 small", 12, 768, 12, 12, 3072, 50257, 1024, "gelu"),
        _arch("GPT-2 medium", 24, 1024, 16, 16, 4096, 50257, 1024, "gelu"),
        _arch("GPT-2 large", 36, 1280, 20, 20, 5120, 50257, 1024, "gelu"),
        _arch("GPT-2 XL", 48, 1600, 25, 25, 6400, 50257, 1024, "gelu"),
        _arch("GPT-3 175B", 96, 12288, 96, 96, 49152, 50257, 2048, "gelu"),
        _arch("Llama 3 8B", 32, 4096, 32, 8, 14336, 128256, 8192, "swiglu"),
        _arch("Llama 3 70B", 80, 8192, 64, 8, 28672, 128256, 8192, "swiglu"),
        _arch("Llama 3.1 405B", 126, 16384, 128, 8, 53248, 128256, 131072, "swiglu"),
    )
}
