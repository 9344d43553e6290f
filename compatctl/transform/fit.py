"""`fit_transform`: pair old/new (+ side-info) rows by id, fit a transform kind, save it.

Every kind is scored on the validation split with `eval`'s retrieval metric (see
compatctl.transform.select); the scores of what was tried go into ``header["candidates"]``.
``kind: auto`` (and ``linear`` with ``ridge: null``) on a small set (a validation split under
``cv_below_rows``) selects by k-fold cross-validation instead and refits the choice on all pairs
(compatctl.transform.kfold).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from compatctl.config import to_dict
from compatctl.errors import BadInputError
from compatctl.store import save_artifact
from compatctl.transform.artifact import Transform
from compatctl.transform.closed_form import affine_apply, fit_procrustes, ridge_path
from compatctl.transform.config import FALLBACK_RIDGE, TransformConfig, check_combination
from compatctl.transform.kfold import fit_kfold, uses_kfold
from compatctl.transform.pairs import Pairs, pair_by_id, split_validation
from compatctl.transform.select import Scorer, best_index, candidates_record, paired_gain


@dataclasses.dataclass
class Fitted:
    """A fitter's result: the kind written to the artifact, its tensors, and what was tried."""

    kind: str
    tensors: dict
    architecture: dict
    candidates: list[dict] = dataclasses.field(default_factory=list)  # rows: candidate, kind, scores
    chosen: int = 0


def _closed_form_candidates(train: Pairs, scorer: Scorer | None, config: TransformConfig,
                            with_procrustes: bool, selecting: bool | None = None) -> list[tuple[dict, dict, dict]]:
    """(row, tensors, architecture) for the ridge strengths (grid when ``ridge`` is null and there
    is a selection: a validation split, or ``selecting`` for k-fold) and, when asked and possible,
    procrustes. Rows carry the scorer's scores when there is a scorer."""
    selecting = scorer is not None if selecting is None else selecting
    if config.ridge is not None:
        strengths = [config.ridge]
    else:
        strengths = config.ridge_grid if selecting else [FALLBACK_RIDGE]
    found = []
    for tensors, architecture in ridge_path(train, strengths):
        found.append(({"candidate": f"linear ridge={architecture['ridge']:g}", "kind": "linear"},
                      tensors, architecture))
    if with_procrustes and train.side_info is None:
        tensors, architecture = fit_procrustes(train, train, config)
        found.append(({"candidate": "procrustes", "kind": "procrustes"}, tensors, architecture))
    if scorer is not None:
        for row, tensors, _ in found:
            row.update(scorer.score(affine_apply(tensors, scorer.pairs.old, scorer.pairs.side_info)))
    return found


def _best(found: list, scorer: Scorer | None) -> int:
    return best_index(scorer, [row for row, _, _ in found]) if scorer is not None else 0


def _fit_closed(train, scorer, config, progress=None, *, with_procrustes: bool) -> Fitted:
    found = _closed_form_candidates(train, scorer, config, with_procrustes)
    chosen = _best(found, scorer)
    row, tensors, architecture = found[chosen]
    return Fitted(row["kind"], tensors, architecture, [r for r, _, _ in found], chosen)


def fit_linear_kind(train, scorer, config, progress=None) -> Fitted:
    """Ridge; with ``ridge: null`` its strength is the grid's best on validation."""
    return _fit_closed(train, scorer, config, with_procrustes=False)


def fit_procrustes_kind(train, scorer, config, progress=None) -> Fitted:
    """Orthogonal Procrustes (one candidate)."""
    tensors, architecture = fit_procrustes(train, train, config)
    row = {"candidate": "procrustes", "kind": "procrustes"}
    if scorer is not None:
        row.update(scorer.score(affine_apply(tensors, scorer.pairs.old)))
    return Fitted("procrustes", tensors, architecture, [row])


