"""Many LoRA adapters on one base model in one batch (the idea of S-LoRA and Punica).

Every row of a batch may ask for a different adapter.  The base weight is shared, so the base
forward ``x W^T`` runs once for the whole batch; each row's update is added by gathering its own
``A`` and ``B`` and two batched matmuls::

    y[i] = x[i] W^T + b + scaling * (x[i] A[ids[i]]^T) B[ids[i]]^T

``MultiLoRALinear`` does this per layer; ``multi_adapter_model`` builds a model serving a list of
trained LoRA models (same targets and rank); ``use_adapters(model, ids)`` picks the rows' adapters.
Three ways to serve a batch are timed side by side by ``compare_serving`` (``serving_throughput`` times one; see
``benchmarks/multi_adapter.py``).
"""

from __future__ import annotations

import copy
import functools
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..lora.layer import linear_shape, lora_layers, merge_lora, set_submodule, unmerge_lora
from ..maths.timing import decided_side, interleave, round_by_round

__all__ = [
    "SERVING_STRATEGIES",
    "MultiLoRALinear",
    "Throughput",
    "compare_serving",
    "load_adapter_weights",
    "multi_adapter_model",
    "random_adapters",
    "serve_batched",
    "serve_merge_swap",
    "serve_one_at_a_time",
    "serving_table",
    "strategies_agree",
    "serving_throughput",
    "use_adapters",
]

SERVING_STRATEGIES = ("batched", "merge-swap", "one-at-a-time")


class MultiLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (or ``Conv1D``) and ``n`` LoRA adapters; each row of the batch uses the adapter ``ids[row]``.

    Shapes: ``lora_A: (n, r, d_in)``, ``lora_B: (n, d_out, r)``, ``scaling: (n,)``;
    ``x: (batch, seq, d_in) -> (batch, seq, d_out)``; ``adapter_ids: (batch,)`` long, ``-1`` = base model only.
    """

    def __init__(self, base: nn.Module, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: torch.Tensor) -> None:
        super().__init__()
        n, r, d_in = lora_A.shape
        base_in, base_out, _ = linear_shape(base)
        if lora_B.shape != (n, base_out, r) or d_in != base_in or scaling.shape != (n,):
            raise ValueError(
                f"Adapter shapes do not fit a Linear({base_in} -> {base_out}): lora_A {tuple(lora_A.shape)} "
                f"must be (n, r, {base_in}), lora_B {tuple(lora_B.shape)} (n, {base_out}, r), scaling (n,)."
            )
        self.base = base
        self.register_buffer("lora_A", lora_A.detach().clone())
        self.register_buffer("lora_B", lora_B.detach().clone())
        self.register_buffer("scaling", scaling.detach().clone().to(lora_A.dtype))
        self.adapter_ids: torch.Tensor | None = None

    @property
    def n_adapters(self) -> int:
        return self.lora_A.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, seq, d_in) -> (batch, seq, d_out)."""
        out = self.base(x)
        ids = self.adapter_ids
        if ids is None:
            raise ValueError("No adapters chosen for this batch: run the model inside `with use_adapters(model, ids):`.")
        if ids.shape != (x.shape[0],):
            raise ValueError(f"adapter ids {tuple(ids.shape)} must have one entry per row of the batch ({x.shape[0]},).")
        rows = ids.clamp(min=0)
        scale = torch.where(ids >= 0, self.scaling[rows], torch.zeros_like(self.scaling[rows]))  # (batch,)
        h = torch.bmm(x.to(self.lora_A.dtype), self.lora_A[rows].transpose(1, 2))  # (batch, seq, r)
        delta = torch.bmm(h, self.lora_B[rows].transpose(1, 2))  # (batch, seq, d_out)
        return out + (delta * scale[:, None, None]).to(out.dtype)


def load_adapter_weights(model: nn.Module, adapter: nn.Module) -> None:
    """Copy the LoRA factors of ``adapter`` (a model with the same LoRA layers) into ``model``'s, in place."""
    mine, theirs = lora_layers(model), lora_layers(adapter)
    if set(mine) != set(theirs):
        raise ValueError(f"The adapter's LoRA layers {sorted(theirs)[:3]}... differ from the model's {sorted(mine)[:3]}...")
    with torch.no_grad():
        for name, layer in mine.items():
            if layer.lora_A.shape != theirs[name].lora_A.shape:
                raise ValueError(f"{name}: rank {theirs[name].r} differs from the model's rank {layer.r}.")
            layer.lora_A.copy_(theirs[name].lora_A)
            layer.lora_B.copy_(theirs[name].lora_B)
            layer.scaling = theirs[name].scaling


