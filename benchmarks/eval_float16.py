"""float16 galleries: whole-process `compatctl eval` time and peak RSS, this checkout vs another one.

    python benchmarks/eval_float16.py --other-root /tmp/base      # e.g. a `git archive` of main

A float16 gallery (synthetic clustered rows, 100 classes) is written once as a compatctl set and as
one .npz; the first rows are the queries (leave-one-out). Each case runs `python -m compatctl eval`
in a child process under each checkout (PYTHONPATH), alternating and swapping the order every
repeat, so the ratio holds on a shared machine; a lean wrapper reads the child's peak RSS
(RUSAGE_CHILDREN). Prints the medians and the ratio this/other. The children run outside both
checkouts so that the working folder does not shadow PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

import numpy as np
from _measure import PEAK_RSS_WRAPPER

def write_inputs(root: Path, rows: int, queries: int, dim: int, classes: int) -> dict[str, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from compatctl.store import EmbeddingBlock, EmbeddingSetWriter

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(classes, dim)).astype(np.float32)
    labels = rng.integers(0, classes, rows)
    embeddings = np.empty((rows, dim), np.float16)
    for first in range(0, rows, 65536):
        part = slice(first, first + 65536)
        embeddings[part] = centers[labels[part]] + 2.0 * rng.normal(size=(len(labels[part]), dim))
    ids = np.arange(rows, dtype=np.int64)
    np.savez(root / "gallery.npz", embeddings=embeddings, ids=ids, labels=labels)
    np.savez(root / "queries.npz", embeddings=embeddings[:queries], ids=ids[:queries], labels=labels[:queries])
    writer = EmbeddingSetWriter(root / "gallery-set", rows=rows, dim=dim, header={"model_fingerprint": "bench"},
                                resume_key="bench", dtype="float16", has_labels=True)
    for index in writer.pending_shards():
        start, stop = writer.shard_bounds(index)
        writer.write_shard(index, EmbeddingBlock(embeddings[start:stop], ids[start:stop], labels[start:stop]))
    writer.finish()
    return {"npz": root / "gallery.npz", "set": root / "gallery-set", "queries": root / "queries.npz"}


def run_eval(root: Path, args: list[str], workdir: Path, report: Path) -> tuple[float, float, dict]:
    command = [sys.executable, "-m", "compatctl", "eval", *args, "--json", str(report)]
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", PEAK_RSS_WRAPPER, *command], check=True, capture_output=True, text=True,
                          cwd=workdir, env=env)
    wall, peak = (float(x) for x in done.stdout.split()[-2:])
    return wall, peak, json.loads(report.read_text())["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other-root", required=True, help="another checkout to compare with (e.g. main)")
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    this = Path(__file__).resolve().parents[1]
    roots = {"this": this, "other": Path(args.other_root).resolve()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = write_inputs(tmp, args.rows, args.queries, args.dim, 100)
        gallery_mb = args.rows * args.dim * 2 / 2**20
        print(f"gallery {args.rows:,} x {args.dim} float16 ({gallery_mb:.0f} MiB), {args.queries:,} queries, "
              f"OMP_NUM_THREADS=1, medians of {args.repeats} alternating runs")
        cases = {
            "npz, full ranking (mAP)": [str(paths["queries"]), str(paths["npz"])],
            "set, full ranking (mAP)": [str(paths["queries"]), str(paths["set"])],
            "npz, --no-map": [str(paths["queries"]), str(paths["npz"]), "--no-map"],
            "set, --no-map": [str(paths["queries"]), str(paths["set"]), "--no-map"],
        }
        print(f"{'case':<26}{'this s':>8}{'other s':>9}{'ratio':>7}{'this MiB':>10}{'other MiB':>10}{'ratio':>7}  same")
        for name, case in cases.items():
            walls, peaks, metrics = {k: [] for k in roots}, {k: [] for k in roots}, {}
            for repeat in range(args.repeats):
                for key in (list(roots) if repeat % 2 == 0 else list(roots)[::-1]):
                    wall, peak, metrics[key] = run_eval(roots[key], case, tmp, tmp / f"{key}.json")
                    walls[key].append(wall)
                    peaks[key].append(peak)
            w, p = {k: median(v) for k, v in walls.items()}, {k: median(v) for k, v in peaks.items()}
            print(f"{name:<26}{w['this']:>8.2f}{w['other']:>9.2f}{w['this'] / w['other']:>7.2f}"
                  f"{p['this']:>10.0f}{p['other']:>10.0f}{p['this'] / p['other']:>7.2f}  "
                  f"{metrics['this'] == metrics['other']}", flush=True)


if __name__ == "__main__":
    main()
