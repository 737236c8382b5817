"""Comparing a notebook cell's outputs when they contain trained figures (the portable-check rule).

The rule lives in the cell's metadata, out of the student's sight: a cell whose metadata holds
``{"lora_edu": {"trained_figures": {"rel": R, "abs": A, "why": "..."}}}`` is compared like this: every text
output (stream, ``text/plain``, ``text/html``) is split into numbers and the text between them; the
text must match exactly (runs of spaces count as one, since a number's width may change a column's
padding), there must be as many numbers, and each pair must satisfy
``|new - stored| <= A + R * max(|new|, |stored|)``. Images are not compared. Used by ``conftest.py``
(under nbval) and by ``benchmarks/portability.py`` (to measure the spread across CPU kernels).
A cell whose output is not compared at all carries nbval's own tag ``nbval-ignore-output``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Tolerance", "compare_trained_outputs", "numbers_and_text", "output_ignored", "trained_tolerance"]

IGNORED_TAG = "nbval-ignore-output"  # nbval's tag: the cell's output is not compared
# a number: thousands groups (12,345) or plain digits, an optional fraction and exponent
NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?")
SPACES = re.compile(r"[ \t]+")
NOT_COMPARED = ("image/", "application/vnd.jupyter.widget-view+json")
SKIPPED_KEYS = {"metadata", "traceback", "execution_count", "prompt_number", "output_type", "transient"}


@dataclass(frozen=True)
class Tolerance:
    rel: float = 0.0
    abs: float = 0.0

    def allows(self, new: float, stored: float) -> bool:
        return abs(new - stored) <= self.abs + self.rel * max(abs(new), abs(stored))


def trained_tolerance(metadata: dict) -> Tolerance | None:
    """The tolerance a cell's metadata declares under ``lora_edu.trained_figures``, else None."""
    declared = (metadata.get("lora_edu") or {}).get("trained_figures")
    if declared is None:
        return None
    numbers = {k: declared.get(k, 0) for k in ("rel", "abs")} if isinstance(declared, dict) else {}
    if not numbers or not any(k in declared for k in numbers) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in numbers.values()
    ):
        raise ValueError(f"metadata lora_edu.trained_figures needs a tolerance, e.g. {{'rel': 0.02, 'abs': 0.01}}; got {declared!r}")
    return Tolerance(rel=float(numbers["rel"]), abs=float(numbers["abs"]))


def output_ignored(metadata: dict) -> bool:
    """Whether nbval ignores the cell's output (its ``nbval-ignore-output`` tag)."""
    return IGNORED_TAG in (metadata.get("tags") or [])


def numbers_and_text(s: str) -> tuple[list[float], list[str]]:
    """Split ``s`` into its numbers and the text around them (spaces collapsed, lines stripped)."""
    s = "\n".join(SPACES.sub(" ", line).strip() for line in s.splitlines())
    numbers = [float(m.replace(",", "")) for m in NUMBER.findall(s)]
    return numbers, NUMBER.split(s)


def text_outputs(outputs: list[dict], sanitize: Callable[[str], str]) -> dict[str, list[str]]:
    """Every text output by kind ('stream:stdout', 'text/plain', ...), in order; images and widget views are left out."""
    by_kind: dict[str, list[str]] = {}
    for out in outputs:
        if out.get("output_type") == "stream":
            by_kind.setdefault(f"stream:{out.get('name', 'stdout')}", []).append(sanitize("".join(out.get("text", ""))))
            continue
        if out.get("output_type") == "error":
            by_kind.setdefault("error", []).append(f"{out.get('ename')}: {out.get('evalue')}")
        for kind, value in (out.get("data") or {}).items():
            if kind in SKIPPED_KEYS or kind.startswith(NOT_COMPARED):
                continue
            by_kind.setdefault(kind, []).append(sanitize(value if isinstance(value, str) else "".join(value)))
    return {k: ["".join(v)] if k.startswith("stream:") else v for k, v in by_kind.items()}


def compare_trained_outputs(
    test: list[dict], ref: list[dict], tolerance: Tolerance, sanitize: Callable[[str], str] = lambda s: s
) -> tuple[bool, list[str]]:
    """Compare a trained cell's new outputs (``test``) with the stored ones (``ref``): (ok, lines explaining a failure)."""
    new, stored = text_outputs(test, sanitize), text_outputs(ref, sanitize)
    if set(new) != set(stored):
        return False, [f"output kinds differ: stored {sorted(stored)}, new {sorted(new)}"]
    for kind in stored:
        if len(new[kind]) != len(stored[kind]):
            return False, [f"{kind}: {len(stored[kind])} stored outputs, {len(new[kind])} new ones"]
        for s_text, n_text in zip(stored[kind], new[kind], strict=True):
            s_nums, s_rest = numbers_and_text(s_text)
            n_nums, n_rest = numbers_and_text(n_text)
            if s_rest != n_rest:
                diff = next(f"{a!r} != {b!r}" for a, b in zip(s_rest + [""], n_rest + [""], strict=False) if a != b)
                return False, [f"{kind}: the text around the numbers differs (stored != new): {diff}", "stored:", s_text, "new:", n_text]
            for i, (s, n) in enumerate(zip(s_nums, n_nums, strict=True)):
                if not tolerance.allows(n, s):
                    return False, [
                        f"{kind}: number {i + 1} is {n!r}, stored {s!r}: outside the declared tolerance "
                        f"(rel={tolerance.rel}, abs={tolerance.abs}). Re-execute the notebook if the change is intended.",
                        "stored:", s_text, "new:", n_text,
                    ]
    return True, []
