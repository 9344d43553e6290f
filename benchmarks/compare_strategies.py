"""Wall time and table of `compatctl compare` (every way to ship an update, side by side).

Synthetic pairs (default; benchmarks/transform_fit.py's generator: a random nonlinear teacher
maps clustered latents to a noisier "old" and a cleaner "new" 128-d embedding), 50,000 train
and 10,000 test items, or real embedding sets:

    python benchmarks/compare_strategies.py                                  # synthetic 50k / 10k x 128
    python benchmarks/compare_strategies.py --old O --new N --old-test OT --new-test NT [--compatible bt2=B]
    python benchmarks/compare_strategies.py --byo-digits    # bring-your-own .npz from two scikit-learn models

--byo-digits: embeddings that compatctl did not make, as a team would bring them (.npz, no
fingerprints): scikit-learn's 8x8 digits (needs the [bench] extra), split 70/30 per class; the
"old" model is an MLP (one hidden layer of 32) trained on digits 0-4 only, the "new" one an MLP
with two hidden layers (128, 64) trained on all ten; an embedding is the last hidden layer.

It runs the real command (`python -m compatctl compare ...`) in a subprocess and prints its wall
time, the per-step seconds the report records, and the strategies' table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


STEPS = ["open and pair", "fit forward transform", "fit query transform",
         "evaluate old, new, compatible and both transforms", "re-ranking", "backfill curves", "report"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("old", "new", "old-test", "new-test"):
        parser.add_argument(f"--{name}", type=Path)
    parser.add_argument("--compatible", nargs="*", default=[], help="NAME=EMB of compatible-model test queries")
    parser.add_argument("--train-rows", type=int, default=50_000)
    parser.add_argument("--test-rows", type=int, default=10_000)
    parser.add_argument("--kind", default="auto")
    parser.add_argument("--out", type=Path, help="compare's output folder (default: a temporary one)")
    parser.add_argument("--byo-digits", action="store_true", help="two scikit-learn MLPs on the digits, as .npz")
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


def _hidden(model, x):
    """The last hidden layer (ReLU) of a fitted sklearn MLPClassifier."""
    import numpy as np

    for weight, bias in zip(model.coefs_[:-1], model.intercepts_[:-1]):
        x = np.maximum(x @ weight + bias, 0)
    return x.astype(np.float32)


def digits_sets(root: Path) -> dict[str, Path]:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    ids = np.arange(len(y))
    x_tr, x_te, y_tr, y_te, id_tr, id_te = train_test_split(x, y, ids, test_size=0.3, stratify=y, random_state=0)
    seen = y_tr < 5
    old = MLPClassifier((32,), max_iter=300, random_state=0).fit(x_tr[seen], y_tr[seen])
    new = MLPClassifier((128, 64), max_iter=300, random_state=1).fit(x_tr, y_tr)
    paths = {}
    for name, model in (("old", old), ("new", new)):
        for split, xs, ys, idx in (("train", x_tr, y_tr, id_tr), ("test", x_te, y_te, id_te)):
            paths[f"{name}-{split}"] = root / f"{name}-{split}.npz"
            np.savez(paths[f"{name}-{split}"], embeddings=_hidden(model, xs), labels=ys, ids=idx)
    return paths


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.old is None:
            made = digits_sets(root) if args.byo_digits else synthetic_sets(root, args.train_rows, args.test_rows)
            sets = [made["old-train"], made["new-train"], made["old-test"], made["new-test"]]
        else:
            sets = [args.old, args.new, args.old_test, args.new_test]
        out = args.out or root / "compare"
        command = [sys.executable, "-m", "compatctl", "compare", "--old", sets[0], "--new", sets[1], "--old-test",
                   sets[2], "--new-test", sets[3], "--out", out, "--kind", args.kind, *args.extra]
        for spec in args.compatible:
            command += ["--compatible", spec]
        started, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        result = subprocess.run(list(map(str, command)), capture_output=True, text=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
        if result.returncode:
            sys.exit(result.stderr + result.stdout)
        report = json.loads((out / "report.json").read_text())
    print(f"compatctl compare: {wall:.1f} s wall, {cpu_s:.1f} s CPU ({report['inputs']['test_rows']} test items, "
          f"kind {args.kind}; load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print("| step | seconds |\n| --- | ---: |")
    for step, seconds in sorted(report["timings_s"].items(), key=lambda item: STEPS.index(item[0])):
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
