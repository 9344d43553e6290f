"""`eval --query-transform`: new queries mapped into the old space (every transform kind, both ways)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.evaluate import evaluate
from compatctl.store import EmbeddingBlock, open_embeddings
from compatctl.transform import TransformConfig, fit_transform, load_transform
from tests.transform.helpers import clustered_old, nonlinear_new, save_set

FAST = dict(epochs=3, min_epoch_steps=5, input_noise_grid=[0.0], width=32, branch_width=32, blocks=1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Old (8-d) and new (12-d) embedding sets of the same 300 items: train and test halves."""
    root = tmp_path_factory.mktemp("pair")
    old, labels = clustered_old(600, 8, classes=6, seed=0)
    new = nonlinear_new(old, 12) + 0.3 * np.random.default_rng(2).normal(size=(600, 12)).astype(np.float32)
    for split, rows in (("train", slice(0, 400)), ("test", slice(400, 600))):
        save_set(root / f"old-{split}", old[rows], labels=labels[rows], fingerprint="old-model")
        save_set(root / f"new-{split}", new[rows], labels=labels[rows], fingerprint="new-model")
    return root


@pytest.mark.parametrize("kind", ["linear", "procrustes", "mlp", "auto"])
def test_every_kind_works_both_ways(pair, tmp_path, runner, kind):
    config = TransformConfig(kind=kind, **FAST)
    for first, second in (("old", "new"), ("new", "old")):  # forward, then the query direction
        out = tmp_path / f"{first}-to-{second}.safetensors"
        fit_transform(pair / f"{first}-train", pair / f"{second}-train", out, config=config)
        transform = load_transform(out)
        assert (transform.old_fingerprint, transform.new_fingerprint) == (f"{first}-model", f"{second}-model")
        source = open_embeddings(pair / f"{first}-test").read_all()
        mapped = EmbeddingBlock(transform.apply(source.embeddings)[0], source.ids, source.labels)
        # new queries against the other side: h(old) gallery (forward) or old gallery (query side)
        queries, gallery = (open_embeddings(pair / "new-test").read_all(), mapped) if first == "old" else \
            (mapped, open_embeddings(pair / "old-test").read_all())
        expected = evaluate(queries, gallery)["metrics"]
        assert expected["top1"] > 0.5  # six classes: chance is ~0.17
    result = runner.invoke(app, ["eval", str(pair / "new-test"), str(pair / "old-test"), "--query-transform",
                                 str(out), "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    for name, value in expected.items():
        assert report["metrics"][name] == pytest.approx(value, abs=1e-9)
    assert report["query_transform"]["input_model"] == "new-model"
    assert report["query_transform"]["output_model"] == "old-model"
    assert report["dims"]["used"] == 8


def test_query_transform_with_baseline_ceiling_and_streamed_blocks(pair, tmp_path, runner):
    out = tmp_path / "q.safetensors"
    fit_transform(pair / "new-train", pair / "old-train", out, config=TransformConfig(kind="linear"))
    args = ["eval", str(pair / "new-test"), str(pair / "old-test"), "--query-transform", str(out),
            "--baseline", str(pair / "old-test"), "--ceiling", str(pair / "new-test"), "--ci", "0.9"]
    small = runner.invoke(app, args + ["--json", str(tmp_path / "a.json"), "--query-block", "7"])
    large = runner.invoke(app, args + ["--json", str(tmp_path / "b.json")])
    assert small.exit_code == 0 and large.exit_code == 0, small.output + large.output
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json"))
    assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-12)
    assert set(a["gap_closed"]) == {"top1", "top5", "map"}


def test_bad_query_transforms_are_one_line_exit_2(pair, tmp_path, runner):
    forward = tmp_path / "forward.safetensors"
    fit_transform(pair / "old-train", pair / "new-train", forward, config=TransformConfig(kind="linear"))
    query_side = tmp_path / "query.safetensors"
    fit_transform(pair / "new-train", pair / "old-train", query_side, config=TransformConfig(kind="linear"))
    other = save_set(tmp_path / "other", open_embeddings(pair / "new-test").read_all().embeddings,
                     labels=open_embeddings(pair / "new-test").read_all().labels, fingerprint="another-model")
    old_test = open_embeddings(pair / "old-test").read_all()
    np.savez(tmp_path / "old.npz", embeddings=old_test.embeddings, labels=old_test.labels)  # no fingerprint
    cases = [
        ([pair / "new-test", pair / "old-test", "--query-transform", forward], "was fit old -> new"),
        ([pair / "old-test", pair / "old-test", "--query-transform", query_side], "which"),
        ([tmp_path / "old.npz", pair / "old-test", "--query-transform", query_side], "maps 12-d inputs but"),
        ([other, pair / "old-test", "--query-transform", query_side], "another-model"),
        ([pair / "new-test", other, "--query-transform", query_side, "--dims", "8"], "maps into model old-model"),
        ([pair / "new-test", pair / "old-test", "--query-transform", query_side, "--backfill-with",
          pair / "new-test"], "not to --backfill-with"),
        ([pair / "new-test", pair / "old-test", "--rerank-depth", "5"], "needs --rerank-with"),
        ([pair / "new-test", pair / "old-test", "--rerank-with", pair / "new-test", "--rerank-depth", "0"],
         "must be >= 1"),
        ([pair / "new-test", pair / "old-test", "--rerank-with", pair / "new-test", "--dims", "8", "--baseline",
          pair / "old-test"], "--baseline cannot be combined with --rerank-with"),
        ([pair / "new-test", pair / "old-test", "--rerank-with", pair / "new-test", "--dims", "8", "--map-at-r"],
         "cannot be combined with --rerank-with"),
        (["--set", f"a={pair / 'old-test'}", "--set", f"b={pair / 'old-test'}", "--query-transform", query_side],
         "not to --set/--plan"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["eval", *map(str, args)])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_rerank_cli_with_query_transform_reports_rows_needed(pair, tmp_path, runner):
    query_side = tmp_path / "query.safetensors"
    fit_transform(pair / "new-train", pair / "old-train", query_side, config=TransformConfig(kind="linear"))
    result = runner.invoke(app, ["eval", str(pair / "new-test"), str(pair / "old-test"), "--query-transform",
                                 str(query_side), "--rerank-with", str(pair / "new-test"), "--rerank-depth",
                                 "10,199", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rerank"]["depths"] == [10, 199]
    assert report["rerank"]["rows_needed"][1] == 200 and 10 <= report["rerank"]["rows_needed"][0] <= 200
    new_new = evaluate(open_embeddings(pair / "new-test"), open_embeddings(pair / "new-test"))["metrics"]
    assert report["rerank"]["metrics"]["map"][1] == pytest.approx(new_new["map"], abs=1e-9)
    missing = save_set(tmp_path / "part", open_embeddings(pair / "new-test").read_all().embeddings[:150],
                       ids=np.arange(150), labels=open_embeddings(pair / "new-test").read_all().labels[:150])
    result = runner.invoke(app, ["eval", str(pair / "new-test"), str(pair / "old-test"), "--query-transform",
                                 str(query_side), "--rerank-with", str(missing), "--rerank-depth", "50"])
    assert result.exit_code == 2 and "lacks" in result.output and "candidate" in result.output, result.output


def test_query_transform_and_rerank_do_not_import_torch(pair, tmp_path):
    query_side = tmp_path / "query.safetensors"
    fit_transform(pair / "new-train", pair / "old-train", query_side, config=TransformConfig(kind="mlp", **FAST))
    blocked = ("import sys; sys.modules['torch'] = None; sys.argv = ['compatctl'] + sys.argv[1:]; "
               "from compatctl.cli import main; main()")
    args = ["eval", str(pair / "new-test"), str(pair / "old-test"), "--query-transform", str(query_side),
            "--rerank-with", str(pair / "new-test"), "--rerank-depth", "5,20"]
    result = subprocess.run([sys.executable, "-c", blocked, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout


def test_unverifiable_fingerprints_warn_and_text_ids_work(pair, tmp_path, runner):
    query_side = tmp_path / "query.safetensors"
    fit_transform(pair / "new-train", pair / "old-train", query_side, config=TransformConfig(kind="linear"))
    new, old = (open_embeddings(pair / name).read_all() for name in ("new-test", "old-test"))
    names = np.array([f"item-{i:04d}" for i in new.ids])
    np.savez(tmp_path / "q.npz", embeddings=new.embeddings, labels=new.labels, ids=names)
    np.savez(tmp_path / "g.npz", embeddings=old.embeddings, labels=old.labels, ids=names)
    result = runner.invoke(app, ["eval", str(tmp_path / "q.npz"), str(tmp_path / "g.npz"), "--query-transform",
                                 str(query_side), "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "cannot verify that the queries" in result.output and "cannot verify that the gallery" in result.output
    mapped = EmbeddingBlock(load_transform(query_side).apply(new.embeddings)[0], new.ids, new.labels)
    expected = evaluate(mapped, old)["metrics"]
    assert json.loads((tmp_path / "r.json").read_text())["metrics"] == pytest.approx(expected, abs=1e-9)
