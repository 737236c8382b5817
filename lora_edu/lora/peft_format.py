"""PEFT's ``adapter_config.json``: what its fields mean, checked, and matched against a model as PEFT does.

PEFT selects the layers of an adapter with ``target_modules``: a list of full module names or name
*suffixes* (``"q_proj"`` selects ``"blocks.0.attn.q_proj"``), or one regular expression matched against
the whole name; ``exclude_modules`` (same rules) and ``layers_to_transform`` / ``layers_pattern`` narrow
the choice.  ``rank_pattern`` and ``alpha_pattern`` map patterns to a layer's own ``r`` and ``lora_alpha``:
the first key ``k`` (in file order) for which ``re.match(rf"(.*\\.)?({k})$", name)`` holds wins.
``plan_layers`` applies exactly these rules and returns ``{name: (r, alpha)}``; ``check_config``
turns anything lora_edu cannot represent into a ``ValueError`` that names the field.

``fan_in_fan_out`` says how the base layers store W: True for GPT-2's ``Conv1D`` (d_in, d_out), False for
``nn.Linear`` (d_out, d_in).  The factors are saved as A (r, d_in), B (d_out, r) either way; the flag only
tells a merge whether to transpose B A.  PEFT decides it by the layer's type, and when the config says
otherwise it corrects the flag with a warning; ``fan_in_fan_out_mismatches`` lets ``load_adapter`` do
the same (nothing is ever transposed because of the flag).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable

from torch import nn

from ..checks import is_int, is_number
from .layer import (
    LINEAR_KINDS,
    LoRALinear,
    check_lora_hyperparameters,
    check_untied,
    is_linear,
    linear_shape,
    lora_layers,
    match_targets,
    max_rank,
)

__all__ = ["PEFT_TASK_TYPES", "check_config", "fan_in_fan_out_mismatches", "plan_layers", "warn_fan_in_fan_out"]

PEFT_TASK_TYPES = ("SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION")
# Fields that never change what the saved factors compute (bookkeeping, or how PEFT initialised them).
BENIGN = {
    "peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode", "peft_version", "auto_mapping",
    "megatron_core", "qalora_group_size", "loftq_config", "eva_config", "corda_config", "lora_ga_config",
    "ensure_weight_tying", "r", "lora_alpha", "lora_dropout", "target_modules", "rank_pattern", "alpha_pattern",
    "use_rslora", "init_lora_weights", "bias", "exclude_modules", "layers_to_transform", "layers_pattern", "lora_edu",
    "fan_in_fan_out",
}  # fmt: skip
# Initialisations that leave the base weights alone (PiSSA, OLoRA, LoftQ, CorDA, LoRA-GA rewrite them).
SAFE_INITS = (True, False, "gaussian", "eva")


def bad(field: str, what: str) -> ValueError:
    return ValueError(f"adapter_config.json: {field} {what}")


def check_regex(field: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise bad(field, f"holds {pattern!r}, which is not a valid regular expression ({exc}).") from exc


def check_names(field: str, value: object, allow_none: bool) -> None:
    """A regex string or a non-empty list of name strings (or null where allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, str):
        check_regex(field, value)
    elif not (isinstance(value, list) and value and all(isinstance(t, str) and t for t in value)):
        raise bad(field, f"must be a list of module names or suffixes, or one regex string; got {value!r}.")


def check_patterns(config: dict, field: str, numbers: bool) -> dict:
    value = config.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(field, f"must be an object mapping name patterns to values, got {value!r}.")
    for key, v in value.items():
        check_regex(f"{field} key", key)
        ok = (is_number(v) and math.isfinite(v) and v > 0) if numbers else (is_int(v) and v >= 1)
        if not ok:
            kind = "a positive finite number" if numbers else "a positive integer"
            raise bad(f"{field}[{key!r}]", f"must be {kind}, got {v!r}.")
    return value


