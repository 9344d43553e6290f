"""Exact ranks of every positive, counted segment by segment, and the metrics they give.

The rank of a positive p of query q (1-based, self left out) is 1 + the number of gallery
rows that beat it: a higher score, or an equal score and a smaller id (TIE_RULE). Ranks add
up over any split of the gallery into column segments, so the full Q×G score matrix is never
needed at once: per segment, sort each query's scores, then one binary search per positive.

From the ranks of all positives of a query (r_1 < r_2 < ... < r_P):
    top-k hit  = r_1 <= k                      (some positive among the k nearest)
    AP         = (1/P) Σ_j j / r_j             (precision at each positive, full ranking)
    AP@R       = (1/R) Σ_{j: r_j <= R} j / r_j with R = P
Queries with no positive (P = 0) are skipped by every metric and counted.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from compatctl.evaluate.records import QueryRanks, query_ranks

def find_positives(query_labels: np.ndarray, gallery: "Prepared", self_rows: np.ndarray,
                   self_cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, gallery cols) of the same-label pairs of a block, the query's own row excluded.

    Works from the gallery block's rows grouped by label, so the cost is the number of pairs.
    """
    classes, bounds, by_label = gallery.label_groups()
    where = np.minimum(np.searchsorted(classes, query_labels), max(len(classes) - 1, 0))
    present = (classes[where] == query_labels) if len(classes) else np.zeros(len(query_labels), bool)
    first = np.where(present, bounds[where], 0)
    sizes = np.where(present, bounds[np.minimum(where + 1, len(bounds) - 1)] - first, 0)
    rows = np.repeat(np.arange(len(query_labels)), sizes)
    offsets = np.arange(len(rows)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    cols = by_label[np.repeat(first, sizes) + offsets]
    own = np.full(len(query_labels), -1, np.int64)
    own[self_rows] = self_cols
    keep = cols != own[rows]
    return rows[keep], cols[keep]


def worker_count(threads: int | None = None) -> int:
    """Threads for the rank bookkeeping: ``threads``, else $COMPATCTL_THREADS, else the usable cores."""
    if threads is None:
        setting = os.environ.get("COMPATCTL_THREADS", "")
        threads = int(setting) if setting.isdigit() else len(os.sched_getaffinity(0))
    return max(1, threads)


_POOLS: dict = {}  # threads -> a ThreadPoolExecutor, made on first use
_MIN_PIECE = 1 << 16  # elements: below this a piece is not worth a thread


def in_pieces(task: Callable[[int, int], None], length: int, threads: int | None = None, weight: int = 1) -> None:
    """Run ``task(start, stop)`` over contiguous pieces of range(length), one per thread.

    numpy releases the GIL in sort, take and the ufuncs, so the pieces run on all cores;
    ``weight`` (elements per item) keeps small inputs on the calling thread.
    """
    pieces = min(worker_count(threads), max(1, length * weight // _MIN_PIECE))
    if pieces <= 1:
        task(0, length)
        return
    from concurrent.futures import ThreadPoolExecutor  # here: start-up of a small `eval` stays lean

    bounds = np.linspace(0, length, pieces + 1).astype(np.int64).tolist()
    pool = _POOLS.get(pieces) or _POOLS.setdefault(pieces, ThreadPoolExecutor(pieces, "compatctl-rank"))
    for future in [pool.submit(task, a, b) for a, b in zip(bounds[:-1], bounds[1:])]:
        future.result()


def sort_rows(scores: np.ndarray, threads: int | None = None) -> np.ndarray:
    """A row-sorted (ascending) float32 copy of ``scores``, rows sorted in parallel pieces."""
    ordered = np.empty(scores.shape, np.float32)

    def task(start: int, stop: int) -> None:
        ordered[start:stop] = scores[start:stop]
        ordered[start:stop].sort(axis=1)

    in_pieces(task, len(scores), threads, weight=scores.shape[1])
    return ordered


def count_not_above(ordered: np.ndarray, rows: np.ndarray, values: np.ndarray,
                    threads: int | None = None) -> np.ndarray:
    """Per threshold i: how many entries of row ``rows[i]`` of row-sorted ``ordered`` are <= ``values[i]``.

    One vectorised branch-free binary search over all thresholds at once (the same number of
    halving steps for every row), instead of one searchsorted call per query row.
    """
    q, c = ordered.shape
    flat = ordered.reshape(-1)
    counts = np.empty(len(rows), np.int64)

    def task(start: int, stop: int) -> None:
        value = values[start:stop]
        first = rows[start:stop].astype(np.intp) * c
        position = first.copy()
        got, step = np.empty(len(position), np.float32), np.empty(len(position), bool)
        advance = np.empty_like(position)
        length = c
        while length > 1:  # invariant: the answer lies in [position, position + length]
            half = length // 2
            np.take(flat[half:], position, out=got)  # flat[position + half], without an index array
            np.less_equal(got, value, out=step)
            np.multiply(step, half, out=advance)  # ~1/4 faster than a masked add (where=step)
            position += advance
            length -= half
        np.take(flat, position, out=got)
        counts[start:stop] = position - first + (got <= value)

    if c:
        in_pieces(task, len(rows), threads, weight=16)
    else:
        counts[:] = 0
    return counts


def count_better(scores: np.ndarray, gallery_ids: np.ndarray, rows: np.ndarray, values: np.ndarray,
                 value_ids: np.ndarray, own_here: np.ndarray, *, ordered: np.ndarray | None = None,
                 threads: int | None = None) -> np.ndarray:
    """How many columns of ``scores`` beat each threshold (rows[i], values[i], value_ids[i]).

    Args:
        scores: float32 [q, c] scores of a segment (−inf on left-out rows); not modified.
        gallery_ids: int64 [c] ids of the segment's columns (the tie rule).
        rows, values, value_ids: per threshold (any order): its query row, score and gallery id.
        own_here: bool per threshold: the segment holds the threshold's own row with that score.
        ordered: ``sort_rows(scores)`` when the caller has it already.
        threads: see ``worker_count``.
    Returns:
        int64 counts: columns with a higher score, or the same score and a smaller id.
    """
    q, c = scores.shape
    if len(rows) == 0 or c == 0:
        return np.zeros(len(rows), np.int64)
    ordered = sort_rows(scores, threads) if ordered is None else ordered
    not_above = count_not_above(ordered, rows, values, threads)
    better = c - not_above
    # Equal scores: is there one more equal value (besides the threshold's own row) below `not_above`?
    below = not_above - 1 - own_here
    below_value = ordered.reshape(-1).take(rows * c + np.maximum(below, 0))
    tied = np.flatnonzero((below_value == values) & (below >= 0))
    for piece in np.array_split(tied, max(1, len(tied) // 1024)):  # rare in real data: another row, same score
        equal = (scores[rows[piece]] == values[piece, None]) & (gallery_ids[None, :] < value_ids[piece, None])
        better[piece] += np.count_nonzero(equal, axis=1)
    return better


@dataclasses.dataclass
class MetricSums:
    """Running sums of per-query metrics over query blocks; ``result()`` gives the fractions."""

    ks: tuple[int, ...]
    at_r: bool = False
    with_map: bool = True
    hits: np.ndarray = None
    ap: float = 0.0
    ap_at_r: float = 0.0
    evaluated: int = 0
    skipped: int = 0
    left_out: int = 0

    def __post_init__(self):
        self.hits = np.zeros(len(self.ks), np.int64)

    def add_ranks(self, rows: np.ndarray, ranks: np.ndarray, n_queries: int) -> None:
        """Add a query block given every positive's (query row, rank)."""
        self.add_ranked(query_ranks(rows, ranks, None, n_queries))

    def add_ranked(self, ranked: QueryRanks) -> None:
        """Add a query block's sorted ranks (``records.query_ranks``)."""
        valid = ranked.positives > 0
        first = ranked.first[valid]
        self.hits += np.array([np.count_nonzero(first <= k) for k in self.ks], np.int64)
        precision = ranked.nth / ranked.ranks
        positives = ranked.positives[valid]
        self.ap += float(np.sum(np.bincount(ranked.rows, precision, ranked.queries)[valid] / positives))
        if self.at_r:
            within = precision * (ranked.ranks <= ranked.positives[ranked.rows])
            self.ap_at_r += float(np.sum(np.bincount(ranked.rows, within, ranked.queries)[valid] / positives))
        self.evaluated += int(valid.sum())
        self.skipped += int(ranked.queries - valid.sum())

    def add_hits(self, hits: np.ndarray, evaluated: int, skipped: int) -> None:
        """Add top-k hit counts found without ranks (the top-k-only path)."""
        self.hits += hits
        self.evaluated += evaluated
        self.skipped += skipped

    def result(self) -> dict:
        """{"top1": .., "top5": .., "map": .., "map_at_r": ..} as fractions in [0, 1]."""
        denominator = max(self.evaluated, 1)
        metrics = {f"top{k}": float(h) / denominator for k, h in zip(self.ks, self.hits)}
        if self.with_map:
            metrics["map"] = self.ap / denominator
        if self.at_r:
            metrics["map_at_r"] = self.ap_at_r / denominator
        return metrics
