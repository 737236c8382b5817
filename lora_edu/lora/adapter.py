"""Saving and loading adapters in PEFT's on-disk format, in both directions.

A directory holds ``adapter_config.json`` and ``adapter_model.safetensors`` with keys
``base_model.model.<module path>.lora_A.weight`` / ``.lora_B.weight``, as PEFT writes them, so
``PeftModel.from_pretrained(model, directory)`` opens what ``save_adapter`` writes and ``load_adapter``
opens what PEFT's ``save_pretrained`` writes (PEFT's rules for ``target_modules``, ``rank_pattern``,
``alpha_pattern`` and ``use_rslora``; see ``lora_edu.lora.peft_format``).  lora_edu's own record, a
fingerprint of the base weights, lives in the safetensors header, where PEFT ignores it quietly.
Nothing is ever read with pickle, and a save never replaces anything but an adapter directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .atomic_dir import check_replaceable, replace_directory
from .layer import LoRALinear, linear_shape, lora_layers, set_submodule
from .peft_format import PEFT_TASK_TYPES, check_config, plan_layers, warn_fan_in_fan_out

__all__ = ["base_fingerprint", "check_save_path", "load_adapter", "read_adapter_config", "save_adapter"]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
KEPT = ("README.md",)  # PEFT's model card: carried over when an adapter directory is replaced
KEY_PREFIX = "base_model.model."
META_FINGERPRINT, META_DTYPES = "lora_edu.base_fingerprint", "lora_edu.base_dtypes"


def base_fingerprint(model: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of the base model's parameter names, shapes, dtypes and values.

    LoRA factors are left out and ``x.base.weight`` counts as ``x.weight``, so the fingerprint of a
    model is the same before and after ``inject_lora``.  A merged model has other base weights.
    """
    h = hashlib.sha256()
    for name, p in base_parameters(model):
        t = p.detach().to("cpu").contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def base_parameters(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    params = sorted(model.named_parameters(remove_duplicate=True))
    return [(n.replace(".base.", "."), p) for n, p in params if not n.endswith(("lora_A", "lora_B"))]


def base_dtypes(model: nn.Module) -> str:
    return ",".join(sorted({str(p.dtype).removeprefix("torch.") for _, p in base_parameters(model)}))


def most_common(values: dict[str, float]) -> float:
    return Counter(values.values()).most_common(1)[0][0]


def peft_config(model: nn.Module, layers: dict[str, LoRALinear], base_model_name: str, task_type: str | None) -> dict:
    """The ``adapter_config.json`` PEFT writes for these layers.

    ``target_modules`` and the pattern keys are full module names; where PEFT's suffix rules would read one
    of them as also naming another layer, they become exact regexes (``"a\\.b|c"``; keys ``"^a\\.b"``).
    ``fan_in_fan_out`` is True when the layers are GPT-2 ``Conv1D`` (PEFT would otherwise correct it with a
    warning); for a model that mixes both kinds it follows the first layer, so PEFT corrects it least often.
    """
    ranks = {n: m.r for n, m in layers.items()}
    alphas = {n: m.alpha for n, m in layers.items()}
    r, alpha = most_common(ranks), most_common(alphas)
    first = next(iter(layers.values()))
    want = {n: (m.r, m.alpha) for n, m in layers.items()}
    for escape in (str, lambda n: "^" + re.escape(n)):
        config = {
            "peft_type": "LORA",
            "task_type": task_type,
            "base_model_name_or_path": base_model_name or None,
            "r": r,
            "lora_alpha": alpha,
            "lora_dropout": most_common({n: getattr(m.lora_dropout, "p", 0.0) for n, m in layers.items()}),
            "target_modules": list(layers) if escape is str else "|".join(map(re.escape, layers)),
            "rank_pattern": {escape(n): v for n, v in ranks.items() if v != r},
            "alpha_pattern": {escape(n): v for n, v in alphas.items() if v != alpha},
            "use_rslora": first.use_rslora,
            "init_lora_weights": True if first.init == "kaiming" else "gaussian",
            "bias": "none",
            "fan_in_fan_out": first.fan_in_fan_out,
            "inference_mode": True,
        }
        if plan_layers(model, config) == want:
            return config
    raise AssertionError("PEFT's matching rules do not reproduce the model's LoRA layers; please report this bug.")


def check_savable(model: nn.Module, task_type: str | None) -> dict[str, LoRALinear]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError("The model has no LoRA layers to save; call inject_lora(model, ...) first.")
    merged = [n for n, m in layers.items() if m.merged]
    if merged:
        raise ValueError(f"LoRA layer {merged[0]!r} is merged; call unmerge_lora(model) before saving the adapter.")
    if len({m.use_rslora for m in layers.values()}) > 1:
        raise ValueError("Some LoRA layers use rsLoRA scaling and some do not; PEFT's use_rslora is one flag for all layers.")
    for name, m in layers.items():
        for ab in ("lora_A", "lora_B"):
            if not torch.isfinite(getattr(m, ab)).all():
                raise ValueError(f"{name}.{ab} contains NaN or inf (did training diverge?); the adapter was not saved.")
    if task_type is not None and task_type not in PEFT_TASK_TYPES:
        raise ValueError(f"task_type must be None or one of {PEFT_TASK_TYPES}, got {task_type!r}.")
    if task_type is not None and not callable(getattr(model, "prepare_inputs_for_generation", None)):
        raise ValueError(
            f"task_type={task_type!r} makes PEFT wrap the model for transformers' generation API, which "
            f"{type(model).__name__} does not have. Leave task_type=None, as PEFT itself writes for a plain torch module."
        )
    return layers


def save_adapter(model: nn.Module, directory: str | os.PathLike, base_model_name: str = "", task_type: str | None = None) -> Path:
    """Write the model's LoRA factors and config to ``directory``, replacing an earlier adapter there atomically.

    ``task_type`` is PEFT's (None for a plain torch module, as PEFT writes it; ``"CAUSAL_LM"`` for a
    transformers language model).  ``directory`` must be new, empty, or an adapter directory: a file
    or a folder holding anything else is refused, untouched.  Files and directories are fsynced, and an
    interruption at any point leaves the previous adapter or the new one, complete.
    """
    layers = check_savable(model, task_type)
    config = peft_config(model, layers, base_model_name, task_type)
    tensors = {}
    for name, m in layers.items():
        tensors[f"{KEY_PREFIX}{name}.lora_A.weight"] = m.lora_A.detach().to("cpu").contiguous()
        tensors[f"{KEY_PREFIX}{name}.lora_B.weight"] = m.lora_B.detach().to("cpu").contiguous()
    metadata = {"format": "pt", META_FINGERPRINT: base_fingerprint(model), META_DTYPES: base_dtypes(model)}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata=metadata)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2), encoding="utf-8")

    replace_directory(check_save_path(directory), write, ours=(CONFIG_NAME, WEIGHTS_NAME), kept=KEPT, is_ours=is_adapter_directory)
    return Path(directory)


