"""kind auto on small pair sets: choose closed form vs mlp (and its epoch count) by k-fold.

With one validation split of a few hundred rows, a real top-1 gain of the mlp (2 points on 126
rows) stays under ``mlp_margin`` standard errors, so the closed form is kept, and 10 % of the few
pairs there are never trained on. Here every pair is held out once:

1. each fold's closed forms (ridge grid, procrustes) are fit on the other folds and scored on it;
   per-query hits are pooled over all pairs and the best closed form is picked by pooled score;
2. per ``input_noise_grid`` value the mlp is trained on that closed form in every fold for all
   ``epochs``, and every epoch's outputs for the held-out fold are recorded (no early stopping);
3. one epoch count is chosen for all folds together, by the pooled score at that epoch. Picking
   each fold's own best epoch would score every fold at its luckiest epoch and favour the mlp;
   one shared count is a single choice among ``epochs`` values, as a single split makes;
4. the mlp replaces the closed form only when its pooled paired top-1 gain exceeds
   ``mlp_margin`` standard errors (McNemar over all pairs, ~1/validation_fraction times the rows
   of one split);
5. the choice is refit on all pairs: a closed form in closed form, the mlp for the chosen number
   of epochs under the folds' schedule.

Metrics reported are out-of-fold: each pair mapped by the fold model that did not train on it
(for the mlp: at the chosen epoch).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from compatctl.transform.closed_form import affine_apply, fit_procrustes, ridge_path
from compatctl.transform.config import TransformConfig
from compatctl.transform.pairs import Pairs
from compatctl.transform.select import Scorer, best_index, paired_gain


@dataclasses.dataclass
class CrossValidated:
    """The refit transform, the pooled candidates' table, and the chosen candidate's out-of-fold
    metrics (each pair mapped by the fold model that did not see it)."""

    kind: str
    tensors: dict
    architecture: dict
    candidates: list[dict]
    chosen: int
    metrics: dict
    split: str


@dataclasses.dataclass
class Fold:
    held: np.ndarray  # row indices of the held-out pairs (sorted)
    train: Pairs
    scorer: Scorer  # scores mappings of the held-out pairs (gallery = the fold)


def uses_kfold(config: TransformConfig, validation_rows: int) -> bool:
    """Is there a selection to make by k-fold here: kind auto (no uncertainty head), or kind linear
    with its strength to choose (``ridge: null``), on a small validation split? The two kinds select
    the same way, so when auto keeps ridge it is exactly what kind linear returns."""
    selects = (config.kind == "auto" and not config.uncertainty) or (config.kind == "linear" and config.ridge is None)
    # validation_fraction 0 means "no selection" (the metrics are then labelled TRAIN)
    return (selects and config.cv_folds > 1 and config.validation_fraction > 0
            and validation_rows < config.cv_below_rows)


def fit_kfold(pairs: Pairs, config: TransformConfig, progress=None) -> CrossValidated:
    """Selection by ``config.cv_folds``-fold cross-validation for the kinds ``uses_kfold`` accepts."""
    if config.kind == "linear":
        folds = make_folds(pairs, config)
        rows, _, pooled = _closed_forms(folds, config, with_procrustes=False)
        chosen = best_index(folds[0].scorer, rows)
        return _refit_closed(pairs, folds, rows[chosen], pooled[chosen], config, rows, chosen)
    return fit_auto_kfold(pairs, config, progress)


def split_name(config: TransformConfig) -> str:
    return f"{config.cv_folds}-fold"


def make_folds(pairs: Pairs, config: TransformConfig) -> list[Fold]:
    """``config.cv_folds`` seeded folds over all pairs."""
    order = np.random.default_rng(config.seed).permutation(len(pairs))
    folds = []
    for held in np.array_split(order, config.cv_folds):
        held = np.sort(held)
        kept = np.setdiff1d(np.arange(len(pairs)), held)
        folds.append(Fold(held, pairs.take(kept), Scorer(pairs.take(held), config.distance, split_name(config))))
    return folds


class Pooled:
    """One candidate's held-out outputs, fold by fold, reduced at once to what selection and the
    report need (per-query hits, the tie-break, alignment sums); the outputs are not kept."""

    def __init__(self, folds: list[Fold]):
        self.folds = folds
        self.hits: list[np.ndarray | None] = [None] * len(folds)
        self.second: list[float | None] = [None] * len(folds)
        self.error = np.zeros(len(folds))  # sum over the fold of ||h(old) - new||^2
        self.cosine = np.zeros(len(folds))  # sum over the fold of cos(h(old), new)

    def add(self, fold: int, mapped: np.ndarray) -> None:
        scorer = self.folds[fold].scorer
        self.hits[fold] = scorer.hits(mapped)
        self.second[fold] = scorer.score(mapped)[scorer.names[1]]
        target = scorer.pairs.new.astype(np.float64)
        self.error[fold] = ((mapped - target) ** 2).sum()
        norms = np.linalg.norm(mapped, axis=1) * np.linalg.norm(target, axis=1)
        self.cosine[fold] = ((mapped * target).sum(1) / np.maximum(norms, 1e-12)).sum()

    def metrics(self, pairs: Pairs, config: TransformConfig) -> dict:
        """Out-of-fold ``validation_metrics`` (rel_mse, cosine, loss, the selection scores) over all pairs."""
        target = pairs.new.astype(np.float64)
        spread = ((target - target.mean(0)) ** 2).sum()
        metrics = {"rel_mse": float(self.error.sum() / max(spread, 1e-30)),
                   "cosine": float(self.cosine.sum() / len(pairs))}
        metrics["loss"] = metrics["rel_mse"] if config.loss == "mse" else 1.0 - metrics["cosine"]
        return {**metrics, **self.scores()}

    def all_hits(self) -> np.ndarray:
        return np.concatenate(self.hits)

    def scores(self) -> dict[str, float]:
        first, second = self.folds[0].scorer.names
        sizes = [len(fold.held) for fold in self.folds]
        return {first: float(self.all_hits().mean()), second: float(np.average(self.second, weights=sizes))}


def fit_auto_kfold(pairs: Pairs, config: TransformConfig, progress=None) -> CrossValidated:
    """kind auto by ``config.cv_folds``-fold cross-validation over all ``pairs``, refit on all of them."""
    folds = make_folds(pairs, config)
    scorer = folds[0].scorer
    rows, fold_tensors, pooled = _closed_forms(folds, config)
    closed = best_index(scorer, rows)
    candidates = list(rows)
    best_mlp = None  # (key, noise, epoch, Pooled, row index)
    for noise in config.input_noise_grid:
        epochs = _fold_mlps(folds, fold_tensors[closed], dataclasses.replace(config, input_noise=noise), progress)
        epoch = max(range(1, len(epochs)), key=lambda e: (scorer.key(epochs[e].scores()), -e))
        row = {"candidate": f"mlp on {rows[closed]['candidate']} ({epoch} of {config.epochs} epochs)",
               "kind": "mlp", **epochs[epoch].scores()}
        if len(config.input_noise_grid) > 1:
            row["candidate"] += f" input_noise={noise:g}"
        candidates.append(row)
        if best_mlp is None or scorer.key(row) > best_mlp[0]:
            best_mlp = (scorer.key(row), noise, epoch, epochs[epoch], len(candidates) - 1)
    _, noise, epoch, mlp, index = best_mlp
    if _mlp_wins(scorer, rows[closed], pooled[closed], candidates[index], mlp, config):
        return _refit_mlp(pairs, folds, rows[closed], mlp, noise, epoch, config, candidates, index, progress)
    return _refit_closed(pairs, folds, rows[closed], pooled[closed], config, candidates, closed)


def _closed_forms(folds: list[Fold], config: TransformConfig, with_procrustes: bool = True
                  ) -> tuple[list[dict], list[list[dict]], list[Pooled]]:
    """Pooled rows of every closed form, their per-fold tensors, their Pooled records."""
    from compatctl.transform.fit import _closed_form_candidates

    per_fold = [_closed_form_candidates(fold.train, None, config, with_procrustes, selecting=True) for fold in folds]
    rows, tensors, pooled = [], [], []
    for i, (row, _, _) in enumerate(per_fold[0]):
        record = Pooled(folds)
        for f, (fold, found) in enumerate(zip(folds, per_fold)):
            record.add(f, affine_apply(found[i][1], fold.scorer.pairs.old, fold.scorer.pairs.side_info))
        rows.append({"candidate": row["candidate"], "kind": row["kind"], **record.scores()})
        tensors.append([found[i][1] for found in per_fold])
        pooled.append(record)
    return rows, tensors, pooled


def _fold_mlps(folds: list[Fold], base_tensors: list[dict], config: TransformConfig, progress) -> list[Pooled]:
    """The mlp on each fold's closed form, all epochs: Pooled records indexed by epoch (0 = closed form)."""
    from compatctl.transform.mlp_fit import fit_mlp

    epochs = [Pooled(folds) for _ in range(config.epochs + 1)]
    for f, (fold, base) in enumerate(zip(folds, base_tensors)):
        def record(epoch: int, mapped: np.ndarray, f=f) -> None:
            epochs[epoch].add(f, mapped)

        fold_progress = None if progress is None else (
            lambda event, f=f: progress({**event, "fold": f + 1, "folds": len(folds)}))
        fit_mlp(fold.train, config, base, None, fold_progress, watch=fold.scorer.pairs, on_epoch=record)
    return epochs


