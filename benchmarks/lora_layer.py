"""LoRA layer cost, measured side by side in one run.

Prints, for d = 256 and d = 768 at batch*seq = 4096 tokens:
  - forward+backward time of LoRALinear (r=8) relative to a trainable and a frozen nn.Linear;
  - inference time of a merged LoRALinear relative to a plain nn.Linear (should be ~1.0).

Each ratio stands next to its ideal from FLOPs and, where one is set, its target and whether it is met.
FLOPs of one forward+backward, T tokens, d_in = d_out = d:  trainable Linear 3 GEMMs = 6 T d^2; frozen
Linear 2 (no weight gradient) = 4 T d^2; LoRA = frozen + 6 thin GEMMs of 2 T d r each = 4 T d^2 + 12 T d r.

    python benchmarks/lora_layer.py [--tokens 4096] [--rank 8] [--repeats 40]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from lora_edu import LoRALinear, configure_threads, environment_summary, pick_device


def timed_ms(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0)


def train_step(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    """One forward+backward with a dense gradient from above, as a layer inside a network receives it."""

    def step():
        x.grad = None
        for p in layer.parameters():
            p.grad = None
        layer(x).backward(grad)

    return step


def infer(layer: nn.Module, x: torch.Tensor):
    def run():
        with torch.no_grad():
            layer(x)

    return run


def bench(d: int, tokens: int, r: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Median times (ms) and the median of the paired ratios: every repeat times each variant once, in turn,
    so that a slow moment of a shared machine lands on all of them alike."""
    torch.manual_seed(0)
    x = torch.randn(tokens, d, device=device, requires_grad=True)
    grad = torch.randn(tokens, d, device=device)
    trainable = nn.Linear(d, d).to(device)
    frozen = nn.Linear(d, d).to(device).requires_grad_(False)
    lora = LoRALinear(nn.Linear(d, d), r=r, alpha=2 * r).to(device)
    merged = LoRALinear(nn.Linear(d, d), r=r, alpha=2 * r).to(device)
    merged.merge()
    plain = nn.Linear(d, d).to(device)
    variants = {"lora": train_step(lora, x, grad), "trainable": train_step(trainable, x, grad), "frozen": train_step(frozen, x, grad),
                "merged": infer(merged, x.detach()), "plain": infer(plain, x.detach())}
    for fn in variants.values():  # warm-up
        fn(), fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            times[k].append(timed_ms(fn, device))
    t = {k: statistics.median(v) for k, v in times.items()}
    for num, den in (("lora", "trainable"), ("lora", "frozen"), ("merged", "plain")):
        t[f"{num}/{den}"] = statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))
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
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 768])
    args = parser.parse_args()
    configure_threads()
    device = pick_device()
    print(environment_summary(device))
    print(f"tokens per step = {args.tokens}, LoRA rank = {args.rank}, a dense gradient from above; times are medians in ms,\n"
          f"ratios the median of {args.repeats} paired ratios (each variant timed once per repeat, in turn)\n")
    header = f"{'d':>5} {'LoRA f+b':>9} {'train f+b':>9} {'frozen f+b':>10} |"
    for name in ("LoRA/train", "LoRA/frozen"):
        header += f" {name} {'ideal':>5} {'target':>6} {'ok':>3} |"
    header += f" {'merged inf':>10} {'plain inf':>9} {'merged/plain':>12}"
    print(header)
    for d in args.dims:
        t = bench(d, args.tokens, args.rank, args.repeats, device)
        print(
            f"{d:>5} {t['lora']:>9.3f} {t['trainable']:>9.3f} {t['frozen']:>10.3f} | "
            f"{ratio_cells('LoRA/train', t['lora/trainable'], d, args.rank)} | "
            f"{ratio_cells('LoRA/frozen', t['lora/frozen'], d, args.rank)} | "
            f"{t['merged']:>10.3f} {t['plain']:>9.3f} {t['merged/plain']:>12.2f}"
        )


if __name__ == "__main__":
    main()
