"""Integrity end to end: inspect reports a damaged set, re-running its writer repairs it byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compatctl.cli import app
from tests.backfill.conftest import make_world, fit
from tests.test_embed import DATA, decoded_cache, model_path  # noqa: F401  (fixtures)


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside the tensor bytes: the size still matches
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def check_inspect_names(runner, out: Path, shard: Path) -> None:
    result = runner.invoke(app, ["inspect", str(out)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and shard.name in result.output, result.output
    assert "re-run the command that wrote this set" in " ".join(result.output.split())


@pytest.mark.parametrize("damage", [flip, truncate])
def test_embed_rerun_repairs_a_damaged_shard(runner, tmp_path, model_path, damage):  # noqa: F811
    out = tmp_path / "emb"
    args = ["embed", str(model_path), DATA, "--out", str(out), "--device", "cpu", "--shard-rows", "8"]
    assert runner.invoke(app, args).exit_code == 0
    original = snapshot(out)
    shard = out / "shard-00002.safetensors"
    damage(shard)
    check_inspect_names(runner, out, shard)
    if damage is flip:  # same size: only hashing finds it
        assert runner.invoke(app, ["inspect", str(out), "--quick"]).exit_code == 0
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert snapshot(out) == original
    assert runner.invoke(app, ["inspect", str(out)]).exit_code == 0


@pytest.mark.parametrize("damage", [flip, truncate])
def test_backfill_rerun_repairs_a_damaged_shard(runner, tmp_path, damage):
    world = make_world(tmp_path)
    transform = fit(world, "linear", kind="linear")
    out = tmp_path / "g30"
    args = ["backfill", str(world.gallery), "--transform", str(transform), "--out", str(out), "--budget", "0.3",
            "--order", "random", "--new-embeddings", str(world.new_set)]
    assert runner.invoke(app, args).exit_code == 0
    original = snapshot(out)
    shard = out / "shard-00001.safetensors"
    damage(shard)
    check_inspect_names(runner, out, shard)
    result = runner.invoke(app, ["eval", str(world.new_set), str(out)])
    assert result.exit_code == 2 and shard.name in result.output
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert snapshot(out) == original


def flip_backfilled_row(shard: Path) -> None:
    """Flip one bit of a backfilled row's embedding: the damage a re-run must not copy forward."""
    import struct

    from safetensors.numpy import load_file

    data = bytearray(shard.read_bytes())
    header_length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + header_length])
    row = int(np.flatnonzero(load_file(shard)["provenance"] == 2)[0])
    width = header["embeddings"]["shape"][1]
    data[8 + header_length + header["embeddings"]["data_offsets"][0] + row * width * 4 + 2] ^= 0x40
    shard.write_bytes(bytes(data))


@pytest.mark.parametrize("then_budget", ["0.3", "0.5"], ids=["resume", "continue"])
def test_backfill_rerun_never_reuses_a_damaged_backfilled_row(runner, tmp_path, then_budget):
    """Re-running (same budget) or continuing (larger budget) over a shard whose backfilled row was damaged:
    the row is re-embedded, not copied with a fresh checksum; the result equals an undamaged run's."""
    world = make_world(tmp_path)
    transform = fit(world, "linear", kind="linear")

    def args(out, budget):
        return ["backfill", str(world.gallery), "--transform", str(transform), "--out", str(out), "--budget", budget,
                "--order", "random", "--new-embeddings", str(world.new_set)]

    out, reference = tmp_path / "g", tmp_path / "reference"
    assert runner.invoke(app, args(out, "0.3")).exit_code == 0
    assert runner.invoke(app, args(reference, then_budget)).exit_code == 0
    flip_backfilled_row(out / "shard-00001.safetensors")
    result = runner.invoke(app, args(out, then_budget))
    assert result.exit_code == 0, result.output
    assert snapshot(out) == snapshot(reference)
    assert runner.invoke(app, ["inspect", str(out)]).exit_code == 0


def test_inspect_reports_verification(runner, tmp_path):
    world = make_world(tmp_path)
    result = runner.invoke(app, ["inspect", str(world.gallery), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["integrity"]["checksums"] == "verified"
    quick = json.loads(runner.invoke(app, ["inspect", str(world.gallery), "--json", "--quick"]).output)
    assert quick["integrity"]["bytes_hashed"] == 0


def test_writer_refuses_non_finite_rows(runner, tmp_path):
    world = make_world(tmp_path)
    transform = fit(world, "linear", kind="linear")
    new = world.new.copy()
    new[5, 1] = np.inf
    from compatctl.store import EmbeddingBlock, write_embedding_set

    with pytest.raises(Exception, match="NaN or Inf"):
        write_embedding_set(tmp_path / "bad", EmbeddingBlock(new, world.ids, world.labels), header={})
    assert not (tmp_path / "bad" / "manifest.json").exists()
    with pytest.raises(Exception, match="float16's range"):
        write_embedding_set(tmp_path / "big", EmbeddingBlock(world.new * 1e6, world.ids), header={},
                            dtype="float16")
    assert transform.exists()


def test_embed_refuses_nan_rows_before_writing_the_shard(runner, tmp_path):
    import torch

    from compatctl.models import ModelSpec, build_model, save_model

    model = build_model(ModelSpec("tiny_cnn", embedding_dim=6, num_classes=4)).eval()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))  # a diverged model: every embedding is NaN
    path = tmp_path / "nan.safetensors"
    save_model(path, model, config={}, normalization=None, lineage={}, image_shape=(16, 16, 3))
    out = tmp_path / "emb"
    result = runner.invoke(app, ["embed", str(path), DATA, "--out", str(out), "--device", "cpu"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "rows of NaN or Inf" in result.output, result.output
    assert not list(out.glob("shard-*.safetensors")) and not (out / "manifest.json").exists()
