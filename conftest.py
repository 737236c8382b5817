"""pytest configuration shared by the unit tests and the strict nbval run of the notebooks.

The portable-check rule (README, "Tests"): nbval compares every stored output exactly, with two
exceptions that this file implements on top of nbval.

1. A cell whose metadata declares ``lora_edu.trained_figures = {"rel": R, "abs": A}`` prints figures that come
   out of gradient descent. Their last digits differ between CPU kernels (AVX2, AVX-512, the portable
   "default" ones), BLAS libraries and thread counts, so in such a cell the *text* is still compared
   exactly, but each *number* in it is compared within ``abs + rel * max(|stored|, |new|)``, and the
   images it draws are not compared. The tolerances are chosen from the spread measured across kernels
   and thread counts (``benchmarks/portability.py``); the notebook asserts the scientific claim itself.
2. nbval waits a fixed 5 s for a cell's output messages after the cell ends; on a loaded 2-core
   machine a late message made it kill the kernel. The wait here is ``$LORA_EDU_NBVAL_OUTPUT_WAIT``
   seconds (default 600): a normal cell is not slowed by it, a busy machine no longer fails.

Timings and progress bars carry nbval's own cell tag ``nbval-ignore-output``, with asserts elsewhere. Both rules live
in cell metadata, so a student reading the lesson never sees them.
"""

from __future__ import annotations

import os
from collections import defaultdict

from lora_edu.devtools.portable import compare_trained_outputs, trained_tolerance

_notebook_seconds: dict[str, float] = defaultdict(float)


def pytest_configure(config):
    # The stored figures were drawn by Jupyter's inline backend; a kernel that inherits MPLBACKEND=Agg (set by a CI
    # runner, or leaked by a test) would draw none, and every figure cell would fail. Notebooks choose their own.
    os.environ.pop("MPLBACKEND", None)
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval not installed: nothing to adapt
        return
    if getattr(IPyNbCell, "_lora_edu_portable", False):
        return
    wait = float(os.environ.get("LORA_EDU_NBVAL_OUTPUT_WAIT", "600"))
    original_init, original_compare = IPyNbCell.__init__, IPyNbCell.compare_outputs

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.output_timeout = wait

    def compare_outputs(self, test, ref, skip_compare=None):
        tolerance = trained_tolerance(self.cell.metadata)
        if tolerance is None:
            return original_compare(self, test, ref, skip_compare)
        ok, report = compare_trained_outputs(test, ref, tolerance, self.sanitize)
        self.comparison_traceback = report
        return ok

    IPyNbCell.__init__, IPyNbCell.compare_outputs = __init__, compare_outputs
    IPyNbCell._lora_edu_portable = True


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] += report.duration


def pytest_terminal_summary(terminalreporter):
    if _notebook_seconds:
        terminalreporter.section("notebook run times (nbval)")
        for path, seconds in sorted(_notebook_seconds.items()):
            terminalreporter.write_line(f"{seconds:7.1f} s  {path}")
        terminalreporter.write_line(f"{sum(_notebook_seconds.values()):7.1f} s  all notebooks")
