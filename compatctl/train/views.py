"""SimCLR-style random views made of batched torch ops (crop + flip + colour jitter + grayscale).

Random parameters are drawn on the CPU from the caller's generator, so a run gives the same
views on CPU and CUDA and under --resume. One ``affine_grid``/``grid_sample`` call does the
random resized crop and the flip for the whole batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ITU-R 601 luma weights for RGB -> grey.
LUMA = (0.299, 0.587, 0.114)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_resized_crop(images: torch.Tensor, generator: torch.Generator, min_scale: float) -> torch.Tensor:
    """Crop a random area fraction in [min_scale, 1] (aspect 3/4..4/3), flip half, resize back."""
    n = images.shape[0]
    area = _uniform(n, min_scale, 1.0, generator)
    aspect = torch.exp(_uniform(n, math.log(3 / 4), math.log(4 / 3), generator))
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = (2 * torch.rand(n, generator=generator) - 1) * (1 - width)
    centre_y = (2 * torch.rand(n, generator=generator) - 1) * (1 - height)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width * flip, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _grey(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(LUMA, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def colour_jitter(images: torch.Tensor, generator: torch.Generator, strength: float,
                  grayscale_prob: float, apply_prob: float = 0.8) -> torch.Tensor:
    """Random brightness, contrast and (RGB only) saturation, then random grayscale; values in [0, 1]."""
    n, channels = images.shape[:2]

    def factor() -> torch.Tensor:
        jitter = _uniform(n, 1 - strength, 1 + strength, generator)
        keep = torch.rand(n, generator=generator) >= apply_prob
        return torch.where(keep, 1.0, jitter).view(n, 1, 1, 1).to(images.device)

    images = images * factor()
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * factor() + mean
    if channels == 3:
        grey = _grey(images)
        images = (images - grey) * factor() + grey
        to_grey = (torch.rand(n, generator=generator) < grayscale_prob).view(n, 1, 1, 1).to(images.device)
        images = torch.where(to_grey, _grey(images).expand_as(images), images)
    return images.clamp(0.0, 1.0)


def contrastive_view(images_uint8: torch.Tensor, generator: torch.Generator, *, min_scale: float,
                     jitter: float, grayscale_prob: float) -> torch.Tensor:
    """One random view of a uint8 NCHW batch, as float32 in [0, 1] (normalize afterwards)."""
    images = images_uint8.float() / 255.0
    images = random_resized_crop(images, generator, min_scale)
    return colour_jitter(images, generator, jitter, grayscale_prob)


def nt_xent(first: torch.Tensor, second: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's NT-Xent loss for two views of the same N items; also returns #positives ranked first.

    Each of the 2N embeddings must pick its partner among the 2N - 1 others.
    """
    n = first.shape[0]
    embeddings = F.normalize(torch.cat([first, second]), dim=1)
    similarity = embeddings @ embeddings.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(first.device)
    loss = F.cross_entropy(similarity, partner)
    correct = (similarity.argmax(dim=1) == partner).sum()
    return loss, correct
