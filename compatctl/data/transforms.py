"""Tensor-side image transforms: uint8 NHWC -> NCHW, train augmentation, normalization.

Train augmentation is chosen by the config key ``augment`` (:data:`AUGMENTATIONS`): ``crop``
(the default: random shifts, safe for digits and text in images), ``crop_flip`` (also random
left-right mirroring, for natural photos) or ``none``.

Normalization statistics are computed on the training images once and stored in the model's
metadata, so ``embed`` reproduces exactly the preprocessing the model was trained with.
"""

from __future__ import annotations

from collections.abc import Callable

import dataclasses

import numpy as np
import torch

from compatctl.errors import BadInputError

PAD_FRACTION = 8  # random-crop padding = image side / 8: CIFAR's standard 4 pixels at 32x32


def crop_padding(height: int, width: int) -> int:
    """Pixels of zero padding for the random crop: 1/8 of the shorter side, at least 1.

    4 at CIFAR's 32x32 (the standard augmentation); 1 at 8x8, where a 4-pixel shift would cut
    away half of a digit."""
    return max(1, min(height, width) // PAD_FRACTION)


@dataclasses.dataclass
class Normalization:
    """Per-channel mean and std of pixel values scaled to [0, 1]."""

    mean: list[float]
    std: list[float]

    def to_dict(self) -> dict:
        return {"mean": [float(m) for m in self.mean], "std": [float(s) for s in self.std]}

    @staticmethod
    def from_dict(values: dict | None) -> "Normalization | None":
        """The Normalization stored in metadata; None when the metadata has none."""
        if not values:
            return None
        return Normalization(list(values["mean"]), list(values["std"]))


def compute_normalization(images: np.ndarray, chunk: int = 4096) -> Normalization:
    """Per-channel mean/std of uint8 NHWC ``images`` (in chunks, so memory stays small)."""
    channels = images.shape[-1]
    total = np.zeros(channels)
    squares = np.zeros(channels)
    for start in range(0, len(images), chunk):
        pixels = images[start:start + chunk].reshape(-1, channels).astype(np.float64) / 255.0
        total += pixels.sum(axis=0)
        squares += np.square(pixels).sum(axis=0)
    count = max(1, images.size // channels)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return Normalization(mean.tolist(), np.maximum(std, 1e-3).tolist())


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC numpy -> uint8 NCHW torch (a copy laid out contiguously)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def _shifted_windows(batch: torch.Tensor, generator: torch.Generator, flip: bool) -> torch.Tensor:
    """Random shift (zero padding, :func:`crop_padding` pixels) of each image, mirrored left-right at
    random if ``flip``."""
    size, channels, height, width = batch.shape
    pad = crop_padding(height, width)
    padded = torch.nn.functional.pad(batch, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, size), generator=generator)
    rows = offsets[0][:, None] + torch.arange(height)
    cols = offsets[1][:, None] + torch.arange(width)
    if flip:  # drawn after the offsets, so crop_flip repeats the augmentation of earlier releases
        mirrored = torch.rand(size, generator=generator) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    rows, cols = rows.to(batch.device), cols.to(batch.device)
    index_n = torch.arange(size, device=batch.device)[:, None, None, None]
    index_c = torch.arange(channels, device=batch.device)[None, :, None, None]
    return padded[index_n, index_c, rows[:, None, :, None], cols[:, None, None, :]]


# The train-time augmentations, by the name of the config key ``augment``. Flips suit natural
# photos (CIFAR-10) but turn digits and text into other symbols, so the default only shifts.
AUGMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "crop": lambda batch, generator: _shifted_windows(batch, generator, flip=False),
    "crop_flip": lambda batch, generator: _shifted_windows(batch, generator, flip=True),
    "none": lambda batch, generator: batch,
}
DEFAULT_AUGMENTATION = "crop"


def augment(batch: torch.Tensor, generator: torch.Generator, mode: str = DEFAULT_AUGMENTATION) -> torch.Tensor:
    """Augment a uint8 NCHW batch as ``mode`` says (a key of :data:`AUGMENTATIONS`).

    ``crop``: a random crop of the image zero-padded by 1/8 of its side (up to 4 pixels at 32x32);
    ``crop_flip``: the same, and half the images mirrored left-right; ``none``: unchanged.
    Vectorised over the batch (one gather); the same generator state gives the same output.
    The random draws come from ``generator`` on the CPU, then move to the batch's device.
    Raises BadInputError for an unknown ``mode``.
    """
    if mode not in AUGMENTATIONS:
        raise BadInputError(f"augment={mode!r} is not an augmentation; use one of {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[mode](batch, generator)


def standardizer(norm: Normalization | None, device) -> Callable[[torch.Tensor], torch.Tensor]:
    """float pixels in [0, 1] -> ``(x - mean) / std`` (in place), mean/std built once for ``device``."""
    if norm is None:
        return lambda pixels: pixels
    mean = torch.tensor(norm.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return lambda pixels: pixels.sub_(mean).div_(std)


def pixel_normalizer(norm: Normalization | None, device) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 NCHW -> float32 ``(x / 255 - mean) / std``; build once, apply to every batch."""
    standardize = standardizer(norm, device)
    return lambda batch: standardize(batch.float().div_(255.0))


def normalize(batch: torch.Tensor, norm: Normalization | None) -> torch.Tensor:
    """uint8 NCHW -> float32 ``(x / 255 - mean) / std``; only ``/ 255`` when ``norm`` is None."""
    return pixel_normalizer(norm, batch.device)(batch)
