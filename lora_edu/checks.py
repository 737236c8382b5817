"""The one home of argument checks: every wing asks these, so a bad value gets the same clear error everywhere.

``True`` is an ``int`` to Python; here it is never a count or a rate. NumPy scalars count as numbers.
NumPy only (no torch), so the early lessons can use it.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["is_finite_number", "is_int", "is_number", "require_int"]


def is_int(value: object) -> bool:
    """An integer (Python or NumPy), and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: object) -> bool:
    """An int or a float (Python or NumPy), and not a bool."""
    return is_int(value) or isinstance(value, (float, np.floating))


def is_finite_number(value: object) -> bool:
    """A number that is neither infinite nor NaN."""
    return is_number(value) and math.isfinite(value)


def require_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high] (no upper bound when ``high`` is None), else a ValueError naming ``name``."""
    if not is_int(value) or value < low or (high is not None and value > high):
        bounds = f"[{low}, {high}]" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be an integer {'in ' if high is not None else ''}{bounds}, got {value!r}.")
    return int(value)
