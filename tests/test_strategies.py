"""`compatctl compare` (compatctl.strategies): every way to ship an update, side by side."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.evaluate import backfill_curve, evaluate
from compatctl.evaluate.query_transform import TransformedQueries
from compatctl.evaluate.rerank import rerank
from compatctl.store import EmbeddingBlock, open_embeddings, write_embedding_set
from compatctl.strategies import recommend
from compatctl.transform import load_transform


def write_update(root, rows=900, test=300, seed=0):
    """Old = a lossy view of the new embeddings (poor on half the classes), as in the protocol."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 8, rows)
    new = rng.normal(size=(8, 16))[labels] + 1.0 * rng.normal(size=(rows, 16))
    known = np.where(labels < 4, 1.0, 0.3)[:, None]
    old = known * (new @ rng.normal(size=(16, 12)) / 4) + 0.5 * rng.normal(size=(rows, 12))
    ids = np.arange(rows, dtype=np.int64)
    for split, pick in (("train", slice(test, rows)), ("test", slice(0, test))):
        for model, embeddings in (("old", old), ("new", new)):
            block = EmbeddingBlock(embeddings[pick].astype(np.float32), ids[pick], labels[pick])
            write_embedding_set(root / f"{model}-{split}", block, header={"model_fingerprint": f"{model}-model"})
    return root


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = write_update(tmp_path_factory.mktemp("update"))
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["compare", "--old", str(root / "old-train"), "--new", str(root / "new-train"),
                                      "--old-test", str(root / "old-test"), "--new-test", str(root / "new-test"),
                                      "--compatible", f"again={root / 'old-test'}", "--kind", "linear",
                                      "--rerank-depth", "5,40", "--budgets", "0.2,0.5", "--out", str(root / "cmp")])
    assert result.exit_code == 0, result.output
    return root, json.loads((root / "cmp" / "report.json").read_text()), result.output


def test_every_strategy_row_matches_its_own_evaluation(compared):
    root, report, output = compared
    rows = {row["name"]: row for row in report["strategies"]}
    families = [row["family"] for row in report["strategies"]]
    assert families == ["old model", "compatible model", "forward transform", "query transform", "re-ranking",
                        "re-ranking", "partial backfill", "partial backfill", "full backfill"]
    old, new = open_embeddings(root / "old-test"), open_embeddings(root / "new-test")
    assert rows["old model as is"]["metrics"] == pytest.approx(evaluate(old, old)["metrics"], abs=1e-12)
    assert rows["full backfill"]["metrics"] == pytest.approx(evaluate(new, new)["metrics"], abs=1e-12)
    assert rows["compatible model again"]["metrics"] == rows["old model as is"]["metrics"]
    forward = load_transform(root / "cmp" / "forward.safetensors")
    block = old.read_all()
    mapped, log_var = forward.apply(block.embeddings)
    gallery = EmbeddingBlock(mapped, block.ids, block.labels, uncertainty=log_var)
    assert rows[f"forward transform ({forward.kind})"]["metrics"] == pytest.approx(
        evaluate(new, gallery)["metrics"], abs=1e-12)
    query_side = load_transform(root / "cmp" / "query.safetensors")
    assert (query_side.old_fingerprint, query_side.new_fingerprint) == ("new-model", "old-model")
    queries = TransformedQueries(new, query_side)
    assert rows[f"query transform ({query_side.kind})"]["metrics"] == pytest.approx(
        evaluate(queries, old)["metrics"], abs=1e-12)
    reranked = rerank(new, old, new, depths=(5, 40), first_stage_query=queries)["rerank"]
    assert rows["re-ranking at depth 40"]["metrics"]["map"] == pytest.approx(reranked["metrics"]["map"][1], abs=1e-12)
    assert rows["re-ranking at depth 5"]["cost"]["rows_reembedded"] == reranked["rows_needed"][0]
    best = report["partial_backfill"]["best_order"]
    curve = backfill_curve(new, gallery, new, order=best, steps=10)["curve"]
    assert rows[f"partial backfill 50% ({best} order)"]["metrics"]["top1"] == pytest.approx(curve["top1"][5], abs=1e-12)
    assert rows[f"partial backfill 20% ({best} order)"]["cost"]["rows_reembedded"] == 60
    aucs = report["partial_backfill"]["auc"]
    assert best == max(aucs, key=lambda o: (aucs[o]["top1"], aucs[o]["map"]))
    assert ("uncertainty" in aucs) == forward.has_uncertainty  # a linear fit has no head
    assert rows["old model as is"]["gap_closed"] == {"top1": 0.0, "top5": 0.0, "map": 0.0}
    assert rows["full backfill"]["gap_closed"]["top1"] == pytest.approx(1.0)
    assert report["ceiling"]["top1"] > report["baseline"]["top1"] + 0.1  # the update is worth shipping
    assert "recommendation:" in output and (root / "cmp" / "report.md").read_text().count("\n|") >= 10
    assert (root / "cmp" / "strategies.png").read_bytes()[:4] == b"\x89PNG"


def test_recommendation_follows_its_rule(compared):
    _, report, _ = compared
    rec = report["recommendation"]
    target = rec["target_gap_closed"]
    reaching = [r for r in report["strategies"] if all(r["gap_closed"][m] >= target for m in ("top1", "map"))]
    cost = lambda r: (r["cost"]["rows_reembedded"], r["cost"]["rows_rewritten_by_transform"],  # noqa: E731
                      r["cost"]["query_transform"], r["cost"]["extra_scores_per_query"])
    assert rec["strategy"] == min(reaching, key=cost)["name"]
    assert "cheapest" in rec["rule"]


