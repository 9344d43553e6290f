"""Mixed galleries: the score bias between transformed and new-model rows, and a calibration of it.

A partially backfilled gallery holds h(old) rows and new-model rows. New-model queries sit
nearer to new-model rows than to transformed rows of the same class, so the two kinds of rows
are not on one scale. This script measures that bias and tries a calibration that a plain
(cosine / inner-product) index can serve, baked into the stored transformed rows:

    h_cal = |h| · unit(unit(h) + λ · m),   m = unit(mean of the new-model train embeddings)

(the norm is kept, so the `norm` order is unchanged). Under cosine, adding λ·m moves a
transformed row towards the direction every new-model query shares, which raises its score
against all queries by about λ·(q·m) before renormalisation: a shared offset where query
embeddings have a common mean direction. λ is fitted on held-out *train* pairs (20 %, not used
to fit h): the λ of a grid that maximises (top-1 + mAP)/2 of new queries against a 50 %
randomly backfilled gallery of those pairs. Then, on the test split, every order's curve with
and without calibration, random over 3 seeds.

    python benchmarks/backfill_calibration.py                 # synthetic (backfill_orders.py's data) and digits
    python benchmarks/backfill_calibration.py --data synthetic

Printed: the bias (mean cosine of new queries to same-class transformed vs new rows; share of
top-1 slots that new rows take at 50 % random backfill, against their 50 % share of the rows),
λ, and per order the AUC top-1 / mAP (11 points) without → with calibration. Two benchmark-only
orders are added: `norm-spread` and `uncertainty-spread` backfill the same share of every
k-means cluster (32, of the stored rows' directions) at every fraction, hardest first within
each cluster — random's even spread, with norm's / FastFill's choice inside each region.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compatctl.evaluate import backfill_curve, evaluate  # noqa: E402
from compatctl.store import EmbeddingBlock  # noqa: E402

GRID = [round(x, 2) for x in np.arange(-0.4, 1.21, 0.1)]


def spread(key: np.ndarray, embeddings: np.ndarray, clusters: int = 32, seed: int = 0) -> np.ndarray:
    """Row order that backfills the same share of every k-means cluster of the gallery at every
    fraction (as random does on average), hardest (smallest ``key``) first within each cluster.

    Needs only the stored (transformed) rows: clusters of their directions (k-means, 10 rounds),
    then each row's quantile of ``key`` within its cluster; rows sorted by that quantile.
    """
    x = unit(np.asarray(embeddings, np.float64))
    rng = np.random.default_rng(seed)
    centers = x[rng.choice(len(x), clusters, replace=False)]
    for _ in range(10):
        assign = (x @ centers.T).argmax(1)
        for c in range(clusters):
            members = x[assign == c]
            if len(members):
                centers[c] = unit(members.mean(0, keepdims=True))[0]
    assign = (x @ centers.T).argmax(1)
    quantile = np.empty(len(x))
    for c in np.unique(assign):
        rows = np.flatnonzero(assign == c)
        ranked = rows[np.argsort(key[rows], kind="stable")]
        quantile[ranked] = (np.arange(len(rows)) + 0.5) / len(rows)
    return np.lexsort((rng.random(len(x)), quantile))


def _register_spread_orders() -> None:
    """Benchmark-only orders (not shipped): norm / uncertainty spread over clusters of the stored rows."""
    from compatctl.backfill import orders

    orders.ORDERS["norm-spread"] = lambda ids, unc, emb, seed, norms=None: spread(np.linalg.norm(emb, axis=1), emb)
    orders.ORDERS["uncertainty-spread"] = lambda ids, unc, emb, seed, norms=None: spread(-np.asarray(unc), emb)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def calibrate(h: np.ndarray, direction: np.ndarray, lam: float) -> np.ndarray:
    """|h| · unit(unit(h) + λ·direction): cosine sees the shifted direction, the norm order the old norm."""
    return (np.linalg.norm(h, axis=1, keepdims=True) * unit(unit(h) + lam * direction)).astype(np.float32)


def mixed(h: EmbeddingBlock, new: EmbeddingBlock, fraction: float, seed: int = 0) -> EmbeddingBlock:
    pick = np.random.default_rng(seed).permutation(len(h.ids))[: int(round(fraction * len(h.ids)))]
    rows = h.embeddings.copy()
    rows[pick] = new.embeddings[pick]
    return EmbeddingBlock(rows, h.ids, h.labels)


def fit_lambda(h: EmbeddingBlock, new: EmbeddingBlock, direction: np.ndarray) -> tuple[float, dict]:
    scores = {}
    for lam in GRID:
        gallery = EmbeddingBlock(calibrate(h.embeddings, direction, lam), h.ids, h.labels)
        metrics = evaluate(new, mixed(gallery, new, 0.5), topk=(1,))["metrics"]
        scores[lam] = (metrics["top1"] + metrics["map"]) / 2
    return max(scores, key=lambda lam: (scores[lam], -abs(lam))), scores


def bias(queries: EmbeddingBlock, h: np.ndarray, new: EmbeddingBlock) -> dict:
    """Mean cosine of queries to same-class transformed / new rows (own row left out); top-1 share of new rows."""
    q, t, n = unit(queries.embeddings), unit(h), unit(new.embeddings)
    same = (queries.labels[:, None] == queries.labels[None, :]) & ~np.eye(len(q), dtype=bool)
    to_t, to_n = q @ t.T, q @ n.T
    half = np.zeros(len(q), bool)
    half[np.random.default_rng(0).permutation(len(q))[: len(q) // 2]] = True
    mixed_scores = np.where(half[None, :], to_n, to_t)
    np.fill_diagonal(mixed_scores, -np.inf)
    return {"same_class_cos_transformed": float(to_t[same].mean()), "same_class_cos_new": float(to_n[same].mean()),
            "other_class_cos_transformed": float(to_t[~same].mean()), "other_class_cos_new": float(to_n[~same].mean()),
            "top1_share_new_at_half": float(half[mixed_scores.argmax(1)].mean())}


def load_synthetic(root: Path):
    """backfill_orders.py's synthetic update: 3,000 items, 20 classes, the old model poor on half of them."""
    from backfill_orders import synthetic_update

    old, new, labels = synthetic_update()
    rows = len(labels)
    test = np.arange(rows) < 1000
    return _split(old, new, labels, np.arange(rows), test)


