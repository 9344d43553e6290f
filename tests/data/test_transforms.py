"""Normalization, tensor layout and train augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compatctl.data.transforms import (AUGMENTATIONS, Normalization, augment, compute_normalization, normalize,
                                       to_tensor)
from compatctl.errors import BadInputError
from compatctl.train.config import AUGMENT_NAMES, TrainConfig


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
    first = augment(batch, torch.Generator().manual_seed(5), "crop_flip")
    again = augment(batch, torch.Generator().manual_seed(5), "crop_flip")
    other = augment(batch, torch.Generator().manual_seed(6), "crop_flip")
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


def _column_ramps(count: int, size: int = 8) -> torch.Tensor:
    """Images whose pixel values rise from left to right (10, 20, ...): left-right asymmetric."""
    ramp = torch.arange(1, size + 1, dtype=torch.uint8) * 10
    return ramp.view(1, 1, 1, size).expand(count, 3, size, size).contiguous()


def _mirrored(images: torch.Tensor) -> torch.Tensor:
    """Per image: do its non-zero (not padding) values fall from left to right?"""
    row = images[:, 0, images.shape[2] // 2].float()
    return torch.stack([(r[r > 0].diff() < 0).any() for r in row])


def test_crop_shifts_but_never_mirrors():
    batch = _column_ramps(64)
    cropped = augment(batch, torch.Generator().manual_seed(3), "crop")
    assert cropped.shape == batch.shape and cropped.dtype == torch.uint8
    assert not _mirrored(cropped).any()
    assert not torch.equal(cropped, batch) and (cropped == 0).any()  # shifted, zero padding shows
    assert torch.equal(cropped, augment(batch, torch.Generator().manual_seed(3)))  # crop is the default
    flipped = _mirrored(augment(batch, torch.Generator().manual_seed(3), "crop_flip"))
    assert 0 < int(flipped.sum()) < 64


def test_crop_is_deterministic_and_none_is_identity():
    batch = to_tensor(np.random.default_rng(2).integers(1, 256, (16, 8, 8, 1), dtype=np.uint8))
    first = augment(batch, torch.Generator().manual_seed(7), "crop")
    assert torch.equal(first, augment(batch, torch.Generator().manual_seed(7), "crop"))
    assert not torch.equal(first, augment(batch, torch.Generator().manual_seed(8), "crop"))
    assert torch.equal(augment(batch, torch.Generator().manual_seed(7), "none"), batch)


def test_augmentation_names_match_the_config():
    assert set(AUGMENTATIONS) == set(AUGMENT_NAMES) and TrainConfig().augment == "crop"
    with pytest.raises(BadInputError, match="crop, crop_flip, none"):
        augment(_column_ramps(2), torch.Generator(), "flip")


@pytest.mark.parametrize("side, pad", [(8, 1), (16, 2), (32, 4), (64, 8)])
def test_crop_shift_scales_with_the_image(side, pad):
    """The crop shifts by at most 1/8 of the side (4 pixels at 32x32, 1 at the 8x8 digits)."""
    from compatctl.data.transforms import augment, crop_padding

    assert crop_padding(side, side) == pad
    image = torch.zeros(1, 1, side, side, dtype=torch.uint8)
    image[0, 0, side // 2, side // 2] = 255  # one bright pixel in the middle
    shifts = set()
    for seed in range(60):
        moved = augment(image, torch.Generator().manual_seed(seed), "crop")[0, 0]
        row, col = (int(v) for v in torch.nonzero(moved)[0])
        shifts.add((row - side // 2, col - side // 2))
    assert max(max(abs(r), abs(c)) for r, c in shifts) == pad
