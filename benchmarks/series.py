"""A series of updates on CIFAR-10: v1 (first 4 classes) → v2 (first 7) → v3 (all 10), BT² and BCT.

    python benchmarks/series.py --out runs/series                       # 500 train / 100 test images per class
    python benchmarks/series.py --out runs/series --train-per-class 1000 --test-per-class 200 --epochs 10

The pipeline is `compatctl demo --series` (compatctl/demo_series.py) on a class-balanced
CIFAR-10 subset written once from the ``--cifar`` tarball (benchmarks/robustness.py's
``cifar_npz``): v1 independent; per method v2 with ``--old v1`` and v3 with ``--old v2`` at the
method defaults (BT² distils from its version's independent model, extra dims = dim / 4); the
independent v2 and v3. Every model trains ``--epochs`` epochs. The test split is query set and
gallery (leave-one-out, cosine). Printed: per method the 3×3 top-1 matrix (rows: query version),
the criteria of issue 17 (every vj/vi > vi/vi; vj/vj >= 0.97 × the independent model of that
version), and the forward transforms (mlp, on the independent models' train embeddings): v3
queries against the v1 gallery through the chain H23∘H12 and through the direct H13, with gap
closed = (M − M(v1/v1)) / (M(v3/v3 independent) − M(v1/v1)).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10_jpg.tar.gz"


def subset(data_dir: Path, cifar: Path, train_per_class: int, test_per_class: int) -> Path:
    """The CIFAR-10 subset as an .npz (written once)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from robustness import cifar_npz

    path = data_dir / f"cifar10-{train_per_class}-{test_per_class}.npz"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        cifar_npz(path, cifar, train_per_class, test_per_class, gray16=False)
    return path


def print_tables(report: dict) -> None:
    versions = ("v1", "v2", "v3")
    for method, result in report["series"].items():
        cells = {(p["query"], p["gallery"]): p["metrics"] for p in result["matrix"]["pairs"]}
        print(f"\n{method}: top-1 % (rows: query version, columns: gallery version)")
        print("| query \\ gallery | " + " | ".join(versions) + " |")
        print("| --- | " + " | ".join("---:" for _ in versions) + " |")
        for query in versions:
            print(f"| {query} | " + " | ".join(f"{100 * cells[(query, g)]['top1']:.1f}" for g in versions) + " |")
        series = result["series"]
        for pair in series["pairs"]:
            verdict = "yes" if pair["compatible"]["top1"] else "NO"
            print(f"{pair['newer']}/{pair['older']} {100 * pair['cross']['top1']:.1f} > {pair['older']}/{pair['older']} "
                  f"{100 * pair['older_self']['top1']:.1f}: {verdict}")
        print(f"P_compat (top-1) {series['p_compat']['top1']:.2f}, mean gain {100 * series['mean_gain']['top1']:+.1f}, "
              f"min gain {100 * series['min_gain']['top1']:+.1f} points")
        for version, versus in result["versus_independent"].items():
            verdict = "yes" if versus["ratio"] >= 0.97 else "NO"
            print(f"{version}/{version} {100 * versus['top1']:.1f} = {versus['ratio']:.3f} x independent "
                  f"{100 * versus['independent_top1']:.1f} (>= 0.97: {verdict})")
    print("\nforward transforms (mlp) on the independent models, v1 test gallery:")
    print("| case (query/gallery) | top-1 % | mAP % | gap closed (top-1) |")
    print("| --- | ---: | ---: | ---: |")
    for case, metrics in report["transforms"].items():
        gap = metrics.get("gap_closed_top1")
        print(f"| {case} | {100 * metrics['top1']:.1f} | {100 * metrics['map']:.1f} | "
              f"{'' if gap is None else f'{gap:.2f}'} |")
    print(f"\n{report['seconds']:.0f} s in all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs (replaced by each run)")
    parser.add_argument("--cifar", type=Path, default=CIFAR, help="the CIFAR-10 tarball")
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--transform-epochs", type=int, default=40)
    parser.add_argument("--arch", default="tiny_cnn")
    parser.add_argument("--embedding-dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", action="store_true", help="print the tables of an earlier run's report.json")
    args = parser.parse_args()
    if args.report:
        print_tables(json.loads((args.out / "series" / "report.json").read_text()))
        return
    from compatctl.demo import DemoSettings
    from compatctl.demo_series import run_series_demo

    data = subset(args.out / "data", args.cifar, args.train_per_class, args.test_per_class)
    settings = DemoSettings(data=str(data), arch=args.arch, embedding_dim=args.embedding_dim, epochs=args.epochs,
                            transform_epochs=args.transform_epochs, seed=args.seed)
    print(json.dumps({"settings": vars(args) | {"out": str(args.out), "cifar": str(args.cifar)}}, default=str))
    print_tables(run_series_demo(args.out / "series", settings=settings))


if __name__ == "__main__":
    main()
