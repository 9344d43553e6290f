"""`backfill_curve`: the metrics while GALLERY is backfilled towards NEW_GALLERY in a given order.

At fraction f = t/N (t = 0..N) the first budget_rows(f, G) rows of the backfill order hold their
NEW_GALLERY embedding and the rest their GALLERY one. AUC is the plain mean of the N+1 points.

Nothing is recomputed per point. The gallery is permuted into backfill order, so the rows
replaced between point t−1 and t form one column *chunk* c = t. Per query block, both versions
are scored once; every positive p has two possible scores, a (old, until its chunk c_p is
reached) and b (new, from then on). At point t:

    rank_p(t) = 1 + Σ_{c ≤ t} beat_new[c] + Σ_{c > t} beat_old[c]   (with p's score at t)

which is exactly the rank a from-scratch evaluation of the mixed gallery gives. Written from the
whole-gallery counts (one sort per version and one search per positive) and the per-chunk change
change[c] = beat_new[c] − beat_old[c]:

    t <  c_p:  rank_p(t) = 1 + beat_OLD(a) + Σ_{c ≤ t} change[c](a)
    t >= c_p:  rank_p(t) = 1 + beat_NEW(b) − Σ_{c > t} change[c](b)

so each chunk is searched only with the score p holds while that chunk is the one changing
(a for c < c_p, b for c > c_p): N − 1 chunk searches per positive and version, not 2N.
"""

from __future__ import annotations

import time

import numpy as np

from compatctl.orders import ORDERS, backfill_order, budget_rows
from compatctl.errors import BadInputError
from compatctl.store import EmbeddingBlock, IdIndex
from compatctl.evaluate.ranking import MetricSums, count_better, find_positives
from compatctl.evaluate.retrieval import (DEFAULT_QUERY_BLOCK, HELD_SCORES, build_report, check_blocks,
                                          check_topk)
from compatctl.evaluate.sources import (Prepared, ProgressFn, as_source, describe_source,
                                        exclude_self, get_distance, prepare, report_progress,
                                        require_labels, dims_for, score, source_name,
                                        unify_columns)


def align_by_id(gallery: EmbeddingBlock, new_gallery: EmbeddingBlock, new_name: str) -> EmbeddingBlock:
    """NEW_GALLERY's embeddings in GALLERY's row order (matched by id), with GALLERY's ids and labels."""
    rows, found = IdIndex(new_gallery.ids).locate(gallery.ids)
    if not found.all():
        missing = gallery.ids[~found]
        raise BadInputError(f"{new_name}: lacks {len(missing)} ids that GALLERY has (e.g. {missing[:5].tolist()}); "
                            "the new gallery must hold a row for every gallery id")
    return EmbeddingBlock(new_gallery.embeddings[rows], gallery.ids, gallery.labels)


