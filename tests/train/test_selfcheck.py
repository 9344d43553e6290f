"""The self-check: a seeded, per-class held-out slice; old/old, new/new, new/old in the metadata and the
output; --require-compatible exits 1 exactly when new/old top-1 <= old/old top-1."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from compatctl.cli import app
from compatctl.config import to_dict
from compatctl.errors import BadInputError
from compatctl.store import read_header
from compatctl.train import trainer
from compatctl.train.selfcheck import MAX_HELD_OUT, HeldOut, ids_digest, run_self_check, split_positions
from tests.train.helpers import DATA, config

CONFIG = f'data: "{DATA}"\narch: tiny_cnn\nembedding_dim: 8\nepochs: 1\nbatch_size: 32\nlr: 0.05\n'


def test_split_is_seeded_per_class_and_capped():
    labels = np.repeat(np.arange(4), [40, 20, 10, 1])
    train, held = split_positions(labels, 0.1, seed=3)
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(len(labels)))
    assert [int((labels[held] == c).sum()) for c in range(4)] == [4, 2, 1, 0]  # a lone image stays in training
    again, other = split_positions(labels, 0.1, seed=3)[1], split_positions(labels, 0.1, seed=4)[1]
    assert np.array_equal(held, again) and not np.array_equal(held, other)
    assert len(split_positions(labels, 0.0, seed=3)[1]) == 0
    many = np.repeat(np.arange(10), 3000)
    assert abs(len(split_positions(many, 0.5, seed=0)[1]) - MAX_HELD_OUT) <= 10


class _OneHot(torch.nn.Module):
    """A fake model: an image whose pixels are all ``label`` embeds to the one-hot of ``order[label]``."""

    def __init__(self, order: list[int], extra_dims: int = 0):
        super().__init__()
        self.order, self.embedding_width = torch.tensor(order), len(order) + extra_dims
        self.extra_dims = extra_dims

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        labels = (pixels.mean(dim=(1, 2, 3)) * 255).round().long()
        onehot = torch.nn.functional.one_hot(self.order[labels], len(self.order)).float()
        return torch.cat([onehot, torch.ones(len(labels), self.extra_dims)], dim=1)


def _held_out(labels: np.ndarray) -> HeldOut:
    images = np.broadcast_to(labels.astype(np.uint8)[:, None, None, None], (len(labels), 4, 4, 3)).copy()
    ids = np.arange(100, 100 + len(labels), dtype=np.int64)
    return HeldOut(images, labels, ids, ids_digest(ids))


def test_self_check_compares_the_compatible_dims_with_evaluate():
    @dataclasses.dataclass
    class Old:
        model: torch.nn.Module
        header: dict

    held_out = _held_out(np.repeat(np.arange(4), 3))
    old = Old(_OneHot([0, 1, 3, 2]), {"normalization": None})  # classes 2 and 3 swap places in the old space
    new = _OneHot([0, 1, 2, 3], extra_dims=2)                   # BT²-like: 4 compatible dims + 2 extra
    report = run_self_check(new, None, held_out, old, compatible_dims=4)
    assert report["old_old"] == {"top1": 1.0, "map": 1.0} and report["new_new"] == {"top1": 1.0, "map": 1.0}
    assert report["new_old_dims"] == 4 and report["new_old"]["top1"] == pytest.approx(0.5, abs=1e-9)
    assert report["compatible"] is False and report["images"] == 12 and report["classes"] == 4
    alone = run_self_check(new, None, held_out)
    assert alone["compatible"] is None and "new_old" not in alone


def test_report_in_metadata_and_table_and_resume_keeps_the_slice(runner, tmp_path, old_model):
    path = tmp_path / "train.yaml"
    path.write_text(CONFIG)
    out = tmp_path / "bct"
    result = runner.invoke(app, ["train-new", str(path), "--out", str(out), "--old", str(old_model), "method=bct"])
    assert result.exit_code == 0, result.output
    report = read_header(out / "model.safetensors")["extra"]["self_check"]
    held = report["images"]
    assert 4 <= held <= 8 and report["new_old_dims"] == 8  # about 10% of 64, from each of the 4 classes
    for key in ("old_old", "new_new", "new_old"):
        assert 0.0 <= report[key]["top1"] <= 1.0 and 0.0 <= report[key]["map"] <= 1.0
        assert f"{report[key]['top1']:.4f}" in result.output
    assert report["compatible"] == (report["new_old"]["top1"] > report["old_old"]["top1"])
    assert ("warning: the new model is not compatible" in result.output) == (not report["compatible"])
    for row in ("old / old", "new / new", "new / old (first 8 dims)", f"{64 - held} images ({held} held out"):
        assert row in result.output, result.output
    again = runner.invoke(app, ["train-new", str(path), "--out", str(out), "--old", str(old_model), "method=bct",
                                "--resume"])  # nothing left to train: the stored report again
    assert again.exit_code == 0 and f"{report['new_old']['top1']:.4f}" in again.output, again.output


def _forced(compatible: bool):
    """run_self_check with its verdict forced (a real compatible pair takes minutes to train)."""
    real = trainer.run_self_check

    def forced(*args, **kwargs):
        report = real(*args, **kwargs)
        report["new_old"]["top1"] = report["old_old"]["top1"] + (0.25 if compatible else -0.25)
        report["compatible"] = compatible
        return report

    return forced


@pytest.mark.parametrize("compatible, code", [(False, 1), (True, 0)])
def test_require_compatible_exit_code(runner, tmp_path, old_model, monkeypatch, compatible, code):
    monkeypatch.setattr(trainer, "run_self_check", _forced(compatible))
    path = tmp_path / "train.yaml"
    path.write_text(CONFIG)
    out = tmp_path / "new"
    result = runner.invoke(app, ["train-new", str(path), "--out", str(out), "--old", str(old_model),
                                 "--require-compatible"])
    assert result.exit_code == code, result.output
    assert (out / "model.safetensors").is_file()  # saved either way
    assert ("error: --require-compatible: the new model is not compatible" in result.output) == (not compatible)
    assert read_header(out / "model.safetensors")["extra"]["self_check"]["compatible"] is compatible


def test_require_compatible_needs_old_and_a_slice(runner, tmp_path, old_model):
    path = tmp_path / "train.yaml"
    path.write_text(CONFIG)
    result = runner.invoke(app, ["train-new", str(path), "--out", str(tmp_path / "a"), "--require-compatible"])
    assert result.exit_code == 2 and "pass --old OLD_MODEL" in result.output, result.output
    result = runner.invoke(app, ["train-new", str(path), "--out", str(tmp_path / "b"), "--old", str(old_model),
                                 "--require-compatible", "validation_fraction=0"])
    assert result.exit_code == 2 and "set validation_fraction above 0" in result.output, result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_no_slice_without_validation_fraction(tmp_path):
    path = trainer.train_model(config("validation_fraction=0"), out_dir=tmp_path)
    assert "self_check" not in read_header(path)["extra"]


def test_resume_refuses_another_slice(tmp_path):
    cfg = config()
    meta = {"config": to_dict(cfg), "old_model": None, "held_out": "0123456789abcdef"}
    held_out = _held_out(np.arange(4))
    with pytest.raises(BadInputError, match="other images for the self-check"):
        trainer._check_resume(tmp_path, meta, cfg, None, held_out)
