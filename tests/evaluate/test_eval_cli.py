"""`compatctl eval` through the CLI: reports, gates (exit 1), every bad input (exit 2, one line)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.store import EmbeddingBlock, write_embedding_set
from tests.conftest import make_block


@pytest.fixture
def sets(tmp_path):
    """old (16-d, with uncertainty), new (20-d, BT²-like), q.npz, unlabeled.npz, partial new gallery."""
    old = make_block(120, 16, 6, seed=0)
    rng = np.random.default_rng(1)
    old.uncertainty = rng.random(120).astype(np.float32)
    write_embedding_set(tmp_path / "old", old, header={"model_fingerprint": "old0"}, shard_rows=50)
    new = EmbeddingBlock(np.concatenate([old.embeddings, rng.normal(size=(120, 4)).astype(np.float32)], 1),
                         old.ids, old.labels)
    bt2 = {"model_fingerprint": "new0", "compatible_dims": 16, "lineage": {"old_model": "old0", "ancestors": ["old0"]}}
    write_embedding_set(tmp_path / "new", new, header=bt2)
    write_embedding_set(tmp_path / "partial", new.take(np.arange(100)), header=bt2)
    old.uncertainty = None
    write_embedding_set(tmp_path / "plain", old, header={})
    np.savez(tmp_path / "unlabeled.npz", embeddings=old.embeddings)
    return tmp_path


def run(runner, *args):
    return runner.invoke(app, ["eval", *map(str, args)])


def test_report_json_has_spec_keys(runner, sets):
    result = run(runner, sets / "new", sets / "old", "--json", sets / "r.json", "--map-at-r")
    assert result.exit_code == 0, result.output
    assert "top1" in result.output and "first 16 dims" in result.output
    report = json.loads((sets / "r.json").read_text())
    assert {"top1", "top5", "map", "map_at_r"} <= set(report["metrics"])
    assert all(0.0 <= v <= 1.0 for v in report["metrics"].values())
    assert report["inputs"]["query"]["model_fingerprint"] == "new0"
    assert report["inputs"]["gallery"]["model_fingerprint"] == "old0"
    assert report["dims"]["used"] == 16 and report["distance"] == "cosine"
    assert report["counts"]["queries"] == 120 and report["counts"]["left_out_self"] == 120
    assert report["elapsed_s"] >= 0


def test_gates_pass_and_fail(runner, sets):
    assert run(runner, sets / "old", sets / "old", "--fail-under", "top1=0.1").exit_code == 0
    result = run(runner, sets / "old", sets / "old", "--dims", "1", "--fail-under", "top1=0.99",
                 "--fail-under", "map=0.99", "--fail-under", "top5=0.0")
    assert result.exit_code == 1
    assert "gate failed: top1" in result.output and "gate failed: map" in result.output
    assert "top5" not in result.output.split("gate failed")[-1]
    assert "Traceback" not in result.output


def test_curve_json_and_plot(runner, sets):
    result = run(runner, sets / "new", sets / "old", "--backfill-with", sets / "new", "--order", "uncertainty",
                 "--steps", "4", "--json", sets / "c.json", "--plot", sets / "c.png", "--fail-under", "auc.map=0.1")
    assert result.exit_code == 0, result.output
    curve = json.loads((sets / "c.json").read_text())["curve"]
    assert curve["fractions"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert len(curve["top1"]) == len(curve["map"]) == 5
    assert curve["auc"]["top1"] == pytest.approx(np.mean(curve["top1"]))
    assert "AUC = plain mean" in result.output and (sets / "c.png").stat().st_size > 0


def test_matrix_with_sets_and_plan(runner, sets):
    result = run(runner, "--set", f"old={sets / 'old'}", "--set", f"new={sets / 'new'}", "--json", sets / "m.json")
    assert result.exit_code == 0, result.output
    matrix = json.loads((sets / "m.json").read_text())["matrix"]
    assert matrix["reference"] == "old" and len(matrix["pairs"]) == 4
    cross = next(p for p in matrix["pairs"] if p["query"] == "new" and p["gallery"] == "old")
    assert set(cross["compatible"]) == {"top1", "map"}
    (sets / "plan.yaml").write_text("reference: new\nsets:\n  old: old\n  new: new\n")
    result = run(runner, "--plan", sets / "plan.yaml", "--json", sets / "p.json")
    assert result.exit_code == 0, result.output
    assert json.loads((sets / "p.json").read_text())["matrix"]["reference"] == "new"


BAD = [
    (["{d}/old", "{d}/new", "--dims", "17"], "--dims 17"),
    (["{d}/old", "{d}/unlabeled.npz"], "has no labels"),
    (["{d}/old", "{d}/plain", "--backfill-with", "{d}/new", "--order", "uncertainty"], "needs per-row uncertainty"),
    (["{d}/old", "{d}/old", "--fail-under", "top1>0.4"], "expected METRIC=VALUE"),
    (["{d}/old", "{d}/old", "--fail-under", "recall=0.4"], "unknown metric 'recall'"),
    (["{d}/old", "{d}/old", "--fail-under", "top1=45"], "fractions in [0, 1]"),
    (["{d}/old", "{d}/old", "--fail-under", "map_at_r=0.4"], "unknown metric 'map_at_r'"),
    (["{d}/old", "{d}/old", "--backfill-with", "{d}/new", "--steps", "0"], "--steps 0"),
    (["{d}/old", "{d}/old", "--backfill-with", "{d}/partial"], "lacks 20 ids"),
    (["{d}/old", "{d}/old", "--backfill-with", "{d}/new", "--order", "best"], "unknown"),
    (["{d}/old", "{d}/old", "--steps", "3"], "need --backfill-with"),
    (["{d}/old", "{d}/old", "--topk", "1,x"], "--topk"),
    (["{d}/old", "{d}/old", "--distance", "dot"], "--distance 'dot'"),
    (["{d}/old"], "give QUERY and GALLERY"),
    (["{d}/old", "{d}/old", "--set", "a={d}/old"], "drop the QUERY/GALLERY"),
    (["--set", "a={d}/old"], "at least two"),
    (["--set", "a={d}/old", "--set", "nonsense"], "expected NAME=PATH"),
    (["{d}/old", "{d}/missing"], "not found"),
    (["{d}/old", "{d}/old", "--no-map", "--map-at-r"], "--map-at-r needs the full ranking"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_input_exits_2_with_one_line(runner, sets, args, message):
    result = run(runner, *(a.format(d=sets) for a in args))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_plot_without_matplotlib_is_a_clear_error(runner, sets, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run(runner, sets / "old", sets / "old", "--backfill-with", sets / "new", "--steps", "2",
                 "--plot", sets / "x.png")
    assert result.exit_code == 2 and "needs matplotlib" in result.output and "pip install matplotlib" in result.output
    assert "top1" not in result.output  # refused before any work


def test_bad_plan_is_exit_2(runner, sets):
    (sets / "bad.yaml").write_text("sets: {old: old}\nreference: new\nextra: 1\n")
    result = run(runner, "--plan", sets / "bad.yaml")
    assert result.exit_code == 2 and "unknown key 'extra'" in result.output and "'reference'" in result.output
