"""Closed-form baselines: ridge least squares and orthogonal Procrustes (numpy, float64)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from compatctl.errors import BadInputError
from compatctl.transform.config import FALLBACK_RIDGE, TransformConfig
from compatctl.transform.pairs import Pairs


def fit_linear(train: Pairs, validation: Pairs, config: TransformConfig, progress=None) -> tuple[dict, dict]:
    """Ridge least squares [old, side-info] -> new with a bias, at strength ``config.ridge``.

    (``ridge: null`` here means the fallback strength; choosing it on validation is done by
    ``compatctl.transform.fit``.) Returns (tensors, architecture).
    """
    strength = FALLBACK_RIDGE if config.ridge is None else config.ridge
    return next(ridge_path(train, [strength]))


def ridge_path(train: Pairs, strengths: list[float]) -> Iterator[tuple[dict, dict]]:
    """Ridge solutions for each relative strength, sharing one covariance.

    The strength is relative to the mean eigenvalue of the input covariance, so it does not
    depend on the embedding scale. Yields (tensors, {"ridge": strength}) in the order given.
    """
    inputs = train.old if train.side_info is None else np.hstack([train.old, train.side_info])
    inputs = inputs.astype(np.float64)
    targets = train.new.astype(np.float64)
    input_mean, target_mean = inputs.mean(0), targets.mean(0)
    centered = inputs - input_mean
    covariance = centered.T @ centered
    cross = centered.T @ (targets - target_mean)
    mean_eigenvalue = np.trace(covariance) / len(covariance)
    old_dim = train.old.shape[1]
    for relative in strengths:
        regularized = covariance.copy()
        regularized[np.diag_indices_from(regularized)] += max(relative * mean_eigenvalue, 1e-12)
        weight = np.linalg.solve(regularized, cross)
        tensors = {"old.weight": weight[:old_dim], "bias": target_mean - input_mean @ weight}
        if train.side_info is not None:
            tensors["side.weight"] = weight[old_dim:]
        yield _float32(tensors), {"ridge": float(relative)}


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


def affine_apply(tensors: dict, old: np.ndarray, side_info: np.ndarray | None = None) -> np.ndarray:
    """y = old @ W (+ side @ Ws) + b for closed-form tensors (float32)."""
    out = old.astype(np.float32) @ tensors["old.weight"]
    if side_info is not None:
        out += side_info.astype(np.float32) @ tensors["side.weight"]
    return out + tensors["bias"]


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    return np.pad(array, ((0, 0), (0, size - array.shape[1])))


def _float32(tensors: dict) -> dict:
    return {name: np.ascontiguousarray(t, dtype=np.float32) for name, t in tensors.items()}
