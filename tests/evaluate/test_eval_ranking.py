"""The rank-counting kernels: batched search == numpy's searchsorted; threads change no number."""

from __future__ import annotations

import numpy as np
import pytest

from compatctl.evaluate import evaluate
from compatctl.evaluate.compare import compare
from compatctl.evaluate import ranking
from compatctl.evaluate.ranking import count_better, count_not_above, in_pieces, sort_rows
from tests.evaluate.reference import random_pair


@pytest.mark.parametrize("columns", [1, 2, 3, 7, 64, 1000])
def test_count_not_above_equals_searchsorted(monkeypatch, columns):
    monkeypatch.setattr(ranking, "_MIN_PIECE", 1)
    rng = np.random.default_rng(columns)
    scores = rng.integers(-3, 4, (50, columns)).astype(np.float32)  # many exact ties
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    ordered = sort_rows(scores, threads=2)
    assert np.array_equal(ordered, np.sort(scores, axis=1))
    rows = rng.integers(0, 50, 5000)
    values = rng.integers(-4, 5, 5000).astype(np.float32)
    expected = [np.searchsorted(ordered[r], v, side="right") for r, v in zip(rows, values)]
    for threads in (1, 2, 3):
        assert count_not_above(ordered, rows, values, threads=threads).tolist() == expected


def test_count_better_applies_the_tie_rule():
    scores = np.array([[0.5, 0.5, 0.7, 0.5, -np.inf]], np.float32)
    ids = np.array([10, 3, 7, 1, 2])
    rows = np.zeros(3, np.int64)
    # thresholds: column 0 (id 10, score .5): beaten by .7 and ids 3, 1; column 3 (id 1): by .7 only;
    # a value .5 with id 5 from another segment: .7, ids 3 and 1
    values = np.array([0.5, 0.5, 0.5], np.float32)
    value_ids = np.array([10, 1, 5])
    own_here = np.array([True, True, False])
    assert count_better(scores, ids, rows, values, value_ids, own_here, threads=2).tolist() == [3, 1, 3]


def test_pieces_cover_the_range_once():
    seen = np.zeros(1_000_003, np.int64)

    def task(start, stop):
        seen[start:stop] += 1

    in_pieces(task, len(seen), threads=3)
    assert (seen == 1).all()


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_threads_change_no_number(monkeypatch, distance):
    monkeypatch.setattr(ranking, "_MIN_PIECE", 1)  # split even these small blocks between threads
    query, gallery = random_pair(3, 700, 900, 6, 5, distance)
    reports = []
    for threads in ("1", "2", "4"):
        monkeypatch.setenv("COMPATCTL_THREADS", threads)
        report = evaluate(query, gallery, distance=distance, topk=(1, 3), map_at_r=True, query_block=256,
                          gallery_block=300)
        reports.append((report["metrics"], report["counts"]))
    assert reports[0] == reports[1] == reports[2]


def test_threaded_per_query_records_identical(monkeypatch):
    monkeypatch.setattr(ranking, "_MIN_PIECE", 1)
    query, gallery = random_pair(4, 500, 500, 4, 3, "cosine", overlap=1.0)
    outcomes = []
    for threads in ("1", "2"):
        monkeypatch.setenv("COMPATCTL_THREADS", threads)
        rows = compare(query, gallery, baseline=gallery).per_query_rows()
        outcomes.append(rows)
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_topk_tiles_and_threads_match_reference(monkeypatch, distance):
    from compatctl.evaluate import topk
    from tests.evaluate.reference import reference_metrics

    query, gallery = random_pair(7, 90, 130, 4, 4, distance)  # small integers: exact ties everywhere
    expected = reference_metrics(query, gallery, distance, ks=(1, 3))
    monkeypatch.setattr(ranking, "_MIN_PIECE", 1)
    monkeypatch.setattr(topk, "TILE_ROWS", 16)  # many tiles: rows and columns cut mid-block
    monkeypatch.setattr(topk, "TILE_COLUMNS", 7)
    for threads in ("1", "3"):
        monkeypatch.setenv("COMPATCTL_THREADS", threads)
        report = evaluate(query, gallery, distance=distance, topk=(1, 3), with_map=False, query_block=40,
                          gallery_block=50)
        for name in ("top1", "top3"):
            assert report["metrics"][name] == pytest.approx(expected[name], abs=1e-9), (threads, name)
        assert report["counts"]["left_out_self"] == len(np.intersect1d(query.ids, gallery.ids))
