"""Speed and memory of `compatctl eval` (prints a table; every figure comes from this script).

    python benchmarks/eval_speed.py                 # everything (the 1M-row part takes minutes)
    python benchmarks/eval_speed.py --skip-large    # without the 10k x 1M top-k run

Cases (synthetic clustered embeddings, 128-d, 100 classes, leave-one-out on the same set):
  1. 10,000 x 10,000: top-1, top-5 and full-ranking mAP (target < 3 s wall on 2 cores), with the
     fraction of the machine's GEMM peak (a torch matmul of the same size, measured here);
  2. the same with a 21-point backfill curve (target < 30 s);
  3. 10,000 queries x 1,000,000 gallery rows in float16 shards on disk, top-k only
     (`compatctl eval --no-map` in a subprocess): peak RSS (target < 2 GB) and rows/s;
  4. the reference repositories' method, naively (full n x n distance matrix, per-query AP
     loop) on case 1 with l2: the same numbers, and the speed-up.
torch is imported here only to measure the GEMM peak; the eval path never imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from compatctl.evaluate import backfill_curve, evaluate
from compatctl.store import EmbeddingBlock, EmbeddingSetWriter, open_embeddings


def clustered(rows: int, dim: int, classes: int, seed: int, noise: float = 2.0, id_offset: int = 0) -> EmbeddingBlock:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(12345).normal(size=(classes, dim)).astype(np.float32)
    labels = rng.integers(0, classes, rows)
    embeddings = centers[labels] + noise * rng.normal(size=(rows, dim)).astype(np.float32)
    return EmbeddingBlock(embeddings, np.arange(id_offset, id_offset + rows, dtype=np.int64), labels)


def timed(run, repeats: int = 1):
    """(best wall seconds, last result) over ``repeats`` runs."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def gemm_peak_gflops(rows: int, cols: int, dim: int, threads: int) -> float:
    """GFLOP/s of a torch float32 matmul [rows, dim] @ [dim, cols] (best of 5)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(rows, dim), torch.randn(dim, cols)
    torch.mm(a, b)
    seconds, _ = timed(lambda: torch.mm(a, b), repeats=5)
    return 2 * rows * cols * dim / seconds / 1e9


def naive_reference(embeddings: np.ndarray, labels: np.ndarray) -> dict:
    """The reference repositories' way: full n x n l2 distance matrix, then a Python loop per query."""
    squared = (embeddings.astype(np.float32) ** 2).sum(1)
    distances = squared[:, None] + squared[None, :] - 2 * embeddings @ embeddings.T
    top1 = top5 = 0
    aps = []
    for i in range(len(labels)):
        order = np.argsort(distances[i], kind="stable")
        order = order[order != i]  # leave-one-out
        matches = labels[order] == labels[i]
        top1 += matches[0]
        top5 += matches[:5].any()
        hits = np.cumsum(matches)
        aps.append(float((hits[matches] / (np.flatnonzero(matches) + 1)).mean()))
    n = len(labels)
    return {"top1": top1 / n, "top5": top5 / n, "map": float(np.mean(aps))}


