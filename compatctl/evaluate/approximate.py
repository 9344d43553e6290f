"""Approximate search for galleries too big for exact eval: ``eval --index FACTORY [--nprobe N]``.

The gallery (cut to the compared dims, L2-normalised for cosine) goes into a faiss index built
from the factory string (``HNSW32``, ``IVF1024,Flat``, ...; trained on a seeded sample when it
needs training). Every query asks the index for its k+1 nearest rows; its own row (same id) is
dropped (leave-one-out) and top-k is a hit when one of the first k has the query's label.
Queries without any positive in the gallery are skipped, as in the exact evaluation.

What it cannot report, and why exact stays the default: mAP needs every positive's rank in the
*full* ranking, which an index does not give; and ties among equal scores are broken by faiss's
internal order, not by compatctl's rule (smaller gallery id first), so results are not
reproducible across index types. The report therefore states, next to the metrics, the recall@k
of the approximate neighbours against exact search on a seeded sample of queries (exact: every
gallery row scored, ties by smaller id).
"""

from __future__ import annotations

import time

import numpy as np

from compatctl.errors import BadInputError
from compatctl.evaluate.retrieval import check_topk
from compatctl.evaluate.sources import (describe_source, dims_for, get_distance, prepare, report_progress,
                                        require_labels, unify_columns)
from compatctl.store.sources import as_source


def _prepared_rows(source, positions, dims, distance, gallery: bool):
    block = source.read_positions(positions)
    return prepare(block, dims, distance, gallery=gallery, name=str(source.path))


def build_gallery_index(gallery, factory: str, dims: int, distance, *, nprobe: int | None, train_rows: int, seed: int,
                        block_rows: int, progress=None):
    """(faiss index over the prepared gallery rows in row order, facts about how it was built)."""
    import faiss

    from compatctl.store.faiss_index import build_index, sample_positions

    metric = "ip" if distance.normalize or not distance.squared_norm_bias else "l2"
    index = build_index(factory, dims, metric)
    started = time.perf_counter()
    trained = None
    if not index.is_trained:
        positions = sample_positions(gallery.rows, train_rows, seed)
        sample = _prepared_rows(gallery, positions, dims, distance, gallery=False).matrix
        try:
            index.train(sample)
        except Exception as exc:
            raise BadInputError(f"--index {factory!r}: training on {len(sample)} gallery rows failed "
                                f"({str(exc).splitlines()[0][:120]}); pick a smaller index (fewer lists)") from None
        trained = {"rows": int(len(positions)), "of": int(gallery.rows), "seed": seed}
    done = 0
    for block in gallery.iter_blocks(block_rows):
        index.add(prepare(block, dims, distance, gallery=False, name=str(gallery.path)).matrix)
        done += len(block)
        report_progress(progress, "index", done, gallery.rows)
    if nprobe is not None:
        try:
            faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
        except Exception:
            raise BadInputError(f"--nprobe applies to IVF indexes; --index {factory!r} has no inverted lists "
                                "(drop --nprobe, or use e.g. IVF1024,Flat)") from None
    return index, {"factory": factory, "metric": metric, "nprobe": nprobe, "trained_on": trained,
                   "build_s": round(time.perf_counter() - started, 3)}


def exact_neighbours(queries, gallery, dims: int, distance, k: int, block_rows: int) -> np.ndarray:
    """Gallery row positions of each query's k best rows by exact scores, own id left out, ties by smaller id
    (−1 pads when the gallery has fewer rows)."""
    best_scores = np.full((len(queries.ids), 0), -np.inf, np.float32)
    best_rows = np.zeros((len(queries.ids), 0), np.int64)
    start = 0
    for block in gallery.iter_blocks(block_rows):
        prepared = prepare(block, dims, distance, gallery=True, name=str(gallery.path))
        scores = queries.matrix @ prepared.matrix.T
        if prepared.bias is not None:
            scores += prepared.bias[None, :]
        scores[queries.ids[:, None] == prepared.ids[None, :]] = -np.inf
        rows = np.broadcast_to(np.arange(start, start + len(block)), scores.shape)
        best_scores = np.concatenate([best_scores, scores], axis=1)
        best_rows = np.concatenate([best_rows, rows], axis=1)
        if best_scores.shape[1] > 4 * k:
            keep = np.argpartition(-best_scores, k, axis=1)[:, : 2 * k]  # margin for ties at the k-th score
            best_scores = np.take_along_axis(best_scores, keep, 1)
            best_rows = np.take_along_axis(best_rows, keep, 1)
        start += len(block)
    gallery_ids = gallery.column("ids")
    out = np.full((len(queries.ids), k), -1, np.int64)
    for i in range(len(queries.ids)):
        live = best_scores[i] > -np.inf
        rows, values = best_rows[i][live], best_scores[i][live]
        order = np.lexsort((gallery_ids[rows], -values))[:k]
        out[i, : len(order)] = rows[order]
    return out


