"""`compatctl train-new` on the command line: success, overrides, and every bad-input case (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from compatctl.cli import app

DATA = "builtin:classes=4,train=48,test=8,size=16"
CONFIG = f"""# compatctl train-new this.yaml --out DIR
data: "{DATA}"
arch: tiny_cnn
embedding_dim: 8
epochs: 1
batch_size: 16
"""


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def old_model(tmp_path, config_file, runner) -> Path:
    out = tmp_path / "old"
    result = runner.invoke(app, ["train-new", str(config_file), "--out", str(out), "classes=first_half"])
    assert result.exit_code == 0, result.output
    return out / "model.safetensors"


def run(runner, *args: str):
    return runner.invoke(app, ["train-new", *map(str, args)])


def assert_bad(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_trains_with_overrides_and_writes_files(runner, config_file, tmp_path):
    result = run(runner, config_file, "--out", tmp_path / "m", "embedding_dim=6", "method=independent")
    assert result.exit_code == 0, result.output
    assert {"model.safetensors", "metrics.jsonl", "train_state.safetensors", "config.json"} <= {
        p.name for p in (tmp_path / "m").iterdir()}
    assert '"embedding_dim": 6' in (tmp_path / "m" / "config.json").read_text()


def test_missing_old_model(runner, config_file, tmp_path):
    assert_bad(run(runner, config_file, "--out", tmp_path / "m", "method=bct"), "needs the old model", "--old")


def test_unknown_method_lists_valid_ones(runner, config_file, tmp_path):
    assert_bad(run(runner, config_file, "--out", tmp_path / "m", "method=magic"),
               "method", "independent, l2, bct, bt2, contrastive")


def test_config_errors_reported_at_once(runner, config_file, tmp_path):
    result = run(runner, config_file, "--out", tmp_path / "m", "epochs=0", "lr=fast", "bct.wieght=2")
    assert_bad(result, "'epochs' must be >= 1", "'lr' must be a number", "bct.'wieght'")


@pytest.mark.parametrize("method", ["l2", "bct"])
def test_embedding_dims_that_cannot_be_reconciled(runner, config_file, old_model, tmp_path, method):
    result = run(runner, config_file, "--old", old_model, "--out", tmp_path / "m", f"method={method}", "embedding_dim=12")
    assert_bad(result, "embedding_dim (12)", "old model's embedding width (8)")


def test_bt2_embedding_dim_must_match_old(runner, config_file, old_model, tmp_path):
    result = run(runner, config_file, "--old", old_model, "--out", tmp_path / "m", "method=bt2", "embedding_dim=4")
    assert_bad(result, "bt2", "embedding_dim (4)")


def test_data_classes_must_include_old_classes(runner, config_file, old_model, tmp_path):
    result = run(runner, config_file, "--old", old_model, "--out", tmp_path / "m", "method=bct", "classes=[0,2,3]")
    assert_bad(result, "do not include the old model's classes [1]")


def test_old_classifier_must_cover_listed_classes(runner, config_file, old_model, tmp_path):
    result = run(runner, config_file, "--old", old_model, "--out", tmp_path / "m", "method=bct", "bct.synthesize=none")
    assert_bad(result, "classifier covers classes [0, 1]", "[2, 3]")


def test_resume_with_different_config_names_keys(runner, config_file, tmp_path):
    out = tmp_path / "m"
    assert run(runner, config_file, "--out", out).exit_code == 0
    result = run(runner, config_file, "--out", out, "--resume", "lr=0.5", "bct.weight=3")
    assert_bad(result, "different config", "bct.weight, lr")


def test_resume_without_state_and_retrain_into_used_dir(runner, config_file, tmp_path):
    assert_bad(run(runner, config_file, "--out", tmp_path / "none", "--resume"), "no training state to resume")
    out = tmp_path / "m"
    assert run(runner, config_file, "--out", out).exit_code == 0
    assert_bad(run(runner, config_file, "--out", out), "already holds a training run", "--resume")


def test_missing_old_file_and_cuda_unavailable(runner, config_file, tmp_path, monkeypatch):
    assert_bad(run(runner, config_file, "--old", tmp_path / "nope.safetensors", "--out", tmp_path / "m", "method=l2"),
               "not found")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert_bad(run(runner, config_file, "--out", tmp_path / "c", "device=cuda"), "CUDA is not available here")


@pytest.mark.slow
def test_torchrun_ddp_two_processes(config_file, tmp_path):
    """Two gloo processes train one model; rank 0 alone writes it."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "compatctl",
               "train-new", str(config_file), "--out", str(out), "epochs=2", "device=cpu"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"epoch": 2' in lines[1]
    from compatctl.models import load_model

    load_model(out / "model.safetensors")


def test_unknown_augmentation_lists_the_choices(runner, config_file, tmp_path):
    assert_bad(run(runner, config_file, "--out", tmp_path / "m", "augment=flip"), "'augment'", "crop_flip")
