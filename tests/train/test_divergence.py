"""A diverging run stops within the epoch with one line, writes nothing (fresh) or keeps the earlier epochs (resume)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from compatctl.cli import app
from compatctl.models import load_model
from compatctl.train import train_model
from compatctl.train import trainer
from compatctl.train.divergence import DivergedError, LossWatch, weights_finite
from tests.train.helpers import DATA, config

DIVERGES = ["lr=50"]  # with the default warm-up and clipping the loss passes 1000x its start in epoch 2


def _strict_json(line: str) -> dict:
    def refuse(token):
        raise ValueError(f"non-strict JSON token {token}")

    return json.loads(line, parse_constant=refuse)


def test_lr_50_exits_2_with_one_line_and_writes_nothing(runner, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train-new", _config_file(tmp_path), "--out", str(out), *DIVERGES])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.output and len(errors) == 1, result.output
    for fragment in ("training diverged at epoch", ", batch", "lower lr (now 50)", "warmup_epochs", "grad_clip is 5",
                     "nothing was written"):
        assert fragment in errors[0], result.output
    assert not out.exists()


def _config_file(tmp_path) -> str:
    path = tmp_path / "train.yaml"
    path.write_text(f'data: "{DATA}"\narch: tiny_cnn\nembedding_dim: 8\nepochs: 3\nbatch_size: 32\n')
    return str(path)


def test_fresh_run_diverging_later_removes_its_files_but_not_others(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    checks = iter([True, False])  # epoch 1 is saved, the weights of epoch 2 are not finite
    monkeypatch.setattr(trainer, "weights_finite", lambda model: next(checks))
    with pytest.raises(DivergedError, match="epoch 2: the model's weights are not finite"):
        train_model(config("epochs=2"), out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_resumed_run_diverging_keeps_the_earlier_epochs(tmp_path, monkeypatch):
    out = tmp_path / "run"

    def stop_after_first_epoch(event):
        if event["event"] == "epoch":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(config("epochs=2"), out_dir=out, progress=stop_after_first_epoch)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(trainer, "weights_finite", lambda model: False)
    with pytest.raises(DivergedError, match="keeps the 1 earlier epoch"):
        train_model(config("epochs=2"), out_dir=out, resume=True)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before and load_model(out / "model.safetensors")[1]["extra"]["epochs_done"] == 1


def test_metrics_are_strict_json(tmp_path):
    train_model(config("epochs=2"), out_dir=tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    metrics = [_strict_json(line) for line in lines]
    assert [m["epoch"] for m in metrics] == [1, 2] and all(math.isfinite(m["loss"]) for m in metrics)


def test_loss_watch_finds_the_first_bad_batch():
    watch = LossWatch(torch.device("cpu"))
    watch.start_epoch(5)
    for index, loss in enumerate([2.0, 3.0, float("nan"), 1e9, 1.0]):
        watch.observe(index, torch.tensor(loss))
    index, loss = watch.first_bad_batch(world_size=1)
    assert index == 2 and math.isnan(loss) and watch.reference == 2.0
    watch.start_epoch(3)
    for index, loss in enumerate([1.0, 1999.0, 2001.0]):  # the limit: 1000 x max(first loss, 1)
        watch.observe(index, torch.tensor(loss))
    assert watch.first_bad_batch(world_size=1) == (2, 2001.0)
    watch.start_epoch(2)
    watch.observe(0, torch.tensor(float("inf")))
    assert watch.first_bad_batch(world_size=1)[0] == 0


def test_weights_finite():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert weights_finite(model)
    model[1].running_var[0] = float("inf")
    assert not weights_finite(model)
