"""Coverage of `compatctl eval --ci` intervals, and the cost of a three-way eval (prints two tables).

    OMP_NUM_THREADS=1 python benchmarks/eval_intervals.py                # both parts (~2 min on 1 core)
    OMP_NUM_THREADS=1 python benchmarks/eval_intervals.py --skip-timing  # the coverage table only
    OMP_NUM_THREADS=1 python benchmarks/eval_intervals.py --skip-coverage  # the timing table only

1. Coverage (compatctl.evaluate.coverage): synthetic paired evaluations whose true values are
   known (baseline top-1 0.55, ceiling 0.85, flips 4 % / 24 %, AP ~ Beta(2, 3); each query
   duplicated 1-3 times). Per nominal level, the fraction of --replications intervals that hold
   the truth, for every statistic; the last row ignores the duplicates (each copy resampled
   alone) to show why intervals resample clusters of identical queries.
2. Time: whole-process wall time (subprocess, start-up included) of one plain eval and of a
   three-way eval (candidate + --baseline + --ceiling, then also with --ci 0.95), on
   10,000 x 10,000 128-d clustered embeddings, leave-one-out; best of --repeats.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from compatctl.evaluate.coverage import TRUTH, measure_coverage

sys.path.insert(0, str(Path(__file__).parent))
from eval_speed import clustered  # noqa: E402


def coverage_table(replications: int, levels: list[float]) -> None:
    names = list(TRUTH)
    print(f"interval coverage over {replications} replications (300 query clusters each, 1000 resamples)")
    print(f"{'nominal':>18} " + " ".join(f"{name:>18}" for name in names))
    for level in levels:
        measured = measure_coverage(replications, level, units=300, resamples=1000, seed=7)
        print(f"{level:>18.2f} " + " ".join(f"{measured[name]:>18.3f}" for name in names))
    naive = measure_coverage(replications, 0.95, units=300, resamples=1000, seed=7, hide_duplicates=True)
    print(f"{'0.95 rows alone':>18} " + " ".join(f"{naive[name]:>18.3f}" for name in names))


def wall(args: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "compatctl", *args], check=True, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return best


def timing_table(rows: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for name, seed in (("old", 1), ("new", 2), ("h_old", 3)):
            block = clustered(rows, 128, 100, seed)
            paths[name] = str(Path(folder) / f"{name}.npz")
            np.savez(paths[name], embeddings=block.embeddings, ids=block.ids, labels=block.labels)
        plain = ["eval", paths["new"], paths["h_old"]]
        three = plain + ["--baseline", paths["old"], "--ceiling", paths["new"]]
        cases = [("plain eval (new -> h(old))", plain), ("three-way (+ baseline old/old, ceiling new/new)", three),
                 ("three-way with --ci 0.95", three + ["--ci", "0.95"])]
        print(f"\nwhole-process wall time, {rows:,} x {rows:,} 128-d, best of {repeats}")
        first = None
        for label, args in cases:
            seconds = wall(args, repeats)
            first = first or seconds
            print(f"{label:<50} {seconds:6.2f} s   {seconds / first:4.2f}x")
        print(f"{'start-up only (compatctl --version)':<50} {wall(['--version'], repeats):6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-coverage", action="store_true")
    args = parser.parse_args()
    if not args.skip_coverage:
        coverage_table(args.replications, [0.8, 0.9, 0.95])
    if not args.skip_timing:
        timing_table(args.rows, args.repeats)


if __name__ == "__main__":
    main()