def _row(name, family, top1, map_, reembedded=0, rewritten=0, query_transform=False, extra=0):
    return {"name": name, "family": family, "metrics": {"top1": top1, "map": map_},
            "gap_closed": {"top1": (top1 - 0.4) / 0.2, "map": (map_ - 0.3) / 0.2},
            "cost": {"rows_reembedded": reembedded, "rows_rewritten_by_transform": rewritten,
                     "query_transform": query_transform, "extra_scores_per_query": extra}}


def test_recommend_prefers_no_reembedding_then_no_rewrite_and_falls_back_to_full_backfill():
    rows = [_row("old", "old model", 0.4, 0.3), _row("fwd", "forward transform", 0.59, 0.49, rewritten=100),
            _row("query", "query transform", 0.59, 0.49, query_transform=True),
            _row("rerank", "re-ranking", 0.6, 0.5, reembedded=30, query_transform=True, extra=10),
            _row("full", "full backfill", 0.6, 0.5, reembedded=100)]
    assert recommend(rows, 0.9)["strategy"] == "query"  # no rows rewritten beats rewriting every row
    assert recommend(rows, 0.99)["strategy"] == "rerank"
    assert recommend(rows[:2] + rows[-1:], 0.99)["strategy"] == "full"
    worse = [_row("old", "old model", 0.4, 0.3), _row("full", "full backfill", 0.35, 0.3, reembedded=100)]
    assert recommend(worse, 0.9)["strategy"] == "old"


def test_bad_compare_inputs_are_one_line_exit_2(tmp_path, runner):
    root = write_update(tmp_path / "u", rows=300, test=100)
    half = open_embeddings(root / "new-test").read_all().take(np.arange(60))
    write_embedding_set(root / "half", half, header={"model_fingerprint": "new-model"})
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    base = ["compare", "--old", root / "old-train", "--new", root / "new-train", "--old-test", root / "old-test"]
    cases = [([*base, "--new-test", root / "half", "--out", tmp_path / "o1"], "40 of its ids are missing"),
             ([*base, "--new-test", root / "new-test", "--compatible", f"x={root / 'half'}", "--out", tmp_path / "o2"],
              "do not pair"),
             ([*base, "--new-test", root / "new-test", "--budgets", "0.15", "--out", tmp_path / "o3"], "multiple of 1/10"),
             ([*base, "--new-test", root / "new-test", "--rerank-depth", "0", "--out", tmp_path / "o4"], ">= 1"),
             ([*base, "--new-test", root / "new-test", "--compatible", "nameonly", "--out", tmp_path / "o5"], "NAME=EMB"),
             ([*base, "--new-test", root / "new-test", "--out", tmp_path / "busy"], "files compatctl did not write")]
    for args, message in cases:
        result = runner.invoke(app, list(map(str, args)))
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_without_matplotlib_the_png_is_skipped_with_a_note(tmp_path):
    root = write_update(tmp_path / "u", rows=300, test=100)
    code = ("import sys; sys.modules['matplotlib'] = None; sys.argv = ['compatctl'] + sys.argv[1:]; "
            "from compatctl.cli import main; main()")
    args = ["compare", "--old", root / "old-train", "--new", root / "new-train", "--old-test", root / "old-test",
            "--new-test", root / "new-test", "--kind", "linear", "--out", tmp_path / "cmp"]
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "matplotlib is not installed" in result.stderr
    assert not (tmp_path / "cmp" / "strategies.png").exists()
    assert "matplotlib is not installed" in (tmp_path / "cmp" / "report.md").read_text()
    again = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr  # a re-run on its own output folder is allowed


def test_side_info_feeds_the_forward_transform(tmp_path, runner):
    root = write_update(tmp_path / "u", rows=300, test=100)
    rng = np.random.default_rng(7)
    for split in ("train", "test"):
        new = open_embeddings(root / f"new-{split}").read_all()
        side = EmbeddingBlock((new.embeddings[:, :4] + 0.1 * rng.normal(size=(len(new), 4))).astype(np.float32),
                              new.ids, new.labels)
        write_embedding_set(root / f"side-{split}", side, header={"model_fingerprint": "side-model"})
    args = ["compare", "--old", root / "old-train", "--new", root / "new-train", "--old-test", root / "old-test",
            "--new-test", root / "new-test", "--kind", "linear", "--out", tmp_path / "cmp"]
    refused = runner.invoke(app, list(map(str, [*args, "--side-info", root / "side-train"])))
    assert refused.exit_code == 2 and "--side-info-test" in refused.output
    result = runner.invoke(app, list(map(str, [*args, "--side-info", root / "side-train", "--side-info-test",
                                               root / "side-test"])))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    forward = load_transform(tmp_path / "cmp" / "forward.safetensors")
    assert forward.side_info_dim == 4
    old, new = open_embeddings(root / "old-test").read_all(), open_embeddings(root / "new-test")
    side = open_embeddings(root / "side-test").read_all()
    gallery = EmbeddingBlock(forward.apply(old.embeddings, side.embeddings)[0], old.ids, old.labels)
    row = next(r for r in report["strategies"] if r["family"] == "forward transform")
    assert row["metrics"] == pytest.approx(evaluate(new, gallery)["metrics"], abs=1e-12)
