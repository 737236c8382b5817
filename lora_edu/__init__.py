"""lora_edu: the tested package behind the lora-edu notebooks.

The LoRA layer (``LoRALinear``) and the functions that inject, merge, disable, save and load it.
"""

from .adapter import base_fingerprint, load_adapter, read_adapter_config, save_adapter
from .device import configure_threads, environment_summary, pick_device
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
    "LoRALinear",
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
