"""One training step -- forward, backward, clip, optimizer step -- as one object, with or without a CUDA graph.

``TrainStep`` is what ``lora_edu.gpt.train`` (pretraining and every fine-tune) and ``lora_edu.scale.distributed``
call once per step::

    step = TrainStep(model, optimizer, device, precision="bf16", grad_clip=1.0)
    loss = step(x, y)              # x, y: (batch, seq) token ids; loss: () on the device, detached

The step sets the gradients to None, runs the forward pass under autocast (bf16 or fp16; none in fp32) inside
``trusted_token_ids()`` (the caller checked the ids once), backpropagates ``loss * loss_scale`` through fp16's
gradient scaler, unscales and clips the gradients, steps the optimizer and updates the scaler. Nothing in it
reads a value back to the host.

With ``cuda_graph=True`` the step is recorded once as a CUDA graph and replayed (``lora_edu.gpt.stepgraph``);
everything that needs -- the static batch buffers (``gather``), the unrecorded warm-up steps on the side
stream, recording at call ``WARMUP_STEPS``, and training on without a graph (with a warning) when recording
fails -- happens in here. Off CUDA nothing is recorded and the same bookkeeping runs step by step.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .model import trusted_token_ids
from .stepgraph import WARMUP_STEPS, StepGraph, warmup_stream

__all__ = ["AUTOCAST_DTYPE", "TrainStep"]

AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainStep:
    """``step(x, y, loss_scale=1.0) -> loss``: one optimizer step on a batch; see the module docstring.

    ``model(x, y)`` must return ``(logits, loss)``; the parameters that require grad are clipped together
    (``grad_clip`` 0: not clipped). ``precision``: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast; fp16 with
    a gradient scaler, ``self.scaler``). ``cuda_graph``: record and replay the step; the optimizer must then
    be recordable (``make_optimizer(..., recordable=True)``) and ``loss_scale`` stay 1.
    """

    graph_type: type[StepGraph] = StepGraph  # what records and replays; gpu_budget stands in one that launches nothing

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, precision: str = "fp32",
                 grad_clip: float = 1.0, cuda_graph: bool = False) -> None:
        self.model, self.optimizer, self.device = model, optimizer, device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.precision, self.grad_clip, self.cuda_graph = precision, grad_clip, cuda_graph
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.graph = self.graph_type(self.static_step, device) if cuda_graph else None  # None again if recording fails
        self.static: tuple[torch.Tensor, torch.Tensor] | None = None  # the recorded step's batch buffers
        self.calls = 0

    @property
    def recorded(self) -> bool:
        """Whether the steps past the warm-up are replays of one recorded CUDA graph."""
        return self.graph is not None and self.graph.recorded

    def gather(self, inputs: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch: inputs, targets (n, seq) and rows (batch,) -> x, y (batch, seq).

        With a CUDA graph the rows are copied into the step's static buffers (a recorded step reads those).
        """
        if self.graph is None:
            return inputs[rows], targets[rows]
        if self.static is None:
            self.static = inputs.new_empty((len(rows), inputs.shape[1])), targets.new_empty((len(rows), targets.shape[1]))
        x, y = self.static
        torch.index_select(inputs, 0, rows, out=x)
        torch.index_select(targets, 0, rows, out=y)
        return x, y

    def __call__(self, x: torch.Tensor, y: torch.Tensor, loss_scale: float = 1.0) -> torch.Tensor:
        """One step on x, y (batch, seq); backpropagates ``loss * loss_scale``; returns the loss (), detached."""
        if self.graph is None:
            self.optimizer.zero_grad(set_to_none=True)
            return self.forward_backward_update(x, y, loss_scale)
        if loss_scale != 1.0:
            raise ValueError(f"A step recorded as a CUDA graph replays with a loss scale of 1, got {loss_scale}; "
                             "build the TrainStep with cuda_graph=False to scale the loss.")
        return self.graphed(x, y)

    def forward_backward_update(self, x: torch.Tensor, y: torch.Tensor, loss_scale: float = 1.0) -> torch.Tensor:
        """Forward (autocast), backward through the scaler, unscale and clip, optimizer step: loss (), detached."""
        with torch.autocast(device_type=self.device.type, dtype=AUTOCAST_DTYPE.get(self.precision, torch.float32),
                            enabled=self.precision != "fp32", cache_enabled=not self.cuda_graph):  # a recorded step caches nothing
            with trusted_token_ids():
                _, loss = self.model(x, y)
        self.scaler.scale(loss if loss_scale == 1.0 else loss * loss_scale).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def static_step(self) -> torch.Tensor:
        """The step on the static buffers, as it is recorded: the backward writes fresh gradients at every replay."""
        self.optimizer.zero_grad(set_to_none=True)
        return self.forward_backward_update(*self.static)

    def graphed(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Warm-up steps on the side stream, then record once, then replay (training on plainly if recording fails)."""
        if self.static is None or x is not self.static[0]:
            x, y = self.gather(x, y, torch.arange(len(x), device=x.device))
        call, self.calls = self.calls, self.calls + 1
        if call < WARMUP_STEPS:
            with warmup_stream(self.device):
                return self.static_step()
        if call == WARMUP_STEPS:
            self.record()
            if self.graph is None:
                return self(x, y)
        return self.graph.replay()

    def record(self) -> None:
        """Record the step; if that fails, warn and drop the graph (this run and the session train without one)."""
        failed = self.graph.record()
        if failed is not None:
            warnings.warn(f"Could not record the training step as a CUDA graph ({failed}); this run and the rest of "
                          "the session train without CUDA graphs.", stacklevel=4)
            self.graph = None

    def release(self) -> None:
        """After training with a graph: drop the recorded step's gradients, so that its memory pool goes with the graph."""
        if self.graph is not None:
            self.optimizer.zero_grad(set_to_none=True)
