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
from collections.abc import Sequence
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


def show_folded(label: str, text: str) -> None:
    """Show ``text`` behind a click labelled ``label`` in a notebook (lines a student may skip on a first reading);
    elsewhere print it whole after the label."""
    from .quiz import in_notebook

    if not in_notebook():
        print(f"{label}:\n{text}")
        return
    import html

    from IPython.display import display

    display({"text/html": f"<details><summary>{html.escape(label)}</summary><pre>{html.escape(text)}</pre></details>",
             "text/plain": f"{label}:\n{text}"}, raw=True)


# What each verdict word of a findings table means; a table explains the ones it uses, under it. Each row's evidence
# names the test that decided it (a 95% interval, a count against chance, a window of a coarse grid).
VERDICT_WORDS = {
    "agrees": "our measurement decides the question, on the side the paper's claim takes",
    "disagrees": "our measurement decides the question, on the other side",
    "partly": "some of the claim's comparisons agree and none disagree, but the rest are not resolved",
    "not resolved": "our seeds and animals cannot decide it, which is not the same as a tie",
    "descriptive": "a number without an interval, so no verdict",
}


def verdict_words_in(word: str) -> list[str]:
    """The ``VERDICT_WORDS`` a verdict in a word uses ("disagrees at d = 64" uses "disagrees", not "agrees"), in the
    order of ``VERDICT_WORDS``."""
    used = {w for w, _ in word_spans(word)}
    return [w for w in VERDICT_WORDS if w in used]


def word_spans(word: str) -> list[tuple[str, int]]:
    """Each verdict word in ``word`` with the index just after it, in order of appearance: the longer words are found
    first, and the text they cover is not searched again ("disagrees" holds no "agrees")."""
    import re

    found, covered = [], []
    for w in sorted(VERDICT_WORDS, key=len, reverse=True):
        for m in re.finditer(rf"(?<![a-z]){w}", word):
            if not any(a <= m.start() < b for a, b in covered):
                covered.append((m.start(), m.end()))
                found.append((w, m.end()))
    return sorted(found, key=lambda pair: pair[1])


def explain_words(word: str, new: set[str]) -> str:
    """``word`` with the meaning of each verdict word in ``new`` in brackets just after its first use."""
    out, start, done = [], 0, set()
    for w, end in word_spans(word):
        if w in new and w not in done:
            out.append(word[start:end] + f" ({VERDICT_WORDS[w]})")
            start = end
            done.add(w)
    return "".join(out) + word[start:]


class Findings:
    """The comparisons a lesson prints as it goes, kept for its summary.

    ``add`` prints one: the claim, our verdict in a word (with the word's meaning the first time the lesson uses
    it) and the evidence; ``rows`` keeps (claim, word, evidence) for ``findings_table``."""

    def __init__(self, lead: str = "the paper, ") -> None:
        self.lead = lead  # printed before a claim that is not "our ..."; "" where each claim names its paper
        self.rows: list[tuple[str, str, str]] = []
        self.explained: set[str] = set()  # the verdict words already explained

    def add(self, claim: str, word: str, evidence: str | Sequence[str], echo: bool = True) -> None:
        """Print ``claim`` (the paper's, after ``lead``, unless it starts with "our "), ``word`` (each verdict word
        explained where the lesson first uses it) and ``evidence``, and keep them. ``evidence`` is one text, or a list
        of separate pieces (shown one a line). ``echo=False`` where the cell has just printed the evidence itself: it
        is kept for the summary's table, not printed twice."""
        items = [evidence] if isinstance(evidence, str) else [str(item) for item in evidence]
        evidence = "; ".join(items)
        used = verdict_words_in(word)
        if not used:
            raise ValueError(f"The verdict {word!r} uses none of the verdict words {list(VERDICT_WORDS)}: say it with one of them.")
        new = {w for w in used if w not in self.explained}
        self.explained.update(new)
        said = ("" if claim.startswith("our ") else self.lead) + claim
        items = [item for item in items if item] if echo else []
        text = f"{said}.\n    ours: {explain_words(word, new)}." + (
            f" {items[0]}" if len(items) == 1 else "".join(f"\n    - {item}" for item in items))
        from .quiz import in_notebook

        if in_notebook():
            from IPython.display import display

            display({"text/html": finding_html(said, word, new, items), "text/plain": text}, raw=True)
        else:
            print(text)
        self.rows.append((claim, word, evidence))

    def amend(self, claim_part: str, word: str, evidence: str) -> None:
        """Add a second reading to the one finding whose claim contains ``claim_part``, for the summary (nothing is
        printed): ``word`` after its verdict (after "; "), ``evidence`` after its evidence (after ". ")."""
        matches = [k for k, (claim, _, _) in enumerate(self.rows) if claim_part in claim]
        if len(matches) != 1:
            raise ValueError(f"{len(matches)} findings have {claim_part!r} in their claim; name a part of exactly one.")
        if not verdict_words_in(word):
            raise ValueError(f"The verdict {word!r} uses none of the verdict words {list(VERDICT_WORDS)}: say it with one of them.")
        claim, old_word, old_evidence = self.rows[matches[0]]
        self.rows[matches[0]] = (claim, f"{old_word}; {word}", f"{old_evidence}. {evidence}")


VERDICT_COLOURS = {"agrees": "#2e8b57", "disagrees": "#c0392b", "partly": "#c9a227", "not resolved": "#8a8a8a",
                   "descriptive": "#4a7bd0"}  # the bar beside a finding, by the first verdict word it uses


FOLD_WORDS = 40  # evidence longer than this, or in more than one piece, is folded under "the numbers"


