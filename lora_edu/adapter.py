"""Saving and loading adapters in PEFT's on-disk format.

A directory holds ``adapter_config.json`` and ``adapter_model.safetensors`` with keys
``base_model.model.<module path>.lora_A.weight`` / ``.lora_B.weight``, as PEFT writes them.
The config also records a fingerprint of the base weights, so an adapter is never silently
loaded onto a model it was not trained on.  Nothing is ever read with pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .lora import LoRALinear, inject_lora, lora_layers

__all__ = ["base_fingerprint", "load_adapter", "read_adapter_config", "save_adapter"]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."


def base_fingerprint(model: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of the base model's parameter names, shapes, dtypes and values.

    LoRA factors are left out and ``x.base.weight`` counts as ``x.weight``, so the fingerprint of a
    model is the same before and after ``inject_lora``.  A merged model has other base weights.
    """
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(remove_duplicate=True)):
        if name.endswith(("lora_A", "lora_B")):
            continue
        name = name.replace(".base.", ".")
        t = p.detach().to("cpu").contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def most_common(values: dict[str, float]) -> float:
    return Counter(values.values()).most_common(1)[0][0]


def save_adapter(model: nn.Module, directory: str | os.PathLike, base_model_name: str = "") -> Path:
    """Write the model's LoRA factors and config to ``directory`` (replaced atomically).

    The files are written into a temporary sibling directory first and swapped in with renames,
    so an interrupted save leaves the previous adapter, never a half-written one.
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError("The model has no LoRA layers to save; call inject_lora(model, ...) first.")
    merged = [n for n, m in layers.items() if m.merged]
    if merged:
        raise ValueError(f"LoRA layer {merged[0]!r} is merged; call unmerge_lora(model) before saving the adapter.")
    ranks = {n: m.r for n, m in layers.items()}
    alphas = {n: m.alpha for n, m in layers.items()}
    r, alpha = most_common(ranks), most_common(alphas)
    first = next(iter(layers.values()))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": getattr(first.lora_dropout, "p", 0.0),
        "target_modules": list(layers),
        "rank_pattern": {n: v for n, v in ranks.items() if v != r},
        "alpha_pattern": {n: v for n, v in alphas.items() if v != alpha},
        "use_rslora": first.use_rslora,
        "init_lora_weights": True if first.init == "kaiming" else "gaussian",
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "lora_edu": {
            "base_fingerprint": base_fingerprint(model),
            "shapes": {n: [m.out_features, m.in_features] for n, m in layers.items()},
        },
    }
    tensors = {}
    for name, m in layers.items():
        tensors[f"{KEY_PREFIX}{name}.lora_A.weight"] = m.lora_A.detach().to("cpu").contiguous()
        tensors[f"{KEY_PREFIX}{name}.lora_B.weight"] = m.lora_B.detach().to("cpu").contiguous()

    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; an adapter directory is an ordinary one
    try:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        with open(tmp / CONFIG_NAME, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_adapter_config(directory: str | os.PathLike) -> dict:
    """The parsed ``adapter_config.json``, or a ``ValueError`` that says what is wrong with it."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"No {CONFIG_NAME} in {str(directory)!r}: is this an adapter directory written by save_adapter?")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path.name} in {str(directory)!r} is not valid JSON ({exc}); the file is corrupt. Save the adapter again."
        ) from exc
    missing = [k for k in ("peft_type", "r", "lora_alpha", "target_modules") if k not in config]
    if missing or config.get("peft_type") != "LORA":
        raise ValueError(f"{path.name} is not a LoRA adapter config (missing {missing or 'peft_type=LORA'}).")
    return config


def read_adapter_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise ValueError(f"No {WEIGHTS_NAME} in {str(directory)!r}; the adapter directory is incomplete.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(
            f"{WEIGHTS_NAME} in {str(directory)!r} cannot be read ({exc}); the file is corrupt. Save the adapter again."
        ) from exc


def load_adapter(model: nn.Module, directory: str | os.PathLike, check_base: bool = True) -> list[str]:
    """Load an adapter saved by ``save_adapter`` into ``model`` and return the layer names.

    A model without LoRA layers gets them injected from the config; one that has them must have the
    same target layers (load a second adapter into it to swap tasks).  Every check (files, keys,
    shapes, base fingerprint) runs before anything is changed.
    """
    config = read_adapter_config(directory)
    tensors = read_adapter_weights(directory)
    targets = list(config["target_modules"])
    ranks = {n: config.get("rank_pattern", {}).get(n, config["r"]) for n in targets}
    alphas = {n: config.get("alpha_pattern", {}).get(n, config["lora_alpha"]) for n in targets}

    expected = {f"{KEY_PREFIX}{n}.lora_{ab}.weight" for n in targets for ab in "AB"}
    if set(tensors) != expected:
        odd = sorted(set(tensors) ^ expected)[:3]
        raise ValueError(f"The adapter's tensors do not match its config (e.g. {odd}); the adapter is corrupt.")

    modules = dict(model.named_modules())
    existing = lora_layers(model)
    if existing and set(existing) != set(targets):
        raise ValueError(
            f"The model's LoRA layers ({sorted(existing)[:3]}...) differ from the adapter's ({targets[:3]}...). "
            "Load it into a model without LoRA layers, or one injected with the same targets."
        )
    for name in targets:
        module = modules.get(name)
        if not isinstance(module, (nn.Linear, LoRALinear)):
            raise ValueError(f"The adapter targets {name!r}, which this model does not have as a Linear layer: wrong base model?")
        a, b = tensors[f"{KEY_PREFIX}{name}.lora_A.weight"], tensors[f"{KEY_PREFIX}{name}.lora_B.weight"]
        want_a, want_b = (ranks[name], module.in_features), (module.out_features, ranks[name])
        if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
            raise ValueError(
                f"Shape mismatch for {name!r}: adapter A {tuple(a.shape)}, B {tuple(b.shape)}; this model needs "
                f"A {want_a}, B {want_b}. The adapter was trained on a base model of another size."
            )
        if isinstance(module, LoRALinear) and (module.r, module.alpha) != (ranks[name], alphas[name]):
            raise ValueError(
                f"LoRA layer {name!r} has r={module.r}, alpha={module.alpha:g} but the adapter has r={ranks[name]}, "
                f"alpha={alphas[name]:g}. Load it into a model without LoRA layers (remove_lora(model) first)."
            )
        if isinstance(module, LoRALinear) and module.merged:
            raise ValueError(f"LoRA layer {name!r} is merged; call unmerge_lora(model) before loading another adapter.")
    if check_base:
        saved = config.get("lora_edu", {}).get("base_fingerprint")
        actual = base_fingerprint(model)
        if saved is not None and saved != actual:
            raise ValueError(
                f"This adapter was trained on a base model with fingerprint {saved}, but this model's base weights have "
                f"fingerprint {actual}: same shapes, other weights. Load the base it was trained on "
                "(or pass check_base=False if you really mean to)."
            )

    if not existing:
        for r in sorted(set(ranks.values())):
            for alpha in sorted({alphas[n] for n in targets if ranks[n] == r}):
                group = [n for n in targets if ranks[n] == r and alphas[n] == alpha]
                inject_lora(model, group, r=r, alpha=alpha, use_rslora=bool(config.get("use_rslora", False)))
    layers = lora_layers(model)
    with torch.no_grad():
        for name in targets:
            layer = layers[name]
            layer.lora_A.copy_(tensors[f"{KEY_PREFIX}{name}.lora_A.weight"])
            layer.lora_B.copy_(tensors[f"{KEY_PREFIX}{name}.lora_B.weight"])
    return targets
