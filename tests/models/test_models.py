"""Backbone registry, the embedding model and checkpoint round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compatctl.errors import BadInputError
from compatctl.models import (BACKBONES, ModelSpec, build_model, embed_images, load_model, resolve_device,
                              save_model)

NORM = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}


def test_registry_names():
    assert {"tiny_cnn", "resnet20", "resnet56", "resnet18"} <= set(BACKBONES)


@pytest.mark.parametrize("arch", sorted(BACKBONES))
@pytest.mark.parametrize("channels", [1, 3])
def test_backbone_forward_shapes(arch, channels):
    backbone = BACKBONES[arch](channels)
    assert backbone(torch.randn(2, channels, 16, 16)).shape == (2, backbone.feature_dim)


def test_cifar_resnet_sizes():
    params = lambda arch: sum(p.numel() for p in BACKBONES[arch](3).parameters())  # noqa: E731
    assert 0.26e6 < params("resnet20") < 0.28e6  # He et al. 2016 table 6: 0.27M
    assert 0.84e6 < params("resnet56") < 0.87e6  # 0.85M


def test_model_outputs_and_basis():
    model = build_model(ModelSpec("tiny_cnn", embedding_dim=6, num_classes=4, extra_dims=2,
                                  basis_transform=True)).eval()
    out = model(torch.randn(3, 3, 16, 16))
    assert out.feature.shape == out.embedding.shape == (3, 8) and out.logits.shape == (3, 4)
    assert model.embedding_width == 8
    basis = model.basis.weight
    assert torch.allclose(basis @ basis.T, torch.eye(8), atol=1e-5)
    assert torch.allclose(out.embedding.norm(dim=1), out.feature.norm(dim=1), atol=1e-5)
    assert torch.equal(model.embed(torch.zeros(1, 3, 16, 16)), model(torch.zeros(1, 3, 16, 16)).embedding)


def test_unknown_architecture_lists_valid():
    with pytest.raises(BadInputError, match="unknown architecture 'vit'.*resnet20"):
        build_model(ModelSpec("vit", 8, 2))


@pytest.mark.parametrize("basis", [False, True])
def test_save_load_round_trip_exact(tmp_path, basis):
    torch.manual_seed(0)
    model = build_model(ModelSpec("tiny_cnn", 8, 5, extra_dims=2 if basis else 0, basis_transform=basis))
    with torch.no_grad():  # move the basis and BN stats away from their initial values
        if basis:
            model.basis.parametrizations.weight.original.add_(0.3 * torch.randn(10, 10))
        model.train()(torch.randn(16, 3, 8, 8))
    model.eval()
    path = tmp_path / "m.safetensors"
    fingerprint = save_model(path, model, config={"lr": 0.1}, normalization=NORM, lineage={"old": None},
                             class_names=list("abcde"), image_shape=(8, 8, 3))
    loaded, header = load_model(path)
    assert not loaded.training and header["fingerprint"] == fingerprint
    assert header["config"] == {"lr": 0.1} and header["image_shape"] == [8, 8, 3]
    assert header["embedding_width"] == model.embedding_width and header["class_names"] == list("abcde")
    images = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    before = embed_images(model, header, images, batch_size=7)
    after = embed_images(loaded, header, images, batch_size=7)
    assert before.dtype == np.float32 and np.array_equal(before, after)
    if basis:
        assert torch.equal(model.basis.weight, loaded.basis.weight)
    assert np.allclose(before, embed_images(loaded, header, images, batch_size=20), atol=1e-5)
    assert save_model(tmp_path / "again.safetensors", loaded, config={}, normalization=NORM, lineage={}) == fingerprint


def test_load_model_rejects_other_files(tmp_path):
    from compatctl.store import save_artifact

    save_artifact(tmp_path / "t.safetensors", {"w": np.zeros(2, np.float32)}, kind="transform", meta={})
    with pytest.raises(BadInputError, match="expected a model file but this is a transform"):
        load_model(tmp_path / "t.safetensors")
    with pytest.raises(BadInputError, match="is a directory, not a model"):
        load_model(tmp_path)


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(BadInputError, match="use auto, cpu or cuda"):
        resolve_device("tpu")


@pytest.mark.parametrize("normalization", [NORM, None])
def test_embed_images_matches_training_preprocessing(normalization):
    from compatctl.data.transforms import Normalization, normalize, to_tensor

    model = build_model(ModelSpec("tiny_cnn", 4, 3)).eval()
    images = np.random.default_rng(2).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    with torch.inference_mode():
        expected = model.embed(normalize(to_tensor(images), Normalization.from_dict(normalization))).numpy()
    assert np.array_equal(embed_images(model, {"normalization": normalization}, images, batch_size=10), expected)
