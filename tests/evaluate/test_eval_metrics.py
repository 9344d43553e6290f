"""compatctl.evaluate.evaluate against the direct reference, on data full of exact ties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compatctl.errors import BadInputError
from compatctl.evaluate import evaluate
from compatctl.evaluate.sources import BlockSource
from compatctl.store import EmbeddingBlock
from tests.evaluate.reference import float32_ambiguous_queries, random_pair, real_valued_pair, reference_metrics

TOL = 1e-6

cases = st.fixed_dictionaries({
    "seed": st.integers(0, 10**6), "queries": st.integers(1, 40), "gallery": st.integers(1, 60),
    "dim": st.integers(1, 6), "classes": st.integers(1, 6), "distance": st.sampled_from(["cosine", "l2"]),
    "overlap": st.sampled_from([0.0, 0.5, 1.0]), "query_block": st.integers(1, 50),
    "gallery_block": st.integers(1, 70),
})


@settings(max_examples=120, deadline=None)
@given(cases)
def test_full_ranking_matches_reference(case):
    query, gallery = random_pair(case["seed"], case["queries"], case["gallery"], case["dim"], case["classes"],
                                 case["distance"], case["overlap"])
    expected = reference_metrics(query, gallery, case["distance"], ks=(1, 2, 5))
    report = evaluate(query, gallery, distance=case["distance"], topk=(1, 2, 5), map_at_r=True,
                      query_block=case["query_block"], gallery_block=case["gallery_block"])
    for name in ("top1", "top2", "top5", "map", "map_at_r"):
        assert report["metrics"][name] == pytest.approx(expected[name], abs=TOL), name
    assert report["counts"]["skipped_no_positive"] == expected["skipped"]
    assert report["counts"]["evaluated"] == expected["evaluated"]


@settings(max_examples=80, deadline=None)
@given(cases)
def test_topk_only_path_matches_reference(case):
    query, gallery = random_pair(case["seed"], case["queries"], case["gallery"], case["dim"], case["classes"],
                                 case["distance"], case["overlap"])
    expected = reference_metrics(query, gallery, case["distance"], ks=(1, 5))
    report = evaluate(query, gallery, distance=case["distance"], with_map=False,
                      query_block=case["query_block"], gallery_block=case["gallery_block"])
    assert "map" not in report["metrics"]
    for name in ("top1", "top5"):
        assert report["metrics"][name] == pytest.approx(expected[name], abs=TOL), name
    assert report["counts"]["skipped_no_positive"] == expected["skipped"]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), distance=st.sampled_from(["cosine", "l2"]))
def test_real_valued_embeddings_match_reference(seed, distance):
    # Normal draws, redrawn (deterministically) while a positive and a negative are closer than float32
    # rounding: there the metrics depend on rounding, not on the data (see float32_ambiguous_queries).
    query, gallery = real_valued_pair(seed, 30, 80, 8, 4, distance, overlap=1.0)
    expected = reference_metrics(query, gallery, distance)
    report = evaluate(query, gallery, distance=distance, query_block=7, gallery_block=13)
    for name in ("top1", "top5", "map"):
        assert report["metrics"][name] == pytest.approx(expected[name], abs=TOL)


def test_float32_near_ties_are_detected():
    """The draw that once failed above: query 6's exact cosine scores of a positive and a negative differ by
    1.2e-8, below float32 rounding, so compatctl ranked them the other way round from the float64 reference
    (map 0.2956537 vs 0.2956381). The detector flags exactly that query."""
    query, gallery = random_pair(349, 30, 80, 8, 4, "cosine", overlap=1.0, exact=False)
    assert float32_ambiguous_queries(query, gallery, "cosine") == [6]
    assert not float32_ambiguous_queries(*real_valued_pair(349, 30, 80, 8, 4, "cosine", overlap=1.0), "cosine")


def test_leave_one_out_by_id_and_tie_rule():
    # Gallery rows 0 and 1 are identical and tied for query 0; the smaller id (5) ranks first.
    embeddings = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    gallery = EmbeddingBlock(embeddings, np.array([7, 5, 9]), np.array([1, 2, 2]))
    query = EmbeddingBlock(np.array([[1, 0]], np.float32), np.array([9]), np.array([1]))
    # id 9 (the query itself) is left out; id 5 (label 2) beats id 7 (label 1) on the tie.
    report = evaluate(query, gallery, topk=(1, 2))
    assert report["metrics"] == {"top1": 0.0, "top2": 1.0, "map": 0.5}
    assert report["counts"]["left_out_self"] == 1


def test_self_only_positive_is_skipped():
    gallery = EmbeddingBlock(np.eye(3, dtype=np.float32), np.arange(3), np.array([0, 1, 1]))
    report = evaluate(gallery, gallery)
    assert report["counts"]["skipped_no_positive"] == 1  # row 0 has no other label-0 row
    assert report["metrics"]["top1"] == 0.0  # rows 1 and 2 are orthogonal: tie with row 0 → smaller id first


def test_wider_side_is_truncated_and_reported():
    query, gallery = random_pair(3, 20, 30, 4, 3, "l2")
    wide = EmbeddingBlock(np.concatenate([gallery.embeddings, np.ones((30, 3), np.float32)], 1),
                          gallery.ids, gallery.labels)
    with pytest.raises(BadInputError, match="different widths are compared only with --dims N"):
        evaluate(query, wide, distance="l2")  # no lineage says the first 4 dims are the gallery's space
    bt2 = BlockSource(wide, header={"compatible_dims": 4})
    report = evaluate(query, bt2, distance="l2")
    assert report["dims"]["used"] == 4 and report["dims"]["truncated"] and "BT²" in report["dims"]["note"]
    assert report["metrics"] == evaluate(query, gallery, distance="l2")["metrics"]
    forced = evaluate(query, wide, distance="l2", dims=2)
    assert forced["metrics"]["map"] == pytest.approx(reference_metrics(query, gallery, "l2", dims=2)["map"])
    with pytest.raises(BadInputError, match="--dims 5"):
        evaluate(query, wide, dims=5)


def test_missing_labels_and_bad_options_raise():
    query, gallery = random_pair(1, 5, 5, 3, 2, "l2")
    unlabeled = EmbeddingBlock(gallery.embeddings, gallery.ids)
    with pytest.raises(BadInputError, match="no labels"):
        evaluate(query, unlabeled)
    with pytest.raises(BadInputError, match="--distance"):
        evaluate(query, gallery, distance="dot")
    with pytest.raises(BadInputError, match="--topk"):
        evaluate(query, gallery, topk=(0,))
    broken = EmbeddingBlock(gallery.embeddings.copy(), gallery.ids, gallery.labels)
    broken.embeddings[2, 0] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        evaluate(query, broken)
    with pytest.raises(BadInputError, match="map-at-r"):
        evaluate(query, gallery, with_map=False, map_at_r=True)
