"""Corrupt or malformed embeddings reach the user as one line and exit code 2 (issue 2's list)."""

import json

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.store import save_artifact, write_embedding_set
from tests.conftest import make_block


def _set(tmp_path, name="emb", dim=4):
    path = tmp_path / name
    write_embedding_set(path, make_block(rows=30, dim=dim), header={}, shard_rows=10)
    return path


def _flip(path):
    shard = path / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x40
    shard.write_bytes(bytes(data))


def _truncate(path):
    shard = path / "shard-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-16])


def _remove(path):
    (path / "shard-00001.safetensors").unlink()


def _other_dims(path):
    other = _set(path.parent, "wide", dim=6)
    (path / "shard-00001.safetensors").write_bytes((other / "shard-00001.safetensors").read_bytes())
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["shards"][1] = json.loads((other / "manifest.json").read_text())["shards"][1]
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, message", [
    (_flip, "shard-00001.safetensors: checksum mismatch"),
    (_truncate, "shard-00002.safetensors: checksum mismatch"),
    (_remove, "shard-00001.safetensors: shard listed in the manifest is missing"),
    (_other_dims, "shards of one set must share a dim"),
])
def test_damaged_embedding_set(runner, tmp_path, damage, message):
    path = _set(tmp_path)
    damage(path)
    result = runner.invoke(app, ["eval", str(path), str(path)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


@pytest.mark.parametrize("arrays, message", [
    ({"embeddings": np.array([[0.0, 1.0], [np.nan, 1.0]]), "ids": np.array([4, 5]), "labels": np.array([0, 1])},
     "1 rows hold NaN or Inf, first ids [5]"),
    ({"embeddings": np.eye(3), "ids": np.array([1, 1, 2]), "labels": np.array([0, 1, 1])}, "'ids' has duplicates"),
    ({"embeddings": np.eye(3), "labels": np.array([0, 1])}, "give one label per row"),
])
def test_bad_imported_embeddings(runner, tmp_path, arrays, message):
    np.savez(tmp_path / "e.npz", **arrays)
    for command in (["inspect", str(tmp_path / "e.npz")], ["eval", str(tmp_path / "e.npz"), str(tmp_path / "e.npz")]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_model_where_embeddings_expected(runner, tmp_path):
    save_artifact(tmp_path / "m.safetensors", {"w": np.zeros(3, np.float32)}, "model", {})
    result = runner.invoke(app, ["eval", str(tmp_path / "m.safetensors"), str(tmp_path / "m.safetensors")])
    assert result.exit_code == 2 and "is a model, not embeddings" in " ".join(result.output.split())
