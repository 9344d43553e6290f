"""One process vs ``--engine ray``: backfill and eval wall time, peak RSS per process, Ray's overhead.

    python benchmarks/ray_scale.py --rows 1000000 --budget 0.3 --queries 10000 --map-queries 2000 --workers 2

Generates an old gallery (ROWS x DIM_OLD), the new model's embeddings of it (ROWS x DIM_NEW) and
a query set (QUERIES x DIM_NEW) as embedding sets, fits a linear transform on a 20k-row sample,
then runs the real CLI as subprocesses:

  backfill GALLERY --transform T --budget B --new-embeddings NEW    (local, then --engine ray)
  eval QUERIES NEW_GALLERY --no-map                                (top-k; local, then --engine ray)
  eval QUERIES[:MAP_QUERIES] NEW_GALLERY                           (full ranking, mAP; likewise)

Each run's processes are sampled from /proc every 0.1 s: the peak RSS of the driver, of the
largest Ray worker and of Ray's own daemons, and the peak of their sum. The outputs of the two
engines are compared (backfill: every file byte for byte; eval: every metric). Ray's overhead is
its wall time minus the ideal (one-process wall / workers); "ray start" is the wall time of a
process that only starts a local Ray instance, runs one task and stops it.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def generate(out: Path, rows: int, queries: int, dim_old: int, dim_new: int, classes: int, seed: int = 0) -> None:
    """Old gallery, new embeddings of the same ids, and new-model queries, written shard by shard."""
    from compatctl.store import EmbeddingBlock, EmbeddingSetWriter

    rng = np.random.default_rng(seed)
    centers = 0.4 * rng.normal(size=(classes, dim_new)).astype(np.float32)  # overlapping classes: metrics below 1
    mix = (rng.normal(size=(dim_new, dim_old)) / np.sqrt(dim_new)).astype(np.float32)
    shard = 65536
    writers = {name: EmbeddingSetWriter(out / name, rows=n, dim=d, header={"model_fingerprint": fp},
                                        resume_key=name, shard_rows=shard, has_labels=True)
               for name, n, d, fp in (("gallery", rows, dim_old, "old-fp"), ("new", rows, dim_new, "new-fp"),
                                      ("queries", queries, dim_new, "new-fp"))}
    for name, writer in writers.items():
        for index in writer.pending_shards():
            start, stop = writer.shard_bounds(index)
            rows_rng = np.random.default_rng((seed, index, name == "queries"))  # gallery and new: same items
            labels = rows_rng.integers(0, classes, stop - start)
            new = centers[labels] + rows_rng.normal(size=(stop - start, dim_new)).astype(np.float32)
            ids = np.arange(start, stop, dtype=np.int64) + (10**9 if name == "queries" else 0)
            embeddings = new if name != "gallery" else new @ mix + 0.5 * rng.normal(size=(stop - start, dim_old))
            writer.write_shard(index, EmbeddingBlock(embeddings.astype(np.float32), ids, labels))
        writer.finish()


def fit_transform_on_sample(out: Path, sample: int = 20000) -> Path:
    from compatctl.store import open_embeddings, write_embedding_set
    from compatctl.transform import fit_transform, load_transform_config

    for name, fp in (("gallery", "old-fp"), ("new", "new-fp")):
        block = next(open_embeddings(out / name).iter_blocks(sample))
        write_embedding_set(out / f"sample-{name}", block, header={"model_fingerprint": fp})
    path = out / "h.safetensors"
    fit_transform(out / "sample-gallery", out / "sample-new", path, config=load_transform_config(None, ["kind=linear"]))
    return path


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(entry))
    return tree


def _rss_mb(pid: int) -> tuple[float, str]:
    try:
        status = open(f"/proc/{pid}/status").read()
        cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
    except OSError:
        return 0.0, ""
    rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), 0)
    return rss / 1024, cmd


def run_measured(args: list[str], env: dict) -> dict:
    """Run a command; wall time and peak RSS (MB) of the driver, the largest Ray worker, Ray's daemons, the sum."""
    started = time.perf_counter()
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"driver": 0.0, "worker": 0.0, "daemons": 0.0, "sum": 0.0}
    while process.poll() is None:
        tree, stack, seen = _children(), [process.pid], []
        while stack:
            pid = stack.pop()
            seen.append(pid)
            stack.extend(tree.get(pid, []))
        total, daemons = 0.0, 0.0
        for pid in seen:
            rss, cmd = _rss_mb(pid)
            total += rss
            if pid == process.pid:
                peak["driver"] = max(peak["driver"], rss)
            elif cmd.startswith("ray::") or "default_worker.py" in cmd:
                peak["worker"] = max(peak["worker"], rss)
            else:
                daemons += rss
        peak["daemons"], peak["sum"] = max(peak["daemons"], daemons), max(peak["sum"], total)
        time.sleep(0.1)
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({process.returncode}):\n{err[-2000:]}")
    return {"wall_s": time.perf_counter() - started, **{f"{k}_mb": v for k, v in peak.items()}, "stdout": out}


def ray_start_s(env: dict) -> float:
    code = ("import ray; ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False); "
            "ray.get(ray.remote(lambda: 1).remote()); ray.shutdown()")
    return run_measured([sys.executable, "-c", code], env)["wall_s"]


