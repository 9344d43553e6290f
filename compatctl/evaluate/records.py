"""Per-query outcomes of one evaluation, and the metric registry they are computed from.

Every metric is a mean over evaluated queries (those with at least one relevant row) of a
per-query value computed from the exact ranks r_1 < r_2 < ... < r_P of the query's relevant
rows and their gains g (1 for a same-label row; the qrels grade for a judged document):

    topK      1 if r_1 <= K                          (CMC; = success@K)
    map       (1/P) Σ_j j / r_j                       (full-ranking AP; P = all relevant rows)
    map_at_r  (1/P) Σ_{j: r_j <= P} j / r_j
    mrr@K     1 / r_1 if r_1 <= K, else 0
    recall@K  |{j: r_j <= K}| / P
    ndcg@K    Σ_{r_j <= K} g_j / log2(r_j + 1)  /  Σ_{i <= K} g_(i) / log2(i + 1)   (gains sorted desc)

These are trec_eval's definitions (linear gains for nDCG), so numbers agree with ir-measures /
pytrec_eval on a ranking without ties. Per-query values are kept so that flips, per-class
changes and bootstrap intervals can be computed after the ranking.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np

from compatctl.errors import BadInputError


@dataclasses.dataclass
class QueryRanks:
    """The relevant rows of a query block, sorted by (query, rank)."""

    rows: np.ndarray       # query row within the block
    ranks: np.ndarray      # 1-based exact rank
    gains: np.ndarray      # float64 gain of each relevant row
    nth: np.ndarray        # j: 1 for the best-ranked relevant row of its query
    positives: np.ndarray  # P per query row of the block
    first: np.ndarray      # r_1 per query row (0 when P = 0)
    queries: int


def _per_query(ranks: QueryRanks, values: np.ndarray) -> np.ndarray:
    return np.bincount(ranks.rows, values, ranks.queries)


def _topk(k: int) -> Callable[[QueryRanks], np.ndarray]:
    return lambda r: ((r.first >= 1) & (r.first <= k)).astype(np.float64)


def _ap(r: QueryRanks) -> np.ndarray:
    return _per_query(r, r.nth / r.ranks) / np.maximum(r.positives, 1)


def _ap_at_r(r: QueryRanks) -> np.ndarray:
    within = (r.ranks <= r.positives[r.rows]) * (r.nth / r.ranks)
    return _per_query(r, within) / np.maximum(r.positives, 1)


def _mrr(k: int) -> Callable[[QueryRanks], np.ndarray]:
    return lambda r: np.where((r.first >= 1) & (r.first <= k), 1.0 / np.maximum(r.first, 1), 0.0)


def _recall(k: int) -> Callable[[QueryRanks], np.ndarray]:
    return lambda r: _per_query(r, (r.ranks <= k).astype(np.float64)) / np.maximum(r.positives, 1)


def _ndcg(k: int) -> Callable[[QueryRanks], np.ndarray]:
    def ndcg(r: QueryRanks) -> np.ndarray:
        dcg = _per_query(r, np.where(r.ranks <= k, r.gains / np.log2(r.ranks + 1.0), 0.0))
        order = np.lexsort((-r.gains, r.rows))  # ideal: each query's gains, largest first
        # rows stay grouped as before, so nth is also each gain's slot in its query's ideal order
        ideal = _per_query(r, np.where(r.nth <= k, r.gains[order] / np.log2(r.nth + 1.0), 0.0))
        return np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)
    return ndcg


_PARAMETRIC = {"top": (re.compile(r"^top(\d+)$"), _topk), "ndcg": (re.compile(r"^ndcg@(\d+)$"), _ndcg),
               "recall": (re.compile(r"^recall@(\d+)$"), _recall), "mrr": (re.compile(r"^mrr@(\d+)$"), _mrr)}
_PLAIN = {"map": _ap, "map_at_r": _ap_at_r}
METRIC_FORMS = "topK, map, map_at_r, ndcg@K, recall@K, mrr@K"


def metric_function(name: str) -> Callable[[QueryRanks], np.ndarray]:
    """The per-query function of a metric name (see the module doc); BadInputError for an unknown one."""
    if name in _PLAIN:
        return _PLAIN[name]
    for pattern, make in _PARAMETRIC.values():
        match = pattern.match(name)
        if match and int(match.group(1)) >= 1:
            return make(int(match.group(1)))
    raise BadInputError(f"--metrics {name!r}: unknown metric; use {METRIC_FORMS} (K a whole number >= 1), "
                        "e.g. ndcg@10,recall@100,mrr@10,map")


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """``"ndcg@10,recall@100"`` -> ("ndcg@10", "recall@100"), each checked; () for None/empty."""
    names = tuple(dict.fromkeys(part.strip() for part in (text or "").split(",") if part.strip()))
    for name in names:
        metric_function(name)
    return names


def query_ranks(rows: np.ndarray, ranks: np.ndarray, gains: np.ndarray | None, queries: int) -> QueryRanks:
    """Sort the (row, rank, gain) triples of a query block and derive nth, P and r_1.

    The ranks of one query's relevant rows are distinct, so (row, rank) sorts as one int64 key;
    ``gains`` None means all 1 (and no permutation is needed).
    """
    rows, ranks = rows.astype(np.int64, copy=False), ranks.astype(np.int64, copy=False)
    span = int(ranks.max(initial=0)) + 1
    keys = rows * span + ranks
    if gains is None:
        keys = np.sort(keys)
        gains = np.ones(len(keys))
    else:
        order = np.argsort(keys)
        keys, gains = keys[order], np.asarray(gains)[order]
    rows, ranks = keys // span, keys % span
    positives = np.bincount(rows, minlength=queries)
    start = np.cumsum(positives) - positives
    nth = np.arange(1, len(rows) + 1) - start[rows]
    first = np.zeros(queries, np.int64)
    has = positives > 0
    first[has] = ranks[start[has]]
    return QueryRanks(rows, ranks, gains.astype(np.float64, copy=False), nth, positives, first, queries)


@dataclasses.dataclass
class QueryRecords:
    """Per-query outcomes of the evaluated queries (at least one relevant row), in query order.

    ``ids`` and ``labels`` are as stored (text or integers); ``values[metric]`` is float64 per query.
    """

    ids: np.ndarray
    labels: np.ndarray | None
    first_rank: np.ndarray
    positives: np.ndarray
    values: dict[str, np.ndarray]


class RecordSink:
    """Collects per-query values of ``metrics`` block by block."""

    def __init__(self, metrics: tuple[str, ...]):
        self.metrics = tuple(metrics)
        self._functions = {name: metric_function(name) for name in self.metrics}
        self._parts: list[tuple] = []

    def add(self, ids: np.ndarray, labels: np.ndarray | None, ranked: QueryRanks) -> None:
        """Record the evaluated queries of one block (``ids``/``labels`` are the block's rows)."""
        keep = ranked.positives > 0
        values = {name: fn(ranked)[keep] for name, fn in self._functions.items()}
        self._parts.append((ids[keep], None if labels is None else labels[keep], ranked.first[keep],
                            ranked.positives[keep], values))

    def records(self, decode: Callable[[str, np.ndarray], np.ndarray]) -> QueryRecords:
        """All blocks together; ``decode(column, codes)`` turns coded ids/labels back into stored values."""
        parts = self._parts or [(np.zeros(0, np.int64), None, np.zeros(0, np.int64), np.zeros(0, np.int64),
                                 {name: np.zeros(0) for name in self.metrics})]
        ids = decode("ids", np.concatenate([p[0] for p in parts]))
        labels = None if parts[0][1] is None else decode("labels", np.concatenate([p[1] for p in parts]))
        values = {name: np.concatenate([p[4][name] for p in parts]) for name in self.metrics}
        return QueryRecords(ids, labels, np.concatenate([p[2] for p in parts]),
                            np.concatenate([p[3] for p in parts]), values)
