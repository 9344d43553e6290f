"""Closed-form baselines: ridge least squares and orthogonal Procrustes (numpy, float64)."""

from __future__ import annotations

import numpy as np

from compatctl.errors import BadInputError
from compatctl.transform.config import TransformConfig
from compatctl.transform.pairs import Pairs


def fit_linear(train: Pairs, validation: Pairs, config: TransformConfig, progress=None) -> tuple[dict, dict]:
    """Ridge least squares [old, side-info] -> new with a bias.

    The ridge strength is ``config.ridge`` times the mean eigenvalue of the input covariance,
    so it does not depend on the embedding scale. Returns (tensors, architecture).
    """
    inputs = train.old if train.side_info is None else np.hstack([train.old, train.side_info])
    inputs = inputs.astype(np.float64)
    targets = train.new.astype(np.float64)
    input_mean, target_mean = inputs.mean(0), targets.mean(0)
    centered = inputs - input_mean
    covariance = centered.T @ centered
    strength = config.ridge * np.trace(covariance) / len(covariance)
    covariance[np.diag_indices_from(covariance)] += max(strength, 1e-12)
    weight = np.linalg.solve(covariance, centered.T @ (targets - target_mean))
    bias = target_mean - input_mean @ weight
    old_dim = train.old.shape[1]
    tensors = {"old.weight": weight[:old_dim], "bias": bias}
    if train.side_info is not None:
        tensors["side.weight"] = weight[old_dim:]
    return _float32(tensors), {"ridge": config.ridge}


def fit_procrustes(train: Pairs, validation: Pairs, config: TransformConfig, progress=None) -> tuple[dict, dict]:
    """Orthogonal map with one global scale between the centered sets.

    Both sides are centered; the smaller side is zero-padded to ``max(old_dim, new_dim)``; the
    rotation R maximizes trace(Rᵀ Xᵀ Y) (SVD of Xᵀ Y) and the scale is the least-squares optimum
    trace(Σ)/‖X‖². So ``y ≈ s · (x − μx) R + μy``: it recovers an exact rotation (and, when
    old_dim ≤ new_dim, an exact isometric embedding into the larger space). Returns (tensors, architecture).
    """
    if train.side_info is not None:
        raise BadInputError("kind procrustes takes no side-info; use kind=linear or kind=mlp with --side-info")
    old, new = train.old.astype(np.float64), train.new.astype(np.float64)
    old_mean, new_mean = old.mean(0), new.mean(0)
    size = max(old.shape[1], new.shape[1])
    x, y = _pad(old - old_mean, size), _pad(new - new_mean, size)
    u, sigma, vt = np.linalg.svd(x.T @ y)
    rotation = u @ vt
    scale = sigma.sum() / max((x * x).sum(), 1e-30)
    weight = (scale * rotation)[: old.shape[1], : new.shape[1]]
    tensors = {"old.weight": weight, "bias": new_mean - old_mean @ weight}
    return _float32(tensors), {"scale": float(scale), "padded_dim": size}


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    return np.pad(array, ((0, 0), (0, size - array.shape[1])))


def _float32(tensors: dict) -> dict:
    return {name: np.ascontiguousarray(t, dtype=np.float32) for name, t in tensors.items()}
