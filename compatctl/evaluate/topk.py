"""The top-k-only path: one pass over the gallery with a running top-k per query.

Used when mAP is not asked for (``with_map=False``, ``--no-map``): the gallery is read once,
block by block (faiss-contrib style), the queries stay in memory and each query keeps its k
best rows so far. Per block only the rows that reach a query's current k-th score are merged,
so after the first blocks the work is one GEMM plus one comparison per score. The GEMM is cut
into tiles that stay in cache until the comparisons have read them, and each tile's rows are
merged in parallel pieces (numpy releases the GIL), so both cores work between GEMMs.

That is the numpy kernel. The default kernel, for cosine, hands each gallery block to faiss's
``knn`` (GEMM tiles and per-query heaps in C++) for the best k + 4 rows, and keeps ties by id
by checking the boundary (see ``_faiss_block``); it measured 1.2-2.0x the numpy kernel's speed
(benchmarks/topk_kernels.py, shared machine). l2 (a per-row bias) stays on the numpy kernel.
"""

from __future__ import annotations

import numpy as np

from compatctl.evaluate.ranking import MetricSums, in_pieces
from compatctl.evaluate.sources import Gallery, Prepared, report_progress
from compatctl.store import IdIndex

_NO_ID = np.iinfo(np.int64).max


# A score tile (query rows x gallery columns) small enough to stay in cache between the GEMM that
# writes it and the passes that read it: 1024 x 4096 float32 = 16 MiB.
TILE_ROWS, TILE_COLUMNS = 1024, 4096


class RunningTopK:
    """The k best gallery rows per query so far (score desc, then id asc — TIE_RULE)."""

    def __init__(self, queries: int, k: int):
        self.k = k
        self.scores = np.full((queries, k), -np.inf, np.float32)
        self.ids = np.full((queries, k), _NO_ID, np.int64)
        self.labels = np.zeros((queries, k), np.int64)

    def merge(self, scores: np.ndarray, ids: np.ndarray, labels: np.ndarray, start: int = 0) -> None:
        """Merge scores [r, c] (−inf = left out) of query rows start..start+r with its columns' ids and labels.

        Touches only those rows' state, so disjoint row ranges may merge in parallel threads.
        """
        threshold = self.scores[start:start + len(scores), -1].copy()
        unfilled = np.flatnonzero(np.isneginf(threshold))
        columns = scores.shape[1]
        if len(unfilled) and columns > self.k:  # k-th best of this tile bounds what can enter
            kth = scores[unfilled]
            kth.partition(columns - self.k, axis=1)  # in place on the copy
            threshold[unfilled] = kth[:, columns - self.k]
        live = np.flatnonzero(scores.max(axis=1) >= threshold)  # rows where something can enter
        if len(live) == 0:
            return
        # flatnonzero, not a 2-D nonzero: on a 1024 x 4096 tile it is ~50x faster (numpy 2.4)
        if 2 * len(live) > len(threshold):  # early tiles: most rows
            hits = np.flatnonzero(scores >= threshold[:, None])
        else:  # later tiles: few rows, look at those only
            live_rows, cols = np.divmod(np.flatnonzero(scores[live] >= threshold[live, None]), columns)
            hits = live[live_rows] * columns + cols
        values = scores.reshape(-1)[hits]
        hits = hits[values > -np.inf]
        rows, cols = np.divmod(hits, columns)
        self._keep_best(start + rows, scores.reshape(-1)[hits], ids[cols], labels[cols])

    def _keep_best(self, rows, values, ids, labels) -> None:
        """Merge candidates (query rows, scores, ids, labels) into the k held by those rows only."""
        touched = np.unique(rows)
        k = self.k
        all_rows = np.concatenate([np.repeat(np.arange(len(touched)), k), np.searchsorted(touched, rows)])
        all_values = np.concatenate([self.scores[touched].reshape(-1), values])
        all_ids = np.concatenate([self.ids[touched].reshape(-1), ids])
        all_labels = np.concatenate([self.labels[touched].reshape(-1), labels])
        order = np.lexsort((all_ids, -all_values, all_rows))  # per row: score desc, then id asc
        counts = np.bincount(all_rows, minlength=len(touched))  # >= k each: the k held slots are in
        best = order[((np.cumsum(counts) - counts)[:, None] + np.arange(k)).reshape(-1)]
        self.scores[touched] = all_values[best].reshape(-1, k)
        self.ids[touched] = all_ids[best].reshape(-1, k)
        self.labels[touched] = all_labels[best].reshape(-1, k)