def curve_points(steps: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(fractions t/N, backfilled rows budget_rows(t/N, rows)) for t = 0..N."""

    if steps < 1:
        raise BadInputError(f"--steps {steps}: must be >= 1 (the curve has steps + 1 points)")
    fractions = np.arange(steps + 1) / steps
    return fractions, np.array([budget_rows(float(f), rows) for f in fractions], np.int64)


def _chunk_changes(scores: tuple[np.ndarray, np.ndarray], gallery: Prepared, bounds: np.ndarray, rows, cols,
                   chunk_of) -> np.ndarray:
    """change[c, p] = (rows of chunk c beating p in NEW) − (in OLD), with p's old score for c < c_p, its new
    score for c > c_p (0 at c = c_p): the only chunk counts any point's rank needs."""
    change = np.zeros((len(bounds), len(rows)), np.int32)
    by_chunk = np.argsort(chunk_of, kind="stable")
    first_at = np.searchsorted(chunk_of[by_chunk], np.arange(len(bounds) + 1))  # positives with c_p < c: [:first_at[c]]
    values = [s[rows, cols] for s in scores]
    for chunk in range(1, len(bounds)):
        start, stop = bounds[chunk - 1], bounds[chunk]
        if stop == start:
            continue
        old_side, new_side = by_chunk[first_at[chunk + 1]:], by_chunk[: first_at[chunk]]  # c_p > c, c_p < c
        lanes = np.concatenate([old_side, new_side])
        lane_values = np.concatenate([values[0][old_side], values[1][new_side]])
        lane_rows, lane_ids = rows[lanes], gallery.ids[cols[lanes]]
        not_own = np.zeros(len(lanes), bool)  # p's own row lies in chunk c_p, never in this chunk
        beat_old, beat_new = (count_better(s[:, start:stop], gallery.ids[start:stop], lane_rows, lane_values,
                                           lane_ids, not_own) for s in scores)
        change[chunk, lanes] = beat_new - beat_old
    return change


def _curve_block(queries: tuple[Prepared, Prepared], galleries: tuple[Prepared, Prepared], bounds: np.ndarray,
                 sums: list[MetricSums]) -> None:
    """Add one query block's metrics at every curve point.

    With a = p's old score, b = its new score and change[c] from :func:`_chunk_changes`:
        t <  c_p:  rank_p(t) = 1 + beat_OLD(a) + Σ_{c ≤ t} change[c]
        t >= c_p:  rank_p(t) = 1 + beat_NEW(b) − Σ_{c > t} change[c]
    where beat_X(v) counts the rows of the whole gallery in version X that beat v.
    """
    scores = tuple(score(q, g) for q, g in zip(queries, galleries))
    self_rows, self_cols = exclude_self(scores[0], queries[0].ids, galleries[0].ids)
    scores[1][self_rows, self_cols] = -np.inf  # same ids in both versions
    rows, cols = find_positives(queries[0].labels, galleries[0], self_rows, self_cols)
    chunk_of = np.searchsorted(bounds, cols, side="right")  # the point at which p is backfilled
    own_ids, own = galleries[0].ids[cols], np.ones(len(rows), bool)
    beat_old, beat_new = (count_better(s, galleries[0].ids, rows, s[rows, cols], own_ids, own) for s in scores)
    prefix = np.cumsum(_chunk_changes(scores, galleries[0], bounds, rows, cols, chunk_of), axis=0, dtype=np.int64)
    for point, point_sums in enumerate(sums):
        at_point = np.where(point < chunk_of, 1 + beat_old + prefix[point],
                            1 + beat_new - (prefix[-1] - prefix[point]))
        point_sums.add_ranks(rows, at_point, len(queries[0].ids))
        point_sums.left_out += len(self_rows)


def backfill_curve(query, gallery, new_gallery, *, order: str = "random", steps: int = 20, seed: int = 0,
                   distance: str = "cosine", topk=(1, 5), dims: int | None = None, map_at_r: bool = False,
                   query_block: int = DEFAULT_QUERY_BLOCK, progress: ProgressFn | None = None) -> dict:
    """Metrics at ``steps + 1`` evenly spaced backfill fractions 0..1 and their AUC (= plain mean).

    Holds GALLERY and NEW_GALLERY in memory (the query set is streamed). ``metrics`` of the
    report is the point at fraction 0 (= evaluate(QUERY, GALLERY)); the point at 1 equals
    evaluate(QUERY, NEW_GALLERY restricted to GALLERY's ids).

    Raises:
        BadInputError: steps < 1, NEW_GALLERY missing ids of GALLERY, an order's input missing
            (uncertainty), missing labels, bad dims.
    """

    started = time.perf_counter()
    query, gallery, new_gallery = unify_columns(as_source(query), as_source(gallery), as_source(new_gallery))
    ks, metric = check_topk(topk), get_distance(distance)
    check_blocks(query_block, 1)
    require_labels(query, gallery)
    if order not in ORDERS:
        raise BadInputError(f"--order {order!r}: unknown; valid orders: {', '.join(ORDERS)}")
    if order == "uncertainty" and not gallery.has_uncertainty:
        raise BadInputError(f"{source_name(gallery)}: --order uncertainty needs per-row uncertainty in GALLERY; "
                            "apply a transform fitted with uncertainty, or use --order random")
    dim_old = dims_for(query, gallery, dims)
    dim_new = dims_for(query, new_gallery, dims)
    fractions, backfilled = curve_points(steps, gallery.rows)
    old = gallery.read_all()
    new = align_by_id(old, new_gallery.read_all(), source_name(new_gallery))
    backfill = backfill_order(order, ids=old.ids, uncertainty=old.uncertainty, embeddings=old.embeddings, seed=seed)
    galleries = tuple(prepare(block.take(backfill), info["used"], metric, gallery=True, name=source_name(source))
                      for block, info, source in ((old, dim_old, gallery), (new, dim_new, new_gallery)))
    sums = [MetricSums(ks, at_r=map_at_r) for _ in fractions]
    block_rows = max(1, min(query_block, HELD_SCORES // max(gallery.rows, 1)))
    done = 0
    for block in query.iter_blocks(block_rows):
        first = prepare(block, dim_old["used"], metric, gallery=False, name=source_name(query))
        same = dim_new["used"] == dim_old["used"]  # the usual case: prepare the queries once
        queries = (first, first if same else prepare(block, dim_new["used"], metric, gallery=False,
                                                     name=source_name(query)))
        _curve_block(queries, galleries, backfilled, sums)
        done += len(block)
        report_progress(progress, "backfill curve", done, query.rows)
    report = build_report(sums[0], query, gallery, distance, dim_old, started)
    report["curve"] = _curve_report(sums, fractions, backfilled, order, seed, dim_new)
    report["inputs"]["new_gallery"] = describe_source(new_gallery)
    report["elapsed_s"] = round(time.perf_counter() - started, 4)
    return report


def _curve_report(sums: list[MetricSums], fractions, backfilled, order: str, seed: int, dim_new: dict) -> dict:
    points = [s.result() for s in sums]
    curve = {"fractions": fractions.tolist(), "backfilled_rows": backfilled.tolist(), "order": order,
             "seed": seed, "steps": len(fractions) - 1, "dims_new": dim_new,
             "auc_rule": f"AUC = plain mean of the metric at the {len(fractions)} points (fractions 0..1, ends included)"}
    for name in points[0]:
        curve[name] = [p[name] for p in points]
    curve["auc"] = {name: float(np.mean(curve[name])) for name in points[0]}
    return curve
