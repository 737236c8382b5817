"""Pretrain the small GPT on the synthetic world, and load the result.

The tiny checkpoint ships with the package (``lora_edu/gpt/checkpoints/tiny.safetensors``); this module
is the command that reproduces it:

    python -m lora_edu.gpt.pretrain --size tiny            # about 2-3 minutes on a laptop CPU
    python -m lora_edu.gpt.pretrain --size gpu             # the class-GPU configuration, minutes on a GPU

Checkpoints other than the shipped one go to ``$LORA_EDU_CACHE`` (default ``~/.cache/lora_edu``).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .data import World, lm_targets, make_world, pack_lines
from .device import configure_threads, environment_summary, pick_device
from .evaluate import lm_loss
from .model import GPT, GPT_SIZES, GPTConfig
from .train import TrainConfig, TrainResult, train

__all__ = ["PRETRAIN_SIZES", "PretrainSpec", "checkpoint_path", "ensure_pretrained", "load_pretrained", "pretrain",
           "pretraining_eval_rows", "pretraining_rows"]

PACKAGE_CHECKPOINTS = Path(__file__).parent / "checkpoints"


@dataclass(frozen=True)
class PretrainSpec:
    """Model size, world size and pretraining schedule for one named configuration."""

    model: GPTConfig
    n_animals: int
    n_heldout: int
    steps: int
    batch_size: int
    lr: float
    epochs: int  # reshuffled copies of the corpus


PRETRAIN_SIZES = {
    "tiny": PretrainSpec(GPT_SIZES["tiny"], n_animals=48, n_heldout=16, steps=2500, batch_size=32, lr=3e-3, epochs=40),
    # 1000 steps of 512 rows: the same 33M tokens as 4000 x 128 (final loss 0.516 vs 0.513 on an H100), 4x fewer launches
    "gpu": PretrainSpec(GPT_SIZES["gpu"], n_animals=256, n_heldout=64, steps=1000, batch_size=512, lr=2e-3, epochs=60),
}


def spec_for(size: str) -> PretrainSpec:
    if size not in PRETRAIN_SIZES:
        raise ValueError(f"Unknown size {size!r}; choose from {list(PRETRAIN_SIZES)}.")
    return PRETRAIN_SIZES[size]


def world_for(size: str) -> World:
    spec = spec_for(size)
    return make_world(spec.n_animals, spec.n_heldout, seed=0)


def pretraining_rows(world: World, n_ctx: int, epochs: int, first_seed: int = 0) -> torch.Tensor:
    """The pretraining corpus, reshuffled ``epochs`` times and packed at line boundaries: (rows, n_ctx + 1)."""
    return torch.cat([pack_lines(world.pretraining_lines(seed=first_seed + e), world.tokenizer, n_ctx) for e in range(epochs)])


def pretraining_eval_rows(world: World, n_ctx: int, part: str = "all") -> torch.Tensor:
    """The held-out pretraining text (``world.heldout_text``: lines pretraining never trained on), packed: the
    loss on it measures what the model knows of the corpus beyond memorising it, and forgetting. ``part``: "all",
    "facts" (a phrasing of each animal's facts that pretraining left out; its other phrasings were trained on) or
    "filler" (held-out filler lines, about no animal)."""
    held = world.heldout_text
    lines = {"all": held.lines, "facts": held.facts, "filler": held.filler}.get(part)
    if lines is None:
        raise ValueError(f'part must be "all", "facts" or "filler", got {part!r}.')
    return pack_lines(lines, world.tokenizer, n_ctx)


def cache_root() -> Path:
    """lora_edu's cache directory: ``$LORA_EDU_CACHE``, default ``~/.cache/lora_edu``."""
    return Path(os.environ.get("LORA_EDU_CACHE", Path.home() / ".cache" / "lora_edu"))


def checkpoint_path(size: str) -> Path:
    """Where the checkpoint of ``size`` lives: shipped in the package, else in the cache directory."""
    shipped = PACKAGE_CHECKPOINTS / f"{size}.safetensors"
    if shipped.exists():
        return shipped
    return cache_root() / f"{size}.safetensors"


def save_checkpoint(model: GPT, size: str, path: Path, result: TrainResult, eval_loss: float) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied to wte
    meta = {
        "size": size,
        "config": json.dumps(model.config.to_dict()),
        "world": json.dumps({"n_animals": spec_for(size).n_animals, "n_heldout": spec_for(size).n_heldout, "seed": 0}),
        "steps": str(result.steps_done),
        "final_train_loss": f"{result.losses[-1]:.4f}",
        "eval_loss": f"{eval_loss:.4f}",
        "command": f"python -m lora_edu.gpt.pretrain --size {size}",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)


def pretrain(
    size: str = "tiny", out: Path | None = None, steps: int | None = None, progress: bool = True
) -> tuple[GPT, World, TrainResult]:
    """Train a GPT of ``size`` from scratch on the world's pretraining corpus and save it."""
    spec = spec_for(size)
    world = world_for(size)
    device = pick_device()
    torch.manual_seed(0)
    model = GPT(spec.model.with_vocab(len(world.tokenizer)))
    inputs, targets = lm_targets(pretraining_rows(world, model.config.n_ctx, spec.epochs), world.tokenizer.pad_id)
    cfg = TrainConfig(steps=steps or spec.steps, batch_size=spec.batch_size, lr=spec.lr, warmup=0.05, weight_decay=0.01, eval_every=10**9)
    result = train(model, inputs, targets, cfg, device=device, desc=f"pretrain {size}", progress=progress)
    eval_loss = lm_loss(model, pretraining_eval_rows(world, model.config.n_ctx), world.tokenizer.pad_id)
    save_checkpoint(model, size, out or checkpoint_path(size), result, eval_loss)
    return model, world, result


def load_pretrained(size: str = "tiny", device: torch.device | str | None = None) -> tuple[GPT, World]:
    """The pretrained GPT of ``size`` (frozen copy on ``device``) and the world it was trained on."""
    path = checkpoint_path(size)
    if not path.exists():
        raise ValueError(f"No pretrained {size!r} checkpoint at {path}. Create it with: python -m lora_edu.gpt.pretrain --size {size}")
    try:
        state = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
    except (SafetensorError, OSError) as exc:
        raise ValueError(
            f"The checkpoint {path} cannot be read ({exc}); recreate it with: python -m lora_edu.gpt.pretrain --size {size}"
        ) from exc
    missing_meta = [k for k in ("config", "world") if k not in (meta or {})]
    if missing_meta:
        raise ValueError(
            f"The checkpoint {path} is a safetensors file without lora_edu's metadata ({', '.join(missing_meta)} missing): "
            f"it was not written by lora_edu's pretraining. Recreate it with: python -m lora_edu.gpt.pretrain --size {size}"
        )
    cfg = GPTConfig(**json.loads(meta["config"]))
    w = json.loads(meta["world"])
    world = make_world(w["n_animals"], w["n_heldout"], w["seed"])
    if len(world.tokenizer) != cfg.vocab_size:
        raise ValueError(f"The checkpoint's vocabulary ({cfg.vocab_size}) does not match its world ({len(world.tokenizer)}).")
    model = GPT(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) != {"lm_head.weight"} or unexpected:
        raise ValueError(f"The checkpoint {path} does not fit GPT({cfg}): missing {missing}, unexpected {unexpected}.")
    model.lm_head.weight = model.wte.weight
    return model.to(device or pick_device()).eval(), world


def ensure_pretrained(size: str = "tiny", device: torch.device | str | None = None) -> tuple[GPT, World]:
    """``load_pretrained(size)``, pretraining it first (into the cache) when no checkpoint exists yet."""
    if not checkpoint_path(size).exists():
        print(f"No {size!r} checkpoint yet: pretraining it now (python -m lora_edu.gpt.pretrain --size {size}).")
        _, _, result = pretrain(size)
        print(result.summary(pick_device()))
    return load_pretrained(size, device)


def main() -> None:
    parser = argparse.ArgumentParser(description="Pretrain the lora-edu GPT on its synthetic world.")
    parser.add_argument("--size", default="tiny", choices=list(PRETRAIN_SIZES))
    parser.add_argument("--out", type=Path, default=None, help="where to write the checkpoint (default: package or cache)")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    configure_threads()
    print(environment_summary())
    out = args.out or (PACKAGE_CHECKPOINTS / "tiny.safetensors" if args.size == "tiny" else checkpoint_path(args.size))
    model, world, result = pretrain(args.size, out, args.steps)
    print(f"{result.steps_done} steps in {result.seconds:.0f} s ({result.tokens_per_second:,.0f} tokens/s); "
          f"final train loss {result.losses[-1]:.4f}; saved {out}")


if __name__ == "__main__":
    main()
