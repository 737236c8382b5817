"""Comparing two timings measured in the same interleaved rounds."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["interleave", "round_by_round"]


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


def round_by_round(mine: Sequence[float], theirs: Sequence[float], above: str, below: str, floor: float = 0.05) -> str:
    """``mine / theirs`` in each round (a slow moment of the computer hits both in a round), its median and range, and
    a verdict: ``above`` when every round's ratio is above 1 + ``floor``, ``below`` when every one is below 1 - ``floor``.
    Rounds that all lie within ``floor`` of 1 are too close to call: where the two run the same layers, a gap that
    small can come from where each one's tensors sit in memory, and it would not matter in practice. Otherwise, no
    difference.
    """
    if len(mine) != len(theirs) or not mine:
        raise ValueError("Compare two timings from the same interleaved rounds (the same compare_* call).")
    if not 0 <= floor < 1:
        raise ValueError(f"floor is a share of the time, in [0, 1); got {floor!r}.")
    ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
    low, high, mid = min(ratios), max(ratios), float(np.median(ratios))
    if low > 1 + floor:
        verdict = f"{above} in every round"
    elif high < 1 - floor:
        verdict = f"{below} in every round"
    elif 1 - floor <= low and high <= 1 + floor:
        verdict = f"within {floor:.0%} of each other in every round: too close to call"
    else:
        verdict = "no difference these rounds can resolve"
    return f"{mid:.2f} times (rounds {low:.2f} to {high:.2f}): {verdict}"
