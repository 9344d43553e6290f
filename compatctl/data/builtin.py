"""The built-in generated image dataset (``builtin`` or ``builtin:classes=10,train=5000,...``).

Each class has a smooth random colour prototype. An image is its class prototype blended with
a distractor (another class's prototype, up to ``DISTRACTOR_MAX`` of the mix), shifted by a few
pixels (wrapping around), with random contrast/brightness, low-frequency clutter and pixel
noise. A small CNN learns it well above chance within seconds, but the heavier blends stay
ambiguous, so it does not reach 100 %. Generation is vectorised and deterministic in ``seed``;
train and test images come from separate streams, so ``all`` is exactly train then test.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from compatctl.data import ImageData, item_ids
from compatctl.errors import BadInputError

DISTRACTOR_MAX = 0.65
MAX_SHIFT = 4


@dataclasses.dataclass(frozen=True)
class BuiltinSpec:
    """Parameters of the generated dataset; bounds keep generation small and fast."""

    classes: int = 10
    train: int = 5000
    test: int = 1000
    size: int = 32
    channels: int = 3
    seed: int = 0


BOUNDS = {"classes": (2, 1000), "train": (1, 1_000_000), "test": (1, 1_000_000), "size": (8, 256),
          "channels": (1, 3), "seed": (0, 2**31 - 1)}


def parse_spec(spec: str) -> BuiltinSpec:
    """``"builtin:classes=5,size=16"`` -> BuiltinSpec; every problem named at once."""
    _, _, rest = spec.partition(":")
    values, problems = {}, []
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, _, raw = item.partition("=")
        if key not in BOUNDS:
            problems.append(f"unknown key {key!r} (valid: {', '.join(BOUNDS)})")
        elif not raw.strip().isdigit() or not BOUNDS[key][0] <= int(raw) <= BOUNDS[key][1]:
            problems.append(f"{key}={raw!r} must be a whole number in {BOUNDS[key][0]}..{BOUNDS[key][1]}")
        else:
            values[key] = int(raw)
    if values.get("channels") == 2:
        problems.append("channels=2 is not supported; use 1 (grayscale) or 3 (RGB)")
    if problems:
        raise BadInputError(f"DATA {spec!r}: " + "; ".join(problems))
    return BuiltinSpec(**values)


def _upsample_matrix(low: int, size: int) -> np.ndarray:
    """Linear interpolation from ``low`` points to ``size`` pixels, [size, low]."""
    position = np.linspace(0, low - 1, size)
    left = np.clip(np.floor(position).astype(int), 0, low - 2)
    frac = position - left
    matrix = np.zeros((size, low), np.float32)
    matrix[np.arange(size), left] = 1 - frac
    matrix[np.arange(size), left + 1] = frac
    return matrix


def smooth_fields(rng: np.random.Generator, count: int, low: int, size: int, channels: int) -> np.ndarray:
    """``count`` smooth random fields [count, size, size, channels] (low-res noise, upsampled)."""
    coarse = rng.standard_normal((count, low, low, channels), dtype=np.float32)
    up = _upsample_matrix(low, size)
    return np.einsum("hi,nijc,wj->nhwc", up, coarse, up, optimize=True)


def _shift(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Roll each image by its own random offset of up to MAX_SHIFT pixels."""
    count, height, width = images.shape[:3]
    dy, dx = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, (2, count))
    rows = (np.arange(height)[None, :] - dy[:, None]) % height
    cols = (np.arange(width)[None, :] - dx[:, None]) % width
    return images[np.arange(count)[:, None, None], rows[:, :, None], cols[:, None, :]]


def generate(params: BuiltinSpec, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, size, size, channels] and labels int64 [N] of one split."""
    prototypes = smooth_fields(np.random.default_rng([params.seed, 0]), params.classes, 4,
                               params.size, params.channels) * 1.2
    rng = np.random.default_rng([params.seed, 1 + ("train", "test").index(split)])
    count = getattr(params, split)
    labels = rng.integers(0, params.classes, count)
    distractors = (labels + rng.integers(1, params.classes, count)) % params.classes
    weight = rng.uniform(0, DISTRACTOR_MAX, count).astype(np.float32)[:, None, None, None]
    images = (1 - weight) * prototypes[labels] + weight * prototypes[distractors]
    images = _shift(images, rng)
    contrast = rng.uniform(0.6, 1.4, (count, 1, 1, 1)).astype(np.float32)
    brightness = rng.normal(0, 0.3, (count, 1, 1, params.channels)).astype(np.float32)
    clutter = smooth_fields(rng, count, 8, params.size, params.channels) * 0.5
    noise = rng.standard_normal(images.shape, dtype=np.float32) * 0.35
    images = contrast * images + brightness + clutter + noise
    return np.clip(128 + 48 * images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def load_split(spec: str, split: str, progress=None) -> ImageData:
    """One split of the built-in dataset described by ``spec``."""
    params = parse_spec(spec)
    images, labels = generate(params, split)
    if progress is not None:
        progress(len(labels), len(labels))
    names = [f"class_{i:02d}" for i in range(params.classes)]
    return ImageData(images, labels, item_ids(split, range(len(labels))), names, spec)
