"""LoRA against full fine-tuning of the same GPT, measured side by side in one run.

For each model size (tiny, and the GPU size when a GPU is present): tokens/s, step time and
memory of LoRA (r=8 on Wq, Wv) and of full fine-tuning, and their ratios.  Memory is the training
state (parameters, gradients, AdamW buffers) everywhere, plus peak allocated memory on CUDA.

    python benchmarks/finetune.py [--steps 60] [--sizes tiny gpu] [--until 0.95]

``--until X`` also trains LoRA on the JSON task until held-out exact match reaches X and reports
the minutes it took (pretraining the size first if no checkpoint exists), and, on CUDA, the
model FLOP utilisation (4 * params * tokens/s: no weight gradients for the frozen base, against the GPU's bf16 peak given by --peak-tflops).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from lora_edu import configure_threads, environment_summary, inject_lora, mark_only_lora_trainable, pick_device
from lora_edu.gpt.data import make_world, task_data
from lora_edu.gpt.finetune import finetune
from lora_edu.gpt.model import GPT
from lora_edu.gpt.pretrain import PRETRAIN_SIZES, ensure_pretrained
from lora_edu.gpt.train import TrainConfig, train


def measure(model: GPT, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, lr: float, device: torch.device):
    res = train(model, x, y, TrainConfig(steps=steps, batch_size=batch, lr=lr, eval_every=10**9), device=device, progress=False)
    return res


def compare(device: torch.device, size: str, steps: int) -> dict:
    """LoRA (r=8 on Wq, Wv) and full fine-tuning of the same GPT, one after the other in this process: figures and ratios.

    Step time leaves out evaluation; memory is the training state (parameters, gradients, AdamW buffers)
    and, on CUDA, each run's peak allocated memory above what was allocated before it.
    """
    spec = PRETRAIN_SIZES[size]
    world = make_world(spec.n_animals, spec.n_heldout, seed=0)
    torch.manual_seed(0)
    base = GPT(spec.model.with_vocab(len(world.tokenizer))).to(device)
    x, y = task_data(world, "json", world.train_animals, base.config.n_ctx)
    batch = 64 if size == "gpu" else 32
    rows = {}
    for name, lr in (("lora", 1e-2), ("full", 3e-4)):
        model = copy.deepcopy(base)
        if name == "lora":
            inject_lora(model, ["q_proj", "v_proj"], r=8, alpha=16)
            mark_only_lora_trainable(model)
        else:
            model.requires_grad_(True)
        measure(model, x, y, 5, batch, lr, device)  # warm-up (kernels, allocator)
        rows[name] = measure(model, x, y, steps, batch, lr, device)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    params = sum(p.numel() for p in base.parameters())
    seq = int((y != -100).any(0).nonzero().max()) + 1
    print(f"\n[{size}] {params:,} parameters, batch {batch} x {seq} tokens (padding trimmed), {steps} steps, {rows['lora'].precision}")
    print(f"{'':>6} {'tokens/s':>10} {'ms/step':>8} {'state MB':>9} {'peak CUDA MB':>12}")
    for name, r in rows.items():
        peak = f"{r.peak_cuda_bytes / 1e6:.1f}" if r.peak_cuda_bytes else "-"
        print(f"{name:>6} {r.tokens_per_second:>10,.0f} {r.ms_per_step:>8.2f} {r.state_bytes / 1e6:>9.2f} {peak:>12}")
    lo, fu = rows["lora"], rows["full"]
    out = {"size": size, "steps": steps, "batch": batch, "seq": seq, "precision": lo.precision,
           "lora_ms_per_step": lo.ms_per_step, "full_ms_per_step": fu.ms_per_step,
           "step_time_ratio": lo.ms_per_step / fu.ms_per_step, "state_ratio": lo.state_bytes / fu.state_bytes,
           "lora_peak_mb": lo.peak_cuda_bytes / 1e6, "full_peak_mb": fu.peak_cuda_bytes / 1e6,
           "peak_memory_ratio": lo.peak_cuda_bytes / fu.peak_cuda_bytes if fu.peak_cuda_bytes else None}
    ratio = f", peak memory {out['peak_memory_ratio']:.2f}" if out["peak_memory_ratio"] else ""
    print(f"LoRA / full: tokens/s {lo.tokens_per_second / fu.tokens_per_second:.2f}, step time {out['step_time_ratio']:.2f}, "
          f"training state {out['state_ratio']:.3f}{ratio}")
    return out


def time_to_accuracy(size: str, target: float, device: torch.device, peak_tflops: float) -> None:
    base, world = ensure_pretrained(size, device)
    t0 = time.perf_counter()
    steps = 50
    while True:
        _, rep = finetune(base, world, "json", "lora-qv", steps=steps, batch_size=64 if size == "gpu" else 32, progress=False)
        if rep.test_exact_match >= target or steps >= 3200:
            break
        steps *= 2
    minutes = (time.perf_counter() - t0) / 60
    params = sum(p.numel() for p in base.parameters())
    print(f"\n[{size}] LoRA r=8 (Wq, Wv) reached held-out exact match {rep.test_exact_match:.3f} with {steps} steps "
          f"({rep.result.seconds:.1f} s for that run; {minutes:.2f} min including the shorter tries)")
    if device.type == "cuda":
        # LoRA training: forward 2N + backward to the activations 2N FLOPs per token (no weight gradients for the frozen base)
        achieved = 4 * params * rep.tokens_per_second / 1e12
        mfu = 100 * achieved / peak_tflops
        print(f"model FLOP utilisation (4 N FLOPs per trained token): {achieved:.2f} TFLOP/s = {mfu:.2f}% of {peak_tflops:g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--sizes", nargs="+", default=None, help="default: tiny, plus gpu when CUDA is present")
    parser.add_argument("--until", type=float, default=None, help="train LoRA until this held-out exact match")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM: 989)")
    args = parser.parse_args()
    configure_threads()
    device = pick_device()
    print(environment_summary(device))
    sizes = args.sizes or (["tiny", "gpu"] if device.type == "cuda" else ["tiny"])
    for size in sizes:
        compare(device, size, args.steps)
        if args.until is not None:
            time_to_accuracy(size, args.until, device, args.peak_tflops)


if __name__ == "__main__":
    main()