def same_folder(one: Path, other: Path) -> bool:
    names = sorted(p.name for p in one.iterdir())
    return names == sorted(p.name for p in other.iterdir()) and all(
        filecmp.cmp(one / n, other / n, shallow=False) for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--eval-gallery", type=int, default=None, help="gallery rows for eval (default --rows)")
    parser.add_argument("--dim-old", type=int, default=64)
    parser.add_argument("--dim-new", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--budget", type=float, default=0.3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--map-queries", type=int, default=2000,
                        help="queries of the full-ranking eval (the first N; 0: skip it); top-k uses all")
    parser.add_argument("--skip", default="", help="comma list of stages to skip: backfill,eval")
    parser.add_argument("--ray-niceness", type=int, default=None,
                        help="RAY_worker_niceness (Ray starts its workers at nice 15: on a shared machine they "
                             "yield to every other job; 0 makes both engines compete alike)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/compatctl-ray-bench"))
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", RAY_DEDUP_LOGS="0")
    if args.ray_niceness is not None:
        env["RAY_worker_niceness"] = str(args.ray_niceness)
    out = args.out
    if not (out / "queries" / "manifest.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        generate(out, args.rows, args.queries, args.dim_old, args.dim_new, args.classes)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - t:.1f} s", flush=True)
    transform = out / "h.safetensors"
    if not transform.exists():
        fit_transform_on_sample(out)
    cli = [sys.executable, "-m", "compatctl"]
    ray = ["--engine", "ray", "--workers", str(args.workers)]
    rows: list = []
    add(rows, "ray start (init + 1 task + stop)", {"wall_s": ray_start_s(env)}, args.workers)
    if "backfill" not in args.skip:
        for name, extra in (("local", []), ("ray", ray)):
            shutil.rmtree(out / f"backfill-{name}", ignore_errors=True)
            command = cli + ["backfill", str(out / "gallery"), "--transform", str(transform), "--out",
                             str(out / f"backfill-{name}"), "--budget", str(args.budget), "--new-embeddings",
                             str(out / "new"), *extra]
            add(rows, f"backfill {args.rows:,} rows budget {args.budget} [{name}]", run_measured(command, env),
                args.workers)
        identical = same_folder(out / "backfill-local", out / "backfill-ray")
        add(rows, "backfill outputs byte-identical", {"note": str(identical)}, args.workers)
    if "eval" not in args.skip:
        gallery = out / ("backfill-local" if (out / "backfill-local" / "manifest.json").exists() else "new")
        if args.map_queries:
            subset(out / "queries", out / f"queries-{args.map_queries}", args.map_queries)
        runs = [("top-k only", out / "queries", ["--no-map"])] + (
            [("full ranking", out / f"queries-{args.map_queries}", [])] if args.map_queries else [])
        for what, queries, flags in runs:
            reports = {}
            for name, extra in (("local", []), ("ray", ray)):
                report = out / f"eval-{name}.json"
                command = cli + ["eval", str(queries), str(gallery), "--json", str(report), *flags, *extra]
                n = json.loads((queries / "manifest.json").read_text())["rows"]
                add(rows, f"eval {n:,} x {args.rows:,} {what} [{name}]", run_measured(command, env), args.workers)
                reports[name] = json.loads(report.read_text())["metrics"]
            diff = max(abs(reports["local"][k] - reports["ray"][k]) for k in reports["local"])
            add(rows, f"eval {what}: metrics max abs(local - ray)", {"note": f"{diff:.3g} {reports['local']}"},
                args.workers)


def subset(source: Path, target: Path, rows: int) -> None:
    """The first ``rows`` rows of a set, as a set of their own (the full-ranking eval's queries)."""
    from compatctl.store import open_embeddings, write_embedding_set

    if not (target / "manifest.json").exists():
        shutil.rmtree(target, ignore_errors=True)
        write_embedding_set(target, next(open_embeddings(source).iter_blocks(rows)),
                            header={"model_fingerprint": "new-fp"})


def add(rows: list, name: str, result: dict, workers: int) -> None:
    """Record a row and print it at once (a long run shows what it has measured so far)."""
    if not rows:
        print("| run | wall s | driver MB | largest worker MB | Ray daemons MB | all processes MB |")
        print("|---|---:|---:|---:|---:|---:|")
    rows.append((name, result))
    if "note" in result:
        print(f"| {name} | {result['note']} | | | | |", flush=True)
        return
    cells = [f"{result['wall_s']:.1f}"] + [f"{result[k]:.0f}" if k in result else "" for k in
                                           ("driver_mb", "worker_mb", "daemons_mb", "sum_mb")]
    print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    stage = name.split(" [")[0]
    local = dict(rows).get(f"{stage} [local]")
    if name.endswith("[ray]") and local:
        ideal = local["wall_s"] / workers
        print(f"| {stage}: Ray overhead vs ideal ({workers} workers) | {result['wall_s'] - ideal:+.1f} s "
              f"(speed-up {local['wall_s'] / result['wall_s']:.2f}x) | | | | |", flush=True)


if __name__ == "__main__":
    main()
