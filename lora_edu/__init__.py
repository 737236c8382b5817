"""lora_edu: the tested package behind the lora-edu notebooks.

The LoRA layer (``LoRALinear``) and the functions that inject, merge, disable, save and load it;
the linear algebra of the early lessons (rank, SVD), parameter arithmetic for real architectures,
a small GPT, exercises (``quiz``) and the instructor's widgets (``lora_edu.widgets``).
"""

from . import quiz
from .adapter import base_fingerprint, load_adapter, read_adapter_config, save_adapter
from .arch import ARCHITECTURES, Architecture, lora_parameter_count, memory_estimate
from .device import configure_threads, environment_summary, pick_device, setup_notebook
from .fit import FitResult, fit_lora_to_matrix
from .gpt import GPT, GPT_SIZES, GPTConfig
from .linalg import SVDReconstructor, low_rank_approx, rank_by_elimination, row_echelon, svd_storage
from .lora import (
    LoRALinear,
    ParameterCount,
    count_parameters,
    disable_lora,
    inject_lora,
    lora_layers,
    mark_only_lora_trainable,
    merge_lora,
    remove_lora,
    unmerge_lora,
)

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "FitResult",
    "GPT",
    "GPTConfig",
    "GPT_SIZES",
    "LoRALinear",
    "SVDReconstructor",
    "fit_lora_to_matrix",
    "low_rank_approx",
    "lora_parameter_count",
    "memory_estimate",
    "quiz",
    "rank_by_elimination",
    "row_echelon",
    "setup_notebook",
    "svd_storage",
    "ParameterCount",
    "base_fingerprint",
    "configure_threads",
    "count_parameters",
    "disable_lora",
    "environment_summary",
    "inject_lora",
    "load_adapter",
    "lora_layers",
    "mark_only_lora_trainable",
    "merge_lora",
    "pick_device",
    "read_adapter_config",
    "remove_lora",
    "save_adapter",
    "unmerge_lora",
]
