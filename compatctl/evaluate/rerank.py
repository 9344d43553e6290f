"""Re-ranking: the cheap index's top-K, re-scored with new-model embeddings of those rows only.

First stage: QUERY (or its query-transformed version) against GALLERY, exactly as ``evaluate``
(leave-one-out by id, TIE_RULE). Second stage, per depth K: each query's K best first-stage
rows are re-scored with QUERY's own embedding against NEW_GALLERY's rows of the same ids and
re-sorted (equal scores: smaller id first, as everywhere). Rows below K keep their first-stage
places, so a positive's rank is

    its position among the re-scored K        if its first-stage rank <= K,
    its first-stage rank                        otherwise,

and top-k and full-ranking mAP follow from those ranks as in ``evaluate``. The cost of depth K
is ``rows_needed``: the distinct gallery rows among all queries' K candidates, i.e. the rows
that need a new-model embedding (K extra scores per query at query time).

Memory: the first stage as ``evaluate``; plus int64 [queries, max depth] candidate ids and the
NEW_GALLERY rows of the candidates (read in one streamed pass, only those rows kept).
"""

from __future__ import annotations

import time

import numpy as np

from compatctl.errors import BadInputError
from compatctl.evaluate.ranking import MetricSums
from compatctl.evaluate.retrieval import (DEFAULT_GALLERY_BLOCK, DEFAULT_QUERY_BLOCK, build_report, check_blocks,
                                          check_topk, rank_query_block)
from compatctl.evaluate.sources import (Gallery, Prepared, as_source, describe_source, dims_for, exclude_self, get_distance,
                                        prepare, report_progress, require_labels, score, source_name,
                                        unify_columns)
from compatctl.evaluate.topk import _NO_ID, RunningTopK

RERANK_RULE = ("each query's first-stage top-K rows re-scored with the query against NEW_GALLERY's rows of the "
               "same ids and re-sorted (equal scores: smaller id first); rows below K keep their first-stage "
               "places; rows_needed = distinct gallery rows among all queries' K candidates")
SECOND_STAGE_ROWS = 256  # queries per second-stage chunk: [chunk, K, dims] floats at a time


def parse_depths(text: str | int | list) -> tuple[int, ...]:
    """``"10,50,200"`` (or ints) -> sorted unique depths, each >= 1; BadInputError otherwise."""
    parts = text.split(",") if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else [text]
    try:
        depths = sorted({int(str(part).strip()) for part in parts if str(part).strip()})
    except ValueError:
        raise BadInputError(f"--rerank-depth {text!r}: expected comma-separated whole numbers, e.g. 10,50,200") from None
    if not depths or depths[0] < 1:
        raise BadInputError(f"--rerank-depth {text!r}: every depth must be >= 1 (the candidates re-scored per query)")
    return tuple(depths)


class _Ranks:
    """Captures (query row, rank) of every positive from ``rank_query_block`` (the MetricSums interface)."""

    def __init__(self, sums: MetricSums):
        self.sums, self.left_out = sums, 0
        self.rows = self.ranks = None

    def add_ranked(self, ranked) -> None:
        """``rank_query_block`` hands over a block's ranks sorted by (query, rank) (``records.QueryRanks``)."""
        self.rows, self.ranks = ranked.rows, ranked.ranks
        self.sums.add_ranked(ranked)


def _first_stage(queries, kept: Gallery, depth: int, sums: MetricSums):
    """(positives' rows and first-stage ranks, top-``depth`` candidate ids and labels) of one query block."""
    capture = _Ranks(sums)
    rank_query_block(queries, kept, capture)
    sums.left_out += capture.left_out
    top = RunningTopK(len(queries.ids), depth)
    for _, block in kept.blocks():
        scores = score(queries, block)
        exclude_self(scores, queries.ids, block.ids)
        top.merge(scores, block.ids, block.labels)
    return capture.rows, capture.ranks, top.ids, top.labels


def _new_rows(new_gallery, wanted: np.ndarray, dims: int, metric, block_rows: int):
    """NEW_GALLERY's prepared rows of the sorted ids ``wanted`` (one streamed pass; only those rows kept)."""
    from compatctl.store import EmbeddingBlock, IdIndex

    if len(wanted) == 0:
        return None
    index = IdIndex(wanted)
    parts, found = [], np.zeros(len(wanted), bool)
    for block in new_gallery.iter_blocks(block_rows):
        where, hit = index.locate(block.ids)
        if hit.any():
            parts.append((where[hit], block.take(hit)))
            found[where[hit]] = True
    if not found.all():
        missing = wanted[~found]
        raise BadInputError(f"--rerank-with {source_name(new_gallery)}: lacks {len(missing)} of the {len(wanted)} "
                            f"gallery ids the first stage returned as candidates (e.g. {missing[:5].tolist()}); "
                            "it must hold a new-model row for every candidate (embed those ids)")
    slots = np.concatenate([slot for slot, _ in parts]) if parts else np.zeros(0, np.int64)
    rows = EmbeddingBlock.concat([block for _, block in parts]) if parts else None
    return prepare(rows.take(np.argsort(slots)), dims, metric, gallery=True, name=source_name(new_gallery))