def check_unsupported(config: dict) -> None:
    """Fields whose non-default value changes what the adapter computes in a way lora_edu does not model."""
    if config.get("use_dora"):
        raise bad("use_dora", "is true: a DoRA adapter (magnitude vector) cannot be loaded into lora_edu's LoRALinear.")
    if config.get("bias", "none") != "none":
        raise bad("bias", f"is {config['bias']!r}: the adapter changes the base layers' biases; lora_edu loads bias='none' only.")
    if not isinstance(config.get("fan_in_fan_out", False), bool):
        raise bad("fan_in_fan_out", f"must be true (Conv1D layers, as in GPT-2) or false (nn.Linear), got {config['fan_in_fan_out']!r}.")
    init = config.get("init_lora_weights", True)
    if not any(init is s or (isinstance(s, str) and init == s) for s in SAFE_INITS):
        raise bad(
            "init_lora_weights",
            f"is {init!r}: that initialisation rewrites the base weights, so the factors only fit that rewritten base. "
            "Convert the adapter to plain LoRA with PEFT (save_pretrained(..., path_initial_model_for_weight_conversion=...)).",
        )
    for field, value in config.items():
        if field not in BENIGN and value not in (None, False, "", {}, []):
            raise bad(field, f"is {value!r}: lora_edu cannot represent this PEFT feature; load the adapter with PEFT instead.")


def check_config(config: object) -> dict:
    """Validate a parsed ``adapter_config.json`` (types, values, features) and return it; nothing is changed."""
    if not isinstance(config, dict):
        raise ValueError(f"adapter_config.json must hold a JSON object, got {config!r}; the file is corrupt.")
    if config.get("peft_type") != "LORA":
        raise bad("peft_type", f"is {config.get('peft_type')!r}; lora_edu loads LoRA adapters (peft_type 'LORA') only.")
    for field in ("r", "lora_alpha", "target_modules"):
        if field not in config:
            raise bad(field, "is missing; this is not a complete LoRA adapter config.")
    if not is_int(config["r"]) or config["r"] < 1:
        raise bad("r", f"must be a positive integer, got {config['r']!r} ({type(config['r']).__name__}).")
    alpha = config["lora_alpha"]
    if not is_number(alpha) or not (math.isfinite(alpha) and alpha > 0):
        raise bad("lora_alpha", f"must be a positive finite number, got {alpha!r} ({type(alpha).__name__}).")
    dropout = config.get("lora_dropout") or 0.0
    if not is_number(dropout) or not 0.0 <= dropout < 1.0:
        raise bad("lora_dropout", f"must be a probability in [0, 1), got {dropout!r}.")
    if not isinstance(config.get("use_rslora", False), bool):
        raise bad("use_rslora", f"must be true or false, got {config['use_rslora']!r}.")
    task = config.get("task_type")
    if task is not None and task not in PEFT_TASK_TYPES:
        raise bad("task_type", f"is {task!r}; PEFT knows null or one of {PEFT_TASK_TYPES}.")
    check_names("target_modules", config["target_modules"], allow_none=False)
    check_names("exclude_modules", config.get("exclude_modules"), allow_none=True)
    layers = config.get("layers_to_transform")
    if layers is not None and not (is_int(layers) or (isinstance(layers, list) and all(is_int(i) for i in layers))):
        raise bad("layers_to_transform", f"must be a layer index or a list of them, got {layers!r}.")
    pattern = config.get("layers_pattern")
    if pattern is not None and not (isinstance(pattern, (str, list)) and all(isinstance(p, str) for p in pattern)):
        raise bad("layers_pattern", f"must be a string or a list of strings, got {pattern!r}.")
    check_patterns(config, "rank_pattern", numbers=False)
    check_patterns(config, "alpha_pattern", numbers=True)
    check_unsupported(config)
    return config


def name_in(names: str | list[str], name: str) -> bool:
    """PEFT's rule: a regex string must match the whole name; a list entry must equal it or be a dotted suffix."""
    if isinstance(names, str):
        return re.fullmatch(names, name) is not None
    return name in names or any(name.endswith(f".{t}") for t in names)


