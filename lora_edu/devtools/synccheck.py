"""Find host syncs on a CPU: record every op that makes the host wait for the device's result.

On a GPU, ``loss.item()``, ``bool(mask.any())``, ``int(t)`` or ``t.nonzero()`` stop the Python thread
until the GPU has finished everything queued before them; inside a training step that serialises the
host's launches and the GPU's work (and it makes a step impossible to record as a CUDA graph). On a
CPU the same ops run, so a ``TorchDispatchMode`` sees them there:

>>> with record_host_syncs() as syncs:
...     train(model, x, y, TrainConfig(steps=12))
>>> syncs.ops          # e.g. ['aten._local_scalar_dense.default', ...] and where each was called
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from torch.utils._python_dispatch import TorchDispatchMode

from .devicecheck import caller_line

__all__ = ["HostSync", "HostSyncMode", "SYNC_OPS", "record_host_syncs"]

# Ops whose result's size or value the host needs: .item()/bool()/int()/float()/.tolist() all end in
# _local_scalar_dense; the others return a tensor whose shape depends on the data.
SYNC_OPS = {
    "aten._local_scalar_dense.default",
    "aten.nonzero.default",
    "aten.masked_select.default",
    "aten.unique_consecutive.default",
    "aten._unique2.default",
    "aten.repeat_interleave.Tensor",
}


@dataclass(frozen=True)
class HostSync:
    """One op that waits for the device, and the line of our code that called it."""

    op: str
    where: str

    def __str__(self) -> str:
        return f"{self.op} at {self.where}"


@dataclass
class HostSyncMode(TorchDispatchMode):
    """Records (never blocks) every op in ``SYNC_OPS`` in ``self.syncs``."""

    syncs: list[HostSync] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func) in SYNC_OPS:
            self.syncs.append(HostSync(str(func), caller_line(skip=(__file__,))))
        return func(*args, **(kwargs or {}))

    @property
    def ops(self) -> list[str]:
        return [s.op for s in self.syncs]


@contextmanager
def record_host_syncs() -> Iterator[HostSyncMode]:
    """Run a block under ``HostSyncMode``; yields the mode, whose ``syncs`` lists each sync and its line."""
    mode = HostSyncMode()
    with mode:
        yield mode
