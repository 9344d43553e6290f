"""The faiss top-k kernel gives the numpy kernel's k best rows exactly: scores, ids (ties by id), labels."""

from __future__ import annotations

import numpy as np
import pytest

from compatctl.evaluate import topk
from compatctl.evaluate.ranking import MetricSums
from compatctl.evaluate.sources import Gallery, get_distance, query_blocks
from compatctl.store import EmbeddingBlock


def _tied_block(rows: int, dim: int, seed: int, levels: int) -> EmbeddingBlock:
    """Few distinct values per dim and shuffled ids: many exactly equal scores, ids not in row order."""
    rng = np.random.default_rng(seed)
    embeddings = rng.integers(-levels, levels + 1, size=(rows, dim)).astype(np.float32)
    embeddings[rng.integers(0, rows, rows // 4)] = embeddings[0]  # whole duplicate rows
    ids = rng.permutation(rows * 3)[:rows].astype(np.int64)
    return EmbeddingBlock(embeddings, ids, rng.integers(0, 5, rows))


def _run(kernel: str, query: EmbeddingBlock, gallery: EmbeddingBlock, k: int, query_rows: int, gallery_rows: int):
    distance = get_distance("cosine")
    queries = list(query_blocks(query, query.dim, distance, query_rows))
    tops = []
    real = topk.RunningTopK

    class Recording(real):
        def __init__(self, *args):
            super().__init__(*args)
            tops.append(self)

    sums = MetricSums((1, k), with_map=False)
    original = topk.RunningTopK
    topk.RunningTopK = Recording
    try:
        topk.topk_only(queries, Gallery(gallery, query.dim, distance, gallery_rows, cache_bytes=0),
                       sums, kernel=kernel)
    finally:
        topk.RunningTopK = original
    return tops, sums


@pytest.mark.parametrize("seed,levels,k,gallery_rows", [(0, 1, 5, 50), (1, 2, 3, 7), (2, 8, 5, 400), (3, 1, 10, 64)])
def test_faiss_kernel_keeps_the_numpy_kernels_k_best(seed, levels, k, gallery_rows):
    from compatctl.evaluate.sources import as_source

    gallery = _tied_block(300, 4, seed, levels)
    query = gallery.take(slice(0, 120))  # leave-one-out: the queries are gallery rows
    numpy_tops, numpy_sums = _run("numpy", as_source(query), as_source(gallery), k, 50, gallery_rows)
    faiss_tops, faiss_sums = _run("faiss", as_source(query), as_source(gallery), k, 50, gallery_rows)
    assert len(numpy_tops) == len(faiss_tops) == 3
    for a, b in zip(numpy_tops, faiss_tops):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert (numpy_sums.hits == faiss_sums.hits).all() and numpy_sums.left_out == faiss_sums.left_out == 120
    own = np.isin(np.concatenate([t.ids for t in faiss_tops]), np.asarray(query.ids)).reshape(120, k)
    assert not (np.concatenate([t.ids for t in faiss_tops]) == np.asarray(query.ids)[:, None]).any()  # own row out
    assert own.any()  # other query rows do appear: only the own one is left out


def test_faiss_kernel_on_a_block_smaller_than_k():
    # On a 3-row block faiss's BLAS and numpy's round one score differently (1 ulp, measured): ids
    # must agree, scores to float32 rounding.
    from compatctl.evaluate.sources import as_source

    gallery = _tied_block(9, 3, 4, 1)
    numpy_tops, _ = _run("numpy", as_source(gallery), as_source(gallery), 5, 4, 3)
    faiss_tops, _ = _run("faiss", as_source(gallery), as_source(gallery), 5, 4, 3)
    for a, b in zip(numpy_tops, faiss_tops):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