def _mlp_on(base: Fitted, train, scorer, config, progress) -> tuple[dict, dict, dict]:
    """The mlp residual on top of ``base`` (a closed form): (row, tensors, architecture)."""
    from compatctl.transform.mlp_fit import fit_mlp  # torch is imported only when an mlp is trained

    tensors, architecture, scores = fit_mlp(train, config, base.tensors, scorer, progress)
    base_row = base.candidates[base.chosen]
    architecture["base"] = base_row["candidate"]
    row = {"candidate": f"mlp on {base_row['candidate']} (epoch {architecture['best_epoch']}/"
                        f"{architecture['epochs_run']})", "kind": "mlp"}
    if scores is not None:  # epoch 0 is the closed form itself: reuse its numpy score exactly
        row.update({k: base_row[k] for k in scores} if architecture["best_epoch"] == 0 else scores)
    return row, tensors, architecture


def fit_mlp_kind(train, scorer, config, progress=None) -> Fitted:
    """The mlp as a residual on the ridge map (strength chosen on validation when ``ridge`` is null)."""
    base = _fit_closed(train, scorer, config, with_procrustes=False)
    row, tensors, architecture = _mlp_on(base, train, scorer, config, progress)
    return Fitted("mlp", tensors, architecture, base.candidates + [row], len(base.candidates))


def fit_auto(train, scorer, config, progress=None) -> Fitted:
    """Every closed form, then the mlp on top of the best (once per ``input_noise_grid`` value);
    keep the best on validation.

    The mlp starts at (and can stop at) the best closed form; the best mlp replaces that closed
    form only when its validation top-1 gain is significant (``config.mlp_margin``, see
    compatctl.transform.select), so the result's validation score is never below the best closed
    form's. With ``uncertainty`` the mlp is returned (it carries the head; epoch 0 if the
    closed form wins, with the head trained alone).
    """
    base = _fit_closed(train, scorer, config, with_procrustes=True)
    mlps = [_mlp_on(base, train, scorer, dataclasses.replace(config, input_noise=noise), progress)
            for noise in config.input_noise_grid]
    for noise, (row, _, architecture) in zip(config.input_noise_grid, mlps):
        if len(mlps) > 1:
            row["candidate"] += f" input_noise={noise:g}"
            architecture["input_noise"] = noise
    best = max(range(len(mlps)), key=lambda i: (scorer.key(mlps[i][0]), -i))
    row, tensors, architecture = mlps[best]
    candidates = base.candidates + [r for r, _, _ in mlps]
    if config.uncertainty or _mlp_wins(scorer, base, row, tensors, config):
        return Fitted("mlp", tensors, architecture, candidates, len(base.candidates) + best)
    return dataclasses.replace(base, candidates=candidates)


def _mlp_wins(scorer: Scorer, base: Fitted, row: dict, tensors: dict, config: TransformConfig) -> bool:
    """Is the mlp's validation top-1 gain over the best closed form larger than ``mlp_margin`` SEs?
    Records the paired counts in the mlp's candidate row."""
    if scorer.key(row) <= scorer.key(base.candidates[base.chosen]):
        return False
    pairs = scorer.pairs
    header = {"transform_kind": "mlp", "old_dim": pairs.old.shape[1], "new_dim": pairs.new.shape[1],
              "side_info_dim": 0 if pairs.side_info is None else pairs.side_info.shape[1]}
    mapped = Transform(header, tensors).apply(pairs.old, pairs.side_info)[0]
    closed = affine_apply(base.tensors, pairs.old, pairs.side_info)
    only_mlp, only_closed, z = paired_gain(scorer.hits(mapped), scorer.hits(closed))
    row.update({"only_mlp_right": only_mlp, "only_closed_form_right": only_closed, "gain_se": round(z, 3)})
    if z > config.mlp_margin:
        return True
    row["note"] = f"gain {z:.2f} SE <= mlp_margin {config.mlp_margin:g}"
    return False


# kind -> fitter(train: Pairs, scorer: Scorer | None, config, progress) -> Fitted
FITTERS: dict[str, Callable] = {"auto": fit_auto, "linear": fit_linear_kind, "procrustes": fit_procrustes_kind,
                                "mlp": fit_mlp_kind}


