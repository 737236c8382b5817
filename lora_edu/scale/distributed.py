"""Training LoRA on more than one device: gradient accumulation, data parallel (DDP) and sharding (FSDP2).

Everything runs on PyTorch's own engine, ``torch.distributed``, launched by ``torchrun`` (gloo on CPUs,
NCCL on GPUs)::

    python -m torch.distributed.run --nproc_per_node=2 -m lora_edu.scale.distributed --json result.json

Each process trains a copy of the tiny GPT on its slice of every global batch; DDP averages the
gradients with an all-reduce, and a communication hook counts the bytes it sends.  Only parameters
that require grad are all-reduced, so LoRA sends ``trainable / total`` of what full fine-tuning sends.
Launched without ``torchrun`` the script runs one process (world size 1), the reference curve.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..checks import is_int
from ..gpt.data import task_data
from ..gpt.finetune import DEFAULT_LR, prepare
from ..gpt.model import check_token_ids
from ..gpt.pretrain import load_pretrained
from ..gpt.step import TrainStep
from ..gpt.train import TrainConfig, lr_at, make_optimizer, set_lr
from ..lora.layer import count_parameters
from ..maths.arch import DTYPE_BYTES, Architecture, lora_parameter_count, memory_estimate, training_memory, weight_shapes

__all__ = [
    "AccumulationResult",
    "ByteCounter",
    "counting_fsdp_collectives",
    "DistributedConfig",
    "accumulated_step",
    "relative_gradient_error",
    "allreduce_bytes",
    "main",
    "parameter_bytes",
    "free_port",
    "launch",
    "workers_output",
    "outer_weights",
    "per_rank_bytes",
    "ring_allreduce_seconds",
    "run",
    "saved_activation_bytes",
]

PARALLEL_STRATEGIES = ("ddp", "fsdp")
DISTRIBUTED_METHODS = ("lora-qv", "lora-all", "full")


# ---------------------------------------------------------------- gradient accumulation (one process)


def saved_activation_bytes(fn: Callable[[], torch.Tensor], model: nn.Module | None = None) -> tuple[torch.Tensor, int]:
    """Run ``fn`` (a forward pass) and count the bytes autograd saves for the backward pass.

    These saved tensors are the activation memory of training; each storage is counted once, and
    the storages of ``model``'s parameters (weights saved for the backward) are not activations.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()} if model is not None else set()
    seen: set[int] = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen and storage.data_ptr() not in params:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


@dataclass
class AccumulationResult:
    """Gradients of one optimizer step, the loss, and the activation bytes of the largest micro-batch."""

    grads: dict[str, torch.Tensor]
    loss: float
    activation_bytes: int
    micro_batches: int


def accumulated_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, micro_batches: int = 1) -> AccumulationResult:
    """Gradients of the mean token loss over the batch, computed in ``micro_batches`` pieces.

    x, y: (batch, seq); ``batch`` must be divisible by ``micro_batches``.  Each micro-batch's mean
    loss is weighted by its share of the batch's target tokens, so the summed gradients equal those
    of the whole batch at once (up to float rounding) while only one micro-batch's activations are alive.
    """
    if not is_int(micro_batches) or micro_batches < 1:
        raise ValueError(f"micro_batches must be a positive int, got {micro_batches!r}.")
    if len(x) % micro_batches:
        raise ValueError(
            f"A batch of {len(x)} rows does not split into {micro_batches} equal micro-batches; "
            f"choose a divisor of {len(x)}."
        )
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("No parameter requires grad: nothing to accumulate.")
    for p in params.values():
        p.grad = None
    total_tokens = int((y != -100).sum())
    loss_sum, peak = 0.0, 0
    for xs, ys in zip(x.chunk(micro_batches), y.chunk(micro_batches), strict=True):
        weight = int((ys != -100).sum()) / total_tokens
        (_, loss), nbytes = saved_activation_bytes(lambda xs=xs, ys=ys: model(xs, ys), model)
        (loss * weight).backward()
        loss_sum += loss.item() * weight
        peak = max(peak, nbytes)
    grads = {n: p.grad.detach().clone() for n, p in params.items()}
    return AccumulationResult(grads, loss_sum, peak, micro_batches)


