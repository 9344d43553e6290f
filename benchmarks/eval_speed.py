"""Speed and memory of `compatctl eval` (prints a table; every figure comes from this script).

    python benchmarks/eval_speed.py                 # everything (the 1M-row part takes minutes)
    python benchmarks/eval_speed.py --skip-large    # without the 10k x 1M top-k run

Cases (synthetic clustered embeddings, 128-d, 100 classes, leave-one-out on the same set). Timed
pairs run alternately in one process (order swapped every repeat) and report medians, so their
ratio holds on a shared machine even when absolute seconds do not:
  1. 10,000 x 10,000: top-1, top-5 and full-ranking mAP, all cores vs COMPATCTL_THREADS=1, with
     the fraction of the machine's GEMM peak (measured here);
  2. the same with a 21-point backfill curve: its time as a multiple of one eval (target <= 2x);
  3. top-k only (target >= 0.8 of the GEMM): 10,000 queries x 200,000 float16 rows in memory,
     alternating with the same tile GEMMs alone; and 10,000 x 1,000,000 rows in float16 shards
     on disk (`compatctl eval --no-map` in a subprocess): peak RSS, rows/s and the GEMM floor
     (its multiply-adds at the peak measured at start) as a fraction of the eval's own time;
  4. the reference repositories' method, naively (full n x n distance matrix, per-query AP
     loop) on case 1 with l2: the same numbers, and the speed-up (the FCT authors' own code:
     benchmarks/eval_reference.py);
  5. whole-process `compatctl eval` three-way (--baseline, --ceiling) vs one plain eval, without
     and with --cache (target <= 1.5x).
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
from statistics import median

import numpy as np
from _measure import PEAK_RSS_WRAPPER

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
    """Best GFLOP/s of a float32 matmul on this machine: torch [rows, dim] @ [dim, cols], and numpy
    (the BLAS compatctl uses) at that size and at top-k's tile size (best of 5 each)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(rows, dim), torch.randn(dim, cols)
    torch.mm(a, b)
    best = 2 * rows * cols * dim / timed(lambda: torch.mm(a, b), repeats=5)[0]
    for m, n in ((rows, cols), (1024, 4096)):
        x, y = np.ones((m, dim), np.float32), np.ones((n, dim), np.float32)
        best = max(best, 2 * m * n * dim / timed(lambda: x @ y.T, repeats=5)[0])
    return best / 1e9


