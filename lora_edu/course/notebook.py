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


# What each verdict word of a findings table means; a table explains the ones it uses, under it.
VERDICT_WORDS = {
    "agrees": "the 95% interval excludes a tie, on the side the paper favours",
    "disagrees": "the 95% interval excludes a tie, on the other side",
    "partly": "some of the claim's comparisons agree and none disagree, but the rest are not resolved",
    "not resolved": "the interval includes a tie: our seeds and test animals cannot tell the two apart, which is not the same as equal",
    "no contradiction": "the paper reports a tie, and ours is not resolved either",
    "same direction": "the paper's gap is within its own noise; ours resolves it in the same direction",
    "opposite direction": "the paper's gap is within its own noise; ours resolves it the other way",
    "holds": "a claim of our own, not the paper's, resolved in its favour",
    "does not hold": "a claim of our own, not the paper's, resolved against it",
    "descriptive": "a number without an interval, so no verdict",
    "not contradicted": "no interval here: our figure lies within what a grid this coarse can tell from the paper's",
    "contradicted": "no interval here: our figure lies beyond what a grid this coarse can tell from the paper's",
}


def verdict_words_in(word: str) -> list[str]:
    """The ``VERDICT_WORDS`` a verdict in a word uses ("disagrees at d = 64" uses "disagrees", not "agrees";
    "not contradicted" uses only itself): the longer words are found first, and their text is not searched again."""
    import re

    used = set()
    for w in sorted(VERDICT_WORDS, key=len, reverse=True):
        pattern = rf"(?<![a-z]){w}"
        if re.search(pattern, word):
            used.add(w)
            word = re.sub(pattern, " ", word)
    return [w for w in VERDICT_WORDS if w in used]


class Findings:
    """The comparisons a lesson prints as it goes, kept for its summary.

    ``add`` prints one: the claim, our verdict in a word (with the word's meaning the first time the lesson uses
    it) and the evidence; ``rows`` keeps (claim, word, evidence) for ``findings_table``."""

    def __init__(self, lead: str = "the paper, ") -> None:
        self.lead = lead  # printed before a claim that is not "our ..."; "" where each claim names its paper
        self.rows: list[tuple[str, str, str]] = []
        self.explained: set[str] = set()  # the verdict words already explained

    def add(self, claim: str, word: str, evidence: str) -> None:
        """Print ``claim`` (the paper's, after ``lead``, unless it starts with "our "), ``word`` and ``evidence``,
        and keep them."""
        used = verdict_words_in(word)
        if not used:
            raise ValueError(f"The verdict {word!r} uses none of the verdict words {list(VERDICT_WORDS)}: say it with one of them.")
        new = [w for w in used if w not in self.explained]
        self.explained.update(new)
        # a verdict of one word: its meaning alone; a verdict of several: each new one named with its meaning
        meaning = "; ".join(VERDICT_WORDS[w] if len(used) == 1 else f"{w}: {VERDICT_WORDS[w]}" for w in new)
        print(("" if claim.startswith("our ") else self.lead) + f"{claim}.\n    ours: {word}" + (f" ({meaning})" if meaning else "")
              + f". {evidence}")
        self.rows.append((claim, word, evidence))


def findings_table(rows: list[tuple[str, str, str]], headers: tuple[str, str, str] = ("the paper", "verdict", "ours")) -> Any:
    """A lesson's comparisons as Markdown: a short numbered table of (what was asked or found, the verdict in a word),
    the meaning of each verdict word it uses, and what we measured for each row folded below (``<details>``).
    A "|" inside a cell is escaped, so it cannot split the row."""
    from IPython.display import Markdown

    if not rows:
        raise ValueError("No findings to show: collect (question, verdict, evidence) rows before building the table.")
    if any(len(row) != len(headers) for row in rows):
        raise ValueError(f"Every row needs {len(headers)} cells, one per header {headers}; got rows of {sorted({len(r) for r in rows})}.")

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    table = (f"| | {cell(headers[0])} | {cell(headers[1])} |\n|---|---|---|\n"
             + "\n".join(f"| {i} | {cell(question)} | **{cell(word)}** |" for i, (question, word, _) in enumerate(rows, 1)))
    used = [w for w in VERDICT_WORDS if any(w in verdict_words_in(word) for _, word, _ in rows)]
    legend = "\n".join(f"- *{w}*: {VERDICT_WORDS[w]}" for w in used)
    evidence = "\n".join(f"{i}. {cell(ours)}" for i, (_, _, ours) in enumerate(rows, 1))
    return Markdown(table + ("\n\n" + legend if legend else "")
                    + f"\n\n<details><summary><b>{cell(headers[2])}</b>, row by row (open)</summary>\n\n{evidence}\n\n</details>")