def evaluate_approximate(query, gallery, *, index: str, nprobe: int | None = None, distance: str = "cosine",
                         topk=(1, 5), dims: int | None = None, recall_queries: int = 1000, train_rows: int = 100_000,
                         seed: int = 0, query_block: int = 2048, gallery_block: int = 16384, progress=None) -> dict:
    """Top-k of ``query`` against ``gallery`` through a faiss index, plus recall@k against exact search on
    ``recall_queries`` queries drawn with ``seed`` (see the module docstring). Returns the report."""
    started = time.perf_counter()
    query, gallery = unify_columns(as_source(query), as_source(gallery))
    ks, metric = check_topk(topk), get_distance(distance)
    require_labels(query, gallery)
    dim_info = dims_for(query, gallery, dims)
    used, kmax = dim_info["used"], max(ks)
    if nprobe is not None and nprobe < 1:
        raise BadInputError(f"--nprobe {nprobe}: must be >= 1")
    built, facts = build_gallery_index(gallery, index, used, metric, nprobe=nprobe, train_rows=train_rows, seed=seed,
                                       block_rows=gallery_block, progress=progress)
    gallery_ids, gallery_labels = gallery.column("ids"), gallery.column("labels")
    classes, counts = np.unique(gallery_labels, return_counts=True)
    hits, evaluated, skipped, left_out, done = np.zeros(len(ks), np.int64), 0, 0, 0, 0
    searched = time.perf_counter()
    for block in query.iter_blocks(query_block):
        prepared = prepare(block, used, metric, gallery=False, name=str(query.path))
        _, found = built.search(prepared.matrix, kmax + 1)
        valid = found >= 0
        safe = np.where(valid, found, 0)
        own = valid & (gallery_ids[safe] == prepared.ids[:, None])
        left_out += int(own.any(axis=1).sum())
        keep = valid & ~own
        # the first kmax kept neighbours of each query, in the index's order
        rank = np.cumsum(keep, axis=1) - 1
        same = keep & (gallery_labels[safe] == prepared.labels[:, None])
        slot = np.searchsorted(classes, prepared.labels)
        slot = np.minimum(slot, len(classes) - 1)
        positives = np.where(classes[slot] == prepared.labels, counts[slot], 0)
        self_found = _own_label_rows(gallery_ids, gallery_labels, prepared)
        positives = positives - self_found
        has = positives > 0
        for j, k in enumerate(ks):
            hits[j] += int((same & (rank < k)).any(axis=1)[has].sum())
        evaluated += int(has.sum())
        skipped += int((~has).sum())
        done += len(block)
        report_progress(progress, "search", done, query.rows)
    search_s = time.perf_counter() - searched
    recall = _recall_sample(query, gallery, built, ks, used, metric, recall_queries, seed, gallery_block, gallery_ids)
    metrics = {f"top{k}": float(hits[j] / evaluated) if evaluated else 0.0 for j, k in enumerate(ks)}
    return {
        "metrics": metrics,
        "distance": distance,
        "dims": dim_info,
        "counts": {"queries": int(query.rows), "gallery": int(gallery.rows), "evaluated": evaluated,
                   "skipped_no_positive": skipped, "left_out_self": left_out},
        "inputs": {"query": describe_source(query), "gallery": describe_source(gallery)},
        "approximate": {**facts, "search_s": round(search_s, 3), **recall},
        "ranking": {"tie_rule": "approximate: the index's order (not the smaller-id rule of exact eval)",
                    "map": "not computed (an index gives the nearest rows, not the full ranking)",
                    "skipped": "queries without any positive in the gallery are left out of every metric"},
        "elapsed_s": round(time.perf_counter() - started, 4),
    }


def _own_label_rows(gallery_ids, gallery_labels, prepared):
    """1 where the query's own row is in the gallery with the query's label (it is no positive of its own)."""
    from compatctl.store.blocks import IdIndex

    rows, found = IdIndex(gallery_ids).locate(prepared.ids)
    same = found & (gallery_labels[rows] == prepared.labels)
    return same.astype(np.int64)


def _recall_sample(query, gallery, built, ks, dims, metric, count, seed, block_rows, gallery_ids) -> dict:
    from compatctl.store.faiss_index import sample_positions

    positions = sample_positions(query.rows, count, seed)
    queries = _prepared_rows(query, positions, dims, metric, gallery=False)
    kmax = max(ks)
    started = time.perf_counter()
    exact = exact_neighbours(queries, gallery, dims, metric, kmax, block_rows)
    exact_s = time.perf_counter() - started
    _, found = built.search(queries.matrix, kmax + 1)
    found = np.where(found >= 0, found, -1)
    own = (found >= 0) & (gallery_ids[np.maximum(found, 0)] == queries.ids[:, None])
    approx = np.full((len(found), kmax), -1, np.int64)
    for i in range(len(found)):
        kept = found[i][(found[i] >= 0) & ~own[i]][:kmax]
        approx[i, : len(kept)] = kept
    recall = {}
    for k in ks:
        shared = [len(set(approx[i, :k][approx[i, :k] >= 0]) & set(exact[i, :k][exact[i, :k] >= 0])) /
                  max(int((exact[i, :k] >= 0).sum()), 1) for i in range(len(found))]
        recall[f"recall@{k}"] = float(np.mean(shared)) if shared else 0.0
    return {"recall_vs_exact": recall, "recall_queries": int(len(positions)), "recall_seed": seed,
            "exact_sample_s": round(exact_s, 3)}
