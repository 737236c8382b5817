"""The simulation that checks section 1's difference interval against a known truth (notebook 05b, appendix B)."""

import numpy as np
import pytest

from lora_edu.paper.coverage import Coverage, difference_coverage, simulated_answers, true_rate


def test_simulated_answers_follow_skill_and_difficulty():
    rng = np.random.default_rng(0)
    difficulty = np.array([-4.0, 0.0, 4.0])
    right = simulated_answers(rng, 0.0, difficulty, seeds=2000)
    assert right.shape == (2000, 3) and right.dtype == bool
    easy, even, hard = right.mean(axis=0)
    assert easy > 0.95 and abs(even - 0.5) < 0.05 and hard < 0.05  # sigmoid(4), sigmoid(0), sigmoid(-4) with a little luck


def test_true_rate_is_the_population_share():
    assert true_rate(0.0) == pytest.approx(0.5, abs=0.005)  # symmetric about 0
    assert true_rate(-1.0) == pytest.approx(1 - true_rate(1.0), abs=0.005) and true_rate(3.0) > true_rate(1.0)
    assert true_rate(2.0) == true_rate(2.0)  # a fixed sample: the same number every time


def test_the_interval_holds_a_null_gap_and_names_a_large_one():
    null = difference_coverage(2.5, 2.5, trials=30)
    assert isinstance(null, Coverage) and null.gap == 0.0 and null.held >= 0.9 and null.named_winner <= 0.1
    large = difference_coverage(6.0, -2.0, trials=30)  # about 0.99 against 0.20 right: every try should say so
    assert large.gap > 0.75 and large.named_winner == 1.0 and large.held >= 0.9
    assert str(null).startswith("true rates 0.86 and 0.86 (gap +0.00), 5 seeds a side, 16 animals: the interval held the gap in ")
    more_animals = difference_coverage(2.5, 2.5, animals=64, trials=30)
    assert more_animals.width < null.width  # more test animals, a narrower interval


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        difference_coverage(1.0, 1.0, seeds=1)
