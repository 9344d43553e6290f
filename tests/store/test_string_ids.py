"""String ids and labels end to end: fit-transform pairing, backfill (sets, plans), eval — no pickle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compatctl.backfill import read_plan
from compatctl.cli import app
from compatctl.store import EmbeddingBlock, open_embeddings, write_embedding_set
from tests.transform.helpers import clustered_old, nonlinear_new

ROWS, CLASSES = 240, ("cat", "dog", "emu", "owl")


def _ids(rows: int) -> np.ndarray:
    return np.array([f"doc-{i:04d}/é,\"q\"" for i in range(rows)])  # non-ASCII, a comma, quotes


@pytest.fixture
def world(tmp_path):
    old, label_codes = clustered_old(ROWS, 8, classes=len(CLASSES))
    new = nonlinear_new(old, 10)
    ids, labels = _ids(ROWS), np.array(CLASSES)[label_codes]
    shuffled = np.random.default_rng(3).permutation(ROWS)  # the new file lists the rows in another order
    np.savez(tmp_path / "old.npz", embeddings=old, ids=ids, labels=labels)
    np.savez(tmp_path / "new.npz", embeddings=new[shuffled], ids=np.char.encode(ids[shuffled], "utf-8"),  # UTF-8 bytes
             labels=labels[shuffled])
    return tmp_path


def _run(runner, *args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_round_trip_fit_backfill_eval(runner, world):
    h = world / "h.safetensors"
    _run(runner, "fit-transform", world / "old.npz", world / "new.npz", "--out", h, "kind=linear")
    _run(runner, "backfill", world / "old.npz", "--transform", h, "--out", world / "g30", "--budget", "0.3",
         "--order", "random", "--new-embeddings", world / "new.npz")
    gallery = open_embeddings(world / "g30")
    block = gallery.read_all()
    assert gallery.manifest["id_type"] == gallery.manifest["label_type"] == "utf8"
    assert sorted(block.ids.tolist()) == sorted(_ids(ROWS).tolist())
    assert set(block.labels.tolist()) == set(CLASSES)
    assert (block.provenance == 2).sum() == round(0.3 * ROWS)
    for shard in world.glob("g30/shard-*.safetensors"):  # no pickle anywhere: plain uint8 tensors
        assert b"pickle" not in shard.read_bytes()
    result = _run(runner, "eval", world / "new.npz", world / "g30", "--json", world / "r.json")
    report = json.loads((world / "r.json").read_text())
    assert report["counts"]["left_out_self"] == ROWS and report["metrics"]["top1"] > 0.5, result.output
    _run(runner, "eval", world / "new.npz", world / "old.npz", "--dims", "8", "--backfill-with", world / "g30")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_plan_files_keep_string_ids(runner, world, suffix):
    h = world / "h.safetensors"
    _run(runner, "fit-transform", world / "old.npz", world / "new.npz", "--out", h, "kind=linear")
    plan = world / f"plan{suffix}"
    _run(runner, "backfill", world / "old.npz", "--transform", h, "--budget", "0.1", "--plan-only",
         "--plan", plan)
    ranks, ids = read_plan(plan)
    assert len(ids) == round(0.1 * ROWS) and ids.dtype.kind == "U"
    assert set(ids.tolist()) <= set(_ids(ROWS).tolist()) and ranks.tolist() == list(range(len(ids)))


def test_string_ids_match_the_text_order_and_integer_sets_are_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(30, 4)).astype(np.float32)
    text = EmbeddingBlock(embeddings, np.array([f"id{i}" for i in range(30)]), np.array(["a", "b"] * 15))
    write_embedding_set(tmp_path / "text", text, header={}, shard_rows=7)
    back = open_embeddings(tmp_path / "text").read_all()
    assert back.ids.tolist() == text.ids.tolist() and back.labels.tolist() == text.labels.tolist()
    numbers = EmbeddingBlock(embeddings, np.arange(30), np.arange(30) % 2)
    write_embedding_set(tmp_path / "int", numbers, header={}, shard_rows=7)
    manifest = json.loads((tmp_path / "int" / "manifest.json").read_text())
    assert "id_type" not in manifest and "label_type" not in manifest  # integer sets: same bytes as before


def test_text_ids_never_match_integer_ids(runner, world):
    rng = np.random.default_rng(1)
    np.savez(world / "int.npz", embeddings=rng.normal(size=(ROWS, 10)).astype(np.float32), ids=np.arange(ROWS),
             labels=np.zeros(ROWS, np.int64))
    result = runner.invoke(app, ["fit-transform", str(world / "old.npz"), str(world / "int.npz"),
                                 "--out", str(world / "h.safetensors")])
    assert result.exit_code == 2 and "string ids" in result.output and "integer ids" in result.output
    result = runner.invoke(app, ["eval", str(world / "new.npz"), str(world / "int.npz")])
    assert result.exit_code == 2 and "never match" in result.output
