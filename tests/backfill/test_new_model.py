"""`--new-model MODEL --data DATA`: only the budget's rows are embedded; bad models and data refused."""

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.store import open_embeddings
from tests.backfill.test_cli import assert_bad_input

DATA = "builtin:classes=3,train=20,test=40,size=8"


def save_tiny_model(path, seed: int, dim: int):
    import torch

    from compatctl.data import load_data
    from compatctl.data.transforms import compute_normalization
    from compatctl.models import ModelSpec, build_model, save_model

    torch.manual_seed(seed)
    data = load_data(DATA, "train")
    model = build_model(ModelSpec("tiny_cnn", embedding_dim=dim, num_classes=3)).eval()
    save_model(path, model, config={}, normalization=compute_normalization(data.images).to_dict(), lineage={},
               class_names=data.class_names, image_shape=data.image_shape)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from types import SimpleNamespace

    from compatctl.models.embed import embed_dataset
    from compatctl.transform import fit_transform, load_transform_config

    root = tmp_path_factory.mktemp("new-model")
    world = SimpleNamespace(old=save_tiny_model(root / "old.safetensors", 0, 4),
                            new=save_tiny_model(root / "new.safetensors", 1, 6),
                            other=save_tiny_model(root / "other.safetensors", 2, 6))
    world.gallery = embed_dataset(world.old, DATA, root / "old-emb", split="test", shard_rows=16)
    world.new_set = embed_dataset(world.new, DATA, root / "new-emb", split="test")
    world.transform = root / "t.safetensors"
    fit_transform(world.gallery, world.new_set, world.transform,
                  config=load_transform_config(None, ["kind=linear", "min_matched=10"]))
    return world


def backfill_args(models, out, *extra):
    return ["backfill", str(models.gallery), "--transform", str(models.transform), "--out", str(out),
            "--budget", "0.25", *extra]


def test_only_the_budget_rows_are_embedded(runner, models, tmp_path, monkeypatch):
    import compatctl.models

    embedded = []
    real = compatctl.models.embed_images
    monkeypatch.setattr(compatctl.models, "embed_images",
                        lambda model, header, images, **kw: embedded.append(len(images)) or real(model, header, images, **kw))
    result = runner.invoke(app, backfill_args(models, tmp_path / "g", "--new-model", str(models.new), "--data", DATA))
    assert result.exit_code == 0, result.output
    assert sum(embedded) == 10  # ceil(0.25 * 40), nothing more
    out, new = open_embeddings(tmp_path / "g").read_all(), open_embeddings(models.new_set).read_all()
    picked = out.provenance == 2
    np.testing.assert_array_equal(out.ids, new.ids)
    np.testing.assert_allclose(out.embeddings[picked], new.embeddings[picked], rtol=1e-4, atol=1e-5)


def test_new_model_of_another_fingerprint(runner, models, tmp_path):
    result = runner.invoke(app, backfill_args(models, tmp_path / "g", "--new-model", str(models.other), "--data", DATA))
    assert_bad_input(result, "differs from the new model the transform was fit on")
    forced = runner.invoke(app, backfill_args(models, tmp_path / "g", "--new-model", str(models.other), "--data",
                                              DATA, "--force"))
    assert forced.exit_code == 0, forced.output


def test_new_model_of_another_width(runner, models, tmp_path):
    result = runner.invoke(app, backfill_args(models, tmp_path / "g", "--new-model", str(models.old), "--data", DATA,
                                              "--force"))
    assert_bad_input(result, "makes 4-d embeddings, but the transform maps to 6-d")


def test_data_lacking_gallery_ids(runner, models, tmp_path):
    small = "builtin:classes=3,train=20,test=5,size=8"
    result = runner.invoke(app, backfill_args(models, tmp_path / "g", "--new-model", str(models.new), "--data", small))
    assert_bad_input(result, f"--data {small}: lacks")
    assert "pass the dataset the gallery was embedded from" in result.output.replace("\n", " ")


def test_new_model_without_data(runner, models, tmp_path):
    result = runner.invoke(app, backfill_args(models, tmp_path / "g", "--new-model", str(models.new)))
    assert_bad_input(result, "--new-model needs --data DATA")


def test_data_of_another_image_size(runner, models, tmp_path):
    wider = "builtin:classes=3,train=20,test=40,size=16"  # same items and ids, 16x16 images
    result = runner.invoke(app, backfill_args(models, tmp_path / "g", "--new-model", str(models.new), "--data", wider))
    assert_bad_input(result, "expects 8x8x3")
