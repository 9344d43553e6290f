"""`fit_transform`: pair old/new (+ side-info) rows by id, fit a transform kind, save it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from compatctl.config import to_dict
from compatctl.errors import BadInputError
from compatctl.store import save_artifact
from compatctl.transform.artifact import Transform
from compatctl.transform.closed_form import fit_linear, fit_procrustes
from compatctl.transform.config import TransformConfig, check_combination
from compatctl.transform.pairs import Pairs, pair_by_id, split_validation


def _fit_mlp(train, validation, config, progress=None):
    from compatctl.transform.mlp_fit import fit_mlp  # torch is imported only when an mlp is trained

    return fit_mlp(train, validation, config, progress)


# kind -> fitter(train: Pairs, validation: Pairs, config, progress) -> (numpy tensors, architecture)
FITTERS: dict[str, Callable] = {"linear": fit_linear, "procrustes": fit_procrustes, "mlp": _fit_mlp}


def fit_transform(old_path, new_path, out, *, side_info_path=None, config: TransformConfig | None = None,
                  progress: Callable[[dict], None] | None = None) -> dict:
    """Fit a transform old (+ side-info) -> new on id-matched rows and write it to ``out``.

    Args:
        old_path, new_path: embedding sets (or .npz/.safetensors files) of the same items.
        out: the transform artifact (.safetensors) to write.
        side_info_path: optional side-info embeddings covering every id of the old set.
        config: a TransformConfig (defaults when None).
        progress: optional callable receiving event dicts ({"event": "epoch", "epoch", "epochs",
            "loss", "val_loss"} during mlp training).
    Returns a report: matched rows, validation metrics, seconds, parameter count, fingerprint.
    Raises BadInputError / ConfigError for unusable inputs or settings.
    """
    config = config or TransformConfig()
    check_combination(config)
    started = time.perf_counter()
    sources = pair_by_id(old_path, new_path, side_info_path, min_matched=config.min_matched)
    config = _resolve_labels(config, sources.pairs, new_path)
    train_index, val_index = split_validation(len(sources.pairs), config.validation_fraction, config.seed)
    train, validation = sources.pairs.take(train_index), sources.pairs.take(val_index)
    tensors, architecture = FITTERS[config.kind](train, validation, config, progress)
    header = _header(sources, config, architecture)
    transform = Transform(header, tensors, str(out))
    header["validation"] = validation_metrics(transform, validation if len(validation) else train, config)
    header["validation"]["rows"] = int(len(validation))
    fingerprint = save_artifact(Path(out), tensors, "transform", header)
    return {"out": str(out), "kind": config.kind, "fingerprint": fingerprint, "matched": len(sources.pairs),
            "old_rows": sources.old_rows, "new_rows": sources.new_rows, "train_rows": len(train),
            "validation_rows": len(validation), "validation": header["validation"],
            "parameters": transform.parameter_count(), "architecture": architecture,
            "seconds": round(time.perf_counter() - started, 3)}


def _resolve_labels(config: TransformConfig, pairs: Pairs, new_path) -> TransformConfig:
    """Fill the automatic discriminative weight; refuse a label-needing config without labels."""
    import dataclasses

    if config.discriminative_weight is None:
        weight = 1.0 if (pairs.labels is not None and config.kind == "mlp") else 0.0
        return dataclasses.replace(config, discriminative_weight=weight)
    if config.discriminative_weight > 0 and pairs.labels is None:
        raise BadInputError(f"discriminative_weight={config.discriminative_weight} needs class labels but "
                            f"{new_path} and the old set have none; set discriminative_weight=0 or pass "
                            "embeddings with labels")
    return config


def _header(sources, config: TransformConfig, architecture: dict) -> dict:
    pairs = sources.pairs
    return {"transform_kind": config.kind, "old_dim": int(pairs.old.shape[1]), "new_dim": int(pairs.new.shape[1]),
            "side_info_dim": 0 if pairs.side_info is None else int(pairs.side_info.shape[1]),
            "uncertainty": bool(config.uncertainty), "old_fingerprint": sources.old_fingerprint,
            "new_fingerprint": sources.new_fingerprint, "side_info_fingerprint": sources.side_info_fingerprint,
            "architecture": architecture, "config": to_dict(config), "matched": int(len(pairs)),
            "has_labels": pairs.labels is not None}


def validation_metrics(transform: Transform, pairs: Pairs, config: TransformConfig) -> dict:
    """Alignment of transform(old) with new on ``pairs``: relative MSE, cosine, retrieval top-1.

    ``rel_mse`` = mean ‖h − y‖² / mean ‖y − ȳ‖² (0 is perfect, 1 is predicting the mean);
    ``top1`` (with labels) = new queries against the transformed rows, leave-one-out, over at
    most ``config.max_validation_rows`` rows.
    """
    mapped, log_var = transform.apply(pairs.old, pairs.side_info)
    target = pairs.new.astype(np.float64)
    error = ((mapped - target) ** 2).sum(1)
    spread = ((target - target.mean(0)) ** 2).sum(1).mean()
    cosine = _cosine(mapped, target)
    metrics = {"rel_mse": float(error.mean() / max(spread, 1e-30)), "cosine": float(cosine.mean())}
    metrics["loss"] = metrics["rel_mse"] if config.loss == "mse" else 1.0 - metrics["cosine"]
    if pairs.labels is not None and len(pairs) > 1:
        rows = slice(0, config.max_validation_rows)
        metrics["top1"] = leave_one_out_top1(pairs.new[rows], mapped[rows], pairs.labels[rows],
                                             "l2" if config.loss == "mse" else "cosine")
    if log_var is not None and len(pairs) > 2:
        metrics["uncertainty_error_corr"] = float(np.corrcoef(log_var, np.log(error + 1e-12))[0, 1])
    return metrics


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, 1e-12)


def leave_one_out_top1(queries: np.ndarray, gallery: np.ndarray, labels: np.ndarray, distance: str = "l2",
                       block_rows: int = 1024) -> float:
    """Top-1 of queries[i] against gallery rows j != i (row i is the same item); in-memory numpy."""
    queries, gallery = queries.astype(np.float32), gallery.astype(np.float32)
    if distance == "cosine":
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        gallery = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    gallery_norms = (gallery * gallery).sum(1)
    hits = 0
    for start in range(0, len(queries), block_rows):
        block = queries[start:start + block_rows]
        score = 2 * block @ gallery.T - gallery_norms  # larger is nearer (for l2 and unit vectors)
        score[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        hits += int((labels[score.argmax(1)] == labels[start:start + len(block)]).sum())
    return hits / len(queries)
