"""How well section 1's interval for a difference in exact match (``paired_difference``) does its job, on simulated
methods whose true rates are known (notebook 05b, appendix B): how often it holds the true difference, how often it
names a winner, and how wide it is.

A simulated method answers a test animal right with probability sigmoid(skill + seed's luck - animal's difficulty):
animals differ in difficulty (the same animal is hard for both methods), and a fine-tuning seed makes a method a
little better or worse on every animal."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .comparison import paired_difference

__all__ = ["Coverage", "difference_coverage", "simulated_answers", "true_rate"]

DIFFICULTY_SPREAD = 1.5  # standard deviation of the animals' difficulty, in logits
SEED_SPREAD = 0.5  # standard deviation of a seed's luck, in logits


def simulated_answers(rng: np.random.Generator, skill: float, difficulty: np.ndarray, seeds: int,
                      seed_spread: float = SEED_SPREAD) -> np.ndarray:
    """One method's right answers, (seeds, animals) booleans: each seed draws its luck, then each answer is right
    with probability sigmoid(skill + luck - difficulty). ``difficulty``: (animals,) in logits."""
    luck = rng.normal(0.0, seed_spread, (seeds, 1))
    right = 1.0 / (1.0 + np.exp(-(skill + luck - difficulty[None, :])))
    return rng.random(right.shape) < right


def true_rate(skill: float, difficulty_spread: float = DIFFICULTY_SPREAD, seed_spread: float = SEED_SPREAD,
              draws: int = 400_000) -> float:
    """The share of right answers a method of ``skill`` gives over all animals and seeds: what an infinite test set
    and infinitely many seeds would measure (a fixed Monte Carlo sample, so the same number every time)."""
    rng = np.random.default_rng(12345)
    logits = skill + rng.normal(0.0, seed_spread, draws) - rng.normal(0.0, difficulty_spread, draws)
    return float(np.mean(1.0 / (1.0 + np.exp(-logits))))


@dataclass(frozen=True)
class Coverage:
    """What ``paired_difference`` gave over many simulated comparisons of two methods with a known true gap."""

    rates: tuple[float, float]  # each method's true rate of right answers
    seeds: int
    animals: int
    trials: int
    held: float  # share of trials whose interval held the true gap
    named_winner: float  # share of trials whose interval excluded 0
    width: float  # mean width of the interval

    @property
    def gap(self) -> float:
        """The true difference, A minus B."""
        return self.rates[0] - self.rates[1]

    def __str__(self) -> str:
        return (f"true rates {self.rates[0]:.2f} and {self.rates[1]:.2f} (gap {self.gap:+.2f}), {self.seeds} seeds a side, "
                f"{self.animals} animals: the interval held the gap in {self.held:.0%} of {self.trials} tries, named a winner "
                f"in {self.named_winner:.0%}, mean width {self.width:.2f}")


def difference_coverage(skill_a: float, skill_b: float, seeds: int = 5, animals: int = 16, trials: int = 200,
                        seed: int = 0) -> Coverage:
    """Simulate ``trials`` comparisons of two methods of known skill (``simulated_answers``), each on ``animals`` new
    test animals and ``seeds`` seeds a side, and score ``paired_difference``'s 95% interval against the true gap."""
    if seeds < 2 or animals < 2 or trials < 1:
        raise ValueError(f"Need at least 2 seeds, 2 animals and 1 trial; got seeds={seeds}, animals={animals}, trials={trials}.")
    rng = np.random.default_rng(seed)
    rates = (true_rate(skill_a), true_rate(skill_b))
    gap = rates[0] - rates[1]
    held = named = 0
    width = 0.0
    for trial in range(trials):
        difficulty = rng.normal(0.0, DIFFICULTY_SPREAD, animals)
        diff = paired_difference(simulated_answers(rng, skill_a, difficulty, seeds),
                                 simulated_answers(rng, skill_b, difficulty, seeds), seed=trial)
        held += diff.low <= gap <= diff.high
        named += diff.low > 0 or diff.high < 0
        width += diff.high - diff.low
    return Coverage(rates, seeds, animals, trials, held / trials, named / trials, width / trials)
