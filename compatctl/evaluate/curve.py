"""`backfill_curve`: the metrics while GALLERY is backfilled towards NEW_GALLERY in a given order.

At fraction f = t/N (t = 0..N) the first budget_rows(f, G) rows of the backfill order hold their
NEW_GALLERY embedding and the rest their GALLERY one. AUC is the plain mean of the N+1 points.

Nothing is recomputed per point. The gallery is permuted into backfill order, so the rows
replaced between point t−1 and t form one column *chunk* c = t. Per query block, each chunk is
scored and sorted once in both versions; every positive p has two possible scores (old until
its chunk c_p is reached, new after), and for both the number of rows that beat it is counted
per chunk and version. Then, at point t:

    rank_p(t) = 1 + Σ_{c ≤ t} beat_new[c] + Σ_{c > t} beat_old[c]   (with p's score at t)

which is exactly the rank a from-scratch evaluation of the mixed gallery gives.
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


def _counts(scores: np.ndarray, gallery: Prepared, bounds: np.ndarray, rows, values, ids, own_cols) -> np.ndarray:
    """beat[c, i]: rows of chunk c (1..N) whose score in ``scores`` beats threshold i (own column own_cols[i])."""
    beat = np.zeros((len(bounds), len(rows)), np.int64)
    own_scores_match = scores[rows, own_cols] == values
    for chunk in range(1, len(bounds)):
        start, stop = bounds[chunk - 1], bounds[chunk]
        if stop > start:
            own_here = own_scores_match & (own_cols >= start) & (own_cols < stop)
            beat[chunk] = count_better(scores[:, start:stop], gallery.ids[start:stop], rows, values, ids, own_here)
    return beat


def _thresholds(scores: list[np.ndarray], rows: np.ndarray, cols: np.ndarray, gallery_ids: np.ndarray):
    """Each positive twice — with its old score, then its new score — sorted by query row.

    Returns (order, rows, cols, values, ids); ``order`` maps back to [old thresholds, new thresholds].
    """
    both = np.concatenate([rows, rows])
    order = np.argsort(both, kind="stable")
    t_cols = np.concatenate([cols, cols])[order]
    values = np.concatenate([scores[0][rows, cols], scores[1][rows, cols]])[order]
    return order, both[order], t_cols, values, gallery_ids[t_cols]


def _curve_block(queries: tuple[Prepared, Prepared], galleries: tuple[Prepared, Prepared], bounds: np.ndarray,
                 sums: list[MetricSums]) -> None:
    """Add one query block's metrics at every curve point."""
    scores = [score(q, g) for q, g in zip(queries, galleries)]
    self_rows, self_cols = exclude_self(scores[0], queries[0].ids, galleries[0].ids)
    scores[1][self_rows, self_cols] = -np.inf  # same ids in both versions
    rows, cols = find_positives(queries[0].labels, galleries[0], self_rows, self_cols)
    chunk_of = np.searchsorted(bounds, cols, side="right")  # the point at which p is backfilled
    order, t_rows, t_cols, t_values, t_ids = _thresholds(scores, rows, cols, galleries[0].ids)
    beat_old, beat_new = (_counts(s, galleries[0], bounds, t_rows, t_values, t_ids, t_cols) for s in scores)
    before, after = np.cumsum(beat_old, axis=0), np.cumsum(beat_new, axis=0)
    ranks = np.empty_like(before)  # [point, threshold], back in [old thresholds, new thresholds] order
    ranks[:, order] = 1 + after + (before[-1:] - before)
    for point, point_sums in enumerate(sums):
        at_point = np.where(chunk_of <= point, ranks[point, len(rows):], ranks[point, : len(rows)])
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
