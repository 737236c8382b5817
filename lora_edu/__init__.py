"""lora_edu: the tested package behind the lora-edu notebooks.

The LoRA layer (``LoRALinear``) and the functions that inject, merge, disable, save and load it;
the linear algebra of the early lessons (rank, SVD), parameter arithmetic for real architectures,
a small GPT, exercises (``quiz``) and the instructor's widgets (``lora_edu.course.widgets``).

``import lora_edu`` needs only NumPy: the names that need PyTorch (``LoRALinear``, ``GPT``, ...) are
imported on first use, so the linear-algebra lessons start without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .course import quiz
from .course.notebook import setup_notebook
from .maths.arch import ARCHITECTURES, Architecture, lora_parameter_count, memory_estimate
from .maths.linalg import SVDReconstructor, lora_factors, low_rank_approx, null_space, rank_by_elimination, row_echelon, svd_storage

__version__ = "0.1.0"

# name -> submodule that defines it; loaded (with torch) on first access
_LAZY = {
    "base_fingerprint": "lora.adapter",
    "load_adapter": "lora.adapter",
    "read_adapter_config": "lora.adapter",
    "save_adapter": "lora.adapter",
    "configure_threads": "gpt.device",
    "environment_summary": "gpt.device",
    "pick_device": "gpt.device",
    "FitResult": "lora.fit",
    "fit_lora_to_matrix": "lora.fit",
    "GPT": "gpt.model",
    "GPT_SIZES": "gpt.model",
    "GPTConfig": "gpt.model",
    "LoRALinear": "lora.layer",
    "ParameterCount": "lora.layer",
    "count_parameters": "lora.layer",
    "disable_lora": "lora.layer",
    "inject_lora": "lora.layer",
    "lora_layers": "lora.layer",
    "mark_only_lora_trainable": "lora.layer",
    "merge_lora": "lora.layer",
    "remove_lora": "lora.layer",
    "unmerge_lora": "lora.layer",
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
