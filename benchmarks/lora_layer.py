"""LoRA layer cost, measured side by side in one run.

Prints, for d = 256 and d = 768 at batch*seq = 4096 tokens:
  - forward+backward time of LoRALinear (r=8) relative to a trainable and a frozen nn.Linear;
  - inference time of a merged LoRALinear relative to a plain nn.Linear (should be ~1.0).

Each ratio stands next to its ideal from FLOPs and, where one is set, its target and whether it is met.
FLOPs of one forward+backward, T tokens, d_in = d_out = d:  trainable Linear 3 GEMMs = 6 T d^2; frozen
Linear 2 (no weight gradient) = 4 T d^2; LoRA = frozen + 6 thin GEMMs of 2 T d r each = 4 T d^2 + 12 T d r.

    python benchmarks/lora_layer.py [--tokens 4096] [--rank 8] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from lora_edu import LoRALinear, configure_threads, environment_summary, pick_device


def median_ms(fn, device: torch.device, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def train_step(layer: nn.Module, x: torch.Tensor):
    def step():
        x.grad = None
        for p in layer.parameters():
            p.grad = None
        layer(x).sum().backward()

    return step


def infer(layer: nn.Module, x: torch.Tensor):
    def run():
        with torch.no_grad():
            layer(x)

    return run


def bench(d: int, tokens: int, r: int, repeats: int, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.randn(tokens, d, device=device, requires_grad=True)
    trainable = nn.Linear(d, d).to(device)
    frozen = nn.Linear(d, d).to(device).requires_grad_(False)
    lora = LoRALinear(nn.Linear(d, d), r=r, alpha=2 * r).to(device)
    merged = LoRALinear(nn.Linear(d, d), r=r, alpha=2 * r).to(device)
    merged.merge()
    plain = nn.Linear(d, d).to(device)
    t = {}
    # Interleave the rounds so that a slow moment of a shared machine hits every variant alike.
    rounds = {"lora": [], "trainable": [], "frozen": [], "merged": [], "plain": []}
    for _ in range(3):
        rounds["lora"].append(median_ms(train_step(lora, x), device, repeats))
        rounds["trainable"].append(median_ms(train_step(trainable, x), device, repeats))
        rounds["frozen"].append(median_ms(train_step(frozen, x), device, repeats))
        rounds["merged"].append(median_ms(infer(merged, x.detach()), device, repeats))
        rounds["plain"].append(median_ms(infer(plain, x.detach()), device, repeats))
    for k, v in rounds.items():
        t[k] = min(v)
    return t


TARGETS = {768: {"LoRA/train": 0.75, "LoRA/frozen": 1.15}}  # d -> the most each ratio may be


def ideal_ratios(d: int, r: int) -> dict[str, float]:
    """LoRA f+b FLOPs over a trainable and over a frozen Linear's (see the module docstring)."""
    lora, trainable, frozen = 4 * d * d + 12 * d * r, 6 * d * d, 4 * d * d
    return {"LoRA/train": lora / trainable, "LoRA/frozen": lora / frozen}


def ratio_cells(name: str, ratio: float, d: int, r: int) -> str:
    target = TARGETS.get(d, {}).get(name)
    ok = "-" if target is None else ("yes" if ratio <= target else "NO")
    return f"{ratio:>{len(name)}.2f} {ideal_ratios(d, r)[name]:>5.2f} {'-' if target is None else f'{target:.2f}':>6} {ok:>3}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 768])
    args = parser.parse_args()
    configure_threads()
    device = pick_device()
    print(environment_summary(device))
    print(f"tokens per step = {args.tokens}, LoRA rank = {args.rank}; times are medians in ms\n")
    header = f"{'d':>5} {'LoRA f+b':>9} {'train f+b':>9} {'frozen f+b':>10} |"
    for name in ("LoRA/train", "LoRA/frozen"):
        header += f" {name} {'ideal':>5} {'target':>6} {'ok':>3} |"
    header += f" {'merged inf':>10} {'plain inf':>9} {'merged/plain':>12}"
    print(header)
    for d in args.dims:
        t = bench(d, args.tokens, args.rank, args.repeats, device)
        print(
            f"{d:>5} {t['lora']:>9.3f} {t['trainable']:>9.3f} {t['frozen']:>10.3f} | "
            f"{ratio_cells('LoRA/train', t['lora'] / t['trainable'], d, args.rank)} | "
            f"{ratio_cells('LoRA/frozen', t['lora'] / t['frozen'], d, args.rank)} | "
            f"{t['merged']:>10.3f} {t['plain']:>9.3f} {t['merged'] / t['plain']:>12.2f}"
        )


if __name__ == "__main__":
    main()