def fit_transform(old_path, new_path, out, *, side_info_path=None, config: TransformConfig | None = None,
                  progress: Callable[[dict], None] | None = None, columns: dict | None = None) -> dict:
    """Fit a transform old (+ side-info) -> new on id-matched rows and write it to ``out``.

    Args:
        old_path, new_path: embedding sets (or .npz/.safetensors files) of the same items.
        out: the transform artifact (.safetensors) to write.
        side_info_path: optional side-info embeddings covering every id of the old set.
        config: a TransformConfig (defaults when None).
        columns: Parquet/.npy-metadata column names by role (``--columns``), applied to every input
            that has columns (others ignore them).
        progress: optional callable receiving event dicts ({"event": "epoch", "epoch", "epochs",
            "loss", "val"} during mlp training; "val" holds the epoch's validation scores).
    Returns a report: matched rows, the kind chosen, the candidates' scores, metrics on the
    validation split (``metrics_split`` says "train" when validation_fraction is 0), seconds,
    parameter count, fingerprint, notes.
    Raises BadInputError / ConfigError for unusable inputs or settings.
    """
    config = config or TransformConfig()
    check_combination(config)
    started = time.perf_counter()
    sources = pair_by_id(old_path, new_path, side_info_path, min_matched=config.min_matched, columns=columns)
    config, notes = _resolve_labels(config, sources.pairs, new_path)
    train_index, val_index = split_validation(len(sources.pairs), config.validation_fraction, config.seed)
    train, validation = sources.pairs.take(train_index), sources.pairs.take(val_index)
    if uses_kfold(config, len(validation)):
        return _fit_transform_kfold(sources, config, out, notes, progress, started)
    scorer = Scorer.build(validation, config.distance, config.max_validation_rows, config.seed) \
        if len(validation) > 1 else None
    fitted = FITTERS[config.kind](train, scorer, config, progress)
    header = _header(sources, config, fitted, scorer)
    transform = Transform(header, fitted.tensors, str(out))
    split = "validation" if scorer is not None else "train"
    metrics = validation_metrics(transform, validation if scorer is not None else train, config)
    metrics["rows"] = int(len(validation) if scorer is not None else len(train))
    header["validation" if scorer is not None else "train_metrics"] = metrics
    return _save(out, fitted, header, transform, sources, config, notes, started,
                 {"train_rows": len(train), "validation_rows": len(validation), "metrics_split": split,
                  "metrics": metrics, "validation": metrics if scorer is not None else None})


def _fit_transform_kfold(sources, config: TransformConfig, out, notes: list[str], progress, started: float) -> dict:
    """kind auto (or linear with ridge: null) on a small set: selection by k-fold
    (compatctl.transform.kfold), refit on all pairs.
    The metrics are out-of-fold: each pair mapped by the fold model that did not train on it."""
    fitted = fit_kfold(sources.pairs, config, progress)
    scorer = Scorer(sources.pairs, config.distance, fitted.split)
    header = _header(sources, config, fitted, scorer)
    transform = Transform(header, fitted.tensors, str(out))
    metrics = {**fitted.metrics, "rows": int(len(sources.pairs))}
    header["validation"] = metrics
    return _save(out, fitted, header, transform, sources, config, notes, started,
                 {"train_rows": len(sources.pairs), "validation_rows": 0, "metrics_split": fitted.split,
                  "metrics": metrics, "validation": metrics})


def _save(out, fitted, header: dict, transform: Transform, sources, config: TransformConfig, notes: list[str],
          started: float, split_report: dict) -> dict:
    fingerprint = save_artifact(Path(out), fitted.tensors, "transform", header)
    return {"out": str(out), "kind": fitted.kind, "requested_kind": config.kind, "fingerprint": fingerprint,
            "matched": len(sources.pairs), "old_rows": sources.old_rows, "new_rows": sources.new_rows,
            **split_report, "candidates": header.get("candidates"), "parameters": transform.parameter_count(),
            "architecture": fitted.architecture, "notes": notes,
            "seconds": round(time.perf_counter() - started, 3)}


