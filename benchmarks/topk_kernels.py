"""Top-k only (`eval --no-map`): the numpy kernel vs faiss's knn kernel vs the bare tile GEMMs, alternating.

    python benchmarks/topk_kernels.py                       # 4,096 queries x 200,000 rows, 128-d
    python benchmarks/topk_kernels.py --queries 10000 --rows 1000000

Synthetic clustered rows (100 classes), cosine, leave-one-out (the queries are the first gallery
rows), k = 5. The gallery is prepared once and kept, so each run times the kernel alone:
  gemm          the numpy tile GEMMs the numpy kernel computes, nothing else (the floor);
  numpy         topk_only(kernel="numpy"): tile GEMMs + vectorised merge, rows in parallel pieces;
  faiss         topk_only(kernel="faiss"): faiss.knn per gallery block (k + 4 rows), ties by id;
  faiss-1t      the same with COMPATCTL_THREADS=1 (faiss's OpenMP on one thread).
Runs alternate (order reversed every repeat); the table gives min and median seconds and
gemm/kernel (the fraction of the GEMM floor: 1.0 = the bookkeeping costs nothing), and checks
that both kernels found the same hits.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compatctl.evaluate import topk  # noqa: E402
from compatctl.evaluate.ranking import MetricSums  # noqa: E402
from compatctl.evaluate.sources import Gallery, as_source, get_distance, query_blocks  # noqa: E402
from compatctl.store import EmbeddingBlock  # noqa: E402


def clustered(rows: int, dim: int, classes: int) -> EmbeddingBlock:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(classes, dim)).astype(np.float32)
    labels = rng.integers(0, classes, rows)
    embeddings = (centers[labels] + 2.0 * rng.normal(size=(rows, dim))).astype(np.float16)
    return EmbeddingBlock(embeddings, np.arange(rows, dtype=np.int64), labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=4096)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    block = clustered(args.rows, args.dim, 100)
    distance = get_distance("cosine")
    gallery = Gallery(as_source(block), args.dim, distance, 16384, cache_bytes=1 << 40)  # prepared once
    queries = list(query_blocks(as_source(block.take(slice(0, args.queries))), args.dim, distance, 2048))
    found = {}

    def gemm() -> None:
        for _, prepared in gallery.blocks():
            for first_col in range(0, len(prepared.ids), topk.TILE_COLUMNS):
                columns = prepared.matrix[first_col:first_col + topk.TILE_COLUMNS]
                for query in queries:
                    for first_row in range(0, len(query.ids), topk.TILE_ROWS):
                        query.matrix[first_row:first_row + topk.TILE_ROWS] @ columns.T

    def kernel(name: str, threads: str | None):
        def run() -> None:
            saved = os.environ.pop("COMPATCTL_THREADS", None)
            if threads:
                os.environ["COMPATCTL_THREADS"] = threads
            try:
                sums = MetricSums((1, 5), with_map=False)
                topk.topk_only(queries, gallery, sums, kernel=name)
                found[name] = sums.hits.tolist()
            finally:
                os.environ.pop("COMPATCTL_THREADS", None)
                if saved is not None:
                    os.environ["COMPATCTL_THREADS"] = saved
        return run

    runs = {"gemm": gemm, "numpy": kernel("numpy", None), "faiss": kernel("faiss", None),
            "faiss-1t": kernel("faiss", "1")}
    times = {name: [] for name in runs}
    for repeat in range(args.repeats):
        for name in (list(runs) if repeat % 2 == 0 else list(runs)[::-1]):
            started = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - started)
    print(f"{args.queries:,} queries x {args.rows:,} rows, {args.dim}-d, cosine, k=5, {os.cpu_count()} cpus, "
          f"load average {os.getloadavg()[0]:.1f}, {args.repeats} alternating repeats")
    print(f"{'run':<10}{'min s':>8}{'median s':>10}{'gemm/run (min)':>16}{'gemm/run (median)':>19}")
    for name, values in times.items():
        print(f"{name:<10}{min(values):>8.2f}{median(values):>10.2f}{min(times['gemm']) / min(values):>16.2f}"
              f"{median(times['gemm']) / median(values):>19.2f}")
    print(f"same hits (top-1, top-5): numpy {found['numpy']}, faiss {found['faiss']}: {found['numpy'] == found['faiss']}")


if __name__ == "__main__":
    main()
