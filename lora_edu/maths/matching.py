"""Matching two methods on learning (notebook 05b, section 2a): which gap in validation exact match is a difference,
and which pair of learning rates, one per method, learned about as much. Plain arithmetic on the grids' means."""

from __future__ import annotations

__all__ = ["learned_apart", "matched_rates", "reached"]


def learned_apart(gap: float, one_animal: float) -> bool:
    """Whether a gap in mean validation exact match is a difference in learning: above 0 and at least one validation
    animal per seed (``one_animal``). The one rule for "learned as much", in the pairing and in the verdict."""
    return gap > 0 and gap >= one_animal - 1e-12


def reached(grid: dict[float, float], min_val_em: float) -> dict[float, float]:
    """The rates of one method's ``grid`` (rate -> mean validation exact match) that learned: mean at ``min_val_em``
    or above."""
    return {lr: em for lr, em in grid.items() if em >= min_val_em}


def matched_rates(grid_a: dict[float, float], grid_b: dict[float, float], min_val_em: float, one_animal: float = 0.0,
                  labels: tuple[str, str] = ("grid_a", "grid_b")) -> tuple[float, float]:
    """The rule that matches two methods on learning. ``grid_a``, ``grid_b``: each method's rate -> mean validation exact
    match. Of the rates that reached ``min_val_em`` (``reached``), the pair (one rate per method) whose two means are
    closest; a gap under ``one_animal`` (one validation animal per seed) counts as none (``learned_apart``), and among
    pairs equally close the smaller rate of the first method wins, then of the second. Raises ``ValueError`` naming the
    method (by ``labels``) that has no rate at the bar."""
    learned = [reached(grid, min_val_em) for grid in (grid_a, grid_b)]
    for label, rates in zip(labels, learned, strict=True):
        if not rates:
            raise ValueError(f"No rate of {label!r} reached mean validation exact match {min_val_em}; lower min_val_em.")

    def gap(pair: tuple[float, float]) -> float:
        apart = abs(learned[0][pair[0]] - learned[1][pair[1]])
        return apart if learned_apart(apart, one_animal) else 0.0

    return min(((x, y) for x in learned[0] for y in learned[1]), key=lambda pair: (gap(pair), pair))
