"""Re-ranking (`eval --rerank-with`) against a direct reference: full first-stage sort, top-K re-scored."""

from __future__ import annotations

import numpy as np
import pytest

from compatctl.errors import BadInputError
from compatctl.evaluate import evaluate
from compatctl.evaluate.rerank import parse_depths, rerank
from compatctl.store import EmbeddingBlock
from tests.evaluate.reference import reference_scores


def reference_rerank(query, gallery, new_gallery, depth, distance="cosine", ks=(1, 5), first=None):
    """top-k and mAP after re-ranking each query's first-stage top ``depth`` with ``new_gallery``."""
    first = query if first is None else first
    old_scores = reference_scores(first.embeddings, gallery.embeddings, distance).astype(np.float32)
    new_by_id = dict(zip(new_gallery.ids.tolist(), range(len(new_gallery.ids))))
    new_rows = new_gallery.embeddings[[new_by_id[i] for i in gallery.ids.tolist()]]
    new_scores = reference_scores(query.embeddings, new_rows, distance).astype(np.float32)
    hits, aps = np.zeros(len(ks)), []
    for i in range(len(query.ids)):
        keep = np.flatnonzero(gallery.ids != query.ids[i])
        ranking = keep[np.lexsort((gallery.ids[keep], -old_scores[i][keep]))]
        head, tail = ranking[:depth], ranking[depth:]
        head = head[np.lexsort((gallery.ids[head], -new_scores[i][head]))]
        relevant = gallery.labels[np.concatenate([head, tail])] == query.labels[i]
        if not relevant.any():
            continue
        hits += [relevant[:k].any() for k in ks]
        precision = np.cumsum(relevant) / np.arange(1, len(relevant) + 1)
        aps.append(float((precision * relevant).sum() / relevant.sum()))
    n = max(len(aps), 1)
    return {**{f"top{k}": hits[j] / n for j, k in enumerate(ks)}, "map": sum(aps) / n}


def _blocks(seed=0, rows=90, dim=6, classes=5, quantize=None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    centers = rng.normal(size=(classes, dim))
    old = centers[labels] + rng.normal(size=(rows, dim)) * 1.5
    new = centers[labels] * 2 + rng.normal(size=(rows, dim))
    if quantize:  # coarse values: many exactly equal scores, so the tie rule decides
        old, new = np.round(old * quantize) / quantize, np.round(new * quantize) / quantize
    ids = rng.permutation(1000)[:rows]
    return (EmbeddingBlock(old.astype(np.float32), ids, labels),
            EmbeddingBlock(new.astype(np.float32), ids, labels))


# integer embeddings under l2 give exactly equal float32 scores (cosine's normalisation would blur them)
@pytest.mark.parametrize("distance, quantize", [("cosine", None), ("l2", None), ("l2", 1)])
def test_rerank_matches_reference(distance, quantize):
    old, new = _blocks(quantize=quantize)
    report = rerank(new, old, new, depths=(1, 5, 30, 200), first_stage_query=old, distance=distance,
                    query_block=17, gallery_block=23)
    assert report["rerank"]["depths"] == [1, 5, 30, 200]
    for j, depth in enumerate(report["rerank"]["depths"]):
        expected = reference_rerank(new, old, new, depth, distance, first=old)
        for name in ("top1", "top5", "map"):
            assert report["rerank"]["metrics"][name][j] == pytest.approx(expected[name], abs=1e-9), (depth, name)
    first_stage = evaluate(old, old, distance=distance)["metrics"]
    assert report["metrics"]["top1"] == pytest.approx(first_stage["top1"], abs=1e-12)


def test_depth_covering_the_gallery_equals_new_new_and_rows_needed_counts_distinct_candidates():
    old, new = _blocks(seed=3)
    report = rerank(new, old, new, depths=(1, 89, 500), first_stage_query=old)
    full = evaluate(new, new)["metrics"]
    for name in ("top1", "top5", "map"):
        assert report["rerank"]["metrics"][name][1] == pytest.approx(full[name], abs=1e-9)
        assert report["rerank"]["metrics"][name][2] == pytest.approx(full[name], abs=1e-9)
    needed = report["rerank"]["rows_needed"]
    assert needed[1] == needed[2] == 90  # every row is someone's candidate
    assert 1 <= needed[0] <= 90 and report["rerank"]["rows_needed_fraction"][1] == 1.0
    # depth 1 re-ranks nothing: the first stage's top-1
    assert report["rerank"]["metrics"]["top1"][0] == pytest.approx(report["metrics"]["top1"], abs=1e-12)


def test_rows_needed_is_the_distinct_first_stage_candidates():
    old, new = _blocks(seed=4)
    scores = reference_scores(old.embeddings, old.embeddings, "cosine").astype(np.float32)
    wanted = set()
    for i in range(len(old.ids)):
        keep = np.flatnonzero(old.ids != old.ids[i])
        wanted.update(old.ids[keep[np.lexsort((old.ids[keep], -scores[i][keep]))][:3]].tolist())
    report = rerank(new, old, new, depths=(3,), first_stage_query=old)
    assert report["rerank"]["rows_needed"] == [len(wanted)]


def test_missing_candidate_ids_and_bad_depth_are_bad_input():
    old, new = _blocks(seed=5)
    partial = new.take(np.arange(60))
    with pytest.raises(BadInputError, match=r"lacks \d+ of the \d+ gallery ids"):
        rerank(new, old, partial, depths=(50,), first_stage_query=old)
    for text in ("0", "10,-1", "x", ""):
        with pytest.raises(BadInputError, match="--rerank-depth"):
            parse_depths(text)
    assert parse_depths("200,10,50,10") == (10, 50, 200)
