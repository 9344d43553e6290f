"""--ci intervals: coverage on synthetic paired data with a known truth, and their edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from compatctl.evaluate.coverage import TRUTH, measure_coverage
from compatctl.evaluate.intervals import bootstrap_intervals


def test_coverage_within_3_points_of_nominal_over_500_replications():
    measured = measure_coverage(500, 0.95, units=300, resamples=500, seed=1)
    for name, coverage in measured.items():
        assert abs(coverage - 0.95) <= 0.03, (name, coverage)
    assert set(measured) == set(TRUTH)


@pytest.mark.slow
@pytest.mark.parametrize("level", [0.8, 0.9, 0.95])
def test_coverage_at_several_levels_over_1000_replications(level):
    measured = measure_coverage(1000, level, units=300, resamples=1000, seed=2)
    for name, coverage in measured.items():
        assert abs(coverage - level) <= 0.03, (name, coverage)


def test_ignoring_duplicates_would_undercover():
    """Why clusters: with every copy resampled alone, the same data give intervals that are far too narrow."""
    measured = measure_coverage(150, 0.95, units=300, resamples=300, seed=3, hide_duplicates=True)
    assert max(measured.values()) < 0.9


def test_identical_outcomes_give_a_point_interval_and_undefined_ratio_gives_none():
    clusters = np.arange(50)
    columns = {"a": np.ones(50), "b": np.ones(50)}
    ci = bootstrap_intervals(columns, {"a": lambda m: m["a"], "ratio": lambda m: (m["a"] - m["b"]) / (m["a"] - m["b"])},
                             clusters, level=0.9, resamples=100)
    assert ci["low"]["a"] == ci["high"]["a"] == 1.0
    assert ci["low"]["ratio"] is None and ci["high"]["ratio"] is None
