"""backfill_curve: every point equals a from-scratch evaluation of the mixed gallery."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compatctl.orders import backfill_order, budget_rows
from compatctl.errors import BadInputError
from compatctl.evaluate import backfill_curve, evaluate
from compatctl.evaluate.sources import BlockSource
from compatctl.store import EmbeddingBlock
from tests.evaluate.reference import exact_embeddings, random_pair


def with_new_gallery(seed: int, gallery: EmbeddingBlock, distance: str, extra_dims: int = 0):
    """A NEW_GALLERY of the same ids, shuffled rows, a few extra ids, optional extra dims."""
    rng = np.random.default_rng(seed + 1)
    rows, dim = gallery.embeddings.shape
    shuffle = rng.permutation(rows)
    embeddings = exact_embeddings(rng, rows + 2, dim + extra_dims, distance)
    ids = np.concatenate([gallery.ids[shuffle], [-1, -2]])
    labels = np.concatenate([gallery.labels[shuffle], [0, 0]])
    uncertainty = rng.random(rows).astype(np.float32)
    old = EmbeddingBlock(gallery.embeddings, gallery.ids, gallery.labels, uncertainty=uncertainty)
    return old, EmbeddingBlock(embeddings, ids, labels)


def mixed_gallery(old: EmbeddingBlock, new: EmbeddingBlock, replaced: np.ndarray) -> EmbeddingBlock:
    position = {int(i): n for n, i in enumerate(new.ids)}
    aligned = new.embeddings[[position[int(i)] for i in old.ids]][:, : old.embeddings.shape[1]]
    embeddings = old.embeddings.copy()
    embeddings[replaced] = aligned[replaced]
    return EmbeddingBlock(embeddings, old.ids, old.labels)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), queries=st.integers(1, 25), rows=st.integers(1, 40),
       steps=st.integers(1, 7), order=st.sampled_from(["random", "uncertainty", "norm"]),
       distance=st.sampled_from(["cosine", "l2"]), query_block=st.integers(1, 30))
def test_every_point_equals_a_fresh_evaluation(seed, queries, rows, steps, order, distance, query_block):
    query, gallery = random_pair(seed, queries, rows, 4, 3, distance)
    old, new = with_new_gallery(seed, gallery, distance)
    report = backfill_curve(query, old, new, order=order, steps=steps, seed=seed, distance=distance,
                            map_at_r=True, query_block=query_block)
    curve = report["curve"]
    backfill = backfill_order(order, ids=old.ids, uncertainty=old.uncertainty, embeddings=old.embeddings, seed=seed)
    assert curve["fractions"] == pytest.approx(np.linspace(0, 1, steps + 1))
    for point, fraction in enumerate(curve["fractions"]):
        replaced = backfill[: budget_rows(fraction, rows)]
        fresh = evaluate(query, mixed_gallery(old, new, replaced), distance=distance, map_at_r=True)["metrics"]
        for name, value in fresh.items():
            assert curve[name][point] == pytest.approx(value, abs=1e-9), (name, point)
    for name in ("top1", "top5", "map"):
        assert curve["auc"][name] == pytest.approx(np.mean(curve[name]))
    plain = evaluate(query, old, distance=distance, map_at_r=True)["metrics"]
    assert report["metrics"] == pytest.approx(plain, abs=1e-9)


def test_endpoints_equal_plain_evaluations_with_wider_new_gallery():
    query, gallery = random_pair(5, 30, 50, 4, 3, "cosine", exact=False)
    old, new = with_new_gallery(5, gallery, "cosine", extra_dims=2)
    new_query = BlockSource(EmbeddingBlock(np.random.default_rng(0).normal(size=(30, 6)).astype(np.float32),
                                           query.ids, query.labels), header={"compatible_dims": 4})  # a BT² query
    curve = backfill_curve(new_query, old, new, steps=3)["curve"]
    start = evaluate(new_query, old)["metrics"]
    end = evaluate(new_query, new.take(np.arange(50)))["metrics"]  # the 50 ids GALLERY has, all 6 dims
    for name in start:
        assert curve[name][0] == pytest.approx(start[name], abs=1e-6)
        assert curve[name][-1] == pytest.approx(end[name], abs=1e-6)
    assert curve["dims_new"]["used"] == 6


def test_curve_bad_inputs():
    query, gallery = random_pair(2, 5, 8, 3, 2, "l2")
    old, new = with_new_gallery(2, gallery, "l2")
    with pytest.raises(BadInputError, match="--steps 0"):
        backfill_curve(query, old, new, steps=0)
    with pytest.raises(BadInputError, match="lacks 1 ids"):
        backfill_curve(query, old, new.take(np.arange(1, 10)), steps=2)
    with pytest.raises(BadInputError, match="uncertainty"):
        backfill_curve(query, gallery, new, order="uncertainty", steps=2)
    with pytest.raises(BadInputError, match="unknown"):
        backfill_curve(query, old, new, order="best", steps=2)


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_caller_arrays_are_not_modified(distance):
    """evaluate and backfill_curve read float32 blocks the caller still holds: they must stay as they were
    (a curve computed after an evaluate on the same blocks once saw unit-norm rows under --order norm)."""
    queries, gallery = random_pair(3, 40, 50, 8, 4, distance, exact=False)
    new = EmbeddingBlock(gallery.embeddings * 3.0 + 1.0, gallery.ids, gallery.labels)
    blocks = (queries, gallery, new)
    before = [b.embeddings.copy() for b in blocks]
    first = backfill_curve(queries, gallery, new, order="norm", steps=4, distance=distance)
    evaluate(queries, gallery, distance=distance)
    evaluate(new, new, distance=distance)
    for block, copy in zip(blocks, before):
        np.testing.assert_array_equal(block.embeddings, copy)
    again = backfill_curve(queries, gallery, new, order="norm", steps=4, distance=distance)
    assert again["curve"]["map"] == first["curve"]["map"]