def _merge_block(query: Prepared, block: Prepared, top: RunningTopK, threads: int | None) -> tuple:
    """Score one query block against one gallery block tile by tile, merging each tile in parallel row pieces.

    Returns (query rows, block columns) of the query's own rows found in this block (left out).
    """
    self_rows = self_cols = np.zeros(0, np.int64)
    if len(block.ids):
        positions, found = IdIndex(block.ids).locate(query.ids)
        self_rows = np.flatnonzero(found)
        self_cols = positions[self_rows]
    for first_col in range(0, len(block.ids), TILE_COLUMNS):
        cols = slice(first_col, first_col + TILE_COLUMNS)
        matrix, ids, labels = block.matrix[cols], block.ids[cols], block.labels[cols]
        bias = None if block.bias is None else block.bias[cols]
        own = (self_cols >= first_col) & (self_cols < first_col + len(ids))
        for first_row in range(0, len(query.ids), TILE_ROWS):
            tile = query.matrix[first_row:first_row + TILE_ROWS] @ matrix.T
            if bias is not None:
                tile += bias[None, :]
            here = own & (self_rows >= first_row) & (self_rows < first_row + len(tile))
            tile[self_rows[here] - first_row, self_cols[here] - first_col] = -np.inf

            def task(a: int, b: int, tile=tile, first_row=first_row) -> None:
                top.merge(tile[a:b], ids, labels, start=first_row + a)

            in_pieces(task, len(tile), threads, weight=tile.shape[1])
    return self_rows, self_cols


KERNELS = ("numpy", "faiss")
_SLACK = 3  # faiss returns k + slack + 1 rows per query and block: room for the own row and ties


def _faiss_block(query: Prepared, block: Prepared, top: RunningTopK, threads: int | None) -> tuple:
    """:func:`_merge_block` through faiss's knn kernel (its GEMM tiles and heaps in C++), ties kept by id.

    faiss keeps the best ``k + slack + 1`` rows of the block per query, in no set order among
    equal scores. A query's candidates are exact when the smallest score returned is below its
    k-th best (own row left out): every row scoring at least that k-th is then among them, and
    the merge orders them by score, then id. Rows where it is not (ties across the boundary) are
    scored again in numpy and merged from every column reaching their k-th score.
    Cosine only (no l2 bias): the scores are the same float32 inner products as the numpy tiles'.
    """
    import os

    # Idle OpenMP threads sleep instead of spinning (a spinning pool halved this kernel's speed on a
    # shared 2-core machine: benchmarks/topk_kernels.py); only when faiss is loaded here first.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import faiss  # here: start-up of an eval that needs no top-k kernel stays lean

    from compatctl.evaluate.ranking import worker_count

    self_rows = self_cols = np.zeros(0, np.int64)
    columns = len(block.ids)
    if not columns or not len(query.ids):
        return self_rows, self_cols
    positions, found = IdIndex(block.ids).locate(query.ids)
    self_rows = np.flatnonzero(found)
    self_cols = positions[self_rows]
    k = top.k
    wanted = min(k + _SLACK + 1, columns)
    faiss.omp_set_num_threads(worker_count(threads))
    faiss.cvar.distance_compute_blas_threshold = 0  # the GEMM path for any block (small ones too)
    values, cols = faiss.knn(query.matrix, block.matrix, wanted, metric=faiss.METRIC_INNER_PRODUCT)
    smallest = values[:, -1].copy()  # faiss sorts each row's results, best first: no row left out beats this
    own = np.full(len(query.ids), -1, np.int64)
    own[self_rows] = self_cols
    values[cols == own[:, None]] = -np.inf  # leave-one-out
    if wanted == columns:  # the whole block came back
        exact = np.ones(len(query.ids), bool)
    else:  # k + 1 <= wanted: at least k rows besides the own one
        exact = smallest < -np.partition(-values, k - 1, axis=1)[:, k - 1]
    rows, slots = np.nonzero(exact[:, None] & (values > -np.inf))
    picked = cols[rows, slots]
    top._keep_best(rows, values[rows, slots], block.ids[picked], block.labels[picked])
    for first in range(0, len(tied := np.flatnonzero(~exact)), TILE_ROWS):  # exact ties across the boundary
        part = tied[first:first + TILE_ROWS]
        scores = query.matrix[part] @ block.matrix.T
        mine = own[part] >= 0
        scores[np.flatnonzero(mine), own[part][mine]] = -np.inf
        bound = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
        hit_rows, hit_cols = np.nonzero((scores >= bound[:, None]) & (scores > -np.inf))
        top._keep_best(part[hit_rows], scores[hit_rows, hit_cols], block.ids[hit_cols], block.labels[hit_cols])
    return self_rows, self_cols


DEFAULT_KERNEL = "faiss"  # 1.2-2.0x the numpy kernel's speed in three alternating runs (benchmarks/topk_kernels.py)


def topk_only(queries: list[Prepared], gallery: Gallery, sums: MetricSums, progress=None,
              threads: int | None = None, kernel: str | None = None) -> None:
    """Add every query block's top-k hits to ``sums``; reads the gallery once.

    ``kernel``: "faiss" (the default: faiss.knn per gallery block; cosine only, l2 stays on
    numpy) or "numpy" (GEMM tiles and a vectorised merge). Both keep ties by id.
    """
    kernel = kernel or DEFAULT_KERNEL
    merge = _faiss_block if kernel == "faiss" and gallery.distance.normalize else _merge_block
    tops = [RunningTopK(len(q.ids), max(sums.ks)) for q in queries]
    own_label = [np.full(len(q.ids), -1, np.int64) for q in queries]
    own_found = [np.zeros(len(q.ids), bool) for q in queries]
    gallery_labels = []
    for start, block in gallery.blocks():
        for query, top, found, label in zip(queries, tops, own_found, own_label):
            rows, cols = merge(query, block, top, threads)
            found[rows], label[rows] = True, block.labels[cols]
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
