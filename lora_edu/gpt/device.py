"""Picking the device, the CPU thread count and the training precision, and the setup line every notebook prints."""

from __future__ import annotations

import os
import platform

import torch

__all__ = [
    "configure_threads", "environment_summary", "gpu_summary", "peak_flops", "pick_device", "precision_for", "setup_torch",
]

THREADS_ENV = "LORA_EDU_THREADS"
MIN_TORCH_FOR_MPS = (2, 3)


def torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA if present, else MPS (on torch >= 2.3, where it is known to work), else CPU.

    ``prefer`` (or the ``LORA_EDU_DEVICE`` environment variable) forces one, e.g. ``"cpu"``.
    """
    prefer = prefer or os.environ.get("LORA_EDU_DEVICE")
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available() and torch_version() >= MIN_TORCH_FOR_MPS:
        return torch.device("mps")
    return torch.device("cpu")


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op CPU threads deliberately and return the number.

    Order: the argument, then ``$LORA_EDU_THREADS``, then the cores this process may use
    (at most 8).  Too many threads on a small shared CPU make every step many times slower.
    """
    if n is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        if env:
            if not env.isdigit() or int(env) < 1:
                raise ValueError(f"${THREADS_ENV} must be a positive integer, got {env!r}.")
            n = int(env)
        else:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            n = max(1, min(8, cores))
    if n < 1:
        raise ValueError(f"The thread count must be at least 1, got {n}.")
    torch.set_num_threads(n)
    return n


def precision_for(device: torch.device) -> str:
    """bf16 on CUDA with compute capability >= 8.0, fp16 on older CUDA GPUs (a T4 is 7.5), else fp32."""
    if device.type != "cuda":
        return "fp32"
    major, _ = torch.cuda.get_device_capability(device)
    return "bf16" if major >= 8 else "fp16"


# Dense peak matmul throughput in TFLOP/s at the precision the training loop uses on each GPU
# (bf16 from compute capability 8.0, fp16 below), from the vendors' data sheets. Used for MFU.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "T4": 65.0, "V100": 125.0}


def peak_flops(device: torch.device) -> float | None:
    """The GPU's dense bf16/fp16 peak in FLOP/s when it is in ``PEAK_TFLOPS``, else None (CPU, MPS, unknown GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def gpu_summary(device: torch.device) -> str:
    """GPU name, memory, compute capability and the training precision, or a line saying there is no GPU."""
    if device.type != "cuda":
        return f"no CUDA GPU: training runs on {device.type} in fp32"
    props = torch.cuda.get_device_properties(device)
    major, minor = torch.cuda.get_device_capability(device)
    return (f"GPU {props.name} | {props.total_memory / 2**30:.1f} GiB | compute capability {major}.{minor} | "
            f"training precision {precision_for(device)}")


def environment_summary(device: torch.device | None = None) -> str:
    """One line: Python, torch and numpy versions, the device and the CPU threads."""
    import numpy

    device = device or pick_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return (
        f"python {platform.python_version()} | torch {torch.__version__} | numpy {numpy.__version__} | "
        f"device {device} ({name}) | cpu threads {torch.get_num_threads()}"
    )


def setup_torch(seed: int = 0) -> torch.device:
    """Threads, the seed, the device and one line of versions: what a lesson's setup cell does when it needs torch."""
    configure_threads()
    torch.manual_seed(seed)
    device = pick_device()
    print(environment_summary(device))
    if device.type == "cuda":
        print(gpu_summary(device))
    return device