def alternating(runs: dict, repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each named callable, run in turn ``repeats`` times (order swapped every repeat)."""
    times = {name: [] for name in runs}
    for repeat in range(repeats):
        for name in (list(runs) if repeat % 2 == 0 else list(runs)[::-1]):
            started = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - started)
    return times


def with_threads(threads: str | None, run):
    """``run`` with COMPATCTL_THREADS set to ``threads`` (None: unset, all usable cores)."""
    def wrapped():
        saved = os.environ.pop("COMPATCTL_THREADS", None)
        if threads is not None:
            os.environ["COMPATCTL_THREADS"] = threads
        try:
            return run()
        finally:
            os.environ.pop("COMPATCTL_THREADS", None)
            if saved is not None:
                os.environ["COMPATCTL_THREADS"] = saved
    return wrapped


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
    measured = subprocess.run([sys.executable, "-c", PEAK_RSS_WRAPPER, *command], check=True,
                              capture_output=True, text=True)
    wall, peak_mb = (float(x) for x in measured.stdout.split()[-2:])
    report = json.loads(report_path.read_text())
    return {"wall": wall, "peak_mb": peak_mb, "metrics": report["metrics"], "elapsed": report["elapsed_s"],
            "command": " ".join(command[1:])}


def topk_against_gemm(n: int, gallery_rows: int, dim: int, classes: int, repeats: int) -> dict:
    """In memory, alternating: top-k only (``evaluate(with_map=False)`` on a float16 gallery, preparing
    every block as eval does) vs the very tile GEMMs it computes, alone on prepared float32 matrices."""
    from compatctl.evaluate.sources import get_distance, prepare
    from compatctl.evaluate.topk import TILE_COLUMNS, TILE_ROWS

    gallery = clustered(gallery_rows, dim, classes, seed=1)
    gallery16 = EmbeddingBlock(gallery.embeddings.astype(np.float16), gallery.ids, gallery.labels)
    queries = EmbeddingBlock(gallery16.embeddings[:n].astype(np.float32), gallery.ids[:n], gallery.labels[:n])
    cosine = get_distance("cosine")
    query_matrix = prepare(queries, dim, cosine, gallery=False).matrix
    gallery_matrix = prepare(gallery16, dim, cosine, gallery=True).matrix

    def gemm_only() -> None:
        for first_col in range(0, gallery_rows, TILE_COLUMNS):
            columns = gallery_matrix[first_col:first_col + TILE_COLUMNS]
            for first_row in range(0, n, TILE_ROWS):
                query_matrix[first_row:first_row + TILE_ROWS] @ columns.T

    found = {}
    times = alternating({"top-k": lambda: found.__setitem__("r", evaluate(queries, gallery16, with_map=False)),
                         "GEMM only": gemm_only}, repeats)
    return {"times": times, "metrics": found["r"]["metrics"]}


def three_way(n: int, dim: int, classes: int, root: Path, repeats: int) -> dict:
    """Whole-process `compatctl eval`: plain, three-way, and three-way with a warm --cache, alternating."""
    sets = {"cand": clustered(n, dim, classes, seed=0, noise=1.6), "old": clustered(n, dim, classes, seed=0),
            "new": clustered(n, dim, classes, seed=0, noise=1.2)}
    paths = {}
    for name, block in sets.items():
        paths[name] = root / f"{name}.npz"
        np.savez(paths[name], embeddings=block.embeddings, ids=block.ids, labels=block.labels)
    base = [sys.executable, "-m", "compatctl", "eval", str(paths["cand"]), str(paths["cand"])]
    both = [*base, "--baseline", str(paths["old"]), "--ceiling", str(paths["new"])]
    cached = [*both, "--cache", str(root / "cache")]
    subprocess.run(cached, check=True, stdout=subprocess.DEVNULL)  # fills the cache
    run = lambda command: (lambda: subprocess.run(command, check=True, stdout=subprocess.DEVNULL))  # noqa: E731
    times = alternating({"plain": run(base), "three-way": run(both), "three-way --cache": run(cached)}, repeats)
    return {"times": times, "commands": {"plain": base, "three-way": both, "three-way --cache": cached}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--large-gallery", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats of each timed pair")
    parser.add_argument("--topk-gallery", type=int, default=200_000,
                        help="gallery rows of the in-memory top-k vs GEMM pair (0: skip)")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-three-way", action="store_true")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    n, d, repeats = args.rows, args.dim, args.repeats
    data = clustered(n, d, args.classes, seed=0)
    new = clustered(n, d, args.classes, seed=0, noise=1.2)
    lines = [f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start "
             "(other jobs share it: absolute seconds are noisy, ratios of alternating runs less so)"]
    peak = gemm_peak_gflops(n, n, d, args.threads)
    useful = 2 * n * n * d / 1e9
    lines.append(f"GEMM peak (best of torch.mm {n}x{d} @ {d}x{n} and numpy at that size and 1024x4096, "
                 f"{args.threads} threads): {peak:.0f} GFLOP/s")
    results = {}
    rows = []
    for distance in ("cosine", "l2"):
        runs = {"all cores": with_threads(None, lambda: results.__setitem__(distance, evaluate(data, data,
                                                                                                  distance=distance))),
                "1 thread": with_threads("1", lambda: evaluate(data, data, distance=distance))}
        times = alternating(runs, repeats)
        wall, single = median(times["all cores"]), median(times["1 thread"])
        rows.append((f"1. eval {distance} top1/top5/full mAP", f"{n}x{n}", wall, "",
                     _metrics(results[distance]["metrics"]),
                     f"{useful / wall / peak:.1%} of GEMM peak; 1 thread {single:.2f} s ({single / wall:.2f}x); "
                     f"runs {_runs(times['all cores'])}"))
    curve = {}
    times = alternating({"eval": lambda: evaluate(data, data),
                         "curve": lambda: curve.__setitem__("r", backfill_curve(data, data, new, steps=20))},
                        repeats)
    ratio = median(times["curve"]) / median(times["eval"])
    rows.append(("2. backfill curve, 21 points", f"{n}x{n}", median(times["curve"]), "<= 2x one eval",
                 "AUC " + _metrics(curve["r"]["curve"]["auc"]),
                 f"{ratio:.2f}x one eval (eval runs {_runs(times['eval'])}, curve runs {_runs(times['curve'])})"))
    if not args.skip_naive:
        naive_s, naive = timed(lambda: naive_reference(data.embeddings, data.labels))
        l2_s = min(median(alternating({"l2": lambda: evaluate(data, data, distance="l2")}, 1)["l2"]), rows[1][2])
        same = all(abs(naive[k] - results["l2"]["metrics"][k]) < 1e-6 for k in naive)
        rows.append(("4. naive reference (n x n matrix + AP loop), l2", f"{n}x{n}", naive_s, "",
                     _metrics(naive), f"speed-up of eval l2: {naive_s / l2_s:.1f}x; same numbers: {same}"))
    if not args.skip_three_way:
        with tempfile.TemporaryDirectory() as tmp:
            three = three_way(n, d, args.classes, Path(tmp), repeats)
        plain = median(three["times"]["plain"])
        for name in ("plain", "three-way", "three-way --cache"):
            wall = median(three["times"][name])
            rows.append((f"5. whole process: eval {name}", f"{n}x{n}", wall, "" if name == "plain" else "<= 1.5x",
                         "", f"{wall / plain:.2f}x plain; runs {_runs(three['times'][name])}"))
        lines.append("case 5 command: python " + " ".join(three["commands"]["three-way --cache"][1:]))
    if args.topk_gallery:
        paired = topk_against_gemm(n, args.topk_gallery, d, args.classes, repeats)
        topk_s, gemm_s = median(paired["times"]["top-k"]), median(paired["times"]["GEMM only"])
        rows.append(("3. top-k only vs its GEMMs alone, in memory, float16", f"{n}x{args.topk_gallery}", topk_s,
                     ">= 0.8 of GEMM", _metrics(paired["metrics"]),
                     f"GEMM alone {gemm_s:.2f} s = {gemm_s / topk_s:.2f} of top-k (top-k runs "
                     f"{_runs(paired['times']['top-k'])}, GEMM runs {_runs(paired['times']['GEMM only'])})"))
    if not args.skip_large:
        with tempfile.TemporaryDirectory() as tmp:
            large = large_topk(n, args.large_gallery, d, args.classes, Path(tmp))
        floor = 2 * n * args.large_gallery * d / 1e9 / peak
        rows.append((f"3. top-k only, float16 shards, subprocess", f"{n}x{args.large_gallery}", large["wall"],
                     ">= 0.8 of GEMM", _metrics(large["metrics"]),
                     f"GEMM floor {floor:.1f} s = {floor / large['elapsed']:.2f} of eval's own "
                     f"{large['elapsed']:.1f} s "
                     f"({floor / large['wall']:.2f} of the whole process); peak RSS {large['peak_mb']:.0f} MB; "
                     f"{args.large_gallery / large['wall']:,.0f} gallery rows/s"))
        lines.append(f"case 3 command: python {large['command']}")
    _print(rows, lines)


def _runs(times: list[float]) -> str:
    return "/".join(f"{t:.2f}" for t in times)


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
