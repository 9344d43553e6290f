"""`eval --index FACTORY`: approximate top-k through faiss, with recall@k against exact search."""

from __future__ import annotations

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.evaluate import evaluate
from compatctl.evaluate.approximate import evaluate_approximate
from compatctl.store import EmbeddingBlock
from tests.conftest import make_block


def _noisy(rows, dim, classes, seed):
    block = make_block(rows=rows, dim=dim, classes=classes, seed=seed)
    noise = np.random.default_rng(seed + 100).normal(size=block.embeddings.shape).astype(np.float32)
    return EmbeddingBlock(block.embeddings + 1.5 * noise, block.ids, block.labels)


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_flat_index_gives_the_exact_top_k_and_full_recall(distance):
    block = _noisy(400, 16, 8, 3)
    exact = evaluate(block, block, distance=distance, topk=(1, 5), with_map=False)
    approx = evaluate_approximate(block, block, index="Flat", distance=distance, topk=(1, 5), recall_queries=100,
                                  gallery_block=64)
    assert exact["metrics"]["top1"] < 0.99  # not a trivially separable table
    for name, value in exact["metrics"].items():
        assert approx["metrics"][name] == pytest.approx(value, abs=1e-9)
    assert approx["approximate"]["recall_vs_exact"] == {"recall@1": 1.0, "recall@5": 1.0}
    assert approx["counts"]["left_out_self"] == 400 and "map" not in approx["metrics"]


def test_ivf_with_few_probes_loses_recall_and_all_probes_recover_it():
    block = _noisy(3000, 16, 30, 5)
    low = evaluate_approximate(block, block, index="IVF32,Flat", nprobe=1, topk=(1, 10), recall_queries=300,
                               train_rows=3000)
    full = evaluate_approximate(block, block, index="IVF32,Flat", nprobe=32, topk=(1, 10), recall_queries=300,
                                train_rows=3000)
    assert low["approximate"]["recall_vs_exact"]["recall@10"] < 0.999
    assert full["approximate"]["recall_vs_exact"]["recall@10"] == pytest.approx(1.0)
    assert low["approximate"]["trained_on"] == {"rows": 3000, "of": 3000, "seed": 0}


def test_index_usage_errors_are_one_line(tmp_path, runner):
    block = make_block(rows=60, dim=8)
    path = tmp_path / "e.npz"
    np.savez(path, embeddings=block.embeddings, ids=block.ids, labels=block.labels)
    for args, message in ((["--nprobe", "4"], "--nprobe goes with --index"),
                          (["--index", "HNSW8", "--nprobe", "4"], "--nprobe applies to IVF"),
                          (["--index", "Flat", "--baseline", str(path)], "--baseline: not with --index"),
                          (["--index", "NotAnIndex"], "faiss cannot build it")):
        result = runner.invoke(app, ["eval", str(path), str(path), *args])
        lines = [line for line in result.output.strip().splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], (args, result.output)
    result = runner.invoke(app, ["eval", str(path), str(path), "--index", "HNSW8", "--json", str(tmp_path / "r.json"),
                                 "--fail-under", "top1=0.0"])
    assert result.exit_code == 0, result.output
    assert "recall vs exact on 60 queries" in result.output
