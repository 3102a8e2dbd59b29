"""Statistics over seeds on tiny arrays worked out by hand (as rliable tests its intervals)."""

import math

import numpy as np
import pytest

from results.statistics import bootstrap_interval, mean_and_interval, seed_mean

nan = float("nan")


def test_the_mean_over_seeds_leaves_missing_values_out() -> None:
    assert seed_mean([0.2, nan, 0.4]) == pytest.approx(0.3)
    assert math.isnan(seed_mean([nan, nan])) and math.isnan(seed_mean([]))


def test_identical_seeds_have_an_interval_of_one_point() -> None:
    # every resample of [0.5, 0.5, 0.5] has mean 0.5
    assert bootstrap_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)


def test_two_seeds_span_both_values() -> None:
    # resamples of [0, 1] have mean 0, 0.5 or 1 with chances 1/4, 1/2, 1/4: the outer 2.5% at each end are 0 and 1
    assert bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)
    # the middle 40% (30th to 70th percentile) lies inside the half of the resamples whose mean is 0.5
    assert bootstrap_interval([0.0, 1.0], level=40) == (0.5, 0.5)


def test_a_rare_resample_still_reaches_the_tail() -> None:
    # resamples of three seeds: the mean is the largest value only when all three draws are, a chance of 1/27
    # (3.7%), more than the 2.5% tail; so is the smallest: the interval is the whole range
    assert bootstrap_interval([0.0, 0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_interval([1.0, 2.0, 3.0]) == (1.0, 3.0)


def test_missing_values_are_left_out_and_one_seed_has_no_interval() -> None:
    assert bootstrap_interval([0.0, nan, 1.0]) == bootstrap_interval([0.0, 1.0])
    for values in ([0.5], [0.5, nan], []):
        assert all(math.isnan(v) for v in bootstrap_interval(values))


def test_the_interval_moves_with_the_values_and_is_the_same_every_time() -> None:
    # four seeds: all four draws the smallest has a chance of 1/256, inside the tail, so the ends lie inside
    low, high = bootstrap_interval([1.0, 2.0, 3.0, 4.0])
    assert 1.0 < low < 2.5 < high < 4.0
    assert bootstrap_interval([11.0, 12.0, 13.0, 14.0]) == pytest.approx((low + 10, high + 10))
    assert bootstrap_interval([1.0, 2.0, 3.0, 4.0]) == (low, high)


def test_mean_and_interval_is_what_a_leaderboard_cell_shows() -> None:
    assert mean_and_interval([0.0, 1.0]) == (0.5, 0.0, 1.0)
    mean, low, high = mean_and_interval(np.array([0.7]))
    assert mean == pytest.approx(0.7) and math.isnan(low) and math.isnan(high)
