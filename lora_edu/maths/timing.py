"""Comparing two timings measured in the same interleaved rounds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["round_by_round"]


def round_by_round(mine: Sequence[float], theirs: Sequence[float], above: str, below: str) -> str:
    """``mine / theirs`` in each round (a slow moment of the computer hits both in a round), its median and range, and
    a verdict: ``above`` when every round's ratio is above 1, ``below`` when every one is below 1, else no difference.
    """
    if len(mine) != len(theirs) or not mine:
        raise ValueError("Compare two timings from the same interleaved rounds (the same compare_* call).")
    ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
    low, high, mid = min(ratios), max(ratios), float(np.median(ratios))
    verdict = f"{above} in every round" if low > 1 else f"{below} in every round" if high < 1 else "no difference these rounds can resolve"
    return f"{mid:.2f} times (rounds {low:.2f} to {high:.2f}): {verdict}"
