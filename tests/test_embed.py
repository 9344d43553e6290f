"""`compatctl embed` end to end on tiny built-in data: output, resume, parts and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.data import load_data
from compatctl.store import open_embeddings

DATA = "builtin:classes=4,train=40,test=30,size=16"


@pytest.fixture(autouse=True)
def decoded_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("COMPATCTL_CACHE_DIR", str(tmp_path / "decoded-cache"))


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    """An untrained tiny_cnn saved like train-new saves one."""
    import torch

    from compatctl.data.transforms import compute_normalization
    from compatctl.models import ModelSpec, build_model, save_model

    torch.manual_seed(0)
    data = load_data(DATA, "train")
    model = build_model(ModelSpec("tiny_cnn", embedding_dim=6, num_classes=4)).eval()
    path = tmp_path / "model.safetensors"
    save_model(path, model, config={"model": {"arch": "tiny_cnn"}},
               normalization=compute_normalization(data.images).to_dict(), lineage={},
               class_names=data.class_names, image_shape=data.image_shape)
    return path


def embed(runner, model, out, *extra, data=DATA):
    return runner.invoke(app, ["embed", str(model), data, "--out", str(out), "--device", "cpu", *extra])


def shard_files(out: Path) -> list[Path]:
    return sorted(out.glob("shard-*.safetensors"))


def test_embed_end_to_end(runner, model_path, tmp_path):
    out = tmp_path / "emb"
    result = embed(runner, model_path, out, "--split", "all", "--shard-rows", "32", "--batch-size", "5")
    assert result.exit_code == 0, result.output
    emb = open_embeddings(out)
    data = load_data(DATA, "all")
    block = emb.read_all()
    assert (emb.rows, emb.dim, len(shard_files(out))) == (70, 6, 3)
    assert np.array_equal(block.ids, data.ids) and np.array_equal(block.labels, data.labels)
    assert (block.provenance == 0).all()
    from compatctl.models import embed_images, load_model

    model, header = load_model(model_path)
    assert np.allclose(block.embeddings, embed_images(model, header, data.images), atol=1e-5)
    assert emb.model_fingerprint == header["fingerprint"]
    assert emb.header["source"]["split"] == "all" and emb.header["config"] == header["config"]


def test_embed_ids_stable_across_splits(runner, model_path, tmp_path):
    for split in ("test", "all"):
        assert embed(runner, model_path, tmp_path / split, "--split", split).exit_code == 0
    test, both = open_embeddings(tmp_path / "test").read_all(), open_embeddings(tmp_path / "all").read_all()
    assert np.array_equal(both.ids[40:], test.ids)
    assert np.allclose(both.embeddings[40:], test.embeddings, atol=1e-5)


def test_embed_float16(runner, model_path, tmp_path):
    assert embed(runner, model_path, tmp_path / "e", "--dtype", "float16").exit_code == 0
    assert open_embeddings(tmp_path / "e").dtype == "float16"


def test_resume_after_losing_manifest_and_a_shard(runner, model_path, tmp_path):
    out = tmp_path / "emb"
    assert embed(runner, model_path, out, "--shard-rows", "8").exit_code == 0
    reference = open_embeddings(out).read_all()
    shards = shard_files(out)
    manifest = json.loads((out / "manifest.json").read_text())
    # a killed run: no manifest yet, shards 0..2 recorded as done, shard 2 deleted, shard 3 half-written
    (out / "manifest.json").unlink()
    (out / "progress.part-1-of-1.json").write_text(json.dumps(
        {"resume_key": manifest["resume_key"], "shards": manifest["shards"][:3]}))
    shards[2].unlink()
    shards[3].write_bytes(b"half")
    kept = shards[0].stat().st_mtime_ns
    assert embed(runner, model_path, out, "--shard-rows", "8").exit_code == 0
    assert shards[0].stat().st_mtime_ns == kept  # complete shards are not redone
    again = open_embeddings(out).read_all()
    assert np.array_equal(again.ids, reference.ids)
    assert np.allclose(again.embeddings, reference.embeddings, atol=1e-5)


def test_parts_fill_one_set(runner, model_path, tmp_path):
    out = tmp_path / "emb"
    first = embed(runner, model_path, out, "--shard-rows", "8", "--part", "1/2")
    assert first.exit_code == 0 and "part 1/2" in first.output
    assert not (out / "manifest.json").exists()
    assert embed(runner, model_path, out, "--shard-rows", "8", "--part", "2/2").exit_code == 0
    assert open_embeddings(out).rows == 30


@pytest.mark.parametrize("args, message", [
    (["--split", "dev"], "split 'dev' is not valid"),
    (["--part", "3/2"], "--part '3/2'"),
    (["--dtype", "int8"], "--dtype 'int8'"),
    (["--device", "tpu"], "use auto, cpu or cuda"),
])
def test_bad_options(runner, model_path, tmp_path, args, message):
    result = embed(runner, model_path, tmp_path / "e", *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_bad_inputs(runner, model_path, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    (tmp_path / "noclasses" / "train").mkdir(parents=True)
    (folder / "test" / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "test" / "cat" / "a.png")
    (folder / "test" / "cat" / "b.png").write_bytes(b"\x89PNG truncated")
    assert embed(runner, model_path, tmp_path / "emb").exit_code == 0
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "progress.part-1-of-2.json").write_text('{"resume_key": "k", "shards": []}')
    cases = [
        (model_path, str(tmp_path / "noclasses"), "no class folders"),
        (model_path, str(folder), "b.png: image fails to decode"),
        (model_path, str(tmp_path / "emb"), "is an embedding set, not DATA"),
        (model_path, str(model_path), "is a model, not DATA"),
        (model_path, "builtin:size=8", "expects 16x16x3"),
        (model_path, "builtin:size=16,channels=1", "expects 16x16x3"),
        (tmp_path / "emb", DATA, "is an embedding set, not a model"),
        (tmp_path / "partial", DATA, "is an embedding set, not a model"),
        (DATA, str(model_path), "is DATA, not a model"),
        (tmp_path / "missing.safetensors", DATA, "file not found"),
    ]
    for model, data, message in cases:
        result = embed(runner, model, tmp_path / "out", data=data)
        assert result.exit_code == 2, (message, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output


def test_other_inputs_in_out_dir_refused(runner, model_path, tmp_path):
    out = tmp_path / "emb"
    assert embed(runner, model_path, out).exit_code == 0
    result = embed(runner, model_path, out, "--split", "train")
    assert result.exit_code == 2 and "made from other inputs" in result.output


def test_unknown_architecture_in_checkpoint(runner, model_path, tmp_path):
    from compatctl.store import load_arrays, read_header, save_artifact

    header = read_header(model_path)
    header["spec"]["arch"] = "vit_huge"
    meta = {k: v for k, v in header.items() if k not in ("format_version", "kind", "fingerprint")}
    save_artifact(tmp_path / "bad.safetensors", load_arrays(model_path), kind="model", meta=meta)
    result = embed(runner, tmp_path / "bad.safetensors", tmp_path / "e")
    assert result.exit_code == 2 and "unknown architecture 'vit_huge'" in result.output
    assert "tiny_cnn" in result.output


@pytest.mark.slow
def test_sigkill_then_resume_matches_clean_run(model_path, tmp_path):
    """A real `compatctl embed` process killed after its first shards resumes to the same set."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = "builtin:classes=4,train=40,test=3000,size=16"
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "compatctl", "embed", str(model_path), data, "--out", str(out),
               "--device", "cpu", "--shard-rows", "100", "--batch-size", "10"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(shard_files(out)) < 3 and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists(), "the run finished before it could be killed"
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clean = tmp_path / "clean"
    subprocess.run([*command[:7], str(clean), *command[8:]], check=True, stdout=subprocess.DEVNULL)
    resumed, reference = open_embeddings(out).read_all(), open_embeddings(clean).read_all()
    assert np.array_equal(resumed.ids, reference.ids) and np.array_equal(resumed.labels, reference.labels)
    assert np.allclose(resumed.embeddings, reference.embeddings, atol=1e-5)
