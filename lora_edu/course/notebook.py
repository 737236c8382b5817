"""What a notebook's first cell calls once ``lora_edu`` is installed: threads, seeds, versions.

The lessons on linear algebra (01, 02) need only NumPy: ``setup_notebook(needs_torch=False)`` neither imports
nor configures torch, so they start at once on any laptop.  On Colab it also turns on Colab's custom widget
manager.  The Colab install itself cannot live here (it runs before the package exists); the setup cell carries
it in a few lines, with the source URL declared once in ``pyproject.toml``
under ``[project.urls] Source`` (a test keeps the cells equal to it).
"""

from __future__ import annotations

import platform
import sys
from typing import Any

import numpy as np

__all__ = ["setup_notebook"]


def setup_notebook(seed: int = 0, needs_torch: bool = True) -> Any:
    """Seed, set CPU threads and print one line of versions; return the torch device (None without torch).

    ``needs_torch=True`` delegates to ``lora_edu.gpt.device.setup_torch`` (threads from ``$LORA_EDU_THREADS``,
    torch's seed, the device).  ``needs_torch=False`` seeds NumPy's legacy global generator only.
    """
    if not isinstance(needs_torch, bool):
        raise TypeError(f"needs_torch must be True or False, got {needs_torch!r}.")
    enable_colab_widgets()
    if needs_torch:
        from ..gpt.device import setup_torch

        return setup_torch(seed)
    np.random.seed(seed)
    print(f"python {platform.python_version()} | numpy {np.__version__} | torch not loaded (this lesson needs only NumPy)")
    return None


def enable_colab_widgets() -> bool:
    """On Colab, turn on its custom widget manager (ipywidgets then render there); elsewhere do nothing.

    Returns True when it was turned on.
    """
    if "google.colab" not in sys.modules:
        return False
    try:
        from google.colab import output
    except ImportError:
        return False
    output.enable_custom_widget_manager()
    return True


def findings_table(rows: list[tuple[str, str, str]], headers: tuple[str, str, str] = ("the paper", "verdict", "ours")) -> Any:
    """A lesson's comparisons as one Markdown table: a numbered row per (what was asked or found, the verdict in a
    word, what we measured). A "|" inside a cell is escaped, so it cannot split the row."""
    from IPython.display import Markdown

    if not rows:
        raise ValueError("No findings to show: collect (question, verdict, evidence) rows before building the table.")
    if any(len(row) != len(headers) for row in rows):
        raise ValueError(f"Every row needs {len(headers)} cells, one per header {headers}; got rows of {sorted({len(r) for r in rows})}.")

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| | " + " | ".join(map(cell, headers)) + " |\n|---|" + "---|" * len(headers) + "\n"
    return Markdown(head + "\n".join(f"| {i} | " + " | ".join(map(cell, row)) + " |" for i, row in enumerate(rows, 1)))
