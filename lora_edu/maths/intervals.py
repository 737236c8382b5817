"""Intervals for a rate observed on few items (NumPy-free arithmetic; notebooks 05b and 06 use it)."""

from __future__ import annotations

import math

__all__ = ["wilson_interval"]


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate ``p`` observed on ``n`` items: never outside [0, 1], never zero-width."""
    if n < 1:
        raise ValueError(f"A rate needs at least one item; got n = {n}.")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"A rate lies in [0, 1]; got p = {p}.")
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
