"""Backfill curves and their AUC (top-1, mAP) per order, with the old/old and new/new ends.

    python benchmarks/backfill_orders.py --old OLD_EMB --new NEW_EMB --transform T [--old-query OLDQ]
    python benchmarks/backfill_orders.py          # synthetic embeddings (no arguments): a smoke run

Protocol (SPEC): the test split is both query set and gallery, leave-one-out by id. New-model
queries are ranked against the gallery h(old) in which the first ceil(f*N) rows of each order
are replaced by their new-model embeddings, at f = i/steps, i = 0..steps; AUC = mean over those
steps + 1 points. Orders: the registry's (random, uncertainty when the transform has a head,
norm) plus references that are not orders one can ship (they need the new embeddings or
labels): ``old-norm`` (smallest *old* embedding norm first), ``norm-desc`` (largest transformed
norm first), ``oracle`` (largest true error ||new - h(old)|| first) and ``oracle-gain`` (largest
CE(h(old)) - CE(new) first, CE against the new embeddings' class means, temperature 0.1: rows
whose transformed embedding is misplaced AND whose new embedding is well placed) and, with
``--old-classes``, ``unseen-first`` (rows of the classes the old model was not trained on first,
random among them: a class-level oracle of where the old model is weakest). Every curve
comes from compatctl.evaluate.backfill_curve (a reference order is passed to it as the per-row
"uncertainty" of the gallery, so it runs the same code path as ``--order uncertainty``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from compatctl.backfill import ORDERS, row_norms
from compatctl.evaluate import backfill_curve, evaluate
from compatctl.errors import BadInputError
from compatctl.store import EmbeddingBlock, open_embeddings


def aligned(old: EmbeddingBlock, new: EmbeddingBlock, name: str) -> EmbeddingBlock:
    """``new``'s embeddings in ``old``'s row order (every old id must be present)."""
    from compatctl.evaluate.curve import align_by_id

    try:
        return align_by_id(old, new, name)
    except BadInputError as exc:
        raise SystemExit(str(exc)) from None


def reference_scores(old: EmbeddingBlock, new: EmbeddingBlock, transformed: np.ndarray,
                     old_classes: list[int] | None = None) -> dict:
    """Per-row scores (highest backfilled first) of orders one cannot ship, for reference."""
    scores = {"old-norm": -row_norms(old.embeddings), "norm-desc": row_norms(transformed),
              "oracle": row_norms(new.embeddings - transformed)}
    if old.labels is not None:
        scores["oracle-gain"] = class_mean_ce(transformed, new) - class_mean_ce(new.embeddings, new)
        if old_classes:
            unseen = ~np.isin(old.labels, old_classes)
            scores["unseen-first"] = unseen + 0.5 * np.random.default_rng(0).random(len(unseen))
    return scores


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def class_mean_ce(embeddings: np.ndarray, new: EmbeddingBlock, temperature: float = 0.1) -> np.ndarray:
    """Per-row cross-entropy of the cosine class-mean classifier built from ``new`` (its labels)."""
    classes, index = np.unique(new.labels, return_inverse=True)
    means = unit(np.stack([new.embeddings[index == c].mean(0) for c in range(len(classes))]))
    logits = unit(embeddings.astype(np.float64)) @ means.T / temperature
    logits -= logits.max(1, keepdims=True)
    log_prob = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -log_prob[np.arange(len(index)), index]


def same_class_cosine(queries: EmbeddingBlock, gallery: np.ndarray) -> float:
    """Mean cosine between each query and the other rows of its class in ``gallery`` (same row order)."""
    total, pairs = 0.0, 0
    for label in np.unique(queries.labels):
        rows = queries.labels == label
        cosines = unit(queries.embeddings[rows].astype(np.float64)) @ unit(gallery[rows].astype(np.float64)).T
        total += cosines.sum() - np.trace(cosines)
        pairs += rows.sum() * (rows.sum() - 1)
    return total / max(pairs, 1)


def curve(queries: EmbeddingBlock, transformed: EmbeddingBlock, new: EmbeddingBlock, order: str,
          steps: int, distance: str, scores: np.ndarray | None = None, seed: int = 0) -> dict:
    """AUC and points of one order; ``scores`` (highest first) stands in for the uncertainty order."""
    gallery = transformed if scores is None else EmbeddingBlock(
        transformed.embeddings, transformed.ids, transformed.labels, uncertainty=scores.astype(np.float32))
    result = backfill_curve(queries, gallery, new, order="uncertainty" if scores is not None else order,
                            steps=steps, distance=distance, topk=(1,), seed=seed)["curve"]
    return {name: (result["auc"][name], result[name]) for name in ("top1", "map")}


def synthetic_update(rows: int = 3000, classes: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(old [rows, 16], new [rows, 32], labels): clustered new embeddings, old a lossy view of them."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, rows)
    new = rng.normal(size=(classes, 32))[labels] + 1.2 * rng.normal(size=(rows, 32))
    # As in the protocol, the old model knew only half the classes: it keeps little of the rest.
    known = np.where(labels < classes // 2, 1.0, 0.25)[:, None]
    old = known * (new @ rng.normal(size=(32, 16)) / 4) + 0.6 * rng.normal(size=(rows, 16))
    return old, new, labels


def synthetic(root: Path) -> tuple[Path, Path, Path, None]:
    """Clustered new embeddings, old = a lossy view (poorer on half the classes), an mlp transform."""
    from compatctl.store import write_embedding_set
    from compatctl.transform import fit_transform, load_transform_config

    old, new, labels = synthetic_update()
    ids = np.arange(len(labels))
    write_embedding_set(root / "old", EmbeddingBlock(old.astype(np.float32), ids, labels), header={"model_fingerprint": "o"})
    write_embedding_set(root / "new", EmbeddingBlock(new.astype(np.float32), ids, labels), header={"model_fingerprint": "n"})
    fit_transform(root / "old", root / "new", root / "t.safetensors",
                  config=load_transform_config(None, ["kind=mlp", "uncertainty=true", "epochs=30", "threads=2"]))
    return root / "old", root / "new", root / "t.safetensors", None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, help="old-model embeddings of the test split (the gallery)")
    parser.add_argument("--new", type=Path, help="new-model embeddings of the test split (queries, new gallery)")
    parser.add_argument("--transform", type=Path, help="transform old -> new (with uncertainty for that order)")
    parser.add_argument("--old-query", type=Path, help="old-model queries for the old/old end (default: --old)")
    parser.add_argument("--side-info", type=Path, help="side-info embeddings of the test split")
    parser.add_argument("--old-classes", type=lambda text: [int(c) for c in text.split(",")],
                        help="comma-separated classes the old model was trained on (adds the unseen-first reference)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--random-seeds", type=int, default=1, help="curves of the random order with seeds 0..N-1")
    parser.add_argument("--only", type=lambda text: text.split(","), help="comma-separated orders to run (default: all)")
    parser.add_argument("--distance", default="cosine", choices=("cosine", "l2"))
    args = parser.parse_args()
    if args.old is None:
        args.old_classes = args.old_classes or list(range(10))  # the synthetic old model's classes
        args.old, args.new, args.transform, args.side_info = synthetic(Path(tempfile.mkdtemp(prefix="orders-")))
    from compatctl.transform import load_transform

    started = time.perf_counter()
    old, transform = open_embeddings(args.old).read_all(), load_transform(args.transform)
    new = aligned(old, open_embeddings(args.new).read_all(), args.new)
    side = aligned(old, open_embeddings(args.side_info).read_all(), args.side_info).embeddings if args.side_info else None
    embeddings, uncertainty = transform.apply(old.embeddings, side)
    transformed = EmbeddingBlock(embeddings, old.ids, old.labels, uncertainty=uncertainty)
    old_query = open_embeddings(args.old_query).read_all() if args.old_query else old
    ends = {"old/old": evaluate(old_query, old, distance=args.distance, topk=(1,))["metrics"],
            "new/h(old) (f=0)": evaluate(new, transformed, distance=args.distance, topk=(1,))["metrics"],
            "new/new": evaluate(new, new, distance=args.distance, topk=(1,))["metrics"]}
    print(f"rows {len(old)}, steps {args.steps}, distance {args.distance}, transform {transform.kind}"
          f"{' +uncertainty' if uncertainty is not None else ''}")
    if old.labels is not None:
        to_new, to_transformed = same_class_cosine(new, new.embeddings), same_class_cosine(new, embeddings)
        print(f"mixing: mean cosine of a new query to same-class gallery rows: new rows {to_new:.3f}, "
              f"transformed rows {to_transformed:.3f}")
    print("| case | top-1 | mAP |\n|---|---:|---:|")
    for name, metrics in ends.items():
        print(f"| {name} | {100 * metrics['top1']:.2f} | {100 * metrics['map']:.2f} |")
    shipped = {name: None for name in ORDERS if name != "uncertainty" or uncertainty is not None}
    for name, scores in {**shipped, **reference_scores(old, new, embeddings, args.old_classes)}.items():
        if args.only and name not in args.only:
            continue
        for seed in range(args.random_seeds if name == "random" else 1):
            result = curve(new, transformed, new, name, args.steps, args.distance, scores, seed)
            label = f"{name} (seed {seed})" if name == "random" and args.random_seeds > 1 else name
            print(f"| AUC {label} | {100 * result['top1'][0]:.2f} | {100 * result['map'][0]:.2f} |", flush=True)
    print(f"({time.perf_counter() - started:.0f} s; old-norm, norm-desc, oracle, oracle-gain and unseen-first are "
          "references, not shippable orders)")


if __name__ == "__main__":
    main()
