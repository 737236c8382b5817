"""Comparing two timings measured in the same interleaved rounds."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["decided_side", "interleave", "round_by_round", "round_ratios", "sign_test"]


def interleave(timers: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Call every timer once per round and return each one's results, round by round.

    Within a round the timers run one after another, so a slow moment of the computer falls on all of them alike; the
    order turns by one place each round, so that no timer always runs first (just after another one warmed or cooled
    the caches) or always last.
    """
    if rounds < 1 or not timers:
        raise ValueError(f"Give at least one timer and one round (got {len(timers)} timers, rounds={rounds}).")
    names = list(timers)
    results: dict[str, list[float]] = {name: [] for name in names}
    for k in range(rounds):
        shift = k % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(timers[name]())
    return results


def sign_test(k: int, n: int) -> float:
    """Two-sided sign test: how often chance alone (each round a coin flip) puts ``k`` or more of ``n`` rounds on one
    given side, doubled for either side, at most 1."""
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n)


def rank_sum_p(lower: Sequence[float], higher: Sequence[float]) -> float:
    """One-sided p-value of Mann-Whitney's rank-sum test that ``lower`` tends to lie below ``higher``: among all the
    equally likely ways to split the pooled values into groups of these sizes, the share that put at least as many
    (lower, higher) pairs in order as observed (a tie counts half, and a half-pair rounds down, which errs toward
    "not resolved"). Exact, by counting the splits."""
    if not lower or not higher:
        raise ValueError("Give both groups at least one value.")
    n, m = len(lower), len(higher)
    in_order = sum(1.0 if a < b else 0.5 if a == b else 0.0 for a in lower for b in higher)
    ways = [[[0] * (n * m + 1) for _ in range(m + 1)] for _ in range(n + 1)]  # ways[i][j][u]: splits of i + j values with u in order
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 or j == 0:
                ways[i][j][0] = 1
                continue
            for u in range(i * j + 1):  # the largest value belongs to higher (then it is above all i) or to lower (none above it)
                ways[i][j][u] = (ways[i][j - 1][u - i] if u >= i else 0) + ways[i - 1][j][u]
    total = sum(ways[n][m])
    return sum(ways[n][m][u] for u in range(math.floor(in_order), n * m + 1)) / total


def round_ratios(mine: Sequence[float], theirs: Sequence[float]) -> list[float]:
    """``mine / theirs`` round by round, for two timings from the same interleaved rounds."""
    if len(mine) != len(theirs) or not mine:
        raise ValueError("Compare two timings from the same interleaved rounds (the same compare_* call).")
    return [a / b for a, b in zip(mine, theirs, strict=True)]


def decided_side(mine: Sequence[float], theirs: Sequence[float], floor: float = 0.05) -> int:
    """+1 when the rounds decide that ``mine / theirs`` lies above 1 + ``floor``, -1 when below 1 - ``floor``, else 0:
    every round beyond the floor on one side, or so many that a two-sided sign test puts chance below 5%."""
    ratios = round_ratios(mine, theirs)
    n_above, n_below = sum(r > 1 + floor for r in ratios), sum(r < 1 - floor for r in ratios)
    if n_above > n_below and (n_above == len(ratios) or sign_test(n_above, len(ratios)) < 0.05):
        return 1
    if n_below > n_above and (n_below == len(ratios) or sign_test(n_below, len(ratios)) < 0.05):
        return -1
    return 0


def round_by_round(mine: Sequence[float], theirs: Sequence[float], above: str, below: str, floor: float = 0.05) -> str:
    """``mine / theirs`` in each round (a slow moment of the computer hits both in a round), its median and range, and
    a verdict: ``above`` when every round's ratio is above 1 + ``floor``, ``below`` when every one is below 1 - ``floor``.
    With more rounds, all but a few beyond the floor on one side also decide, when a two-sided sign test puts that
    below 5% (with 11 rounds: 10 of them), so one round stalled by the computer does not veto the rest. Rounds all on
    one side of 1 but some within ``floor`` of it are said so, and not called. Rounds that all lie within
    ``floor`` of 1 are too close to call: where the two run the same layers, a gap that
    small can come from where each one's tensors sit in memory, and it would not matter in practice. Otherwise, no
    difference.
    """
    if not 0 <= floor < 1:
        raise ValueError(f"floor is a share of the time, in [0, 1); got {floor!r}.")
    ratios = round_ratios(mine, theirs)
    low, high, mid = min(ratios), max(ratios), float(np.median(ratios))
    n, side = len(ratios), decided_side(mine, theirs, floor)
    k = sum(r > 1 + floor for r in ratios) if side > 0 else sum(r < 1 - floor for r in ratios)
    if side and k == n:
        verdict = f"{above if side > 0 else below} in every round"
    elif side:  # one stalled round need not veto the rest
        verdict = f"{above if side > 0 else below} in {k} of {n} rounds, more often than chance allows (a sign test)"
    elif 1 - floor <= low and high <= 1 + floor:
        verdict = f"within {floor:.0%} of each other in every round: too close to call"
    elif low > 1 or high < 1:  # one side in every round, but within the floor in some
        verdict = f"{above if low > 1 else below} in every round, but in some by {floor:.0%} or less: not called"
    else:
        verdict = "no difference these rounds can resolve"
    return f"{mid:.2f} times (rounds {low:.2f} to {high:.2f}): {verdict}"
