"""`compatctl fit-transform` end to end and every bad-input case (exit 2, one clear line)."""

from __future__ import annotations

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.store import EmbeddingBlock, EmbeddingSetWriter, write_embedding_set
from tests.transform.helpers import clustered_old, nonlinear_new, save_npz, save_set


@pytest.fixture
def pair(tmp_path):
    old, labels = clustered_old(300, 6)
    return (save_set(tmp_path / "old", old, labels=labels),
            save_set(tmp_path / "new", nonlinear_new(old, 8), labels=labels), tmp_path)


def _run(runner, *args):
    result = runner.invoke(app, ["fit-transform", *map(str, args)])
    return result, result.stdout + (result.stderr if result.stderr_bytes is not None else "")


def test_fit_transform_writes_an_mlp_with_uncertainty(runner, pair):
    old, new, tmp = pair
    result, text = _run(runner, old, new, "--out", tmp / "h.safetensors", "uncertainty=true", "epochs=3", "lr=3e-3",
                        "width=16", "branch_width=16")
    assert result.exit_code == 0, text
    assert "matched pairs" in text and "300" in text and "val top1" in text
    inspect = runner.invoke(app, ["inspect", str(tmp / "h.safetensors")])
    assert "transform" in inspect.stdout and "mlp" in inspect.stdout


def test_config_file_and_override(runner, pair):
    old, new, tmp = pair
    (tmp / "h.yaml").write_text("kind: procrustes\nvalidation_fraction: 0.2\n")
    result, text = _run(runner, old, new, "--out", tmp / "h.safetensors", "--config", tmp / "h.yaml", "kind=linear", "cv_folds=0")
    assert result.exit_code == 0, text
    assert "transform linear" in text and "240 / 60" in text


def _assert_bad(result, text, *fragments):
    assert result.exit_code == 2, text
    assert "Traceback" not in text and "error:" in text
    assert len([line for line in text.splitlines() if line.strip()]) == 1, text  # no progress bar before it
    for fragment in fragments:
        assert fragment in text, text


def test_no_overlapping_ids(runner, tmp_path):
    rng = np.random.default_rng(0)
    old = save_npz(tmp_path / "old.npz", rng.normal(size=(50, 4)), ids=np.arange(50))
    new = save_npz(tmp_path / "new.npz", rng.normal(size=(50, 4)), ids=np.arange(100, 150))
    _assert_bad(*_run(runner, old, new, "--out", tmp_path / "h.safetensors"), "share no ids")


def test_too_few_matched(runner, tmp_path):
    rng = np.random.default_rng(0)
    old = save_npz(tmp_path / "old.npz", rng.normal(size=(50, 4)), ids=np.arange(50))
    new = save_npz(tmp_path / "new.npz", rng.normal(size=(50, 4)), ids=np.arange(40, 90))
    _assert_bad(*_run(runner, old, new, "--out", tmp_path / "h.safetensors", "min_matched=20"),
                "only 10 ids", "min_matched=20")


def test_side_info_must_cover_old_ids(runner, pair):
    old, new, tmp = pair
    side = save_npz(tmp / "side.npz", np.ones((250, 3)), ids=np.arange(250))
    _assert_bad(*_run(runner, old, new, "--out", tmp / "h.safetensors", "--side-info", side),
                "lacks side-info for 50 ids", "250")


def test_nan_in_an_embedding_set(runner, pair, monkeypatch):
    old, _, tmp = pair
    embeddings = np.ones((300, 8), np.float32)
    embeddings[7, 2] = np.nan
    # compatctl's writers refuse NaN rows; a set from an older version or another tool may hold them
    monkeypatch.setattr(EmbeddingSetWriter, "_refuse_non_finite", lambda *args: None)
    write_embedding_set(tmp / "nan", EmbeddingBlock(embeddings, np.arange(300)), header={})
    _assert_bad(*_run(runner, old, tmp / "nan", "--out", tmp / "h.safetensors"), "NaN", "[7]")


def test_nan_in_an_npz(runner, pair):
    old, _, tmp = pair
    embeddings = np.ones((300, 8))
    embeddings[3, 0] = np.nan
    _assert_bad(*_run(runner, old, save_npz(tmp / "nan.npz", embeddings), "--out", tmp / "h.safetensors"), "NaN")


def test_discriminative_term_needs_labels(runner, tmp_path):
    rng = np.random.default_rng(0)
    old = save_npz(tmp_path / "old.npz", rng.normal(size=(200, 4)))
    new = save_npz(tmp_path / "new.npz", rng.normal(size=(200, 4)))
    _assert_bad(*_run(runner, old, new, "--out", tmp_path / "h.safetensors", "discriminative_weight=1"),
                "needs class labels", "discriminative_weight=0")


def test_uncertainty_needs_mlp_and_bad_keys_are_all_reported(runner, pair):
    old, new, tmp = pair
    _assert_bad(*_run(runner, old, new, "--out", tmp / "h.safetensors", "kind=linear", "uncertainty=true"),
                "needs kind: mlp")
    _assert_bad(*_run(runner, old, new, "--out", tmp / "h.safetensors", "kind=cubic", "epochz=3", "lr=-1"),
                "kind", "epochz", "lr")


def test_procrustes_refuses_side_info(runner, pair):
    old, new, tmp = pair
    side = save_set(tmp / "side", np.ones((300, 3)))
    _assert_bad(*_run(runner, old, new, "--out", tmp / "h.safetensors", "--side-info", side, "kind=procrustes"),
                "procrustes takes no side-info")


def test_a_model_file_is_not_embeddings(runner, pair):
    from compatctl.store import save_artifact

    old, new, tmp = pair
    save_artifact(tmp / "m.safetensors", {"w": np.zeros(2, np.float32)}, "model", {})
    _assert_bad(*_run(runner, tmp / "m.safetensors", new, "--out", tmp / "h.safetensors"), "not embeddings")