def layer_index(name: str, layers_pattern: str | list[str] | None) -> int | None:
    """The first numbered segment of ``name`` (after a ``layers_pattern`` when given), as PEFT reads it."""
    if not layers_pattern:
        match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", name)
    else:
        match = None
        for pattern in [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern:
            match = re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", name)
            if match:
                break
    return int(match["idx"]) if match else None


def selected(config: dict, name: str) -> bool:
    """Whether PEFT's ``check_target_module_exists`` selects module ``name`` for this config."""
    exclude = config.get("exclude_modules")
    if exclude and name_in(exclude, name):
        return False
    targets = config["target_modules"]
    if isinstance(targets, str) or name in targets:
        return name_in(targets, name)
    if not name_in(targets, name):
        return False
    layers = config.get("layers_to_transform")
    if layers is None or layers == []:
        return True
    idx = layer_index(name, config.get("layers_pattern"))
    return idx is not None and (idx == layers if is_int(layers) else idx in layers)


def pattern_value(patterns: dict, name: str, default: float) -> float:
    """PEFT's ``get_pattern_key``: the value of the first key that matches the end of ``name``."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def candidate_modules(model: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    """Named modules as PEFT sees the base model: a LoRALinear stands for its Linear, its insides are hidden."""
    inside = tuple(f"{n}." for n in lora_layers(model))
    return ((n, m) for n, m in model.named_modules() if n and not n.startswith(inside))


def plan_layers(model: nn.Module, config: dict) -> dict[str, tuple[int, float]]:
    """``{module name: (r, alpha)}`` for the layers a checked config selects in ``model``, in model order.

    Raises ``ValueError`` naming the field when nothing is selected, a selected module is not an
    ``nn.Linear``, or a layer's rank or alpha cannot work; the model is not changed.
    """
    targets = config["target_modules"]
    if isinstance(targets, str) and targets.lower() == "all-linear":
        names = match_targets(model, "all-linear")
    else:
        modules = list(candidate_modules(model))
        names = [n for n, _ in modules if selected(config, n)]
        if not names:
            raise bad("target_modules", f"{targets!r} selects no module of this {type(model).__name__}: wrong base model?")
        kinds = {n: m for n, m in modules}
        wrong = [n for n in names if not (is_linear(kinds[n]) or isinstance(kinds[n], LoRALinear))]
        if wrong:
            raise bad(
                "target_modules",
                f"{targets!r} selects {wrong[0]!r}, a {type(kinds[wrong[0]]).__name__}; lora_edu wraps {LINEAR_KINDS} only "
                "(an adapter for embeddings or nn.Conv1d/Conv2d convolutions needs PEFT itself).",
            )
    plan = {}
    for name in names:
        r = pattern_value(config.get("rank_pattern") or {}, name, config["r"])
        alpha = pattern_value(config.get("alpha_pattern") or {}, name, config["lora_alpha"])
        check_lora_hyperparameters(r, alpha, config.get("lora_dropout") or 0.0)
        module = model.get_submodule(name)
        if r > max_rank(module):
            raise bad(
                "rank_pattern" if r != config["r"] else "r",
                f"gives {name!r} rank {r}, above min(d_in, d_out) = {max_rank(module)}: "
                "the adapter was made for a bigger model.",
            )
        if not isinstance(module, LoRALinear):
            check_untied(model, name)
        plan[name] = (r, alpha)
    return plan


def fan_in_fan_out_mismatches(model: nn.Module, config: dict, names: Iterable[str]) -> list[str]:
    """The layers among ``names`` whose storage order disagrees with the config's ``fan_in_fan_out``."""
    flag = bool(config.get("fan_in_fan_out", False))
    return [n for n in names if linear_shape(model.get_submodule(n)).fan_in_fan_out != flag]


def warn_fan_in_fan_out(model: nn.Module, config: dict, names: Iterable[str]) -> None:
    """Warn, as PEFT does, when ``fan_in_fan_out`` disagrees with a selected layer's type; the layer's type wins.

    PEFT sets the flag to True for a ``Conv1D`` target and to False for an ``nn.Linear`` one, warning each time it
    corrects the config. The saved factors have the same shapes either way, so the correction changes nothing but
    how a merge adds B A: nothing is transposed because of the flag.
    """
    wrong = fan_in_fan_out_mismatches(model, config, names)
    if not wrong:
        return
    flag = bool(config.get("fan_in_fan_out", False))
    kind = "an nn.Linear (weight stored (d_out, d_in))" if flag else "a transformers Conv1D (weight stored (d_in, d_out))"
    more = f" and {len(wrong) - 1} more layer(s)" if len(wrong) > 1 else ""
    warnings.warn(
        f"adapter_config.json: fan_in_fan_out is {str(flag).lower()} but {wrong[0]!r}{more} is {kind}; "
        f"using fan_in_fan_out={str(not flag).lower()} for it, as PEFT does. The factors A (r, d_in) and B (d_out, r) "
        "are loaded as saved.",
        UserWarning,
        stacklevel=3,
    )
