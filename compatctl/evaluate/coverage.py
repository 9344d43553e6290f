"""Synthetic paired evaluations with a known truth, to measure the coverage of ``--ci`` intervals.

Each replication draws ``units`` independent queries from a known population of per-query
outcomes (baseline, candidate and ceiling top-1 correctness, candidate AP) and copies each query
1–3 times (duplicated queries: the copies share every outcome and are byte-identical). The
population values of every statistic are known in closed form, so the fraction of intervals
holding them is the measured coverage. Used by the tests and ``benchmarks/eval_intervals.py``.
"""

from __future__ import annotations

import numpy as np

from compatctl.evaluate.compare import intervals
from compatctl.evaluate.records import QueryRecords
from compatctl.store import EmbeddingBlock

BASELINE_TOP1, CEILING_TOP1 = 0.55, 0.85
NEGATIVE, POSITIVE = 0.04, 0.24          # P(right → wrong), P(wrong → right) from baseline to candidate
AP_A, AP_B = 2.0, 3.0                    # candidate AP ~ Beta(2, 3)
TRUTH = {
    "top1": BASELINE_TOP1 * (1 - NEGATIVE / BASELINE_TOP1) + POSITIVE,
    "map": AP_A / (AP_A + AP_B),
    "negative_flip_rate": NEGATIVE,
    "positive_flip_rate": POSITIVE,
}
TRUTH["diff.top1"] = POSITIVE - NEGATIVE
TRUTH["gap_closed.top1"] = (TRUTH["top1"] - BASELINE_TOP1) / (CEILING_TOP1 - BASELINE_TOP1)


def _records(ids, labels, correct, ap) -> QueryRecords:
    return QueryRecords(ids, labels, np.where(correct, 1, 2).astype(np.int64), np.ones(len(ids), np.int64),
                        {"top1": correct.astype(np.float64), "map": ap})


def replication(rng: np.random.Generator, units: int, hide_duplicates: bool = False):
    """(report stub, candidate, others, query block) of one synthetic paired evaluation.

    ``hide_duplicates`` makes every copy's embedding distinct (what a bootstrap that resamples
    rows one by one assumes), to show what ignoring the duplicates costs.
    """
    outcome = rng.random((units, 3))
    before = outcome[:, 0] < BASELINE_TOP1
    now = np.where(before, outcome[:, 1] >= NEGATIVE / BASELINE_TOP1,
                   outcome[:, 1] < POSITIVE / (1 - BASELINE_TOP1))
    ceiling = outcome[:, 2] < CEILING_TOP1
    ap = rng.beta(AP_A, AP_B, units)
    copies = rng.integers(1, 4, units)
    unit = np.repeat(np.arange(units), copies)
    ids = np.arange(len(unit), dtype=np.int64)
    rng.shuffle(unit)
    labels = unit % 7
    query = EmbeddingBlock(np.stack([unit, ids if hide_duplicates else unit % 5], 1).astype(np.float32), ids, labels)
    candidate = _records(ids, labels, now[unit], ap[unit])
    others = {"baseline": _records(ids, labels, before[unit], ap[unit]),
              "ceiling": _records(ids, labels, ceiling[unit], ap[unit])}
    return {"metrics": {"top1": 0.0, "map": 0.0}}, candidate, others, query


def measure_coverage(replications: int, level: float, *, units: int = 300, resamples: int = 500,
                     seed: int = 0, hide_duplicates: bool = False) -> dict[str, float]:
    """Fraction of ``replications`` whose interval holds the true value, per statistic of TRUTH."""
    rng = np.random.default_rng(seed)
    held = dict.fromkeys(TRUTH, 0)
    for index in range(replications):
        report, candidate, others, query = replication(rng, units, hide_duplicates)
        ci = intervals(report, candidate, others, level=level, seed=seed + index, resamples=resamples,
                       query=query, dims=2)
        for name, truth in TRUTH.items():
            held[name] += ci["low"][name] <= truth <= ci["high"][name]
    return {name: count / replications for name, count in held.items()}
