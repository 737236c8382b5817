"""A small GPT (decoder-only transformer) in the style of nanoGPT's model.py.

Attention has separate ``q_proj``, ``k_proj``, ``v_proj`` and ``o_proj`` layers, so LoRA targets
read like the paper's Wq, Wk, Wv, Wo; the MLP has ``fc_in`` and ``fc_out``.  At GPT-2 sizes the
parameter count equals GPT-2's (learned positions, biases, LayerNorm, tied output head).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import is_int, is_number

__all__ = ["GPT", "GPTConfig", "GPT_SIZES", "check_token_ids", "trusted_token_ids"]


@dataclass(frozen=True)
class GPTConfig:
    """Sizes of a GPT.  ``d_ff`` defaults to ``4 * d_model``."""

    vocab_size: int = 512
    n_ctx: int = 64
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 64
    d_ff: int = 0
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_ctx", "n_layer", "n_head", "d_model", "d_ff"):
            value = getattr(self, name)
            if not is_int(value):
                raise TypeError(f"GPTConfig.{name} must be an int, got {value!r} ({type(value).__name__}).")
            if value < (0 if name == "d_ff" else 1):
                least = "0 (0 means 4 * d_model)" if name == "d_ff" else "1"
                raise ValueError(f"GPTConfig.{name} must be at least {least}, got {value}.")
        if not is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be a probability in [0, 1), got {self.dropout!r}.")
        if not isinstance(self.bias, bool):
            raise TypeError(f"GPTConfig.bias must be True or False, got {self.bias!r}.")
        if self.d_ff == 0:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}.")

    def to_dict(self) -> dict:
        return asdict(self)

    def with_vocab(self, vocab_size: int) -> GPTConfig:
        return replace(self, vocab_size=vocab_size)


# tiny: trains on a laptop CPU in minutes; gpu: a class GPU's configuration; gpt2*: the real sizes,
# for parameter arithmetic (built on the meta device, never allocated).
GPT_SIZES: dict[str, GPTConfig] = {
    "tiny": GPTConfig(n_ctx=64, n_layer=4, n_head=4, d_model=64),
    "gpu": GPTConfig(n_ctx=64, n_layer=8, n_head=8, d_model=512),
    "gpt2": GPTConfig(vocab_size=50257, n_ctx=1024, n_layer=12, n_head=12, d_model=768),
    "gpt2-medium": GPTConfig(vocab_size=50257, n_ctx=1024, n_layer=24, n_head=16, d_model=1024),
    "gpt2-large": GPTConfig(vocab_size=50257, n_ctx=1024, n_layer=36, n_head=20, d_model=1280),
    "gpt2-xl": GPTConfig(vocab_size=50257, n_ctx=1024, n_layer=48, n_head=25, d_model=1600),
}


_TRUSTED_IDS = [False]  # inside trusted_token_ids(): the ids were checked once, up front


@contextmanager
def trusted_token_ids() -> Iterator[None]:
    """Skip the range check of every forward pass inside the block: for a training loop that has checked
    all its rows once. The check reads a value back from the device, which makes the host wait for the
    GPU in every step."""
    before = _TRUSTED_IDS[0]
    _TRUSTED_IDS[0] = True
    try:
        yield
    finally:
        _TRUSTED_IDS[0] = before


def check_token_ids(idx: torch.Tensor, cfg: GPTConfig) -> None:
    """Raise a clear error unless idx is a (batch, seq) integer tensor of ids in [0, vocab_size)
    (the range is not checked inside ``trusted_token_ids()``)."""
    if not isinstance(idx, torch.Tensor) or idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
        kind = idx.dtype if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise TypeError(f"GPT expects token ids as an integer tensor (batch, seq), got {kind}; use torch.long.")
    if idx.ndim != 2:
        raise ValueError(f"GPT expects token ids of shape (batch, seq), got shape {tuple(idx.shape)}; use idx[None] for one sequence.")
    if idx.numel() == 0 or idx.device.type == "meta" or _TRUSTED_IDS[0]:
        return
    bad = (idx < 0) | (idx >= cfg.vocab_size)
    if bool(bad.any()):
        first = int(idx[bad][0])
        raise ValueError(
            f"Token id {first} is outside the vocabulary: ids must be in [0, {cfg.vocab_size}) for vocab_size={cfg.vocab_size}. "
            "Was the text encoded with another tokenizer?"
        )


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_head = cfg.n_head
        self.q_proj = nn.Linear(d, d, bias=cfg.bias)
        self.k_proj = nn.Linear(d, d, bias=cfg.bias)
        self.v_proj = nn.Linear(d, d, bias=cfg.bias)
        self.o_proj = nn.Linear(d, d, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, seq, d_model) -> (batch, seq, d_model)."""
        b, t, d = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:  # (b, t, d) -> (b, n_head, t, d / n_head)
            return y.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.fc_out = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc_out(F.gelu(self.fc_in(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token + position embeddings, ``n_layer`` pre-norm blocks, final LayerNorm, tied output head."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith(("o_proj.weight", "fc_out.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * cfg.n_layer) ** 0.5)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (batch, seq) token ids -> logits (batch, seq, vocab), and the mean cross-entropy
        over positions whose target is not -100 when ``targets`` (batch, seq) is given."""
        check_token_ids(idx, self.config)
        b, t = idx.shape
        if t > self.config.n_ctx:
            raise ValueError(f"Sequence length {t} exceeds the context length n_ctx={self.config.n_ctx}.")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, stop_token: int | None = None) -> torch.Tensor:
        """Greedy continuation of idx: (batch, seq) by up to ``max_new_tokens`` tokens."""
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.n_ctx :])
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            idx = torch.cat([idx, nxt], dim=1)
            if stop_token is not None and bool((nxt == stop_token).all()):
                break
        return idx
