"""Files the course writes for a person (an answer key, a student's answers): always new, never over another file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["write_new_file"]


def write_new_file(path: str | Path, text: str, suffixes: Sequence[str]) -> Path:
    """Write ``text`` to ``path``, a file that must not exist yet and must end in one of ``suffixes``."""
    path = Path(path)
    if path.suffix not in suffixes:
        raise ValueError(f"Write to a {' or '.join(suffixes)} file, got {str(path)!r}.")
    if path.exists():
        raise ValueError(f"{path} already exists and is not overwritten: choose another name or remove it first.")
    with open(path, "x", encoding="utf-8") as f:  # "x": fails rather than overwrite a file made meanwhile
        f.write(text)
    return path
