"""Statistics over the seeds of one leaderboard row, as plain functions of a list of numbers.

A value is missing (NaN) where a cell has no such number (no task inference in
GG, no backward transfer on a continuous stream); missing values are left out,
never read as zero. No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 2000
LEVEL = 95.0  # percent


def seed_mean(values: Sequence[float]) -> float:
    """Mean of the values that are not NaN; NaN when none is finite."""
    array = np.asarray(values, dtype=float)
    return float(np.nanmean(array)) if np.isfinite(array).any() else float("nan")


def bootstrap_interval(
    values: Sequence[float], seed: int = 0, samples: int = BOOTSTRAP_SAMPLES, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean (95% unless ``level`` says otherwise): the middle ``level``
    percent of the means of ``samples`` resamples, with replacement, of the finite values. (nan, nan) with
    fewer than two finite values. The fixed ``seed`` makes a report the same every time it is built."""
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(finite) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(finite, size=(samples, len(finite)), replace=True).mean(axis=1)
    low, high = np.percentile(means, [(100 - level) / 2, (100 + level) / 2])
    return float(low), float(high)


def mean_and_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): what a leaderboard cell shows of a row's seeds."""
    return (seed_mean(values), *bootstrap_interval(values))
