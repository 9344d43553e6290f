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

import numpy as np

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


def count_better(scores: np.ndarray, gallery_ids: np.ndarray, rows: np.ndarray, values: np.ndarray,
                 value_ids: np.ndarray, own_here: np.ndarray) -> np.ndarray:
    """How many columns of ``scores`` beat each threshold (rows[i], values[i], value_ids[i]).

    Args:
        scores: float32 [q, c] scores of a segment (−inf on left-out rows); not modified.
        gallery_ids: int64 [c] ids of the segment's columns (the tie rule).
        rows, values, value_ids: per threshold, sorted by row: its query row, score and gallery id.
        own_here: bool per threshold: the segment holds the threshold's own row with that score.
    Returns:
        int64 counts: columns with a higher score, or the same score and a smaller id.
    """
    q, c = scores.shape
    if len(rows) == 0 or c == 0:
        return np.zeros(len(rows), np.int64)
    ordered = np.sort(scores, axis=1)
    bounds = np.searchsorted(rows, np.arange(q + 1)).tolist()
    right = np.empty(len(rows), np.int64)
    for row, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        if hi > lo:
            right[lo:hi] = ordered[row].searchsorted(values[lo:hi], side="right")
    # Equal scores: is there one more equal value (besides the threshold's own row) below `right`?
    below = right - 1 - own_here.astype(np.int64)
    tied = np.flatnonzero(below >= 0)
    tied = tied[ordered[rows[tied], below[tied]] == values[tied]]
    better = c - right
    for i in tied:  # rare in real data: another row with exactly this score
        better[i] += np.count_nonzero((scores[rows[i]] == values[i]) & (gallery_ids < value_ids[i]))
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
        span = int(ranks.max(initial=0)) + 1  # ranks of one query are distinct: sort (row, rank) as one key
        keys = np.sort(rows.astype(np.int64) * span + ranks)
        rows, ranks = keys // span, keys % span
        positives = np.bincount(rows, minlength=n_queries)
        start = np.cumsum(positives) - positives
        nth = np.arange(1, len(rows) + 1) - start[rows]  # j: 1 for the best-ranked positive
        precision = nth / ranks
        valid = positives > 0
        first = ranks[start[valid]]
        self.hits += np.array([np.count_nonzero(first <= k) for k in self.ks], np.int64)
        self.ap += float(np.sum(np.bincount(rows, precision, n_queries)[valid] / positives[valid]))
        if self.at_r:
            within = precision * (ranks <= positives[rows])
            self.ap_at_r += float(np.sum(np.bincount(rows, within, n_queries)[valid] / positives[valid]))
        self.evaluated += int(valid.sum())
        self.skipped += int(n_queries - valid.sum())

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
