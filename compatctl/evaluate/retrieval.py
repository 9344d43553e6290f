"""`evaluate`: exact, streamed retrieval metrics of QUERY against GALLERY.

Per query block, the gallery flows in blocks twice: first to collect every positive's score
(same label, own id left out), then to count, per positive, the gallery rows that beat it
(ranking.count_better). A small gallery is prepared once and kept; the score matrix of one
query block against it is then computed once. Peak memory is set by the block sizes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

import numpy as np

from compatctl.errors import BadInputError
from compatctl.evaluate.ranking import MetricSums, count_better, find_positives, sort_rows
from compatctl.evaluate.records import QueryRecords, RecordSink, query_ranks
from compatctl.evaluate.sources import (TIE_RULE, Gallery, Prepared, ProgressFn, as_source, describe_source,
                                        decode_column, exclude_self, get_distance, query_blocks, report_progress,
                                        require_labels, dims_for, score, unify_columns)
from compatctl.evaluate.topk import topk_only

DEFAULT_QUERY_BLOCK = 2048
DEFAULT_GALLERY_BLOCK = 16384
DEFAULT_QRELS_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map")
HELD_SCORES = 1 << 25  # float32 scores of one query block against a kept gallery, computed once


@dataclasses.dataclass
class Segment:
    """Scores of a query block against one gallery block, the query's own row at −inf."""

    scores: np.ndarray
    gallery: Prepared
    self_rows: np.ndarray
    self_cols: np.ndarray


# (query rows, gallery cols, gains or None for all 1) of the relevant pairs of one segment
Relevance = Callable[[Prepared, Segment], tuple[np.ndarray, np.ndarray, "np.ndarray | None"]]


def label_relevance(queries: Prepared, segment: Segment) -> tuple[np.ndarray, np.ndarray, None]:
    """Same-label rows are relevant (gain 1), the query's own row excluded."""
    rows, cols = find_positives(queries.labels, segment.gallery, segment.self_rows, segment.self_cols)
    return rows, cols, None


def segments(queries: Prepared, gallery: Gallery, leave_one_out: bool = True) -> Iterator[Segment]:
    """Score ``queries`` against each gallery block in turn."""
    nothing = np.zeros(0, np.int64)
    for _, block in gallery.blocks():
        scores = score(queries, block)
        rows, cols = exclude_self(scores, queries.ids, block.ids) if leave_one_out else (nothing, nothing)
        yield Segment(scores, block, rows, cols)


def rank_query_block(queries: Prepared, gallery: Gallery, sums: MetricSums, *, relevance: Relevance = label_relevance,
                     leave_one_out: bool = True, sink: RecordSink | None = None, threads: int | None = None) -> None:
    """Exact ranks of every relevant row of a query block; adds its metrics to ``sums`` (and ``sink``).

    Pass 1 collects every relevant row's score (and, for a kept gallery, sorts each segment's
    rows once); pass 2 counts, per relevant row, the rows of each segment that beat it.
    """
    held = gallery.kept and len(queries.ids) * gallery.rows <= HELD_SCORES
    found, kept_segments = [], []
    for index, segment in enumerate(segments(queries, gallery, leave_one_out)):
        rows, cols, gains = relevance(queries, segment)
        found.append((rows, segment.scores[rows, cols], segment.gallery.ids[cols], np.full(len(rows), index),
                      np.ones(len(rows)) if gains is None else gains))
        sums.left_out += len(segment.self_rows)
        if held:
            kept_segments.append((segment, sort_rows(segment.scores, threads)))
    parts = [np.concatenate(part) for part in zip(*found)] if found else [np.zeros(0)] * 5
    rows, values, ids, where, gains = parts
    rows = rows.astype(np.int64)
    better = np.zeros(len(rows), np.int64)
    passes = kept_segments if held else ((s, None) for s in segments(queries, gallery, leave_one_out))
    for index, (segment, ordered) in enumerate(passes):
        better += count_better(segment.scores, segment.gallery.ids, rows, values, ids, where == index,
                               ordered=ordered, threads=threads)
    ranked = query_ranks(rows, better + 1, gains if sink is not None else None, len(queries.ids))
    sums.add_ranked(ranked)
    if sink is not None:
        sink.add(queries.ids, queries.labels, ranked)


def check_topk(topk) -> tuple[int, ...]:
    """Sorted unique k values, each a whole number >= 1."""
    ks = tuple(sorted({int(k) for k in topk}))
    if not ks or ks[0] < 1:
        raise BadInputError(f"--topk {','.join(map(str, topk))}: give whole numbers >= 1, e.g. 1,5")
    return ks


def check_blocks(query_block: int, gallery_block: int) -> None:
    if query_block < 1 or gallery_block < 1:
        raise BadInputError(f"block sizes must be >= 1 (query_block={query_block}, gallery_block={gallery_block})")


