"""Each transform kind on synthetic pairs with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from compatctl.transform import TransformConfig, fit_transform, load_transform
from tests.transform.helpers import clustered_old, nonlinear_new, save_npz, save_set


def _fit(tmp_path, old, new, side=None, **config):
    old_path = save_set(tmp_path / "old", old)
    new_path = save_set(tmp_path / "new", new)
    side_path = save_set(tmp_path / "side", side) if side is not None else None
    out = tmp_path / "h.safetensors"
    report = fit_transform(old_path, new_path, out, side_info_path=side_path,
                           config=TransformConfig(**config))
    return report, load_transform(out)


def test_linear_recovers_an_exact_affine_map(tmp_path):
    rng = np.random.default_rng(0)
    old = rng.normal(size=(400, 6)).astype(np.float32)
    weight, bias = rng.normal(size=(6, 9)), rng.normal(size=9)
    report, transform = _fit(tmp_path, old, (old @ weight + bias).astype(np.float32), kind="linear", ridge=0.0)
    mapped, log_var = transform.apply(old)
    assert log_var is None and transform.kind == "linear" and report["matched"] == 400
    np.testing.assert_allclose(mapped, old @ weight + bias, atol=1e-4)


@pytest.mark.parametrize("old_dim,new_dim", [(8, 8), (5, 12)])
def test_procrustes_recovers_a_scaled_rotation(tmp_path, old_dim, new_dim):
    rng = np.random.default_rng(1)
    old = rng.normal(size=(300, old_dim)).astype(np.float32)
    basis, _ = np.linalg.qr(rng.normal(size=(new_dim, new_dim)))
    new = (2.5 * old @ basis[:old_dim] + 1.0).astype(np.float32)  # orthonormal rows: an isometry, scaled
    report, transform = _fit(tmp_path, old, new, kind="procrustes")
    np.testing.assert_allclose(transform.apply(old)[0], new, atol=1e-4)
    assert report["architecture"]["scale"] == pytest.approx(2.5, rel=1e-5)
    weight = transform.tensors["old.weight"] / 2.5
    np.testing.assert_allclose(weight @ weight.T, np.eye(old_dim), atol=1e-4)


def test_mlp_beats_linear_on_a_nonlinear_teacher(tmp_path):
    old, labels = clustered_old(1500, 8)
    new = nonlinear_new(old, 10)
    linear, _ = _fit(tmp_path / "a", old, new, kind="linear")
    mlp, transform = _fit(tmp_path / "b", old, new, kind="mlp", width=64, branch_width=64, epochs=30,
                          batch_size=128, threads=1)
    assert mlp["validation"]["rel_mse"] < 0.7 * linear["validation"]["rel_mse"]
    assert transform.header["architecture"]["best_epoch"] > 0


def test_side_info_adds_what_the_old_embedding_lacks(tmp_path):
    rng = np.random.default_rng(2)
    old, side = rng.normal(size=(600, 4)).astype(np.float32), rng.normal(size=(600, 3)).astype(np.float32)
    new = np.hstack([old, side]) @ rng.normal(size=(7, 6))
    without, _ = _fit(tmp_path / "a", old, new.astype(np.float32), kind="linear")
    with_side, transform = _fit(tmp_path / "b", old, new.astype(np.float32), side=side, kind="linear",
                               ridge=0.0)
    assert with_side["validation"]["rel_mse"] < 1e-6 and 0.1 < without["validation"]["rel_mse"]
    assert transform.side_info_dim == 3 and transform.side_info_fingerprint == "side"


def test_uncertainty_follows_the_true_error(tmp_path):
    rng = np.random.default_rng(3)
    old = rng.normal(size=(3000, 6)).astype(np.float32)
    noise_scale = np.exp(1.5 * old[:, 0])  # rows with large old[:, 0] are unpredictable
    new = old @ rng.normal(size=(6, 6)) + 0.3 * noise_scale[:, None] * rng.normal(size=(3000, 6))
    report, transform = _fit(tmp_path, old, new.astype(np.float32), kind="mlp", uncertainty=True, width=32,
                             branch_width=32, blocks=1, epochs=30, batch_size=128, threads=1)
    _, log_var = transform.apply(old)
    assert transform.has_uncertainty and log_var.shape == (3000,)
    assert np.corrcoef(log_var, np.log(noise_scale))[0, 1] > 0.4
    assert report["validation"]["uncertainty_error_corr"] > 0.5


def test_rows_are_paired_by_id_not_by_position(tmp_path):
    rng = np.random.default_rng(4)
    old = rng.normal(size=(200, 5)).astype(np.float32)
    weight = rng.normal(size=(5, 5))
    order = rng.permutation(200)[:150]  # the new set holds 150 of the ids, shuffled
    new_path = save_npz(tmp_path / "new.npz", (old[order] @ weight).astype(np.float32), ids=order)
    old_path = save_npz(tmp_path / "old.npz", old)
    report = fit_transform(old_path, new_path, tmp_path / "h.safetensors",
                           config=TransformConfig(kind="linear", ridge=0.0))
    assert report["matched"] == 150 and report["old_rows"] == 200
    assert report["validation"]["rel_mse"] < 1e-8
