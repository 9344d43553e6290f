"""Numpy apply: equals the torch forward, survives a save/load round trip, checks inputs."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from compatctl.errors import BadInputError
from compatctl.store import open_embeddings, save_artifact
from compatctl.transform import Transform, TransformConfig, check_compatible, fit_transform, load_transform
from tests.transform.helpers import save_set


def _random_net(side_dim: int, uncertainty: bool):
    import torch

    from compatctl.transform.mlp import ForwardTransformNet

    torch.manual_seed(0)
    config = TransformConfig(width=24, branch_width=16, blocks=2, uncertainty=uncertainty)
    net = ForwardTransformNet(7, 5, side_dim, config)
    with torch.no_grad():  # make every folded piece non-trivial
        for parameter in net.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
        for name in ("old", "side", "new"):
            getattr(net, f"{name}_mean").normal_()
            getattr(net, f"{name}_scale").uniform_(0.5, 2.0)
    return net.eval()


def _header(side_dim: int, uncertainty: bool) -> dict:
    return {"transform_kind": "mlp", "old_dim": 7, "new_dim": 5, "side_info_dim": side_dim,
            "uncertainty": uncertainty, "old_fingerprint": "old-model", "new_fingerprint": "new-model",
            "side_info_fingerprint": "side-model" if side_dim else None}


@pytest.mark.parametrize("side_dim,uncertainty", [(0, False), (3, True)])
def test_numpy_apply_equals_torch_forward(side_dim, uncertainty):
    import torch

    from compatctl.transform.mlp import export_numpy

    net = _random_net(side_dim, uncertainty)
    rng = np.random.default_rng(0)
    old = rng.normal(size=(50, 7)).astype(np.float32)
    side = rng.normal(size=(50, side_dim)).astype(np.float32) if side_dim else None
    with torch.no_grad():
        expected, expected_s = net.forward_raw(torch.from_numpy(old), None if side is None else torch.from_numpy(side))
    mapped, log_var = Transform(_header(side_dim, uncertainty), export_numpy(net)).apply(old, side, block_rows=16)
    np.testing.assert_allclose(mapped, expected.numpy(), rtol=1e-4, atol=1e-4)
    if uncertainty:
        np.testing.assert_allclose(log_var, expected_s.numpy(), rtol=1e-4, atol=1e-4)
    else:
        assert log_var is None


def test_save_load_round_trip_gives_identical_output(tmp_path):
    from compatctl.transform.mlp import export_numpy

    tensors = export_numpy(_random_net(3, True))
    fingerprint = save_artifact(tmp_path / "h.safetensors", tensors, "transform", _header(3, True))
    loaded = load_transform(tmp_path / "h.safetensors")
    rng = np.random.default_rng(1)
    old, side = rng.normal(size=(40, 7)).astype(np.float32), rng.normal(size=(40, 3)).astype(np.float32)
    before, after = Transform(_header(3, True), tensors).apply(old, side), loaded.apply(old, side)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert loaded.fingerprint == fingerprint and loaded.side_info_dim == 3 and loaded.has_uncertainty


def test_apply_does_not_import_torch(tmp_path):
    import subprocess

    rng = np.random.default_rng(2)
    save_artifact(tmp_path / "h.safetensors", {"old.weight": rng.normal(size=(4, 3)).astype(np.float32),
                                               "bias": np.zeros(3, np.float32)}, "transform",
                  {"transform_kind": "linear", "old_dim": 4, "new_dim": 3})
    code = ("import sys, numpy as np; from compatctl.transform import load_transform; "
            f"load_transform({str(tmp_path / 'h.safetensors')!r}).apply(np.ones((2, 4), np.float32)); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_apply_rejects_wrong_dims_and_side_info():
    transform = Transform(_header(3, False), {})
    with pytest.raises(BadInputError, match=r"expects \[rows, 7\]"):
        transform.apply(np.zeros((2, 6), np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(BadInputError, match="side-info"):
        transform.apply(np.zeros((2, 7), np.float32))


def test_load_transform_refuses_other_files(tmp_path):
    save_artifact(tmp_path / "m.safetensors", {"w": np.zeros(2, np.float32)}, "model", {})
    with pytest.raises(BadInputError, match="expected a transform"):
        load_transform(tmp_path / "m.safetensors")


def test_check_compatible_dims_and_fingerprints(tmp_path):
    rng = np.random.default_rng(3)
    old = save_set(tmp_path / "old", rng.normal(size=(200, 4)), fingerprint="old-model")
    new = save_set(tmp_path / "new", rng.normal(size=(200, 3)), fingerprint="new-model")
    fit_transform(old, new, tmp_path / "h.safetensors", config=TransformConfig(kind="linear"))
    transform = load_transform(tmp_path / "h.safetensors")
    assert transform.old_fingerprint == "old-model" and transform.new_fingerprint == "new-model"
    assert check_compatible(transform, open_embeddings(old)) == []
    other = open_embeddings(save_set(tmp_path / "other", rng.normal(size=(10, 4)), fingerprint="another-model"))
    with pytest.raises(BadInputError, match="--force"):
        check_compatible(transform, other)
    assert "--force" in check_compatible(transform, other, force=True)[0]
    wide = open_embeddings(save_set(tmp_path / "wide", rng.normal(size=(10, 5)), fingerprint="old-model"))
    with pytest.raises(BadInputError, match="5-d"):
        check_compatible(transform, wide, force=True)