def finding_html(claim: str, word: str, new: set[str], evidence: str | Sequence[str]) -> str:
    """One finding as a lesson shows it: a bar coloured by the verdict, the claim (its source in bold, up to the
    first ": "), our verdict with each verdict word in bold and, where ``new`` holds it, its meaning in grey, and the
    evidence beneath in smaller grey text: one short text as a line; a long one, or several pieces (a list, one item
    each), folded under "the numbers", for a student to open when they want it."""
    import html

    source, sep, rest = claim.partition(": ")
    said = (f"<b>{html.escape(source[:1].upper() + source[1:])}</b>: {html.escape(rest)}" if sep
            else html.escape(claim[:1].upper() + claim[1:]))
    spans, parts, start, glossed = word_spans(word), [], 0, set()
    for w, end in spans:  # each verdict word in bold; a new one's meaning after its first use only
        parts.append(html.escape(word[start:end - len(w)]) + f"<b>{w}</b>"
                     + (f" <span style='color:#777'>({VERDICT_WORDS[w]})</span>" if w in new - glossed else ""))
        glossed.add(w)
        start = end
    verdict = "".join(parts) + html.escape(word[start:])
    colour = VERDICT_COLOURS[spans[0][0]] if spans else VERDICT_COLOURS["not resolved"]
    items = [evidence] if isinstance(evidence, str) else list(evidence)
    items = [item for item in items if item]
    if len(items) == 1 and len(items[0].split()) <= FOLD_WORDS:
        below = f"<div style='color:#555;font-size:90%'>{html.escape(items[0])}</div>"
    elif items:
        inside = (f"<div>{html.escape(items[0])}</div>" if len(items) == 1 else
                  "<ul style='margin:2px 0 4px 0'>" + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>")
        below = f"<details style='color:#555;font-size:90%'><summary>the numbers</summary>{inside}</details>"
    else:
        below = ""
    return (f"<div style='border-left:4px solid {colour};padding:2px 10px;margin:6px 0;line-height:1.45'>"
            f"<div>{said}.</div><div>Ours: {verdict}.</div>{below}</div>")


def in_a_word(word: str) -> str:
    """The verdict words of a qualified verdict, in order, each once: "not resolved against X, disagrees against Y"
    gives "not resolved / disagrees". A verdict that is only its word stays as it is."""
    words = list(dict.fromkeys(w for w, _ in word_spans(word)))
    return " / ".join(words) if words else word


SHORT_VERDICT_WORDS = 20  # a verdict without its asides is shown whole up to this many words


def short_verdict(word: str) -> str:
    """A verdict for a summary table: the verdict without its parenthesised asides, when that fits
    ``SHORT_VERDICT_WORDS`` words; else its verdict words alone (``in_a_word``). "disagrees at r = 1, not resolved at
    r = 2 (answer loss ...)" keeps "at r = 1" and "at r = 2", which "disagrees / not resolved" would lose."""
    import re

    short = word
    while re.search(r"\([^()]*\)", short):
        short = re.sub(r"\s*\([^()]*\)", "", short)
    short = short.strip().rstrip(",;")
    if short and len(short.split()) <= SHORT_VERDICT_WORDS and "(" not in short and ")" not in short:
        return short
    return in_a_word(word)


def findings_table(rows: list[tuple[str, str, str]], headers: tuple[str, str, str] = ("the paper", "verdict", "ours"),
                   columns: dict[str, list[str]] | None = None) -> Any:
    """A lesson's comparisons as Markdown: a short numbered table of (what was asked or found, the verdict in short:
    ``short_verdict``), the meaning of each verdict word it uses, and, folded below (``<details>``), each row's whole
    verdict where it says more than its words, then what we measured. A "|" inside a cell is escaped, so it cannot
    split the row.

    ``columns`` replaces the one verdict column by several, one short entry per row each (e.g. the verdict against
    each method compared, and a second look): ``{"against full": ["agrees", ...], ...}``; "" leaves a cell empty."""
    from IPython.display import Markdown

    if not rows:
        raise ValueError("No findings to show: collect (question, verdict, evidence) rows before building the table.")
    if any(len(row) != len(headers) for row in rows):
        raise ValueError(f"Every row needs {len(headers)} cells, one per header {headers}; got rows of {sorted({len(r) for r in rows})}.")
    columns = columns if columns is not None else {headers[1]: [short_verdict(word) for _, word, _ in rows]}
    if not columns or any(len(entries) != len(rows) for entries in columns.values()):
        raise ValueError(f"Each of columns {list(columns)} needs one entry per row ({len(rows)} rows).")

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    def bold(text: str) -> str:  # each verdict word in bold, the rest as it is
        out, start = [], 0
        for w, end in word_spans(text):
            out.append(cell(text[start:end - len(w)]) + f"**{w}**")
            start = end
        return "".join(out) + cell(text[start:])

    table = (f"| | {cell(headers[0])} | " + " | ".join(map(cell, columns)) + " |\n|---|---|" + "---|" * len(columns) + "\n"
             + "\n".join(f"| {i} | {cell(question)} | " + " | ".join(bold(entries[i - 1]) for entries in columns.values()) + " |"
                         for i, (question, _, _) in enumerate(rows, 1)))
    used = [w for w in VERDICT_WORDS if any(w in verdict_words_in(entry) for entries in columns.values() for entry in entries)
            or any(w in verdict_words_in(word) for _, word, _ in rows)]
    legend = "\n".join(f"- *{w}*: {VERDICT_WORDS[w]}" for w in used)
    evidence = "\n".join(f"{i}. " + (f"*{cell(word)}.* " if short_verdict(word) != word else "") + cell(ours)
                         for i, (_, word, ours) in enumerate(rows, 1))
    return Markdown(table + ("\n\n" + legend if legend else "")
                    + f"\n\n<details><summary><b>{cell(headers[2])}</b>, row by row (open)</summary>\n\n{evidence}\n\n</details>")
