"""The self-check after training: retrieval on a slice of the training data the model never saw.

``validation_fraction`` of the training images (at most ``MAX_HELD_OUT`` images, the same share
of every class, chosen by a generator seeded from the config's seed) is held out before
training. After the last epoch the new model and, with ``--old``, the old model embed it, and
compatctl's own ``evaluate`` (cosine, leave-one-out by id, top-1 and mAP) compares:

- ``old_old``: old queries against old gallery (what the system does today);
- ``new_new``: new against new (what a full re-embedding would give);
- ``new_old``: new queries against the old gallery, on the first ``compatible_dims`` dims
  of the new embedding for BT² (its compatible part), else the first d_old dims.

The compatibility criterion is new/old top-1 > old/old top-1: searching the old gallery with
the new model must beat not updating at all. The split depends only on the labels, the seed
and the fraction, so a ``--resume`` holds out the same images (its digest is checked).
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from compatctl.errors import BadInputError, GateFailed

MAX_HELD_OUT = 2000  # images; enough for a stable top-1, cheap to embed twice
SPLIT_STREAM = 0x5E1F  # mixes into the seed so the split draws apart from the model's init
CRITERION = "new/old top-1 > old/old top-1"


@dataclasses.dataclass
class HeldOut:
    """The held-out slice: uint8 NHWC images, their labels and data ids, and a digest of the ids."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    digest: str


def split_positions(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training positions, held-out positions) of ``labels``, both sorted.

    Each class gives ``fraction`` of its images (rounded; the total capped at about
    MAX_HELD_OUT) and always keeps at least one for training. ``fraction`` 0 holds out nothing.
    """
    everything = np.arange(len(labels))
    if fraction <= 0 or len(labels) == 0:
        return everything, everything[:0]
    share = min(fraction, MAX_HELD_OUT / len(labels))
    rng = np.random.default_rng([seed, SPLIT_STREAM])
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = min(int(round(share * len(members))), len(members) - 1)
        held.append(rng.permutation(members)[:take])
    held = np.sort(np.concatenate(held))
    return np.setdiff1d(everything, held), held


def ids_digest(ids: np.ndarray) -> str:
    """A short digest of the held-out ids (the same slice on --resume has the same digest)."""
    return hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


def _metrics(query: np.ndarray, gallery: np.ndarray, held_out: HeldOut, dims: int | None = None) -> dict:
    from compatctl.evaluate import evaluate
    from compatctl.store import EmbeddingBlock

    report = evaluate(EmbeddingBlock(query, held_out.ids, held_out.labels),
                      EmbeddingBlock(gallery, held_out.ids, held_out.labels), topk=(1,), dims=dims)
    return {"top1": float(report["metrics"]["top1"]), "map": float(report["metrics"]["map"])}


def run_self_check(model, normalization: dict, held_out: HeldOut, old=None, *, compatible_dims: int | None = None,
                   device: str = "cpu") -> dict:
    """Retrieval of the held-out slice by the new model (``model``, in eval mode) and the ``old`` FrozenModel.

    Returns ``{"images", "classes", "held_out", "distance", "new_new", "old_old", "new_old",
    "new_old_dims", "criterion", "compatible"}`` (metrics as {"top1", "map"} fractions); without
    ``old`` only ``new_new`` is measured and ``compatible`` is None.
    """
    from compatctl.models import embed_images

    new = embed_images(model, {"normalization": normalization}, held_out.images, device=device)
    report = {"images": int(len(held_out.labels)), "classes": int(len(np.unique(held_out.labels))),
              "held_out": held_out.digest, "distance": "cosine", "criterion": CRITERION,
              "new_new": _metrics(new, new, held_out), "compatible": None}
    if old is not None:
        previous = embed_images(old.model, old.header, held_out.images, device=device)
        dims = compatible_dims or min(new.shape[1], previous.shape[1])
        report.update(old_old=_metrics(previous, previous, held_out), new_old_dims=int(dims),
                      new_old=_metrics(new, previous, held_out, dims))
        report["compatible"] = report["new_old"]["top1"] > report["old_old"]["top1"]
    return report


def incompatibility(report: dict | None) -> str | None:
    """One line saying how the self-check failed the criterion, or None when it passed (or did not compare)."""
    if not report or report.get("compatible") is not False:
        return None
    return (f"the new model is not compatible with the old one on {report['images']} held-out images: "
            f"new/old top-1 {report['new_old']['top1']:.3f} <= old/old {report['old_old']['top1']:.3f} "
            f"(criterion {CRITERION}); searching the old gallery with it is worse than not updating")


def check_require_compatible(old_model, validation_fraction: float) -> None:
    """--require-compatible needs --old (compatible with its own ancestors) and a held-out slice;
    BadInputError before any training otherwise."""
    if old_model is None:
        raise BadInputError("--require-compatible compares the new model with the old one: pass --old OLD_MODEL")
    if validation_fraction <= 0:
        raise BadInputError("--require-compatible needs held-out images for its check: set validation_fraction "
                            "above 0 (e.g. validation_fraction=0.1)")
    _check_old_chain(old_model)


def _check_old_chain(old_model) -> None:
    """Along a series, --old must itself be compatible with every model before it (compatctl/series.py)."""
    from pathlib import Path

    from compatctl.series import chain_problem
    from compatctl.store import read_header

    if not Path(old_model).is_file():
        return  # loading --old names a missing file
    problem = chain_problem(read_header(Path(old_model)), old_model)
    if problem is not None:
        raise BadInputError(problem)


def fail_if_incompatible(report: dict | None) -> None:
    """Raise GateFailed (exit 1) when the self-check failed the compatibility criterion."""
    problem = incompatibility(report)
    if problem is not None:
        raise GateFailed(f"--require-compatible: {problem}; the model is saved, but do not deploy it as compatible")
