"""The top-k-only path: one pass over the gallery with a running top-k per query.

Used when mAP is not asked for (``with_map=False``, ``--no-map``): the gallery is read once,
block by block (faiss-contrib style), the queries stay in memory and each query keeps its k
best rows so far. Per block only the rows that reach a query's current k-th score are merged,
so after the first blocks the work is one GEMM plus one comparison per score.
"""

from __future__ import annotations

import numpy as np

from compatctl.evaluate.ranking import MetricSums
from compatctl.evaluate.sources import Gallery, Prepared, exclude_self, report_progress, score

_NO_ID = np.iinfo(np.int64).max


class RunningTopK:
    """The k best gallery rows per query so far (score desc, then id asc — TIE_RULE)."""

    def __init__(self, queries: int, k: int):
        self.k = k
        self.scores = np.full((queries, k), -np.inf, np.float32)
        self.ids = np.full((queries, k), _NO_ID, np.int64)
        self.labels = np.zeros((queries, k), np.int64)

    def merge(self, scores: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> None:
        """Merge a block of scores [queries, c] (−inf = left out) with its rows' ids and labels."""
        threshold = self.scores[:, -1].copy()
        unfilled = np.flatnonzero(np.isneginf(threshold))
        columns = scores.shape[1]
        if len(unfilled) and columns > self.k:  # k-th best of this block bounds what can enter
            kth = scores[unfilled]
            kth.partition(columns - self.k, axis=1)  # in place on the copy: one block-sized buffer
            threshold[unfilled] = kth[:, columns - self.k]
        live = np.flatnonzero(scores.max(axis=1) >= threshold)  # rows where something can enter
        if 2 * len(live) > len(threshold):  # early blocks: most rows
            rows, cols = np.nonzero(scores >= threshold[:, None])
        else:  # later blocks: few rows, look at those only
            live_rows, cols = np.nonzero(scores[live] >= threshold[live, None])
            rows = live[live_rows]
        values = scores[rows, cols]
        keep = values > -np.inf
        self._keep_best(rows[keep], values[keep], ids[cols[keep]], labels[cols[keep]])

    def _keep_best(self, rows, values, ids, labels) -> None:
        held_rows, held_slots = np.nonzero(self.scores > -np.inf)
        rows = np.concatenate([held_rows, rows])
        values = np.concatenate([self.scores[held_rows, held_slots], values])
        ids = np.concatenate([self.ids[held_rows, held_slots], ids])
        labels = np.concatenate([self.labels[held_rows, held_slots], labels])
        order = np.lexsort((ids, -values, rows))
        rows = rows[order]
        counts = np.bincount(rows, minlength=len(self.scores))
        slot = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
        take = slot < self.k
        self.scores.fill(-np.inf)
        self.ids.fill(_NO_ID)
        where = (rows[take], slot[take])
        self.scores[where], self.ids[where] = values[order][take], ids[order][take]
        self.labels[where] = labels[order][take]


def topk_only(queries: list[Prepared], gallery: Gallery, sums: MetricSums, progress=None) -> None:
    """Add every query block's top-k hits to ``sums``; reads the gallery once."""
    tops = [RunningTopK(len(q.ids), max(sums.ks)) for q in queries]
    own_label = [np.full(len(q.ids), -1, np.int64) for q in queries]
    own_found = [np.zeros(len(q.ids), bool) for q in queries]
    gallery_labels = []
    for start, block in gallery.blocks():
        for query, top, found, label in zip(queries, tops, own_found, own_label):
            scores = score(query, block)
            rows, cols = exclude_self(scores, query.ids, block.ids)
            found[rows], label[rows] = True, block.labels[cols]
            top.merge(scores, block.ids, block.labels)
        gallery_labels.append(block.labels)
        report_progress(progress, "top-k", start + len(block.ids), gallery.rows)
    classes, sizes = np.unique(np.concatenate(gallery_labels or [np.zeros(0, np.int64)]), return_counts=True)
    for query, top, found, label in zip(queries, tops, own_found, own_label):
        _add_hits(query, top, found & (label == query.labels), classes, sizes, sums)
        sums.left_out += int(found.sum())


def _add_hits(query: Prepared, top: RunningTopK, own_is_positive, classes, sizes, sums: MetricSums) -> None:
    where = np.minimum(np.searchsorted(classes, query.labels), max(len(classes) - 1, 0))
    in_gallery = sizes[where] * (classes[where] == query.labels) if len(classes) else np.zeros(len(query.ids))
    valid = in_gallery - own_is_positive > 0
    match = (top.labels == query.labels[:, None]) & (top.scores > -np.inf)
    hits = np.array([np.count_nonzero(match[:, :k].any(axis=1) & valid) for k in sums.ks], np.int64)
    sums.add_hits(hits, int(valid.sum()), int(len(valid) - valid.sum()))