def _resolve_labels(config: TransformConfig, pairs: Pairs, new_path) -> tuple[TransformConfig, list[str]]:
    """Read ``discriminative_weight: null`` (the old automatic default) as 0; refuse a
    label-needing config without labels. Returns (config, notes for the user)."""
    notes = []
    if config.discriminative_weight is None:
        notes.append("discriminative_weight: null is read as 0 (the class-mean term is now opt-in; "
                     "set discriminative_weight=1 for the former behaviour with labels)")
        config = dataclasses.replace(config, discriminative_weight=0.0)
    if config.discriminative_weight > 0 and pairs.labels is None:
        raise BadInputError(f"discriminative_weight={config.discriminative_weight} needs class labels but "
                            f"{new_path} and the old set have none; set discriminative_weight=0 or pass "
                            "embeddings with labels")
    return config, notes


def _header(sources, config: TransformConfig, fitted: Fitted, scorer: Scorer | None) -> dict:
    pairs = sources.pairs
    header = {"transform_kind": fitted.kind, "old_dim": int(pairs.old.shape[1]), "new_dim": int(pairs.new.shape[1]),
              "side_info_dim": 0 if pairs.side_info is None else int(pairs.side_info.shape[1]),
              "uncertainty": bool(config.uncertainty and fitted.kind == "mlp"),
              "old_fingerprint": sources.old_fingerprint, "new_fingerprint": sources.new_fingerprint,
              "side_info_fingerprint": sources.side_info_fingerprint, "architecture": fitted.architecture,
              "config": to_dict(config), "matched": int(len(pairs)), "has_labels": pairs.labels is not None}
    if scorer is not None:
        header["candidates"] = candidates_record(scorer, fitted.candidates, fitted.chosen)
        if scorer.split != "validation":
            header["candidates"]["note"] = ("every pair held out once; scores pooled over the folds; the chosen "
                                            "candidate refit on all pairs")
    return header


def validation_metrics(transform: Transform, pairs: Pairs, config: TransformConfig) -> dict:
    """Alignment of transform(old) with new on ``pairs``: relative MSE, cosine, retrieval scores.

    ``rel_mse`` = mean ‖h − y‖² / mean ‖y − ȳ‖² (0 is perfect, 1 is predicting the mean); the
    retrieval scores are the selection metric and tie-break of compatctl.transform.select
    (``top1``/``map`` with labels, ``pair_top1``/``pair_mrr`` without) with ``config.distance``,
    over at most ``config.max_validation_rows`` rows.
    """
    mapped, log_var = transform.apply(pairs.old, pairs.side_info)
    target = pairs.new.astype(np.float64)
    error = ((mapped - target) ** 2).sum(1)
    spread = ((target - target.mean(0)) ** 2).sum(1).mean()
    cosine = _cosine(mapped, target)
    metrics = {"rel_mse": float(error.mean() / max(spread, 1e-30)), "cosine": float(cosine.mean())}
    metrics["loss"] = metrics["rel_mse"] if config.loss == "mse" else 1.0 - metrics["cosine"]
    if len(pairs) > 1:
        scorer = Scorer.build(pairs, config.distance, config.max_validation_rows, config.seed)
        index = np.searchsorted(pairs.ids, scorer.pairs.ids)
        metrics.update(scorer.score(mapped[index]))
    if log_var is not None and len(pairs) > 2:
        metrics["uncertainty_error_corr"] = float(np.corrcoef(log_var, np.log(error + 1e-12))[0, 1])
    return metrics


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, 1e-12)


def leave_one_out_top1(queries: np.ndarray, gallery: np.ndarray, labels: np.ndarray, distance: str = "l2",
                       block_rows: int = 1024) -> float:
    """Top-1 of queries[i] against gallery rows j != i (row i is the same item); in-memory numpy.

    The per-query hits of :meth:`compatctl.transform.select.Scorer.hits` (one implementation of
    the rule for selection and for the benchmarks), averaged.
    """
    rows = np.arange(len(queries))
    scorer = Scorer(Pairs(gallery, queries, rows, labels=labels), distance)
    return float(scorer.hits(gallery, block_rows).mean())
