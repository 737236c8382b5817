"""Find device bugs on a CPU: flag every op whose tensor arguments live on more than one device.

A tensor made without ``device=`` (``torch.zeros(d, r)``) lands on the CPU. On a CPU-only machine
nothing fails; on a GPU the first op that meets a CUDA weight does. Put the weights on the ``meta``
device (no memory, no data) and run the code under ``check_devices()``:

>>> with check_devices():
...     dora_weight(w_meta, torch.zeros(d_out, r), a, m)   # raises DeviceMixError: meta and cpu

Plain PyTorch is not enough for this: ``meta + cpu`` raises, but ``meta @ cpu`` silently returns a
meta tensor. Explicit transfers (``.to``, ``.cpu``, ``.cuda``, ``copy_``) are allowed, and so are what
PyTorch itself accepts beside tensors on any device: 0-dimensional CPU tensors, and CPU index tensors in
``x[idx]`` and ``x[idx] = y``.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode, resolve_name

__all__ = ["DeviceMix", "DeviceMixError", "DeviceMixMode", "check_devices"]

# Moving data between devices on purpose, and what nn.Module.to() calls to do it (a check, a .data swap).
TRANSFERS = {"to", "cpu", "cuda", "mps", "copy_", "new_tensor", "type", "_has_compatible_shallow_copy_type", "__set__", "swap_tensors"}
INDEXING = {"__getitem__", "__setitem__"}  # x[idx], x[idx] = y: a CPU index tensor is fine on any device
TORCH_DIR = os.path.dirname(torch.__file__)


class DeviceMixError(RuntimeError):
    """An op met tensors on more than one device."""


@dataclass(frozen=True)
class DeviceMix:
    """One op that mixed devices: its name, its tensor arguments (device, shape, dtype) and the calling line."""

    op: str
    tensors: tuple[str, ...]
    where: str

    def __str__(self) -> str:
        return (
            f"{self.op} got tensors on more than one device: {', '.join(self.tensors)} (at {self.where}). "
            "Create new tensors with device=weight.device (and dtype=weight.dtype), or move them with .to(weight.device)."
        )


def tensors_in(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a (nested) tuple, list or dict of arguments."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from tensors_in(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from tensors_in(item)


def checked_tensors(func: Any, args: tuple, kwargs: dict, allow_cpu_scalars: bool) -> list[torch.Tensor]:
    """The tensor arguments whose devices must agree (transfers, CPU scalars and CPU indices left out)."""
    name = getattr(func, "__name__", "")
    if name in TRANSFERS:
        return []
    if name in INDEXING and len(args) > 1:
        args = (args[0], *[t for t in tensors_in(args[1]) if t.device.type != "cpu"], *args[2:])
    tensors = list(tensors_in((args, kwargs)))
    return [t for t in tensors if not (allow_cpu_scalars and t.dim() == 0 and t.device.type == "cpu")]


def caller_line(skip: tuple[str, ...] = ()) -> str:
    """file:line of the innermost frame outside torch, this module and the files in ``skip`` (where the op was written)."""
    for frame in reversed(traceback.extract_stack()[:-1]):
        if frame.filename != __file__ and frame.filename not in skip and not frame.filename.startswith(TORCH_DIR):
            return f"{os.path.basename(frame.filename)}:{frame.lineno}"
    return "?"


def op_name(func: Any) -> str:
    try:
        return resolve_name(func) or repr(func)
    except Exception:  # resolve_name can fail on some builtins; a name is only for the message
        return repr(func)


class DeviceMixMode(TorchFunctionMode):
    """A ``TorchFunctionMode`` that raises ``DeviceMixError`` (or records a ``DeviceMix``) for each mixing op.

    Args:
        raise_on_mix: raise at the first mixing op (default); else record every one in ``self.mixes``.
        allow_cpu_scalars: accept 0-dimensional CPU tensors beside other devices, as PyTorch does.
    """

    def __init__(self, raise_on_mix: bool = True, allow_cpu_scalars: bool = True) -> None:
        super().__init__()
        self.raise_on_mix = raise_on_mix
        self.allow_cpu_scalars = allow_cpu_scalars
        self.mixes: list[DeviceMix] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = checked_tensors(func, args, kwargs, self.allow_cpu_scalars)
        if len({t.device for t in tensors}) > 1:
            described = tuple(f"{t.device} {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" for t in tensors)
            mix = DeviceMix(op_name(func), described, caller_line())
            if self.raise_on_mix:
                raise DeviceMixError(str(mix))
            self.mixes.append(mix)
        return func(*args, **kwargs)


@contextmanager
def check_devices(raise_on_mix: bool = True, allow_cpu_scalars: bool = True) -> Iterator[DeviceMixMode]:
    """Run a block under ``DeviceMixMode``; yields the mode, whose ``mixes`` lists what was found.

    >>> with check_devices(raise_on_mix=False) as found:
    ...     finetune(...)
    >>> assert not found.mixes, "\\n".join(map(str, found.mixes))
    """
    mode = DeviceMixMode(raise_on_mix, allow_cpu_scalars)
    with mode:
        yield mode
