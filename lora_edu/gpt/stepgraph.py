"""A whole training step recorded once as a CUDA graph and replayed, so that the host launches it in one call.

A step of the ``gpu`` GPT dispatches about 1,400 small ops (``make gpu-budget`` counts them); on an H100
the host's time to launch them is most of the step, and the GPU waits. A CUDA graph records the step's
kernels once and replays them with one launch. What recording needs, and how ``lora_edu.gpt.step.TrainStep``
(with ``lora_edu.gpt.train``) meets it:

- nothing in the step reads a value back to the host (``lora_edu.devtools.synccheck``; token ids are checked once
  per run, before the first step);
- the step reads only *static* buffers: each batch is copied into the same two tensors, and the learning
  rate is a tensor on the device that the schedule fills before each step (a float would be recorded once);
- the optimizer is recordable: fused AdamW with ``capturable=True`` keeps its step counts on the device;
- autocast does not cache casts (``cache_enabled=False``); fp16's gradient scaler is recordable too: its scale,
  overflow flag and growth counter are tensors on the device, and the fused AdamW skips a step on overflow there;
- a few steps run unrecorded first, on a side stream (libraries initialise lazily on first use).

They are opt-in (``TrainConfig(cuda_graph=True)`` or ``LORA_EDU_CUDA_GRAPHS=1``) until ``make gpu-check`` has
measured them. If recording fails, training goes on without a graph and says why, and the rest of the session
trains without graphs (a failed recording can leave one step's memory with the allocator).
Off CUDA nothing is recorded: ``replay()`` runs the step itself, on the same buffers and in the same order,
which is how ``tests/test_stepgraph.py`` checks the bookkeeping on a CPU (``TrainConfig(gpu_path_on_cpu=True)``).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator

import torch

__all__ = ["StepGraph", "WARMUP_STEPS", "first_cause", "graphs_requested", "warmup_stream"]

WARMUP_STEPS = 3  # unrecorded steps before recording: cuBLAS, autocast and autograd set themselves up
_FAILED: list[str] = []  # why recording failed, once: the rest of the session trains without graphs
_SIDE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}  # one per device: cuBLAS keeps a workspace per stream


def graphs_requested(flag: bool | None) -> bool:
    """``TrainConfig.cuda_graph``, or when it is None the environment: ``LORA_EDU_CUDA_GRAPHS=1``."""
    return flag if flag is not None else os.environ.get("LORA_EDU_CUDA_GRAPHS", "") == "1"


def side_stream(device: torch.device) -> torch.cuda.Stream:
    if device not in _SIDE_STREAMS:
        _SIDE_STREAMS[device] = torch.cuda.Stream(device)
    return _SIDE_STREAMS[device]


@contextlib.contextmanager
def warmup_stream(device: torch.device) -> Iterator[None]:
    """Run the unrecorded first steps on the side stream that records, as CUDA graphs want (no-op off CUDA).

    The optimizer's warning that it was built ``capturable`` but steps unrecorded is expected here and silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*capturable=True.*")
        if device.type != "cuda":
            yield
            return
        side, current = side_stream(device), torch.cuda.current_stream(device)
        side.wait_stream(current)
        try:
            with torch.cuda.device(device), torch.cuda.stream(side):
                yield
        finally:  # also when the stop button interrupts a step: later work on the default stream waits for it
            current.wait_stream(side)


class StepGraph:
    """``step()`` -- one training step that reads only static buffers and returns its loss -- recorded and replayed."""

    def __init__(self, step: Callable[[], torch.Tensor], device: torch.device) -> None:
        self.step, self.device = step, device
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss: torch.Tensor | None = None  # the recorded step's loss: replays overwrite it in place

    def record(self) -> str | None:
        """Record the step (it does not run); None when recorded, else why it failed. Off CUDA: nothing to record."""
        if _FAILED:
            return f"an earlier recording in this session failed ({_FAILED[0]})"
        if self.device.type != "cuda":
            return None
        graph, pool = torch.cuda.CUDAGraph(), torch.cuda.graph_pool_handle()
        before = torch.cuda.current_stream(self.device)
        try:
            with torch.cuda.device(self.device), torch.cuda.graph(graph, pool=pool, stream=side_stream(self.device)):
                self.loss = self.step()
        except Exception as exc:  # noqa: BLE001 - any recording error means: train on without a graph
            self.loss = None
            torch.cuda.set_stream(before)  # a failed capture_end leaves the capture stream current
            with contextlib.suppress(Exception):  # and may not have ended the allocator's routing to the graph's pool
                torch._C._cuda_endAllocateToPool(before.device_index, pool)
            _FAILED.append(first_cause(exc))
            return _FAILED[0]
        self.graph = graph
        return None

    @property
    def recorded(self) -> bool:
        return self.graph is not None

    def replay(self) -> torch.Tensor:
        """Run the step: one launch of the recorded graph (off CUDA: the step itself). Returns its loss."""
        if self.graph is None:
            return self.step()
        with torch.cuda.device(self.device):
            self.graph.replay()
        return self.loss


def first_cause(exc: BaseException) -> str:
    """The error that started it (a failed capture raises again on the way out), on one line."""
    seen = {id(exc)}
    while exc.__context__ is not None and id(exc.__context__) not in seen:
        exc = exc.__context__
        seen.add(id(exc))
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
