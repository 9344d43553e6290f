"""Backfill curves and their AUC (top-1, mAP) per order, with the old/old and new/new ends.

    python benchmarks/backfill_orders.py --old OLD_EMB --new NEW_EMB --transform T [--old-query OLDQ]
    python benchmarks/backfill_orders.py          # synthetic embeddings (no arguments): a smoke run

Protocol (SPEC): the test split is both query set and gallery, leave-one-out by id. New-model
queries are ranked against the gallery h(old) in which the first ceil(f*N) rows of each order
are replaced by their new-model embeddings, at f = i/steps, i = 0..steps; AUC = mean over those
steps + 1 points. Orders: the registry's (random, uncertainty when the transform has a head,
norm) plus two references that are not orders one can ship: ``old-norm`` (smallest *old*
embedding norm first) and ``oracle`` (largest true error ||new - h(old)|| first, which needs
the new embeddings). Uses compatctl.evaluate.evaluate for every point.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from compatctl.backfill import ORDERS, backfill_order, budget_rows, row_norms
from compatctl.evaluate import evaluate
from compatctl.store import EmbeddingBlock, open_embeddings


def aligned(old: EmbeddingBlock, new: EmbeddingBlock) -> EmbeddingBlock:
    """``new`` re-ordered to ``old``'s ids (every old id must be present)."""
    by_id = np.argsort(new.ids)
    pos = by_id[np.searchsorted(new.ids[by_id], old.ids)]
    if not np.array_equal(new.ids[pos], old.ids):
        raise SystemExit("the new embeddings do not cover every gallery id")
    return new.take(pos)


def reference_orders(old: EmbeddingBlock, new: EmbeddingBlock, transformed: np.ndarray) -> dict:
    ids = old.ids
    return {"old-norm": np.lexsort((ids, row_norms(old.embeddings))),
            "oracle": np.lexsort((ids, -row_norms(new.embeddings - transformed)))}


def curve(queries: EmbeddingBlock, transformed: EmbeddingBlock, new: EmbeddingBlock, order: np.ndarray,
          steps: int, distance: str) -> dict:
    points = {"top1": [], "map": []}
    for step in range(steps + 1):
        gallery = EmbeddingBlock(transformed.embeddings.copy(), transformed.ids, transformed.labels)
        chosen = order[:budget_rows(step / steps, len(order))]
        gallery.embeddings[chosen] = new.embeddings[chosen]
        metrics = evaluate(queries, gallery, distance=distance, topk=(1,))["metrics"]
        points["top1"].append(metrics["top1"])
        points["map"].append(metrics["map"])
    return {name: (np.mean(values), values) for name, values in points.items()}


def synthetic(root: Path) -> tuple[Path, Path, Path, None]:
    """Clustered new embeddings, old = a lossy view (poorer on half the classes), an mlp transform."""
    from compatctl.store import write_embedding_set
    from compatctl.transform import fit_transform, load_transform_config

    rng = np.random.default_rng(0)
    rows, classes = 3000, 20
    labels = rng.integers(0, classes, rows)
    new = rng.normal(size=(classes, 32))[labels] + 1.2 * rng.normal(size=(rows, 32))
    # As in the protocol, the old model knew only half the classes: it keeps little of the rest.
    known = np.where(labels < classes // 2, 1.0, 0.25)[:, None]
    old = known * (new @ rng.normal(size=(32, 16)) / 4) + 0.6 * rng.normal(size=(rows, 16))
    ids = np.arange(rows)
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
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--distance", default="cosine", choices=("cosine", "l2"))
    args = parser.parse_args()
    if args.old is None:
        args.old, args.new, args.transform, args.side_info = synthetic(Path(tempfile.mkdtemp(prefix="orders-")))
    from compatctl.transform import load_transform

    started = time.perf_counter()
    old, transform = open_embeddings(args.old).read_all(), load_transform(args.transform)
    new = aligned(old, open_embeddings(args.new).read_all())
    side = aligned(old, open_embeddings(args.side_info).read_all()).embeddings if args.side_info else None
    embeddings, uncertainty = transform.apply(old.embeddings, side)
    transformed = EmbeddingBlock(embeddings, old.ids, old.labels)
    old_query = open_embeddings(args.old_query).read_all() if args.old_query else old
    ends = {"old/old": evaluate(old_query, old, distance=args.distance, topk=(1,))["metrics"],
            "new/new": evaluate(new, new, distance=args.distance, topk=(1,))["metrics"]}
    orders = {name: backfill_order(name, ids=old.ids, uncertainty=uncertainty, embeddings=embeddings, seed=0)
              for name in ORDERS if name != "uncertainty" or uncertainty is not None}
    orders.update(reference_orders(old, new, embeddings))
    print(f"rows {len(old)}, steps {args.steps}, distance {args.distance}, transform {transform.kind}"
          f"{' +uncertainty' if uncertainty is not None else ''}")
    print("| case | top-1 | mAP |\n|---|---:|---:|")
    for name, metrics in ends.items():
        print(f"| {name} | {100 * metrics['top1']:.2f} | {100 * metrics['map']:.2f} |")
    for name, order in orders.items():
        result = curve(new, transformed, new, order, args.steps, args.distance)
        print(f"| AUC {name} | {100 * result['top1'][0]:.2f} | {100 * result['map'][0]:.2f} |")
    print(f"({time.perf_counter() - started:.0f} s; old-norm and oracle are references, not shippable orders)")


if __name__ == "__main__":
    main()
