"""--qrels: ndcg@k, recall@k, mrr@k and map equal ir-measures (pytrec_eval) on a real BEIR/TREC file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.evaluate import evaluate
from compatctl.evaluate.qrels import read_qrels
from compatctl.store import EmbeddingBlock

MEASURES = ("ndcg@10", "ndcg@3", "recall@5", "recall@100", "mrr@10", "map")


def corpus_and_queries(seed: int = 0, queries: int = 25, docs: int = 120, dim: int = 8):
    """Text ids; continuous embeddings, so no two scores tie (trec_eval breaks ties differently)."""
    rng = np.random.default_rng(seed)
    query = EmbeddingBlock(rng.normal(size=(queries, dim)).astype(np.float32),
                           np.array([f"q{i}" for i in range(queries)]), None)
    corpus = EmbeddingBlock(rng.normal(size=(docs, dim)).astype(np.float32),
                            np.array([f"d{i:03d}" for i in range(docs)]), None)
    judged = []
    for q in query.ids:
        for d in rng.choice(corpus.ids, rng.integers(1, 8), replace=False):
            judged.append((q, d, int(rng.integers(0, 4))))
        judged.append((q, rng.choice(corpus.ids[:10]), 2))  # at least one relevant per query
    unique = {(q, d): g for q, d, g in judged}
    return query, corpus, [(q, d, g) for (q, d), g in unique.items()]


def write_beir(path, judged):
    path.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in judged))


def run_scores(query, corpus):
    """The run ir-measures scores: cosine similarity of every (query, doc) pair."""
    q = query.embeddings / np.linalg.norm(query.embeddings, axis=1, keepdims=True)
    g = corpus.embeddings / np.linalg.norm(corpus.embeddings, axis=1, keepdims=True)
    return q.astype(np.float64) @ g.astype(np.float64).T


def reference(query, corpus, judged):
    ir_measures = pytest.importorskip("ir_measures")
    qrels = [ir_measures.Qrel(q, d, g) for q, d, g in judged]
    scores = run_scores(query, corpus)
    run = [ir_measures.ScoredDoc(q, d, float(scores[i, j])) for i, q in enumerate(query.ids)
           for j, d in enumerate(corpus.ids)]
    names = {"ndcg@10": "nDCG@10", "ndcg@3": "nDCG@3", "recall@5": "R@5", "recall@100": "R@100",
             "mrr@10": "RR@10", "map": "AP"}
    measures = {ours: ir_measures.parse_measure(theirs) for ours, theirs in names.items()}
    found = ir_measures.calc_aggregate(list(measures.values()), qrels, run)
    return {ours: found[measure] for ours, measure in measures.items()}


@pytest.mark.parametrize("layout", ["beir", "trec"])
def test_qrels_metrics_equal_ir_measures(tmp_path, layout):
    query, corpus, judged = corpus_and_queries()
    path = tmp_path / ("qrels.tsv" if layout == "beir" else "qrels.txt")
    if layout == "beir":
        write_beir(path, judged)
    else:
        path.write_text("".join(f"{q} 0 {d} {g}\n" for q, d, g in judged))
    report = evaluate(query, corpus, qrels=read_qrels(path), metrics=MEASURES, query_block=7, gallery_block=33)
    expected = reference(query, corpus, judged)
    for name in MEASURES:
        assert report["metrics"][name] == pytest.approx(expected[name], abs=1e-6), name
    assert list(report["metrics"]) == list(MEASURES)


def test_qrels_through_the_cli(runner, tmp_path):
    query, corpus, judged = corpus_and_queries(seed=1)
    np.savez(tmp_path / "q.npz", embeddings=query.embeddings, ids=query.ids)
    np.savez(tmp_path / "c.npz", embeddings=corpus.embeddings, ids=corpus.ids)
    write_beir(tmp_path / "qrels.tsv", judged)
    result = runner.invoke(app, ["eval", str(tmp_path / "q.npz"), str(tmp_path / "c.npz"), "--qrels",
                                 str(tmp_path / "qrels.tsv"), "--metrics", "ndcg@10,recall@100,mrr@10",
                                 "--json", str(tmp_path / "r.json"), "--fail-under", "ndcg@10=0.01"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r.json").read_text())["metrics"]
    expected = reference(query, corpus, judged)
    assert set(metrics) == {"ndcg@10", "recall@100", "mrr@10"}
    assert metrics["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-6)
    assert "gates passed" in result.output


QRELS_BAD = [
    ("query-id\tcorpus-id\tscore\nq0\td000\t1\nq0\tnope\t1\nq99\td001\t2\n", "names 1 query ids absent"),
    ("query-id\tcorpus-id\tscore\nq0\tnope\t1\nq0\tgone\t1\n", "names 2 corpus ids absent"),
    ("query-id\tcorpus-id\tscore\nq0\td000\thigh\n", "grade 'high' is not a whole number"),
    ("query-id\tcorpus-id\tscore\nq0\td000\t1\nq0\td000\t2\n", "judged more than once"),
    ("q0 0 d000\n", "has 3 fields"),
    ("query-id\tcorpus-id\tscore\n", "holds no judgments"),
]


@pytest.mark.parametrize("text,message", QRELS_BAD)
def test_bad_qrels_exit_2_with_one_line(runner, tmp_path, text, message):
    query, corpus, _ = corpus_and_queries(seed=2, queries=5, docs=20)
    np.savez(tmp_path / "q.npz", embeddings=query.embeddings, ids=query.ids)
    np.savez(tmp_path / "c.npz", embeddings=corpus.embeddings, ids=corpus.ids)
    (tmp_path / "qrels.tsv").write_text(text)
    result = runner.invoke(app, ["eval", str(tmp_path / "q.npz"), str(tmp_path / "c.npz"), "--qrels",
                                 str(tmp_path / "qrels.tsv")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_qrels_with_integer_ids_and_a_gate_on_an_uncomputed_metric(runner, tmp_path):
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "q.npz", embeddings=rng.normal(size=(4, 3)).astype(np.float32))
    np.savez(tmp_path / "c.npz", embeddings=rng.normal(size=(9, 3)).astype(np.float32))
    (tmp_path / "qrels.txt").write_text("0 0 3 1\n1 0 4 2\n2 0 5 1\n3 0 8 1\n")
    args = ["eval", str(tmp_path / "q.npz"), str(tmp_path / "c.npz"), "--qrels", str(tmp_path / "qrels.txt")]
    result = runner.invoke(app, args + ["--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert set(json.loads((tmp_path / "r.json").read_text())["metrics"]) == {"ndcg@10", "recall@100", "mrr@10", "map"}
    result = runner.invoke(app, args + ["--fail-under", "top1=0.5"])
    assert result.exit_code == 2 and "unknown metric 'top1'" in result.output
