"""A whole training step recorded once as a CUDA graph and replayed, so that the host launches it in one call.

A step of the ``gpu`` GPT dispatches about 1,400 small ops (``make gpu-budget`` counts them); on an H100
the host's time to launch them is most of the step, and the GPU waits. A CUDA graph records the step's
kernels once and replays them with one launch. What recording needs, and how ``lora_edu.train`` meets it:

- nothing in the step reads a value back to the host (``lora_edu.synccheck``; token ids are checked once
  per run, before the first step);
- the step reads only *static* buffers: each batch is copied into the same two tensors, and the learning
  rate is a tensor on the device that the schedule fills before each step (a float would be recorded once);
- the optimizer is recordable: fused AdamW with ``capturable=True`` keeps its step counts on the device;
- autocast does not cache casts (``cache_enabled=False``), and fp16's gradient scaler, which keeps Python
  state between steps, is not recorded: graphs are used with bf16 or fp32 only;
- a few steps run unrecorded first, on a side stream (libraries initialise lazily on first use).

They are opt-in (``TrainConfig(cuda_graph=True)`` or ``LORA_EDU_CUDA_GRAPHS=1``) until ``make gpu-check`` has
measured them. If recording fails, training goes on without a graph and says why.
Off CUDA nothing is recorded: ``replay()`` runs the step itself, on the same buffers and in the same order,
which is how ``tests/test_stepgraph.py`` checks the bookkeeping on a CPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch

__all__ = ["GRAPH_DEVICES", "StepGraph", "WARMUP_STEPS", "graphs_requested", "warmup_stream"]

GRAPH_DEVICES = {"cuda"}  # where a graph is recorded; the tests add "cpu" (nothing recorded, same bookkeeping)
WARMUP_STEPS = 3  # unrecorded steps before recording: cuBLAS, autocast and autograd set themselves up


def graphs_requested(flag: bool | None) -> bool:
    """``TrainConfig.cuda_graph``, or when it is None the environment: ``LORA_EDU_CUDA_GRAPHS=1``."""
    return flag if flag is not None else os.environ.get("LORA_EDU_CUDA_GRAPHS", "") == "1"


@contextlib.contextmanager
def warmup_stream(device: torch.device) -> Iterator[None]:
    """Run the unrecorded first steps on a side stream, as CUDA graph recording wants (no-op off CUDA)."""
    if device.type != "cuda":
        yield
        return
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        yield
    torch.cuda.current_stream(device).wait_stream(side)


class StepGraph:
    """``step()`` -- one training step that reads only static buffers and returns its loss -- recorded and replayed."""

    def __init__(self, step: Callable[[], torch.Tensor], device: torch.device) -> None:
        self.step, self.device = step, device
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss: torch.Tensor | None = None  # the recorded step's loss: replays overwrite it in place

    def record(self) -> str | None:
        """Record the step (it does not run); None when recorded, else why it failed. Off CUDA: nothing to record."""
        if self.device.type != "cuda":
            return None
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.loss = self.step()
        except Exception as exc:  # noqa: BLE001 - any recording error means: train on without a graph
            self.loss = None
            return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self.graph = graph
        return None

    @property
    def recorded(self) -> bool:
        return self.graph is not None

    def replay(self) -> torch.Tensor:
        """Run the step: one launch of the recorded graph (off CUDA: the step itself). Returns its loss."""
        if self.graph is None:
            return self.step()
        self.graph.replay()
        return self.loss
