"""The class-GPU check (`make gpu-check`): notebooks 05, 05b, 05c, 06 and 06b in their GPU configuration, then the benchmarks.

Runs each notebook's code cells in order in one namespace (no Jupyter needed, so it also runs where only
PyTorch is installed), from a fresh cache so that the GPU model is pretrained inside notebook 05's time,
as on a fresh Colab runtime. Writes ``benchmarks/gpu_results.json`` and ``benchmarks/gpu_results.md``:
device name, minutes per notebook, the figures the notebooks computed (exact match, peak memory,
tokens/s, MFU), and the LoRA / full fine-tuning ratios of ``benchmarks/finetune.py``.

    python benchmarks/gpu_check.py [--notebooks 05 05b 05c 06 06b] [--out benchmarks/gpu_results] [--cuda-graphs]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {"05": "05_lora_finetune_small_gpt.ipynb", "05b": "05b_lora_vs_full_finetuning.ipynb",
             "05c": "05c_where_lora_updates_go.ipynb", "06": "06_lora_paper_experiments.ipynb",
             "06b": "06b_after_the_lora_paper.ipynb"}


MAGIC_LINE = re.compile(r"\s*(%|!(?!=))")  # an IPython magic or a shell line


def code_cells(path: Path) -> list[str]:
    """The notebook's code cells, without IPython magics (``%...``) and shell lines (``!...``); a Python line that starts
    with ``!=`` (a comparison continued from the line before) is kept."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return ["\n".join(line for line in s.splitlines() if not MAGIC_LINE.match(line)) for s in sources]


def run_notebook(path: Path) -> tuple[float, dict, str, str | None]:
    """Execute a notebook's code cells in one namespace: (seconds, namespace, what it printed, the first failure or None).

    A failing cell stops the notebook; what ran before it is still measured and reported."""
    namespace: dict = {"__name__": "__main__", "display": print}
    printed = io.StringIO()
    start = time.perf_counter()
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        for i, source in enumerate(code_cells(path)):
            with contextlib.redirect_stdout(printed):
                try:
                    exec(compile(source, f"{path.name}[cell {i}]", "exec"), namespace)
                except Exception as exc:
                    failure = f"code cell {i} failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"
                    print(failure, file=sys.stderr)
                    return time.perf_counter() - start, namespace, printed.getvalue(), failure
    finally:
        os.chdir(cwd)
    return time.perf_counter() - start, namespace, printed.getvalue(), None


def run_figures(reports: list) -> list[dict]:
    """One row per fine-tuning report a notebook kept."""
    rows = []
    for rep in reports:
        res = rep.result
        rows.append({"method": rep.method, "lr": rep.lr, "seed": rep.seed, "test_exact_match": rep.test_exact_match,
                     "val_exact_match": rep.val_exact_match, "pretrain_loss": round(rep.pretrain_loss, 4),
                     "ms_per_step": round(rep.ms_per_step, 2), "tokens_per_second": round(rep.tokens_per_second),
                     "peak_memory_mb": round(rep.peak_memory_bytes / 1e6, 1), "precision": res.precision,
                     "flops_per_second": res.flops_per_second, "cuda_graph": res.cuda_graph})
    return rows


def markdown(results: dict) -> str:
    graphs = " with `LORA_EDU_CUDA_GRAPHS=1`" if results.get("cuda_graphs") else ""
    lines = [f"# GPU check: {results['device']}", "", f"Measured {results['date']} with `make gpu-check`{graphs} "
             f"(torch {results['torch']}, precision {results['precision']}).", "",
             "| notebook | minutes (fresh runtime) | fine-tuning runs | runs replayed from a CUDA graph | peak memory of a run (MB) "
             "| median tokens/s | median MFU |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, nb in results["notebooks"].items():
        if nb["failure"]:
            lines.append(f"| {name} | FAILED after {nb['minutes']:.2f}: {nb['failure'].splitlines()[0]} | | | | | |")
            continue
        graphed = sum(r["cuda_graph"] for r in nb["reports"])
        lines.append(f"| {name} | {nb['minutes']:.2f} | {nb['runs']} | {graphed} of {len(nb['reports'])} | {nb['max_peak_memory_mb']} | "
                     f"{nb['median_tokens_per_second']} | {nb['median_mfu']} |")
    bench = results.get("finetune_benchmark")
    if bench:
        lines += ["", f"LoRA / full fine-tuning on the `gpu` size, side by side: step time **{bench['step_time_ratio']:.2f}x**, "
                  f"peak training memory **{bench['peak_memory_ratio']:.2f}x** (targets: <= 0.75x and <= 0.5x)."]
    lines += ["", "Per-notebook figures are in the JSON file beside this one."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS), choices=list(NOTEBOOKS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu_results")
    parser.add_argument("--keep-cache", action="store_true", help="reuse $LORA_EDU_CACHE instead of a fresh one")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="record each training step as a CUDA graph (LORA_EDU_CUDA_GRAPHS=1); writes gpu_results_graphs.* by default")
    args = parser.parse_args()
    import numpy as np
    import torch

    from lora_edu.gpt.device import peak_flops, pick_device
    from lora_edu.gpt.finetune import collect_reports

    device = pick_device()
    if device.type != "cuda":
        raise SystemExit(f"gpu-check needs a CUDA GPU; this machine has {device.type}. (CPU runs: make test.)")
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are drawn, not shown
    if args.cuda_graphs:
        os.environ["LORA_EDU_CUDA_GRAPHS"] = "1"  # read by every TrainConfig(cuda_graph=None): the notebooks and the benchmark
        if args.out == ROOT / "benchmarks" / "gpu_results":
            args.out = ROOT / "benchmarks" / "gpu_results_graphs"
    if not args.keep_cache:
        os.environ["LORA_EDU_CACHE"] = tempfile.mkdtemp(prefix="lora_edu_cache_")  # a fresh runtime: pretraining is timed
    from lora_edu.gpt.device import precision_for

    peak = peak_flops(device)
    results = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "precision": precision_for(device),
               "date": time.strftime("%Y-%m-%d"), "cuda_graphs": args.cuda_graphs, "notebooks": {}}
    for key in args.notebooks:
        torch.cuda.empty_cache()
        with collect_reports() as reports:  # every fine-tune the notebook runs
            seconds, _, printed, failure = run_notebook(ROOT / "notebooks" / NOTEBOOKS[key])
        rows = run_figures(reports)
        tokens = [r["tokens_per_second"] for r in rows]
        mfu = [r["flops_per_second"] / peak for r in rows] if peak else []
        results["notebooks"][key] = {
            "minutes": round(seconds / 60, 2), "runs": len(rows),
            "max_peak_memory_mb": max((r["peak_memory_mb"] for r in rows), default=None),
            "median_tokens_per_second": int(np.median(tokens)) if tokens else None,
            "median_mfu": round(float(np.median(mfu)), 4) if mfu else None,
            "failure": failure, "reports": rows, "printed_tail": printed[-4000:],
        }
        print(f"notebook {key}: {seconds / 60:.2f} min, {len(rows)} reports", flush=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float) + "\n", encoding="utf-8")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import finetune as finetune_benchmark  # noqa: E402

    results["finetune_benchmark"] = finetune_benchmark.compare(device, "gpu", steps=100)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))
    if any(nb["failure"] for nb in results["notebooks"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
