"""Normalization, tensor layout and train augmentation."""

from __future__ import annotations

import numpy as np
import torch

from compatctl.data.transforms import Normalization, augment, compute_normalization, normalize, to_tensor


def test_normalization_matches_numpy_and_round_trips():
    images = np.random.default_rng(0).integers(0, 256, (50, 6, 6, 3), dtype=np.uint8)
    norm = compute_normalization(images, chunk=7)
    pixels = images.reshape(-1, 3) / 255.0
    assert np.allclose(norm.mean, pixels.mean(0)) and np.allclose(norm.std, pixels.std(0))
    assert Normalization.from_dict(norm.to_dict()) == norm
    out = normalize(to_tensor(images), norm)
    assert out.dtype == torch.float32 and out.shape == (50, 3, 6, 6)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)


def test_to_tensor_layout():
    images = np.arange(2 * 3 * 4 * 1, dtype=np.uint8).reshape(2, 3, 4, 1)
    tensor = to_tensor(images)
    assert tensor.shape == (2, 1, 3, 4) and tensor[1, 0, 2, 3] == images[1, 2, 3, 0]


def test_augment_deterministic_and_crop_flip():
    batch = to_tensor(np.random.default_rng(1).integers(1, 256, (64, 8, 8, 3), dtype=np.uint8))
    first = augment(batch, torch.Generator().manual_seed(5))
    again = augment(batch, torch.Generator().manual_seed(5))
    other = augment(batch, torch.Generator().manual_seed(6))
    assert first.shape == batch.shape and first.dtype == torch.uint8
    assert torch.equal(first, again) and not torch.equal(first, other)
    # each output is a (possibly flipped) shifted window of the zero-padded input
    padded = torch.nn.functional.pad(batch, (4, 4, 4, 4))
    for n in range(8):
        windows = [w for dy in range(9) for dx in range(9)
                   for w in (padded[n, :, dy:dy + 8, dx:dx + 8], padded[n, :, dy:dy + 8, dx:dx + 8].flip(-1))]
        assert any(torch.equal(first[n], w) for w in windows)
    # some images get zero padding and some get flipped
    assert (first == 0).any()
