"""lora_edu: the tested package behind the lora-edu notebooks.

The LoRA layer (``LoRALinear``) and the functions that inject, merge, disable, save and load it;
the linear algebra of the early lessons (rank, SVD), parameter arithmetic for real architectures,
a small GPT, exercises (``quiz``) and the instructor's widgets (``lora_edu.widgets``).

``import lora_edu`` needs only NumPy: the names that need PyTorch (``LoRALinear``, ``GPT``, ...) are
imported on first use, so the linear-algebra lessons start without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import quiz
from .arch import ARCHITECTURES, Architecture, lora_parameter_count, memory_estimate
from .linalg import SVDReconstructor, lora_factors, low_rank_approx, null_space, rank_by_elimination, row_echelon, svd_storage
from .notebook import setup_notebook

__version__ = "0.1.0"

# name -> submodule that defines it; loaded (with torch) on first access
_LAZY = {
    "base_fingerprint": "adapter",
    "load_adapter": "adapter",
    "read_adapter_config": "adapter",
    "save_adapter": "adapter",
    "configure_threads": "device",
    "environment_summary": "device",
    "pick_device": "device",
    "FitResult": "fit",
    "fit_lora_to_matrix": "fit",
    "GPT": "gpt",
    "GPT_SIZES": "gpt",
    "GPTConfig": "gpt",
    "LoRALinear": "lora",
    "ParameterCount": "lora",
    "count_parameters": "lora",
    "disable_lora": "lora",
    "inject_lora": "lora",
    "lora_layers": "lora",
    "mark_only_lora_trainable": "lora",
    "merge_lora": "lora",
    "remove_lora": "lora",
    "unmerge_lora": "lora",
}

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "SVDReconstructor",
    "lora_factors",
    "lora_parameter_count",
    "low_rank_approx",
    "memory_estimate",
    "null_space",
    "quiz",
    "rank_by_elimination",
    "row_echelon",
    "setup_notebook",
    "svd_storage",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'lora_edu' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