_PEAK_RSS_WRAPPER = """
import resource, subprocess, sys, time
started = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def large_topk(queries: int, gallery_rows: int, dim: int, classes: int, root: Path) -> dict:
    """Write a float16 sharded gallery, run `compatctl eval --no-map` in a subprocess; time and peak RSS."""
    gallery_dir, query_path = root / "gallery", root / "queries.npz"
    writer = EmbeddingSetWriter(gallery_dir, rows=gallery_rows, dim=dim, header={"model_fingerprint": "bench"},
                                resume_key="bench", dtype="float16", has_labels=True)
    for index in writer.pending_shards():
        start, stop = writer.shard_bounds(index)
        writer.write_shard(index, clustered(stop - start, dim, classes, seed=index, id_offset=start))
    writer.finish()
    query_block = next(open_embeddings(gallery_dir).iter_blocks(queries))  # the first gallery rows: leave-one-out
    np.savez(query_path, embeddings=query_block.embeddings, ids=query_block.ids, labels=query_block.labels)
    report_path = root / "report.json"
    command = [sys.executable, "-m", "compatctl", "eval", str(query_path), str(gallery_dir), "--no-map",
               "--json", str(report_path)]
    # A lean wrapper runs eval as its child: a child forked from this (big) process would report
    # this process's RSS as its own peak, so the wrapper reads RUSAGE_CHILDREN of its own child.
    measured = subprocess.run([sys.executable, "-c", _PEAK_RSS_WRAPPER, *command], check=True,
                              capture_output=True, text=True)
    wall, peak_mb = (float(x) for x in measured.stdout.split()[-2:])
    report = json.loads(report_path.read_text())
    return {"wall": wall, "peak_mb": peak_mb, "metrics": report["metrics"], "command": " ".join(command[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--large-gallery", type=int, default=1_000_000)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    n, d = args.rows, args.dim
    data = clustered(n, d, args.classes, seed=0)
    new = clustered(n, d, args.classes, seed=0, noise=1.2)
    lines = [f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start "
             "(other jobs share it: figures are noisy)"]

    cosine_s, cosine = timed(lambda: evaluate(data, data), repeats=3)
    l2_s, l2 = timed(lambda: evaluate(data, data, distance="l2"), repeats=3)
    curve_s, curve = timed(lambda: backfill_curve(data, data, new, steps=20), repeats=1)
    peak = gemm_peak_gflops(n, n, d, args.threads)
    useful = 2 * n * n * d / 1e9
    lines.append(f"GEMM peak (torch.mm {n}x{d} @ {d}x{n}, {args.threads} threads): {peak:.0f} GFLOP/s")
    rows = [("1. eval cosine top1/top5/full mAP", f"{n}x{n}", cosine_s, "< 3 s",
             _metrics(cosine["metrics"]), f"{useful / cosine_s / peak:.1%} of GEMM peak"),
            ("1. eval l2 top1/top5/full mAP", f"{n}x{n}", l2_s, "< 3 s", _metrics(l2["metrics"]),
             f"{useful / l2_s / peak:.1%} of GEMM peak"),
            ("2. backfill curve, 21 points", f"{n}x{n}", curve_s, "< 30 s",
             "AUC " + _metrics(curve["curve"]["auc"]), "")]
    if not args.skip_naive:
        naive_s, naive = timed(lambda: naive_reference(data.embeddings, data.labels))
        same = all(abs(naive[k] - l2["metrics"][k]) < 1e-6 for k in naive)
        rows.append(("4. naive reference (n x n matrix + AP loop), l2", f"{n}x{n}", naive_s, "",
                     _metrics(naive), f"speed-up of eval l2: {naive_s / l2_s:.1f}x; same numbers: {same}"))
    if not args.skip_large:
        with tempfile.TemporaryDirectory() as tmp:
            large = large_topk(n, args.large_gallery, d, args.classes, Path(tmp))
        pairs = n * args.large_gallery / large["wall"]
        rows.append((f"3. top-k only, float16 shards, subprocess", f"{n}x{args.large_gallery}", large["wall"],
                     "RSS < 2 GB", _metrics(large["metrics"]),
                     f"peak RSS {large['peak_mb']:.0f} MB; {args.large_gallery / large['wall']:,.0f} gallery rows/s "
                     f"({pairs / 1e6:,.0f} M query-row pairs/s)"))
        lines.append(f"case 3 command: python {large['command']}")
    _print(rows, lines)


def _metrics(metrics: dict) -> str:
    return " ".join(f"{k}={100 * v:.2f}" for k, v in metrics.items())


def _print(rows, lines) -> None:
    header = ("case", "size", "wall s", "target", "metrics %", "notes")
    widths = [max(len(str(r[i])) if i != 2 else 7 for r in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        cells = [row[0], row[1], f"{row[2]:.2f}", row[3], row[4], row[5]]
        print("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)))
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
