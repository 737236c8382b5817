"""The bridge to Hugging Face PEFT: import it quietly, and read its LoRA layers in lora_edu's terms.

``import_peft()`` returns the ``peft`` module with the log lines its import prints (torchao's optional
kernels, a torch deprecation notice) kept out of a lesson.  ``peft_lora_layers(peft_model)`` lists
PEFT's LoRA layers by the same module names ``lora_edu.lora_layers`` uses, with ``r`` and ``scaling``,
so a notebook can assert that both libraries adapted the same layers in the same way.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from torch import nn

from .adapter import KEY_PREFIX
from .layer import lora_layers

__all__ = ["import_peft", "lora_edu_layers", "peft_lora_layers"]

# torchao logs warnings about CUDA-only kernels it cannot load on a CPU machine, and torch about pytree enums.
NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


@contextmanager
def quiet_imports() -> Iterator[None]:
    """Silence the loggers and warnings that importing peft / transformers / torchao emits (used by ``quant`` too)."""
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def import_peft() -> ModuleType:
    """The ``peft`` module, imported without its import-time log noise (a clear error if it is missing)."""
    try:
        with quiet_imports():
            import peft
    except ImportError as exc:
        raise ImportError("This needs Hugging Face PEFT: pip install 'peft>=0.21' (it is in requirements.txt).") from exc
    return peft


def peft_lora_layers(model: nn.Module, adapter: str = "default") -> dict[str, tuple[int, float]]:
    """``{module name: (r, scaling)}`` of a PEFT model's LoRA layers for ``adapter``, named as in the base model."""
    layers = {}
    for name, m in model.named_modules():
        if isinstance(getattr(m, "r", None), dict) and adapter in m.r and hasattr(m, "lora_A"):
            layers[name.removeprefix(KEY_PREFIX)] = (m.r[adapter], m.scaling[adapter])
    return layers


def lora_edu_layers(model: nn.Module) -> dict[str, tuple[int, float]]:
    """``{module name: (r, scaling)}`` of a lora_edu model, to compare with ``peft_lora_layers``."""
    return {name: (m.r, m.scaling) for name, m in lora_layers(model).items()}
