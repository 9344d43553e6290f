"""A direct reference for retrieval metrics: the full Q×G score matrix, a stable sort, AP as in the
literature. Slow and simple on purpose; the tests compare compatctl.evaluate against it."""

from __future__ import annotations

import numpy as np

from compatctl.store import EmbeddingBlock


def reference_scores(query: np.ndarray, gallery: np.ndarray, distance: str) -> np.ndarray:
    q, g = query.astype(np.float64), gallery.astype(np.float64)
    if distance == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
        g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-30)
        return q @ g.T
    return -((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)  # larger is better


def reference_metrics(query: EmbeddingBlock, gallery: EmbeddingBlock, distance: str = "cosine",
                      ks=(1, 5), dims: int | None = None) -> dict:
    """top-k, mAP and mAP@R; own id left out; ties: smaller gallery id first; no-positive queries skipped."""
    dims = dims or min(query.embeddings.shape[1], gallery.embeddings.shape[1])
    scores = reference_scores(query.embeddings[:, :dims], gallery.embeddings[:, :dims], distance)
    hits, aps, aps_at_r = np.zeros(len(ks)), [], []
    for i in range(len(query.ids)):
        keep = gallery.ids != query.ids[i]
        row, ids, labels = scores[i][keep], gallery.ids[keep], gallery.labels[keep]
        ranking = np.lexsort((ids, -row))  # by score descending, then id ascending (stable)
        relevant = labels[ranking] == query.labels[i]
        count = int(relevant.sum())
        if count == 0:
            continue
        hits += [relevant[:k].any() for k in ks]
        precision = np.cumsum(relevant) / np.arange(1, len(relevant) + 1)
        aps.append(float((precision * relevant).sum() / count))
        aps_at_r.append(float((precision * relevant)[:count].sum() / count))
    n = max(len(aps), 1)
    out = {f"top{k}": hits[j] / n for j, k in enumerate(ks)}
    out.update(map=sum(aps) / n, map_at_r=sum(aps_at_r) / n)
    out["evaluated"], out["skipped"] = len(aps), len(query.ids) - len(aps)
    return out


FLOAT32_UNIT = 2.0 ** -24  # float32 unit roundoff


def float32_slack(query: np.ndarray, gallery: np.ndarray, distance: str) -> np.ndarray:
    """[Q, G] a bound on |compatctl's float32 score - the exact score|, in reference_scores' units.

    compatctl normalises (cosine) and multiplies in float32 (compatctl.evaluate.sources.prepare and
    score); a d-term float32 dot product is within about d·u·Σ|q_i g_i| of the exact one, and the
    normalisation adds a few u per factor. 4·(d + 4)·u times a Cauchy–Schwarz bound on the terms
    (1 for cosine; |q|·|g| + ½|g|² for l2, doubled: the reference's −‖q − g‖² is twice compatctl's
    q·g − ½‖g‖² minus a per-query constant) is a generous bound.
    """
    q, g = query.astype(np.float64), gallery.astype(np.float64)
    factor = 4 * (q.shape[1] + 4) * FLOAT32_UNIT
    if distance == "cosine":
        return np.full((len(q), len(g)), factor)
    q_norm, g_norm = np.linalg.norm(q, axis=1), np.linalg.norm(g, axis=1)
    return 2 * factor * (q_norm[:, None] * g_norm[None, :] + 0.5 * g_norm[None, :] ** 2)


def float32_ambiguous_queries(query: EmbeddingBlock, gallery: EmbeddingBlock, distance: str) -> list[int]:
    """Queries whose metrics depend on float32 rounding: a positive and a negative gallery row with
    exact scores closer than the rounding of compatctl's float32 scores can blur.

    For those, compatctl (float32 scores, then TIE_RULE) and reference_metrics (float64 scores) may both
    be right about the scores they computed and still rank the two rows differently. A pair can swap only
    if its exact gap is at most the sum of its two slacks, and then some positive and negative are
    adjacent in the exact ranking with a gap at most that; so adjacent pairs are all that is checked.
    """
    scores = reference_scores(query.embeddings, gallery.embeddings, distance)
    slack = float32_slack(query.embeddings, gallery.embeddings, distance)
    ambiguous = []
    for i in range(len(query.ids)):
        keep = gallery.ids != query.ids[i]
        row, relevant = scores[i][keep], gallery.labels[keep] == query.labels[i]
        order = np.argsort(-row, kind="stable")
        gaps, flips = -np.diff(row[order]), relevant[order][1:] != relevant[order][:-1]
        if (flips & (gaps <= 2 * slack[i][keep].max(initial=0.0))).any():
            ambiguous.append(i)
    return ambiguous


def exact_embeddings(rng: np.random.Generator, rows: int, dim: int, distance: str) -> np.ndarray:
    """Small-integer embeddings whose scores are exact in float32 (so ties are real ties).

    l2: integers in [-2, 2]. cosine: vectors of norm 2^s (one ±2, or four ±1, times 2^s) or zero,
    so that normalising divides by a power of two and every inner product is exact.
    """
    if distance == "l2":
        return rng.integers(-2, 3, (rows, dim)).astype(np.float32)
    out = np.zeros((rows, dim), np.float32)
    for i in range(rows):
        kind = rng.integers(0, 3 if dim >= 4 else 2)
        if kind == 1:
            out[i, rng.integers(dim)] = rng.choice([-2.0, 2.0])
        elif kind == 2:
            out[i, rng.choice(dim, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
        out[i] *= 2.0 ** rng.integers(0, 3)
    return out


def random_pair(seed: int | tuple[int, ...], queries: int, gallery: int, dim: int, classes: int, distance: str,
                overlap: float = 0.7, exact: bool = True) -> tuple[EmbeddingBlock, EmbeddingBlock]:
    """A query block and a gallery block; some query ids appear in the gallery (leave-one-out)."""
    rng = np.random.default_rng(seed)
    make = (lambda n: exact_embeddings(rng, n, dim, distance)) if exact else \
        (lambda n: rng.normal(size=(n, dim)).astype(np.float32))
    gallery_ids = rng.permutation(10 * gallery + 10)[:gallery].astype(np.int64)
    shared = min(int(overlap * queries), gallery)
    query_ids = np.concatenate([rng.choice(gallery_ids, shared, replace=False),
                                10**6 + np.arange(queries - shared)]).astype(np.int64)
    gallery_block = EmbeddingBlock(make(gallery), gallery_ids, rng.integers(0, classes, gallery))
    query_block = EmbeddingBlock(make(queries), query_ids, rng.integers(0, classes + 1, queries))
    return query_block, gallery_block


def real_valued_pair(seed: int, queries: int, gallery: int, dim: int, classes: int, distance: str,
                     overlap: float = 0.7) -> tuple[EmbeddingBlock, EmbeddingBlock]:
    """random_pair with normal (not exact) embeddings and no float32-ambiguous query.

    Normal draws hold a near-tie that float32 orders differently from float64 about once in 1,600 draws
    (5 of seeds 0..3999 × 2 distances; seed 349 cosine failed in CI-like runs: gap 1.2e-8); where the metrics are not determined
    by the data, no reference can agree with float32 scores, so such a draw is redrawn from
    (seed, attempt) — deterministic for a seed, and each draw is ambiguity-free with high probability.
    """
    for attempt in range(100):
        pair = random_pair(seed if attempt == 0 else (seed, attempt), queries, gallery, dim, classes, distance,
                           overlap, exact=False)
        if not float32_ambiguous_queries(*pair, distance):
            return pair
    raise AssertionError(f"seed {seed}: 100 draws all hold float32 near-ties; use fewer rows or dims")