def load_digits():
    from compare_strategies import digits_sets

    with tempfile.TemporaryDirectory() as tmp:
        paths = digits_sets(Path(tmp))
        arrays = {name: dict(np.load(path)) for name, path in paths.items()}
    old = np.concatenate([arrays["old-train"]["embeddings"], arrays["old-test"]["embeddings"]])
    new = np.concatenate([arrays["new-train"]["embeddings"], arrays["new-test"]["embeddings"]])
    labels = np.concatenate([arrays["new-train"]["labels"], arrays["new-test"]["labels"]])
    ids = np.concatenate([arrays["new-train"]["ids"], arrays["new-test"]["ids"]])
    test = np.arange(len(ids)) >= len(arrays["new-train"]["ids"])
    return _split(old, new, labels, ids, test)


def _split(old, new, labels, ids, test):
    rng = np.random.default_rng(1)
    train = np.flatnonzero(~test)
    calib = np.zeros(len(ids), bool)
    calib[rng.choice(train, len(train) // 5, replace=False)] = True
    block = lambda a, m: EmbeddingBlock(a[m].astype(np.float32), ids[m].astype(np.int64), labels[m].astype(np.int64))  # noqa: E731
    fit = ~test & ~calib
    return {part: (block(old, m), block(new, m)) for part, m in (("fit", fit), ("calib", calib), ("test", test))}


def fit_h(root: Path, old: EmbeddingBlock, new: EmbeddingBlock):
    from compatctl.store import write_embedding_set
    from compatctl.transform import fit_transform, load_transform, load_transform_config

    write_embedding_set(root / "o", old, header={"model_fingerprint": "o"})
    write_embedding_set(root / "n", new, header={"model_fingerprint": "n"})
    config = load_transform_config(None, ["kind=mlp", "uncertainty=true", "epochs=30", "threads=2"])
    fit_transform(root / "o", root / "n", root / "t.safetensors", config=config)
    return load_transform(root / "t.safetensors")


def run(name: str, parts: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        transform = fit_h(Path(tmp), *parts["fit"])
    direction = unit(parts["fit"][1].embeddings.mean(0, keepdims=True))
    applied = {}
    for part in ("calib", "test"):
        old, new = parts[part]
        h, log_var = transform.apply(old.embeddings)
        applied[part] = (EmbeddingBlock(h, old.ids, old.labels, uncertainty=log_var), new)
    lam, grid = fit_lambda(*applied["calib"], direction)
    h, new = applied["test"]
    calibrated = EmbeddingBlock(calibrate(h.embeddings, direction, lam), h.ids, h.labels, uncertainty=h.uncertainty)
    print(f"\n## {name}: {len(new.ids)} test items; λ = {lam:g} (fitted on {len(applied['calib'][1].ids)} "
          f"held-out train pairs; grid objective at λ=0: {grid[0.0]:.4f}, at λ: {grid[lam]:.4f})")
    base = evaluate(parts["test"][0], parts["test"][0])["metrics"]
    ceiling = evaluate(new, new)["metrics"]
    start = evaluate(new, h)["metrics"]
    left = {m: 1 - (start[m] - base[m]) / (ceiling[m] - base[m]) for m in ("top1", "map")}
    print(f"old/old top-1 {100 * base['top1']:.2f} mAP {100 * base['map']:.2f}; "
          f"new/new top-1 {100 * ceiling['top1']:.2f} mAP {100 * ceiling['map']:.2f}; new/h(old) (f = 0) top-1 "
          f"{100 * start['top1']:.2f} mAP {100 * start['map']:.2f}: the transform leaves {left['top1']:.0%} of the "
          f"top-1 gap and {left['map']:.0%} of the mAP gap")
    print("\n| bias (test) | uncalibrated | calibrated |\n| --- | ---: | ---: |")
    before, after = bias(new, h.embeddings, new), bias(new, calibrated.embeddings, new)
    for key in before:
        print(f"| {key} | {before[key]:.3f} | {after[key]:.3f} |")
    print("\n| order | AUC top-1 | AUC mAP | calibrated AUC top-1 | calibrated AUC mAP |\n| --- | ---: | ---: | ---: | ---: |")
    _register_spread_orders()
    for order, seed in (("random", 0), ("random", 1), ("random", 2), ("uncertainty", 0), ("norm", 0),
                        ("uncertainty-spread", 0), ("norm-spread", 0)):
        cells = []
        for gallery in (h, calibrated):  # norm orders read the kept norms; spread clusters by direction
            auc = backfill_curve(new, gallery, new, order=order, steps=10, seed=seed)["curve"]["auc"]
            cells += [f"{100 * auc['top1']:.2f}", f"{100 * auc['map']:.2f}"]
        label = f"random seed {seed}" if order == "random" else order
        print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="*", default=["synthetic", "digits"], choices=("synthetic", "digits"))
    args = parser.parse_args()
    for name in args.data:
        run(name, load_synthetic(None) if name == "synthetic" else load_digits())


if __name__ == "__main__":
    main()