def check_save_path(directory: str | os.PathLike) -> Path:
    """The absolute path ``save_adapter`` would write, or the ``ValueError`` it would raise (call it before a long run)."""
    target = Path(os.path.abspath(directory))
    check_replaceable(target, ours=(CONFIG_NAME, WEIGHTS_NAME), kept=KEPT, is_ours=is_adapter_directory)
    return target


def is_adapter_directory(directory: Path) -> bool:
    try:
        return json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8")).get("peft_type") == "LORA"
    except (OSError, ValueError, AttributeError):
        return False


def read_adapter_config(directory: str | os.PathLike) -> dict:
    """The parsed and checked ``adapter_config.json``, or a ``ValueError`` that names what is wrong with it."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        inside = sorted(p.parent.name for p in Path(directory).glob(f"*/{CONFIG_NAME}"))
        hint = f" It has adapters in subfolders {inside} (PEFT saves a named adapter there): pass one of them." if inside else ""
        raise ValueError(f"No {CONFIG_NAME} in {str(directory)!r}: is this an adapter directory (save_adapter or PEFT)?{hint}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path.name} in {str(directory)!r} is not valid JSON ({exc}); the file is corrupt. Save the adapter again."
        ) from exc
    return check_config(config)


def read_adapter_weights(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the header metadata of ``adapter_model.safetensors``."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise ValueError(f"No {WEIGHTS_NAME} in {str(directory)!r}; the adapter directory is incomplete.")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(
            f"{WEIGHTS_NAME} in {str(directory)!r} cannot be read ({exc}); the file is corrupt. Save the adapter again."
        ) from exc


def check_tensors(tensors: dict[str, torch.Tensor], plan: dict[str, tuple[int, float]], model: nn.Module) -> None:
    """Keys, dtypes, values and shapes of the factors against the planned layers."""
    expected = {f"{KEY_PREFIX}{n}.lora_{ab}.weight" for n in plan for ab in "AB"}
    if set(tensors) != expected:
        odd = sorted(set(tensors) ^ expected)[:3]
        raise ValueError(f"The adapter's tensors do not match its config (e.g. {odd}); the adapter is corrupt or for another model.")
    for key, t in tensors.items():
        if not t.dtype.is_floating_point:
            raise ValueError(f"Tensor {key!r} has dtype {t.dtype}; LoRA factors are floating point. The adapter is corrupt.")
        if not torch.isfinite(t).all():
            raise ValueError(f"Tensor {key!r} contains NaN or inf; loading it would make the model output NaN.")
    for name, (r, _) in plan.items():
        module = model.get_submodule(name)
        a, b = tensors[f"{KEY_PREFIX}{name}.lora_A.weight"], tensors[f"{KEY_PREFIX}{name}.lora_B.weight"]
        d_in, d_out, _ = linear_shape(module)
        want_a, want_b = (r, d_in), (d_out, r)
        if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
            raise ValueError(
                f"Shape mismatch for {name!r}: adapter A {tuple(a.shape)}, B {tuple(b.shape)}; this model needs "
                f"A {want_a}, B {want_b}. The adapter was trained on a base model of another size."
            )


def check_existing(model: nn.Module, plan: dict[str, tuple[int, float]], rslora: bool) -> dict[str, LoRALinear]:
    """A model that already has LoRA layers must have exactly the adapter's, with its r, alpha and scaling rule."""
    existing = lora_layers(model)
    if existing and set(existing) != set(plan):
        raise ValueError(
            f"The model's LoRA layers ({sorted(existing)[:3]}...) differ from the adapter's ({list(plan)[:3]}...). "
            "Load it into a model without LoRA layers, or one injected with the same targets."
        )
    for name, layer in existing.items():
        r, alpha = plan[name]
        if (layer.r, layer.alpha, layer.use_rslora) != (r, alpha, rslora):
            raise ValueError(
                f"LoRA layer {name!r} has r={layer.r}, alpha={layer.alpha:g}, use_rslora={layer.use_rslora} but the adapter has "
                f"r={r}, alpha={alpha:g}, use_rslora={rslora}. Load it into a model without LoRA layers (remove_lora(model) first)."
            )
        if layer.merged:
            raise ValueError(f"LoRA layer {name!r} is merged; call unmerge_lora(model) before loading another adapter.")
    return existing


