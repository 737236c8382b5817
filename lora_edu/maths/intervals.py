"""Intervals for rates observed on few items and for the difference of two, and Student's t for few seeds (NumPy-free
arithmetic; notebooks 05b-07 use them)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["T95", "newcombe_paired", "t95", "tabled_df", "welch_half_width", "welch_se_df", "wilson_interval"]


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate ``p`` observed on ``n`` items: never outside [0, 1], never zero-width."""
    if n < 1:
        raise ValueError(f"A rate needs at least one item; got n = {n}.")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"A rate lies in [0, 1]; got p = {p}.")
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_paired(per_item_a: Sequence[float], per_item_b: Sequence[float]) -> tuple[float, float]:
    """Newcombe's 95% interval for a difference of two rates measured on the same items (Newcombe 1998, Statistics in
    Medicine 17, method 10): each rate's Wilson interval on the items, combined through the items' correlation
    between the two arms (the more alike the arms answer, the narrower). ``per_item_a``, ``per_item_b``: (items,),
    each item's share of right answers over an arm's runs; the correlation is taken as 0 where an arm answered
    every item alike.
    """
    if len(per_item_a) != len(per_item_b) or len(per_item_a) < 2:
        raise ValueError(f"Need the same items, at least 2, for both arms; got {len(per_item_a)} and {len(per_item_b)}.")
    n = len(per_item_a)
    p_a, p_b = statistics.fmean(per_item_a), statistics.fmean(per_item_b)
    (low_a, high_a), (low_b, high_b) = wilson_interval(p_a, n), wilson_interval(p_b, n)
    alike_at_all = len(set(per_item_a)) > 1 and len(set(per_item_b)) > 1
    alike = statistics.correlation(per_item_a, per_item_b) if alike_at_all else 0.0

    def combined(x: float, y: float) -> float:
        return math.sqrt(max(0.0, x * x - 2 * alike * x * y + y * y))

    return p_a - p_b - combined(p_a - low_a, high_b - p_b), p_a - p_b + combined(high_a - p_a, p_b - low_b)


# Two-sided 95% quantiles of Student's t for n - 1 degrees of freedom (n seeds).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 19: 2.093, 29: 2.045}


def tabled_df(df: float) -> int:
    """``df`` rounded down to degrees of freedom ``T95`` tables (fewer: a wider interval, never a narrower one)."""
    whole = max(1, math.floor(df))
    return max(k for k in T95 if k <= whole)


def t95(df: float) -> float:
    """The two-sided 95% quantile of Student's t for ``df`` degrees of freedom, rounded down to a tabled one."""
    return T95[tabled_df(df)]


def welch_half_width(parts: list[tuple[float, int]], extra_variance: float = 0.0) -> float:
    """The half-width of a 95% t-interval for a sum of independent parts, each (variance, its degrees of freedom): the
    variances add, and the t quantile takes their Welch-Satterthwaite degrees of freedom. ``extra_variance`` is added
    to the total without degrees of freedom of its own (where the parts' variances are all 0, the smallest part's
    degrees of freedom are used). 0 when everything is 0."""
    se, df = welch_se_df(parts, extra_variance)
    return t95(df) * se


def welch_se_df(parts: list[tuple[float, int]], extra_variance: float = 0.0) -> tuple[float, float]:
    """``welch_half_width``'s standard error and Welch-Satterthwaite degrees of freedom."""
    spread = sum(v for v, _ in parts)
    df = spread**2 / sum(v**2 / d for v, d in parts) if spread > 0 else min(d for _, d in parts)
    return math.sqrt(spread + extra_variance), df
