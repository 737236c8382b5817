"""Do the committed notebooks pass their checks under other CPU kernels and thread counts, and by how much do
their trained figures move? (The measurement behind each cell's ``lora_edu.trained_figures`` tolerance.)

Executes each notebook afresh under every setting (environment variables that change which CPU kernels torch
runs, or how many threads), then checks the new outputs against the committed ones with the rules of the test
suite: exact for ordinary cells (after ``tests/nbval_sanitize.cfg``), within the declared tolerance for trained
cells, not at all for cells tagged ``nbval-ignore-output``. Prints, per trained cell, the largest absolute and relative
spread of its numbers across the committed run and all settings, and writes them to a JSON file.

    python benchmarks/portability.py notebooks/05_*.ipynb [--settings native default avx2 threads1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from lora_edu.devtools.portable import compare_trained_outputs, numbers_and_text, output_ignored, text_outputs, trained_tolerance

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = {
    "native": {},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "threads1": {"LORA_EDU_THREADS": "1"},
    "default-threads1": {"ATEN_CPU_CAPABILITY": "default", "LORA_EDU_THREADS": "1"},
    "mkl-avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def sanitizer() -> callable:
    """The masks of ``tests/nbval_sanitize.cfg``, read by nbval's own parser."""
    from nbval.plugin import get_sanitize_patterns

    pairs = get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text())

    def sanitize(s: str) -> str:
        for regex, replace in pairs:
            s = re.sub(regex, replace, s)
        return s

    return sanitize


def execute(path: Path, env: dict[str, str]) -> dict:
    out = Path(tempfile.mkdtemp()) / path.name
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", f"--output={out}",
                    "--ExecutePreprocessor.timeout=3600", str(path)], check=True, cwd=path.parent, env={**os.environ, **env},
                   capture_output=True)
    return json.loads(out.read_text(encoding="utf-8"))


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def check(committed: dict, fresh: dict, sanitize) -> list[str]:
    """The cells whose fresh outputs the test suite would reject (empty: it passes)."""
    failures = []
    for i, (old, new) in enumerate(zip(code_cells(committed), code_cells(fresh), strict=True)):
        if output_ignored(old["metadata"]):
            continue
        tolerance = trained_tolerance(old["metadata"])
        if tolerance is not None:
            ok, report = compare_trained_outputs(new["outputs"], old["outputs"], tolerance, sanitize)
        else:
            ok = text_outputs(new["outputs"], sanitize) == text_outputs(old["outputs"], sanitize)
            report = ["exact output differs"]
        if not ok:
            failures.append(f"code cell {i}: {report[0]}")
    return failures


def spreads(runs: list[dict]) -> dict[int, dict]:
    """Per trained cell: the declared tolerance and the largest absolute / relative spread of any of its numbers."""
    out = {}
    for i, cell in enumerate(code_cells(runs[0])):
        tolerance = trained_tolerance(cell["metadata"])
        if tolerance is None:
            continue
        values = []
        for nb in runs:
            texts = text_outputs(code_cells(nb)[i]["outputs"], lambda s: s)
            values.append([n for kind in sorted(texts) for t in texts[kind] for n in numbers_and_text(t)[0]])
        if len({len(v) for v in values}) != 1:
            out[i] = {"rel": tolerance.rel, "abs": tolerance.abs, "note": "the number of figures differs between runs"}
            continue
        worst_abs = worst_rel = 0.0
        for column in zip(*values, strict=True):
            spread = max(column) - min(column)
            worst_abs = max(worst_abs, spread)
            scale = max(abs(x) for x in column)
            worst_rel = max(worst_rel, spread / scale if scale else 0.0)
        out[i] = {"declared_rel": tolerance.rel, "declared_abs": tolerance.abs, "spread_abs": worst_abs, "spread_rel": worst_rel,
                  "first_line": "".join(cell["source"]).splitlines()[1][:80] if "\n" in "".join(cell["source"]) else ""}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--settings", nargs="+", default=["native", "default", "threads1"], choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args()
    sanitize = sanitizer()
    results = {}
    for path in args.notebooks:
        committed = json.loads(path.read_text(encoding="utf-8"))
        runs, verdicts = [committed], {}
        for name in args.settings:
            fresh = execute(path.resolve(), SETTINGS[name])
            runs.append(fresh)
            verdicts[name] = check(committed, fresh, sanitize)
            print(f"{path.name} under {name}: {'PASS' if not verdicts[name] else 'FAIL ' + '; '.join(verdicts[name])}", flush=True)
        cells = spreads(runs)
        for i, s in cells.items():
            print(f"  code cell {i}: spread abs {s.get('spread_abs', float('nan')):.4g}, rel {s.get('spread_rel', float('nan')):.3g} | "
                  f"declared abs {s.get('declared_abs')}, rel {s.get('declared_rel')}")
        results[path.name] = {"settings": verdicts, "trained_cells": cells}
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    sys.exit(1 if any(v for r in results.values() for v in r["settings"].values()) else 0)


if __name__ == "__main__":
    main()