def _mlp_wins(scorer: Scorer, closed_row: dict, closed: Pooled, row: dict, mlp: Pooled,
              config: TransformConfig) -> bool:
    """Pooled paired test of the mlp against the closed form; records the counts in the mlp's row."""
    if scorer.key(row) <= scorer.key(closed_row):
        return False
    only_mlp, only_closed, z = paired_gain(mlp.all_hits(), closed.all_hits())
    row.update({"only_mlp_right": only_mlp, "only_closed_form_right": only_closed, "gain_se": round(z, 3)})
    if z > config.mlp_margin:
        return True
    row["note"] = f"gain {z:.2f} SE <= mlp_margin {config.mlp_margin:g}"
    return False


def _refit_base(pairs: Pairs, closed_row: dict, config: TransformConfig) -> tuple[dict, dict]:
    if closed_row["kind"] == "procrustes":
        return fit_procrustes(pairs, pairs, config)
    strength = float(closed_row["candidate"].split("=", 1)[1])
    return next(iter(ridge_path(pairs, [strength])))


def _refit_closed(pairs, folds, closed_row, record: Pooled, config, candidates, chosen) -> CrossValidated:
    tensors, architecture = _refit_base(pairs, closed_row, config)
    return CrossValidated(closed_row["kind"], tensors, {**architecture, "selection": split_name(config)},
                          candidates, chosen, record.metrics(pairs, config), split_name(config))


def _refit_mlp(pairs, folds, closed_row, record: Pooled, noise, epoch, config, candidates, chosen,
               progress) -> CrossValidated:
    """The mlp on all pairs, on the closed form refit on all pairs, stopped at the chosen epoch."""
    from compatctl.transform.mlp_fit import fit_mlp

    base, _ = _refit_base(pairs, closed_row, config)
    refit = dataclasses.replace(config, input_noise=noise)
    tensors, architecture, _ = fit_mlp(pairs, refit, base, None, progress, stop_after=epoch)
    architecture.update({"base": closed_row["candidate"], "input_noise": noise, "best_epoch": epoch,
                         "selection": split_name(config), "best_val": None})
    return CrossValidated("mlp", tensors, architecture, candidates, chosen,
                          record.metrics(pairs, config), split_name(config))