def _second_stage(query_block: Prepared, new: Prepared | None, wanted: np.ndarray, candidates: np.ndarray, labels: np.ndarray,
                  first_rows: np.ndarray, first_ranks: np.ndarray, depths, sums: list[MetricSums]) -> None:
    """Add one query block's re-ranked metrics at every depth to ``sums``."""
    valid = candidates != _NO_ID
    slots = np.minimum(np.searchsorted(wanted, candidates), max(len(wanted) - 1, 0))
    scores = np.full(candidates.shape, -np.inf, np.float32)
    for start in range(0, len(candidates) if new is not None else 0, SECOND_STAGE_ROWS):
        chunk = slice(start, start + SECOND_STAGE_ROWS)
        rows = new.matrix[slots[chunk]]  # [chunk, K, dims]
        chunk_scores = np.einsum("qd,qkd->qk", query_block.matrix[chunk], rows, dtype=np.float32)
        if new.bias is not None:
            chunk_scores += new.bias[slots[chunk]]
        scores[chunk] = np.where(valid[chunk], chunk_scores, -np.inf)
    positive = valid & (labels == query_block.labels[:, None])
    n = len(query_block.ids)
    for depth, depth_sums in zip(depths, sums):
        top_scores, top_ids = scores[:, :depth], np.where(valid[:, :depth], candidates[:, :depth], _NO_ID)
        order = np.lexsort((top_ids, -top_scores), axis=-1)  # best first; equal scores: smaller id first
        position = np.empty_like(order)
        np.put_along_axis(position, order, np.arange(1, order.shape[1] + 1)[None, :].repeat(n, 0), axis=-1)
        inside_rows, inside_cols = np.nonzero(positive[:, :depth])
        outside = first_ranks > depth
        rows = np.concatenate([inside_rows, first_rows[outside]])
        ranks = np.concatenate([position[inside_rows, inside_cols], first_ranks[outside]])
        depth_sums.add_ranks(rows.astype(np.int64), ranks.astype(np.int64), n)


def rerank(query, gallery, new_gallery, *, depths=(50,), first_stage_query=None, distance: str = "cosine",
           topk=(1, 5), dims: int | None = None, query_block: int = DEFAULT_QUERY_BLOCK,
           gallery_block: int = DEFAULT_GALLERY_BLOCK, progress=None) -> dict:
    """First stage ``first_stage_query`` (default ``query``) → GALLERY, then re-ranking with NEW_GALLERY.

    Args:
        query: the new-model queries (second stage; also the first stage without ``first_stage_query``).
        gallery: the cheap index's rows (e.g. the old gallery).
        new_gallery: new-model rows, matched by id; must hold every candidate's id.
        depths: the K values (each >= 1).
        first_stage_query: e.g. ``TransformedQueries`` of ``query``, same ids in the same order.
        distance, topk, dims, query_block, gallery_block, progress: as ``evaluate`` (``dims`` applies
            to the first stage).
    Returns:
        ``evaluate``'s report of the first stage plus ``rerank``: depths, rows_needed,
        rows_needed_fraction and per metric a list over depths.
    Raises:
        BadInputError: depth < 1, missing labels, NEW_GALLERY lacking candidate ids (how many), bad dims.
    """
    started = time.perf_counter()
    first = query if first_stage_query is None else first_stage_query
    first, query, gallery, new_gallery = unify_columns(as_source(first), as_source(query), as_source(gallery),
                                                       as_source(new_gallery))
    depths, ks, metric = parse_depths(list(depths)), check_topk(topk), get_distance(distance)
    check_blocks(query_block, gallery_block)
    require_labels(first, gallery)
    dim_first = dims_for(first, gallery, dims)
    dim_second = dims_for(query, new_gallery, None)
    kept = Gallery(gallery, dim_first["used"], metric, gallery_block)
    first_sums = MetricSums(ks)
    held = []  # per query block: (positives' rows, ranks, candidate ids, labels)
    done = 0
    for block in first.iter_blocks(query_block):
        queries = prepare(block, dim_first["used"], metric, gallery=False, name=source_name(first))
        held.append(_first_stage(queries, kept, depths[-1], first_sums))
        done += len(block)
        report_progress(progress, "first stage", done, first.rows)
    candidates = np.concatenate([h[2] for h in held]) if held else np.zeros((0, depths[-1]), np.int64)
    needed = [np.unique(candidates[:, :d][candidates[:, :d] != _NO_ID]) for d in depths]
    wanted = needed[-1]
    new = _new_rows(new_gallery, wanted, dim_second["used"], metric, gallery_block)
    sums = [MetricSums(ks) for _ in depths]
    for block, (rows, ranks, ids, labels) in zip(query.iter_blocks(query_block), held):
        queries = prepare(block, dim_second["used"], metric, gallery=False, name=source_name(query))
        _second_stage(queries, new, wanted, ids, labels, rows, ranks, depths, sums)
    report = build_report(first_sums, first, gallery, distance, dim_first, started)
    report["inputs"]["rerank_with"] = describe_source(new_gallery)
    rows = int(gallery.rows)
    report["rerank"] = {"depths": list(depths), "rows_needed": [int(len(n)) for n in needed],
                        "rows_needed_fraction": [len(n) / max(rows, 1) for n in needed],
                        "extra_scores_per_query": list(depths), "dims": dim_second, "rule": RERANK_RULE,
                        "metrics": {name: [s.result()[name] for s in sums] for name in first_sums.result()}}
    report["elapsed_s"] = round(time.perf_counter() - started, 4)
    return report