def relative_gradient_error(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """‖grads − reference‖ / ‖reference‖ over all of ``reference``'s parameters together (name -> gradient)."""
    diff = sum(float(((grads[name] - g) ** 2).sum()) for name, g in reference.items())
    return math.sqrt(diff / sum(float((g**2).sum()) for g in reference.values()))


# ---------------------------------------------------------------- communication arithmetic


def allreduce_bytes(arch: Architecture, r: int | None, targets: Sequence[str] = ("q", "v"), grad_dtype: str = "bf16") -> int:
    """Gradient bytes that data parallelism all-reduces per step: LoRA's factors, or every weight (``r=None``)."""
    if grad_dtype not in DTYPE_BYTES:
        raise ValueError(f"Unknown dtype {grad_dtype!r}; choose from {list(DTYPE_BYTES)}.")
    n = arch.total_parameters() if r is None else lora_parameter_count(arch, r, tuple(targets))
    return int(n * DTYPE_BYTES[grad_dtype])


def ring_allreduce_seconds(nbytes: float, world_size: int, bandwidth_bytes_per_s: float) -> float:
    """Time of a bandwidth-bound ring all-reduce: every rank sends and receives ``2 (N - 1) / N`` of the buffer."""
    if world_size < 1 or bandwidth_bytes_per_s <= 0:
        raise ValueError(f"Need world_size >= 1 and a positive bandwidth, got {world_size} and {bandwidth_bytes_per_s}.")
    return 2 * (world_size - 1) / world_size * nbytes / bandwidth_bytes_per_s


def per_rank_bytes(
    arch: Architecture, r: int | None, targets: Sequence[str], world_size: int, strategy: str, weight_dtype: str = "bf16",
    gathered_blocks: int = 2,
) -> float:
    """Bytes of weights, gradients and Adam states per rank (activations excluded).

    ``ddp`` keeps a full copy on every rank. ``fsdp`` shards all of it over ``world_size`` ranks, and while a block
    runs it holds that block's weights gathered in full: ``gathered_blocks`` of them at a time (2: the running block
    and the next, gathered ahead), of which the rank's own shard is already counted. The outermost module's own
    weights (the embeddings and an untied output head) stay gathered from the forward pass to the backward, so they
    count in full too.
    ``r=None`` is full fine-tuning, in mixed precision as notebook 03 counts it (``training_memory``: 16 bytes per
    weight). LoRA's small factors and their state are in fp32 (16 bytes each: weight, gradient, two Adam moments)
    beside the base weights in ``weight_dtype``.
    """
    if strategy not in PARALLEL_STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; choose from {PARALLEL_STRATEGIES}.")
    total = arch.total_parameters()
    if r is None:
        held = training_memory(total, total, weight_dtype)["total"]
    else:
        trainable = lora_parameter_count(arch, r, tuple(targets))
        held = memory_estimate(total, trainable, weight_dtype, "fp32", "fp32")["total"] + trainable * DTYPE_BYTES["fp32"]
    if strategy == "ddp":
        return held
    block = sum(o * i for o, i in weight_shapes(arch).values()) * DTYPE_BYTES[weight_dtype]  # one block's matrices
    outer = outer_weights(arch) * DTYPE_BYTES[weight_dtype]  # the root module's: gathered for the whole step
    return held / world_size + (min(gathered_blocks, arch.n_layer) * block + outer) * (1 - 1 / world_size)


def outer_weights(arch: Architecture) -> int:
    """The weights outside the blocks that FSDP's root unit holds: the token (and learned position) embeddings, and the
    output head when it is not tied to the token embedding."""
    d = arch.d_model
    return arch.vocab_size * d * (1 if arch.tied_embeddings else 2) + (arch.n_ctx * d if arch.learned_positions else 0)


def local_bytes(t: torch.Tensor) -> int:
    """Bytes of the part of ``t`` this process holds (for a sharded DTensor: its local shard)."""
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the parameters this process holds, each shared tensor counted once."""
    return sum(local_bytes(p) for p in {id(p): p for p in model.parameters()}.values())


# ---------------------------------------------------------------- the distributed training script


@dataclass
class DistributedConfig:
    """One run of the script: which fine-tune, how it is spread over the processes, and for how long."""

    method: str = "lora-qv"
    strategy: str = "ddp"
    steps: int = 20
    batch_size: int = 16  # the global batch, split evenly over the processes
    lr: float | None = None
    r: int = 8
    alpha: float = 16
    task: str = "json"
    size: str = "tiny"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in DISTRIBUTED_METHODS:
            raise ValueError(f"Unknown method {self.method!r}; choose from {DISTRIBUTED_METHODS}.")
        if self.strategy not in PARALLEL_STRATEGIES:
            raise ValueError(f"Unknown strategy {self.strategy!r}; choose from {PARALLEL_STRATEGIES}.")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be positive, got {self.steps} and {self.batch_size}.")


@dataclass
class ByteCounter:
    """Bytes handed to collectives: all-reduce buckets (DDP's hook), and FSDP2's all-gathers (the gathered buffer)
    and reduce-scatters (the full buffer before scattering), counted by ``counting_fsdp_collectives``."""

    process_group: object = None
    bytes: int = 0
    buckets: int = 0
    per_step: list[int] = field(default_factory=list)
    all_gather_bytes: int = 0
    reduce_scatter_bytes: int = 0
    sharded_per_step: list[tuple[int, int]] = field(default_factory=list)

    def end_step(self) -> None:
        """Record this step's bytes: the totals so far minus the earlier steps'."""
        self.per_step.append(self.bytes - sum(self.per_step))
        gathered = self.all_gather_bytes - sum(g for g, _ in self.sharded_per_step)
        scattered = self.reduce_scatter_bytes - sum(s for _, s in self.sharded_per_step)
        self.sharded_per_step.append((gathered, scattered))


# The collectives FSDP2 calls, under the names torch has given them (newer names first).
FSDP_GATHERS = ("all_gather_single", "all_gather_into_tensor")
FSDP_SCATTERS = ("reduce_scatter_single", "reduce_scatter_tensor")


@contextmanager
def counting_fsdp_collectives(counter: ByteCounter) -> Iterator[None]:
    """Inside: every all-gather adds its output's bytes to ``counter``, every reduce-scatter its input's; both
    then run as usual."""

    def counted(name: str, collective: Callable) -> Callable:
        gather = name in FSDP_GATHERS

        def call(*args, **kwargs):
            if gather:
                buffer = kwargs.get("output_tensor", args[0] if args else None)
            else:
                buffer = kwargs.get("input", kwargs.get("input_tensor", args[1] if len(args) > 1 else None))
            nbytes = buffer.numel() * buffer.element_size()
            if gather:
                counter.all_gather_bytes += nbytes
            else:
                counter.reduce_scatter_bytes += nbytes
            return collective(*args, **kwargs)

        return call

    originals = {name: getattr(dist, name) for name in FSDP_GATHERS + FSDP_SCATTERS if hasattr(dist, name)}
    try:
        for name, collective in originals.items():
            setattr(dist, name, counted(name, collective))
        yield
    finally:
        for name, collective in originals.items():
            setattr(dist, name, collective)


def counting_allreduce_hook(state: ByteCounter, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Count the bucket's bytes, then do DDP's normal all-reduce (divide by the world size, then sum)."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    buffer = bucket.buffer()
    state.bytes += buffer.numel() * buffer.element_size()
    state.buckets += 1
    return allreduce_hook(state.process_group, bucket)


# DDP inspects the hook's annotations as objects (this module's are strings, from the __future__ import).
counting_allreduce_hook.__annotations__ = {"state": ByteCounter, "bucket": dist.GradBucket, "return": torch.futures.Future[torch.Tensor]}


def check_backend(backend: str) -> str:
    """``gloo`` or ``nccl``; NCCL needs CUDA GPUs."""
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"Unknown backend {backend!r}; use 'gloo' (CPUs) or 'nccl' (NVIDIA GPUs).")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("backend 'nccl' needs CUDA GPUs, and this machine has none. Use --backend gloo to train on CPUs.")
    return backend


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def wrap(model: nn.Module, cfg: DistributedConfig, device: torch.device, counter: ByteCounter) -> nn.Module:
    """DDP with the counting hook, or FSDP2 (each block, then the root) for ``strategy="fsdp"``."""
    if cfg.strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        # the mesh lives on this run's device: left to itself, FSDP2 would pick the GPU whenever one exists, even for a CPU run
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    ddp.register_comm_hook(counter, counting_allreduce_hook)
    return ddp


def all_reduced(t: torch.Tensor, distributed: bool) -> torch.Tensor:
    """The sum of ``t`` over the processes (``t`` itself alone)."""
    if distributed:
        dist.all_reduce(t)
    return t


def run(cfg: DistributedConfig, backend: str | None = None) -> dict:
    """Fine-tune the pretrained GPT for ``cfg.steps`` steps in this process group (or alone) and report.

    Every rank draws the same global batch (same seed) and trains on its own slice of it with the training
    loop's step (``lora_edu.gpt.step.TrainStep``, fp32, gradients clipped to 1); the local loss is weighted
    by the rank's share of the batch's target tokens (``loss_scale``), so the averaged gradients are exactly
    those of the global batch.  Returns JSON-ready numbers (identical on every rank).
    """
    distributed = dist.is_available() and dist.is_initialized()
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if cfg.batch_size % world_size:
        raise ValueError(
            f"The global batch of {cfg.batch_size} rows does not split evenly over {world_size} processes; "
            f"choose --batch-size as a multiple of {world_size} (e.g. {world_size * max(1, cfg.batch_size // world_size)})."
        )
    if distributed:
        backend = dist.get_backend()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if backend == "nccl" else torch.device("cpu")
    base, world = load_pretrained(cfg.size, device)
    model = prepare(base, cfg.method, r=cfg.r, alpha=cfg.alpha, seed=cfg.seed, targets=None)
    count = count_parameters(model)
    x_all, y_all = task_data(world, cfg.task, world.train_animals, base.config.n_ctx)
    check_token_ids(x_all, base.config)  # once: the steps run without the per-forward check
    counter = ByteCounter()
    replicated_bytes = parameter_bytes(model)
    net = wrap(model, cfg, device, counter) if distributed else model
    train_cfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr or DEFAULT_LR[cfg.method], seed=cfg.seed,
                            grad_clip=1.0, precision="fp32", cuda_graph=False)
    params = [p for p in model.parameters() if p.requires_grad]  # after wrapping: FSDP2 replaces them by shards
    sharded = distributed and cfg.strategy == "fsdp"  # fused AdamW is not assumed safe on FSDP2's DTensors: torch's default
    opt = make_optimizer(params, train_cfg, device, fused=False if sharded else None)
    step = TrainStep(net, opt, device, train_cfg.precision, train_cfg.grad_clip)
    gen = torch.Generator().manual_seed(train_cfg.seed)
    local = cfg.batch_size // world_size
    losses = []
    net.train()
    with counting_fsdp_collectives(counter) if sharded else nullcontext():
        for it in range(train_cfg.steps):
            set_lr(opt, lr_at(it, train_cfg))
            idx = torch.randint(0, len(x_all), (cfg.batch_size,), generator=gen)[rank * local : (rank + 1) * local]
            x, y = x_all[idx].to(device), y_all[idx].to(device)  # this rank's slice: (local, seq) each
            tokens = torch.tensor(float((y != -100).sum()), device=device)  # this rank's target tokens
            total = all_reduced(tokens.clone(), distributed)  # the global batch's: known before the forward pass
            loss = step(x, y, loss_scale=float(tokens) * world_size / float(total))  # DDP averages: the global batch's gradient
            losses.append(float(all_reduced(loss * tokens, distributed) / total))  # the global batch's mean token loss
            counter.end_step()
    opt.zero_grad(set_to_none=True)  # each step sets the gradients to None first; the last step's go too
    return {
        "method": cfg.method,
        "strategy": cfg.strategy if distributed else "single",
        "world_size": world_size,
        "backend": backend if distributed else "none",
        "steps": cfg.steps,
        "global_batch": cfg.batch_size,
        "trainable": count.trainable,
        "total": count.total,
        "trainable_fraction": count.fraction,
        "losses": losses,
        **traffic_and_memory(counter, cfg.steps, params, replicated_bytes, model),
        "config": asdict(cfg),
    }


def traffic_and_memory(counter: ByteCounter, steps: int, params: list, replicated_bytes: int, model: nn.Module) -> dict:
    """Bytes handed to collectives per step (the last step's) and buckets, and the bytes this rank holds."""
    gathered, scattered = counter.sharded_per_step[-1] if counter.sharded_per_step else (0, 0)
    return {
        "allreduce_bytes_per_step": counter.per_step[-1] if counter.per_step else 0,
        "all_gather_bytes_per_step": gathered,
        "reduce_scatter_bytes_per_step": scattered,
        "buckets_per_step": counter.buckets // steps,
        "trainable_bytes_per_rank": sum(local_bytes(p) for p in params),
        "param_bytes_replicated": replicated_bytes,
        "param_bytes_per_rank": parameter_bytes(model),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m torch.distributed.run --nproc_per_node=N -m lora_edu.scale.distributed",
        description="Data-parallel LoRA and full fine-tuning of the pretrained GPT; prints bytes all-reduced per step.",
    )
    parser.add_argument("--methods", nargs="+", default=["lora-qv", "full"], choices=DISTRIBUTED_METHODS)
    parser.add_argument("--strategies", nargs="+", default=["ddp"], choices=PARALLEL_STRATEGIES)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (rows), split over the processes")
    parser.add_argument("--size", default="tiny", help="pretrained checkpoint (default: tiny, shipped)")
    parser.add_argument("--backend", default=None, choices=["gloo", "nccl"], help="default: nccl with GPUs, else gloo")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here (rank 0)")
    return parser.parse_args(argv)


def write_json(path: Path, payload: dict) -> None:
    """Write atomically, and never over a file that is not a result of this script."""
    if path.exists():
        try:
            ours = "runs" in json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError, TypeError):
            ours = False
        if not ours:
            raise ValueError(f"--json {path} exists and is not a result of this script; choose another path (nothing was written).")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def summary_lines(payload: dict) -> list[str]:
    lines = [f"world size {payload['world_size']} ({payload['backend']})"]
    for r_ in payload["runs"]:
        lines.append(
            f"{r_['method']:>8} {r_['strategy']:>6}: trainable {r_['trainable']:,} of {r_['total']:,} | "
            + (f"all-gathered {r_['all_gather_bytes_per_step']:,}, reduce-scattered {r_['reduce_scatter_bytes_per_step']:,} bytes/step"
               if r_["strategy"] == "fsdp" else f"all-reduced {r_['allreduce_bytes_per_step']:,} bytes/step")
            + f" | params {r_['param_bytes_per_rank']:,} bytes/rank | "
            f"loss {r_['losses'][0]:.4f} -> {r_['losses'][-1]:.4f}"
        )
    ddp = {r_["method"]: r_ for r_ in payload["runs"] if r_["strategy"] == "ddp"}
    if "full" in ddp and len(ddp) > 1:
        lora = next(r_ for m, r_ in ddp.items() if m != "full")
        if ddp["full"]["allreduce_bytes_per_step"]:
            ratio = lora["allreduce_bytes_per_step"] / ddp["full"]["allreduce_bytes_per_step"]
            lines.append(
                f"bytes ratio {lora['method']} / full = {ratio:.6f}; LoRA's trainable parameters / the base's = "
                f"{lora['trainable']:,} / {ddp['full']['trainable']:,} = {lora['trainable'] / ddp['full']['trainable']:.6f}"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        backend = check_backend(args.backend or ("nccl" if torch.cuda.is_available() else "gloo"))
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}.")
        torch.set_num_threads(args.threads)
        if launched_by_torchrun():
            if backend == "nccl":
                per_node, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", 1)), torch.cuda.device_count()
                if per_node > gpus:
                    raise ValueError(f"NCCL needs one GPU per process: --nproc_per_node={per_node} but this machine has "
                                     f"{gpus} GPU(s). Use --nproc_per_node={gpus}, or --backend gloo to train on CPUs.")
                torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
            dist.init_process_group(backend)
        else:
            print("Not launched by torchrun: running a single process (world size 1). For N processes: "
                  "python -m torch.distributed.run --nproc_per_node=N -m lora_edu.scale.distributed", file=sys.stderr)
            if "fsdp" in args.strategies:
                print("fsdp needs a process group; with one process it trains like ddp.", file=sys.stderr)
        configs = [DistributedConfig(m, s, args.steps, args.batch_size, size=args.size) for s in args.strategies for m in args.methods]
        runs = [run(c, backend) for c in configs]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if dist.is_initialized():
            dist.destroy_process_group()
        return 2
    payload = {"world_size": runs[0]["world_size"], "backend": runs[0]["backend"], "torch": torch.__version__, "runs": runs}
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        print("\n".join(summary_lines(payload)))
        if args.json is not None:
            write_json(args.json, payload)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, args: Sequence[str], timeout: float = 600, tries: int = 3) -> subprocess.CompletedProcess:
    """Run this script under ``torchrun --nproc_per_node=nproc`` on 127.0.0.1, one CPU thread per process.

    Gloo is pinned to the loopback interface (``GLOO_SOCKET_IFNAME=lo`` unless set), so that every rank listens and
    connects on the same address family whatever the machine's hostname resolves to. A launch that fails without
    the script's own ``error:`` line (a port taken between ``free_port()`` and torchrun's bind, a worker killed by a
    signal) is tried again, up to ``tries`` times in all. Returns the finished process (stdout: rank 0's summary);
    raises RuntimeError with the script's error, or with what the workers printed before torchrun's report.
    """
    if not is_int(nproc) or nproc < 1:
        raise ValueError(f"nproc must be a positive int, got {nproc!r}.")
    if not is_int(tries) or tries < 1:
        raise ValueError(f"tries must be a positive int, got {tries!r}.")
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    failures = []
    for _ in range(tries):
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", "-m", "lora_edu.scale.distributed", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        if proc.returncode == 0:
            return proc
        if errors:  # the script's own error: the same on every try
            raise RuntimeError(errors[0])
        failures.append(workers_output(proc.stderr))
    raise RuntimeError(f"torchrun failed {tries} times (exit {proc.returncode}); what the workers printed:\n"
                       + "\n---\n".join(failures))


def workers_output(stderr: str, keep: int = 3000) -> str:
    """The end of what the workers printed, before torchrun's own failure report (which names only the signal)."""
    report = stderr.find("ChildFailedError")
    head = stderr[:report] if report >= 0 else stderr
    cut = head.rfind("Traceback (most recent call last)") if report >= 0 else -1
    head = head[:cut] if cut > 0 else head
    return head[-keep:] if head.strip() else stderr[-keep:]

if __name__ == "__main__":
    sys.exit(main())
