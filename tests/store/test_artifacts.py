import numpy as np
import pytest

from compatctl.errors import BadInputError, IntegrityError
from compatctl.store import expect_kind, load_arrays, read_header, save_artifact


def test_save_and_read_header_without_tensors(tmp_path):
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    fp = save_artifact(tmp_path / "t.safetensors", tensors, "transform", {"config": {"a": 1}})
    header = read_header(tmp_path / "t.safetensors")
    assert header["kind"] == "transform" and header["fingerprint"] == fp and header["config"] == {"a": 1}
    assert save_artifact(tmp_path / "u.safetensors", tensors, "transform", {}) == fp  # names the weights
    np.testing.assert_array_equal(load_arrays(tmp_path / "t.safetensors")["w"], tensors["w"])
    with pytest.raises(BadInputError, match="expected a model file but this is a transform"):
        expect_kind(tmp_path / "t.safetensors", "model")


def test_garbage_and_future_versions(tmp_path):
    (tmp_path / "g.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(IntegrityError, match="not a readable safetensors"):
        read_header(tmp_path / "g.safetensors")
    save_artifact(tmp_path / "v.safetensors", {"w": np.zeros(1)}, "model", {"format_version": 99})
    with pytest.raises(BadInputError, match="format_version 99"):
        read_header(tmp_path / "v.safetensors")
