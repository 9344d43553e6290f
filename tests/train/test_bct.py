"""BCT's influence classifier: synthesized rows, norm matching, and the cosine (scaled) form."""

from __future__ import annotations

import pytest
import torch

from compatctl.train.methods import REGISTRY, influence_classifier, old_classifier
from compatctl.train.setup import build_setup
from tests.train.helpers import config


def setup_for(old_model, *overrides: str):
    return build_setup(config("method=bct", *overrides), REGISTRY["bct"], old_model)


def influence_loss(setup, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The BCT term alone (the model's own CE subtracted) for a fixed embedding."""
    method_loss = REGISTRY["bct"].build(setup)

    class Fixed(torch.nn.Module):
        def forward(self, x):
            from compatctl.models import ModelOutput
            return ModelOutput(embedding, embedding, torch.zeros(len(embedding), setup.num_classes))

    views = setup.images[:len(embedding)]
    total = method_loss.loss(Fixed(), (views, labels)).loss
    return total - torch.nn.functional.cross_entropy(torch.zeros(len(embedding), setup.num_classes), labels)


def test_missing_keeps_old_rows_and_match_norms_rescales_synthesized_rows(old_model):
    plain = setup_for(old_model, "bct.synthesize=missing")
    old_weight, old_bias = old_classifier(plain.old)
    weight, bias = influence_classifier(plain)
    assert torch.equal(weight[:2], old_weight[:2]) and torch.equal(bias[:2], old_bias[:2])
    matched, _ = influence_classifier(setup_for(old_model, "bct.synthesize=missing", "bct.match_norms=true"))
    assert torch.equal(matched[:2], old_weight[:2])
    target = old_weight.norm(dim=1).mean()
    assert torch.allclose(matched[2:].norm(dim=1), target.expand(2), rtol=1e-5, atol=1e-6)
    assert torch.allclose(torch.nn.functional.normalize(matched[2:], dim=1),
                          torch.nn.functional.normalize(weight[2:], dim=1), atol=1e-6)  # same directions


def test_cosine_form_ignores_embedding_norm_and_raw_form_does_not(old_model):
    embedding = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 0, 2])
    cosine = setup_for(old_model, "bct.classifier_scale=16")
    assert torch.allclose(influence_loss(cosine, embedding, labels), influence_loss(cosine, 5 * embedding, labels))
    raw = setup_for(old_model, "bct.classifier_scale=0")
    assert not torch.allclose(influence_loss(raw, embedding, labels), influence_loss(raw, 5 * embedding, labels))


def test_cosine_form_logits_are_scaled_cosines(old_model):
    setup = setup_for(old_model, "bct.classifier_scale=4", "bct.synthesize=all")
    weight, _ = influence_classifier(setup)
    embedding = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 3])
    cosines = torch.nn.functional.cosine_similarity(embedding[:, None], weight[None], dim=2)
    expected = torch.nn.functional.cross_entropy(4 * cosines, labels)
    assert torch.allclose(influence_loss(setup, embedding, labels), expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["none", "crop", "crop_flip"])
def test_supervised_methods_augment_as_configured(old_model, mode):
    """The ``augment`` key reaches the training batches (``none`` leaves them untouched)."""
    from compatctl.data.transforms import augment

    setup = setup_for(old_model, f"augment={mode}")
    images, labels = setup.images[:8], setup.labels[:8]
    views, _ = REGISTRY["bct"].build(setup).prepare(images, labels, torch.Generator().manual_seed(3))
    assert torch.equal(views, augment(images, torch.Generator().manual_seed(3), mode))
    assert torch.equal(views, images) == (mode == "none")
