"""train-new on tiny builtin data: every method trains and writes a rebuildable model; resume is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compatctl.config import to_dict
from compatctl.models import embed_images, load_model
from compatctl.train import train_model
from compatctl.train.config import METHOD_NAMES, config_differences
from compatctl.train.methods import REGISTRY
from tests.train.helpers import config


def test_registry_matches_config_names():
    assert set(REGISTRY) == set(METHOD_NAMES)


@pytest.mark.parametrize("method, extra", [
    ("independent", []), ("l2", []), ("bct", []), ("bct", ["bct.synthesize=all"]),
    ("bt2", ["bt2.extra_dims=4"]), ("contrastive", ["embedding_dim=4"]),
])
def test_each_method_writes_a_rebuildable_model(tmp_path, old_model, method, extra):
    needs_old = REGISTRY[method].needs_old
    path = train_model(config(f"method={method}", *extra), out_dir=tmp_path,
                       old_model=old_model if needs_old else None)
    model, header = load_model(path)
    images = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    embeddings = embed_images(model, header, images)
    assert np.isfinite(embeddings).all() and embeddings.shape[0] == 5
    assert header["lineage"]["method"] == method
    if needs_old:
        assert header["lineage"]["old_model"] == load_model(old_model)[1]["fingerprint"]
    assert header["config"]["method"] == method
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1] and {"loss", "train_accuracy", "images_per_s", "seconds"} <= set(metrics[0])


def test_bt2_shape_and_compatible_dims(tmp_path, old_model):
    path = train_model(config("method=bt2", "bt2.extra_dims=4"), out_dir=tmp_path, old_model=old_model)
    model, header = load_model(path)
    assert model.embedding_width == 12 and header["extra"]["compatible_dims"] == 8
    weight = model.basis.weight.detach()
    assert torch.allclose(weight @ weight.T, torch.eye(12), atol=1e-4)  # orthonormal basis


def test_resume_is_bit_for_bit(tmp_path):
    straight = train_model(config("epochs=2"), out_dir=tmp_path / "straight")
    stopped = tmp_path / "stopped"
    _train_one_epoch_of_two(stopped)
    resumed = train_model(config("epochs=2"), out_dir=stopped, resume=True)
    assert load_model(straight)[1]["fingerprint"] == load_model(resumed)[1]["fingerprint"]
    check = load_model(straight)[1]["extra"]["self_check"]  # the same held-out slice, the same report
    assert check["images"] > 0 and check == load_model(resumed)[1]["extra"]["self_check"]
    lines = (stopped / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def _train_one_epoch_of_two(out_dir):
    """Run a 2-epoch config but stop after epoch 1 (as if killed), via the progress hook."""

    class Stop(Exception):
        pass

    def stop_after_first_epoch(event):
        if event["event"] == "epoch" and event["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train_model(config("epochs=2"), out_dir=out_dir, progress=stop_after_first_epoch)


def test_seeded_runs_are_identical(tmp_path):
    a = train_model(config(), out_dir=tmp_path / "a")
    b = train_model(config(), out_dir=tmp_path / "b")
    assert load_model(a)[1]["fingerprint"] == load_model(b)[1]["fingerprint"]


def test_config_differences_names_nested_keys():
    a, b = to_dict(config()), to_dict(config("bct.weight=2", "lr=0.1", "device=cpu"))
    assert config_differences(a, b) == ["bct.weight", "lr"]


def test_contrastive_views_are_seeded():
    from compatctl.train.views import contrastive_view

    images = torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)
    kwargs = dict(min_scale=0.3, jitter=0.4, grayscale_prob=0.2)
    one = contrastive_view(images, torch.Generator().manual_seed(1), **kwargs)
    two = contrastive_view(images, torch.Generator().manual_seed(1), **kwargs)
    assert torch.equal(one, two) and one.min() >= 0 and one.max() <= 1