def multi_adapter_model(adapters: Sequence[nn.Module]) -> nn.Module:
    """One model that serves every adapter in ``adapters`` (LoRA models of one base, same targets and rank).

    The base weights are taken from ``adapters[0]`` (unmerged); none of ``adapters`` is changed.
    """
    if not adapters:
        raise ValueError("Give at least one LoRA model.")
    layer_sets = [lora_layers(m) for m in adapters]
    if not layer_sets[0]:
        raise ValueError("adapters[0] has no LoRA layers; pass models returned by inject_lora/finetune.")
    for i, layers in enumerate(layer_sets):
        if set(layers) != set(layer_sets[0]):
            raise ValueError(f"adapters[{i}] adapts other layers than adapters[0]; all must share targets.")
        merged = [n for n, m in layers.items() if m.merged]
        if merged:
            raise ValueError(f"adapters[{i}] is merged at {merged[0]!r}; unmerge_lora it first.")
        ranks = {n: m.r for n, m in layers.items()}
        if ranks != {n: m.r for n, m in layer_sets[0].items()}:
            raise ValueError(f"adapters[{i}] has other ranks than adapters[0]; stacking needs equal ranks per layer.")
    model = copy.deepcopy(adapters[0])
    for name in layer_sets[0]:
        stack_a = torch.stack([layers[name].lora_A.detach() for layers in layer_sets])
        stack_b = torch.stack([layers[name].lora_B.detach() for layers in layer_sets])
        scaling = torch.tensor([layers[name].scaling for layers in layer_sets])
        set_submodule(model, name, MultiLoRALinear(model.get_submodule(name).base, stack_a, stack_b, scaling))
    return model.eval()


@contextmanager
def use_adapters(model: nn.Module, ids: torch.Tensor | Sequence[int]) -> Iterator[nn.Module]:
    """Inside the block, row ``i`` of a batch runs with adapter ``ids[i]`` (``-1``: the base model)."""
    layers = [m for m in model.modules() if isinstance(m, MultiLoRALinear)]
    if not layers:
        raise ValueError("The model has no MultiLoRALinear layers; build it with multi_adapter_model(...).")
    ids = torch.as_tensor(ids, dtype=torch.long, device=layers[0].lora_A.device)
    n = layers[0].n_adapters
    if ids.ndim != 1 or (len(ids) and (int(ids.min()) < -1 or int(ids.max()) >= n)):
        raise ValueError(f"adapter ids must be a 1-D list of values in -1..{n - 1} (one per row), got {ids.tolist()}.")
    for layer in layers:
        layer.adapter_ids = ids
    try:
        yield model
    finally:
        for layer in layers:
            layer.adapter_ids = None