def evaluate(query, gallery, *, distance: str = "cosine", topk=(1, 5), dims: int | None = None,
             with_map: bool = True, map_at_r: bool = False, metrics: tuple[str, ...] = (), qrels=None,
             query_block: int = DEFAULT_QUERY_BLOCK, gallery_block: int = DEFAULT_GALLERY_BLOCK,
             progress: ProgressFn | None = None) -> dict:
    """Top-k (CMC) and full-ranking mAP of ``query`` against ``gallery``, leave-one-out by id.

    Args:
        query, gallery: opened embedding sources (``open_embeddings``) or EmbeddingBlocks, with labels.
        distance: "cosine" (normalised inner product) or "l2" (raw Euclidean).
        topk: the k of the CMC top-k metrics.
        dims: compare the first ``dims`` dims (needed for unequal widths without BT² lineage).
        with_map: False reads the gallery once for top-k only (no mAP; queries kept in memory).
        map_at_r: also report mAP@R (R = the query's number of positives).
        metrics: report exactly these metrics instead (records.METRIC_FORMS, e.g. ("ndcg@10", "map")).
        qrels: a ``qrels.Qrels``: relevance from judgments instead of labels (graded gains; no row
            is left out: query and corpus ids are separate name spaces); reports ``metrics``
            (default ndcg@10, recall@100, mrr@10, map).
        query_block, gallery_block: rows per block; they set the peak memory: about 12 bytes ×
            query_block × gallery_block for scores (a gallery of at most 256 MiB is kept prepared),
            plus ~30 bytes per (query, positive) pair of one query block for the ranks.
        progress: optional callable (description, done, total).
    Returns:
        The report: metrics, counts, distance, dims, inputs, ranking rules, elapsed_s.
    Raises:
        BadInputError: missing labels, bad dims/topk/blocks/metrics, qrels naming absent ids,
            --map-at-r or --metrics without the full ranking.
    """
    return evaluate_records(query, gallery, distance=distance, topk=topk, dims=dims, with_map=with_map,
                            map_at_r=map_at_r, metrics=metrics, qrels=qrels, query_block=query_block,
                            gallery_block=gallery_block, progress=progress, keep=with_map)[0]


def evaluate_records(query, gallery, *, distance: str = "cosine", topk=(1, 5), dims: int | None = None,
                     with_map: bool = True, map_at_r: bool = False, metrics: tuple[str, ...] = (), qrels=None,
                     query_block: int = DEFAULT_QUERY_BLOCK, gallery_block: int = DEFAULT_GALLERY_BLOCK,
                     progress: ProgressFn | None = None, keep: bool = True) -> tuple[dict, QueryRecords | None]:
    """:func:`evaluate` plus the per-query outcomes (``QueryRecords``) of every reported metric.

    ``keep=False`` skips the records (None) unless ``metrics`` needs them. Records need the full ranking.
    """
    started = time.perf_counter()
    query, gallery = unify_columns(as_source(query), as_source(gallery))
    ks, metric = check_topk(topk), get_distance(distance)
    check_blocks(query_block, gallery_block)
    if qrels is None:
        require_labels(query, gallery)
    dim_info = dims_for(query, gallery, dims)
    metrics = tuple(metrics) or (DEFAULT_QRELS_METRICS if qrels is not None else ())
    needs_ranking = [flag for flag, used in (("--map-at-r", map_at_r), ("--metrics", metrics),
                                             ("--qrels", qrels is not None)) if used]
    if needs_ranking and not with_map:
        raise BadInputError(f"{needs_ranking[0]} needs the full ranking; drop --no-map")
    sums = MetricSums(ks, at_r=map_at_r, with_map=with_map)
    recorded = tuple(dict.fromkeys((*(metrics or sums.result()), "map")))  # AP always: --per-query shows it
    sink = RecordSink(recorded) if with_map and (keep or metrics) else None
    used = dim_info["used"]
    if with_map:
        relevance = label_relevance if qrels is None else qrels.relevance(query, gallery)
        kept = Gallery(gallery, used, metric, gallery_block)
        done = 0
        for queries in query_blocks(query, used, metric, query_block):
            rank_query_block(queries, kept, sums, relevance=relevance, leave_one_out=qrels is None, sink=sink)
            done += len(queries.ids)
            report_progress(progress, "ranking", done, query.rows)
    else:
        queries = list(query_blocks(query, used, metric, query_block))
        topk_only(queries, Gallery(gallery, used, metric, gallery_block, cache_bytes=0), sums, progress)
    records = None if sink is None else sink.records(lambda name, codes: decode_column(query, name, codes))
    report = build_report(sums, query, gallery, distance, dim_info, started)
    if metrics:
        report["metrics"] = {name: float(np.mean(records.values[name])) if len(records.ids) else 0.0
                             for name in metrics}
    if qrels is not None:
        report["ranking"]["relevance"] = qrels.describe()
    return report, records


def build_report(sums: MetricSums, query, gallery, distance: str, dim_info: dict, started: float) -> dict:
    """The report dict of one query/gallery evaluation."""
    return {
        "metrics": sums.result(),
        "distance": distance,
        "dims": dim_info,
        "counts": {"queries": int(query.rows), "gallery": int(gallery.rows), "evaluated": sums.evaluated,
                   "skipped_no_positive": sums.skipped, "left_out_self": sums.left_out},
        "inputs": {"query": describe_source(query), "gallery": describe_source(gallery)},
        "ranking": {"tie_rule": TIE_RULE,
                    "map": "full ranking" if sums.with_map else "not computed (top-k only)",
                    "skipped": "queries without any positive in the gallery are left out of every metric"},
        "elapsed_s": round(time.perf_counter() - started, 4),
    }
