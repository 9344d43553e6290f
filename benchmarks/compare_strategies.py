"""Wall time and table of `compatctl compare` (every way to ship an update, side by side).

Synthetic pairs (default; benchmarks/transform_fit.py's generator: a random nonlinear teacher
maps clustered latents to a noisier "old" and a cleaner "new" 128-d embedding), 50,000 train
and 10,000 test items, or real embedding sets:

    python benchmarks/compare_strategies.py                                  # synthetic 50k / 10k x 128
    python benchmarks/compare_strategies.py --old O --new N --old-test OT --new-test NT [--compatible bt2=B]

It runs the real command (`python -m compatctl compare ...`) in a subprocess and prints its wall
time, the per-step seconds the report records, and the strategies' table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("old", "new", "old-test", "new-test"):
        parser.add_argument(f"--{name}", type=Path)
    parser.add_argument("--compatible", nargs="*", default=[], help="NAME=EMB of compatible-model test queries")
    parser.add_argument("--train-rows", type=int, default=50_000)
    parser.add_argument("--test-rows", type=int, default=10_000)
    parser.add_argument("--kind", default="auto")
    parser.add_argument("--out", type=Path, help="compare's output folder (default: a temporary one)")
    parser.add_argument("extra", nargs="*", help="more compare options, after --")
    return parser.parse_args()


def synthetic_sets(root: Path, train_rows: int, test_rows: int) -> dict[str, Path]:
    import numpy as np

    from compatctl.store import EmbeddingBlock, write_embedding_set
    from transform_fit import synthetic_pairs

    paths = {}
    for split, part in zip(("train", "test"), synthetic_pairs(train_rows, test_rows)):
        ids = np.arange(len(part["labels"]), dtype=np.int64)
        for model in ("old", "new"):
            path = root / f"{model}-{split}"
            write_embedding_set(path, EmbeddingBlock(part[model], ids, part["labels"].astype(np.int64)),
                                header={"model_fingerprint": f"{model}-model"})
            paths[f"{model}-{split}"] = path
    return paths


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.old is None:
            made = synthetic_sets(root, args.train_rows, args.test_rows)
            sets = [made["old-train"], made["new-train"], made["old-test"], made["new-test"]]
        else:
            sets = [args.old, args.new, args.old_test, args.new_test]
        out = args.out or root / "compare"
        command = [sys.executable, "-m", "compatctl", "compare", "--old", sets[0], "--new", sets[1], "--old-test",
                   sets[2], "--new-test", sets[3], "--out", out, "--kind", args.kind, *args.extra]
        for spec in args.compatible:
            command += ["--compatible", spec]
        started = time.perf_counter()
        result = subprocess.run(list(map(str, command)), capture_output=True, text=True)
        wall = time.perf_counter() - started
        if result.returncode:
            sys.exit(result.stderr + result.stdout)
        report = json.loads((out / "report.json").read_text())
    print(f"compatctl compare: {wall:.1f} s wall ({report['inputs']['test_rows']} test items, kind {args.kind})")
    print("| step | seconds |\n| --- | ---: |")
    for step, seconds in report["timings_s"].items():
        print(f"| {step} | {seconds:.1f} |")
    print("\n| strategy | top-1 % | mAP % | gap closed top-1 | gap closed mAP | rows re-embedded |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in report["strategies"]:
        gap = row["gap_closed"]
        fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"| {row['name']} | {100 * row['metrics']['top1']:.2f} | {100 * row['metrics']['map']:.2f} | "
              f"{fmt(gap['top1'])} | {fmt(gap['map'])} | {100 * row['cost']['rows_reembedded_fraction']:.1f} % |")
    rec = report["recommendation"]
    print(f"\nrecommendation: {rec['strategy']} ({rec['why']})")
    print(f"transforms: forward {report['transforms']['forward']['kind']}, query {report['transforms']['query']['kind']}; "
          f"best backfill order: {report['partial_backfill']['best_order']}")


if __name__ == "__main__":
    main()