def verify_base(model: nn.Module, config: dict, metadata: dict[str, str]) -> None:
    """The fingerprint save_adapter recorded (if any) against this model's base weights, with the dtype named when it differs."""
    saved = metadata.get(META_FINGERPRINT) or (config.get("lora_edu") or {}).get("base_fingerprint")
    if saved is None:
        return  # written by PEFT: nothing to compare with
    actual = base_fingerprint(model)
    if saved == actual:
        return
    dtypes, saved_dtypes = base_dtypes(model), metadata.get(META_DTYPES)
    if saved_dtypes and saved_dtypes != dtypes:
        raise ValueError(
            f"This adapter was trained on a base model in {saved_dtypes}, but this model's weights are {dtypes}. Convert the "
            f"model (e.g. model.to(torch.{saved_dtypes.split(',')[0]})) or pass check_base=False to load it anyway."
        )
    raise ValueError(
        f"This adapter was trained on a base model with fingerprint {saved}, but this model's base weights have "
        f"fingerprint {actual}: same shapes, other weights. Load the base it was trained on "
        "(or pass check_base=False if you really mean to)."
    )


def load_adapter(model: nn.Module, directory: str | os.PathLike, check_base: bool = True) -> list[str]:
    """Load an adapter saved by ``save_adapter`` or by PEFT's ``save_pretrained`` into ``model``; return the layer names.

    A model without LoRA layers gets them injected as the config says (PEFT's matching rules, ``nn.Linear`` and
    GPT-2 ``Conv1D`` layers; a ``fan_in_fan_out`` that disagrees with a layer's type is corrected with a
    warning, as PEFT does); one that
    has them must have the same layers, ranks, alphas and scaling (load a second adapter into it to swap
    tasks).  Every check (files, config fields and types, keys, dtypes, values, shapes, base weights)
    runs before anything is changed.
    """
    config = read_adapter_config(directory)
    tensors, metadata = read_adapter_weights(directory)
    plan = plan_layers(model, config)
    check_tensors(tensors, plan, model)
    warn_fan_in_fan_out(model, config, plan)
    rslora = bool(config.get("use_rslora", False))
    existing = check_existing(model, plan, rslora)
    if check_base:
        verify_base(model, config, metadata)
    dropout = config.get("lora_dropout") or 0.0
    init = "gaussian" if config.get("init_lora_weights") == "gaussian" else "kaiming"
    new = {} if existing else {n: LoRALinear(model.get_submodule(n), r, a, dropout, init, rslora) for n, (r, a) in plan.items()}
    for name, layer in new.items():
        set_submodule(model, name, layer)
    layers = lora_layers(model)
    with torch.no_grad():
        for name in plan:
            layers[name].lora_A.copy_(tensors[f"{KEY_PREFIX}{name}.lora_A.weight"])
            layers[name].lora_B.copy_(tensors[f"{KEY_PREFIX}{name}.lora_B.weight"])
    return list(plan)