@torch.no_grad()
def serve_batched(multi: nn.Module, x: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """One forward of the whole batch, each row with its own adapter: logits (batch, seq, vocab)."""
    with use_adapters(multi, ids):
        return multi(x)[0]


@torch.no_grad()
def serve_merge_swap(server: nn.Module, adapters: Sequence[nn.Module], x: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """Group the rows by adapter; per group: load that adapter, merge it, run the group, unmerge.

    ``server`` is one LoRA model (same layers as the adapters) whose factors get overwritten.
    """
    ids_t = torch.as_tensor(ids)
    out = None
    for i in ids_t.unique().tolist():
        rows = (ids_t == i).nonzero().flatten()
        load_adapter_weights(server, adapters[i])
        merge_lora(server)
        logits = server(x[rows])[0]
        unmerge_lora(server)
        out = logits.new_empty(len(x), *logits.shape[1:]) if out is None else out
        out[rows] = logits
    return out


@torch.no_grad()
def serve_one_at_a_time(adapters: Sequence[nn.Module], x: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """Each request alone (batch 1) through its own unmerged LoRA model: logits (batch, seq, vocab).

    The slowest strategy and the reference the other two are checked against (``strategies_agree``).
    """
    return torch.cat([adapters[i](x[row : row + 1])[0] for row, i in enumerate(ids)])


def strategies_agree(adapters: Sequence[nn.Module], x: torch.Tensor, ids: Sequence[int], multi: nn.Module | None = None,
                     server: nn.Module | None = None, atol: float = 1e-4) -> torch.Tensor:
    """Serve ``x`` every way, check that batched and merge-swap give one-at-a-time's logits, and return those.

    Raises ``ValueError`` naming the strategy that disagrees (by more than ``atol``) and by how much.
    """
    reference = serve_one_at_a_time(adapters, x, ids)
    outputs = {"batched": serve_batched(multi or multi_adapter_model(adapters), x, ids),
               "merge-swap": serve_merge_swap(server or copy.deepcopy(adapters[0]), adapters, x, ids)}
    for strategy, logits in outputs.items():
        gap = float((logits - reference).abs().max())
        if gap > atol:
            raise ValueError(f"{strategy} serving differs from serving each request alone by {gap:.2e} (allowed {atol:g}).")
    return reference


def serving_call(strategy: str, adapters: Sequence[nn.Module], x: torch.Tensor, ids: Sequence[int],
                 multi: nn.Module | None = None, server: nn.Module | None = None):
    """A function serving the batch ``x`` (batch, seq) with ``strategy``, ready to time."""
    if strategy not in SERVING_STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; choose from {SERVING_STRATEGIES}.")
    if strategy == "batched":
        multi = multi or multi_adapter_model(adapters)
        return lambda: serve_batched(multi, x, ids)
    if strategy == "merge-swap":
        server = server or copy.deepcopy(adapters[0])
        return lambda: serve_merge_swap(server, adapters, x, ids)
    return lambda: serve_one_at_a_time(adapters, x, ids)


def seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def requests_per_second(call, requests: int) -> float:
    """``requests`` over the seconds one ``call()`` takes."""
    return requests / seconds(call)


def serving_throughput(
    strategy: str, adapters: Sequence[nn.Module], x: torch.Tensor, ids: Sequence[int], repeats: int = 3,
    multi: nn.Module | None = None, server: nn.Module | None = None,
) -> float:
    """Requests (rows) per second of ``strategy`` on the batch ``x`` (batch, seq), best of ``repeats``."""
    call = serving_call(strategy, adapters, x, ids, multi, server)
    call()  # warm-up
    return max(requests_per_second(call, len(x)) for _ in range(repeats))


@dataclass(frozen=True)
class Throughput:
    """Requests per second of one strategy: the median over rounds, the range of the rounds, and each round."""

    median: float
    low: float
    high: float
    rounds: tuple[float, ...] = ()  # requests per second in each round, in the order the rounds ran

    def __str__(self) -> str:
        return f"{self.median:,.0f} ({self.low:,.0f}-{self.high:,.0f})"

    def versus(self, other: Throughput) -> str:
        """This strategy's throughput over ``other``'s, round by round, and faster or slower only when the rounds agree
        (``round_by_round``)."""
        return round_by_round(self.rounds, other.rounds, above="faster", below="slower")

    def faster_than(self, other: Throughput) -> bool:
        """Whether the rounds decide that this strategy serves more requests per second than ``other``."""
        return decided_side(self.rounds, other.rounds) > 0


def compare_serving(
    adapters: Sequence[nn.Module], x: torch.Tensor, ids: Sequence[int], rounds: int = 5,
    multi: nn.Module | None = None, server: nn.Module | None = None,
) -> dict[str, Throughput]:
    """Every strategy's requests per second, interleaved: each round times each strategy once, in an order that turns
    each round (``lora_edu.maths.timing.interleave``), so that a slow moment of the computer falls on all of them alike
    and none always runs first. Two strategies differ only where the rounds agree (``round_by_round``)."""
    calls = {s: serving_call(s, adapters, x, ids, multi, server) for s in SERVING_STRATEGIES}
    for call in calls.values():
        call()  # warm-up
    rates = interleave({s: functools.partial(requests_per_second, call, len(x)) for s, call in calls.items()}, rounds)
    return {s: Throughput(float(statistics.median(r)), min(r), max(r), tuple(r)) for s, r in rates.items()}


def serving_table(table: dict[int, dict[str, Throughput]]) -> str:
    """``compare_serving``'s results for several mixes (distinct adapters in the batch -> strategy -> throughput) as a
    lesson prints them: requests per second per strategy, batched over merge-swap round by round, and the mixes where
    the rounds decide that batched serving is faster."""
    n_rounds = len(next(iter(next(iter(table.values())).values())).rounds)
    lines = [f"requests per second: the median of {n_rounds} interleaved rounds (lowest-highest round)",
             f"{'adapters':>8} " + " ".join(f"{s:>20}" for s in SERVING_STRATEGIES)]
    lines += [f"{n:>8} " + " ".join(f"{t[s]!s:>20}" for s in SERVING_STRATEGIES) for n, t in table.items()]
    lines += ["", "batched over merge-swap, round by round:"]
    lines += [f"{n} adapter{'s' if n > 1 else ' '} in the batch: {t['batched'].versus(t['merge-swap'])}" for n, t in table.items()]
    ahead = [str(n) for n, t in table.items() if t["batched"].faster_than(t["merge-swap"])]
    lines.append("batched serving was faster than merge-swap, by the rounds, with " + (", ".join(ahead) or "none")
                 + f" of the mixes tried ({', '.join(map(str, table))} adapters in the batch)")
    return "\n".join(lines)


def random_adapters(
    base: nn.Module, n: int, targets: str | Sequence[str] = ("q_proj", "v_proj"), r: int = 8, seed: int = 0
) -> list[nn.Module]:
    """``n`` LoRA copies of ``base`` with random non-zero A and B: stand-ins for trained adapters when timing."""
    from ..lora.layer import inject_lora

    out = []
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        model = copy.deepcopy(base)
        inject_lora(model, list(targets) if not isinstance(targets, str) else targets, r=r, alpha=2 * r)
        with torch.no_grad():
            for layer in lora_layers(model).values():
                layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=gen) / layer.in_features**0.5)
                layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.02)
        out.append(model.eval())
    return out

