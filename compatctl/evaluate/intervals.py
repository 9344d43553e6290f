"""Confidence intervals: a percentile bootstrap over queries, paired across evaluations.

The unit resampled is a *query cluster*: queries whose embeddings are byte-identical form one
cluster (duplicated queries share every outcome, so resampling them one by one would treat
copies as independent evidence and make intervals too narrow). Each resample draws as many
clusters as there are, with replacement, and recomputes every statistic from the *same* draw for
the candidate, the baseline and the ceiling (matched by query id), so an interval of a
difference or of gap_closed is the interval of the paired quantity, not a combination of two
separate intervals. The bounds are the (1 − level)/2 and (1 + level)/2 quantiles of the
resampled statistic; a statistic undefined in a resample (gap_closed with a zero denominator)
is left out of that resample.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compatctl.errors import BadInputError

DEFAULT_RESAMPLES = 1000
METHOD = ("percentile bootstrap over queries ({resamples} resamples, seed {seed}); duplicated queries "
          "(identical embeddings) resampled together as one cluster; paired: candidate, baseline and ceiling "
          "use the same resampled queries (matched by id)")


def check_level(level: float | None) -> float | None:
    """``level`` when it lies strictly between 0 and 1 (e.g. 0.95); BadInputError otherwise."""
    if level is not None and not 0.0 < level < 1.0:
        raise BadInputError(f"--ci {level}: the confidence level must lie strictly between 0 and 1, e.g. --ci 0.95")
    return level


def resampled_means(columns: dict[str, np.ndarray], clusters: np.ndarray, *, resamples: int,
                    seed: int) -> dict[str, np.ndarray]:
    """Per column, the mean over queries in each of ``resamples`` cluster-bootstrap draws.

    Args:
        columns: name -> float per query (all the same length, aligned).
        clusters: int cluster index per query (0..C−1).
    Returns:
        name -> float64 [resamples].
    """
    names = list(columns)
    values = np.stack([np.asarray(columns[name], np.float64) for name in names], 1)
    count = int(clusters.max()) + 1 if len(clusters) else 0
    sums = np.zeros((count, len(names)))
    np.add.at(sums, clusters, values)
    sizes = np.bincount(clusters, minlength=count).astype(np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, len(names)))
    for start in range(0, resamples, 100):  # 100 draws at a time: memory ~ 800 × clusters bytes
        draws = rng.integers(0, count, (min(100, resamples - start), count))
        weights = np.stack([np.bincount(d, minlength=count) for d in draws]).astype(np.float64)
        means[start:start + len(draws)] = (weights @ sums) / (weights @ sizes)[:, None]
    return {name: means[:, j] for j, name in enumerate(names)}


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float] | None:
    """The central ``level`` interval of the finite samples, or None when there are none."""
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return None
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def bootstrap_intervals(columns: dict[str, np.ndarray], statistics: dict[str, Callable[[dict], np.ndarray]],
                        clusters: np.ndarray, *, level: float, resamples: int = DEFAULT_RESAMPLES,
                        seed: int = 0) -> dict:
    """Intervals of ``statistics`` (name -> function of the resampled column means).

    Returns:
        {"level", "method", "resamples", "clusters", "low": {name: v}, "high": {name: v}}; a
        statistic undefined in every resample gets None.
    """
    means = resampled_means(columns, clusters, resamples=resamples, seed=seed)
    low, high = {}, {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, statistic in statistics.items():
            bounds = percentile_interval(np.asarray(statistic(means), np.float64), level)
            low[name], high[name] = bounds if bounds else (None, None)
    return {"level": level, "method": METHOD.format(resamples=resamples, seed=seed), "resamples": resamples,
            "clusters": int(clusters.max()) + 1 if len(clusters) else 0, "low": low, "high": high}
