"""Stream the same float16 embeddings from a compatctl set, Parquet and a .npy shard folder; print rows/s
and peak RSS per format (the issue-15 figure: 2,000,000 x 128 float16, peak RSS < 300 MB).

    python benchmarks/read_formats.py --rows 2000000 --dim 128 --rounds 2

The set is written once (compatctl's writer), then exported with `compatctl.store.export` to one
Parquet file (row groups of --block-rows rows, fixed_size_list<float16>) and to an .npy folder
(img_emb/ shards of --shard-rows rows + metadata/ Parquet with ids and labels). Every read runs in
its own subprocess, so its peak RSS (ru_maxrss) is its own; formats alternate for --rounds rounds
(a shared machine's load falls on all of them) and the table shows the median time and the
largest peak RSS. A read opens the source (Parquet and .npy folders check that ids are unique),
then streams every row in blocks of --block-rows as float32 through ``iter_blocks``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_phase  # noqa: E402
from store_memory import write  # noqa: E402  (the set writer of the store benchmark)


def export_to(source: str, out: str, target: str, block_rows: int, shard_rows: int) -> None:
    from compatctl.store import open_embeddings
    from compatctl.store.export import export

    export(open_embeddings(source), Path(out), target=target, dtype="float16", block_rows=block_rows,
           shard_rows=shard_rows)


def stream(path: str, block_rows: int) -> None:
    from compatctl.store import open_embeddings

    total, rows = 0.0, 0
    for block in open_embeddings(path).iter_blocks(block_rows=block_rows):
        total += float(block.embeddings[:, 0].sum())
        rows += len(block)
    print(rows, total)


def disk_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--shard-rows", type=int, default=262144)
    parser.add_argument("--block-rows", type=int, default=65536)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--phase", choices=["write", "export-parquet", "export-npy", "stream"])
    parser.add_argument("--path")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.phase == "write":
        return write(args.path, args.rows, args.dim, 65536)
    if args.phase in ("export-parquet", "export-npy"):
        return export_to(args.path, args.out, args.phase.split("-")[1], args.block_rows, args.shard_rows)
    if args.phase == "stream":
        return stream(args.path, args.block_rows)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        paths = {"compatctl set": Path(tmp) / "set", "parquet": Path(tmp) / "t.parquet", "npy folder": Path(tmp) / "npy"}
        sizes = ["--rows", str(args.rows), "--dim", str(args.dim), "--block-rows", str(args.block_rows),
                 "--shard-rows", str(args.shard_rows)]
        setup = {"write set": run_phase(__file__, ["--phase", "write", "--path", str(paths["compatctl set"]), *sizes])}
        for name, phase in (("parquet", "export-parquet"), ("npy folder", "export-npy")):
            setup[f"export {name}"] = run_phase(__file__, ["--phase", phase, "--path", str(paths["compatctl set"]),
                                                 "--out", str(paths[name]), *sizes])
        runs = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, path in paths.items():
                runs[name].append(run_phase(__file__, ["--phase", "stream", "--path", str(path), *sizes]))
        print(f"{args.rows:,} x {args.dim} float16; blocks of {args.block_rows:,} rows; {args.rounds} alternating rounds")
        print(f"{'setup':<20} {'seconds':>8} {'peak RSS MB':>12}")
        for name, (seconds, rss) in setup.items():
            print(f"{name:<20} {seconds:8.1f} {rss:12.0f}")
        print(f"{'read (iter_blocks)':<20} {'disk MB':>8} {'seconds':>8} {'rows/s':>12} {'peak RSS MB':>12}")
        for name, results in runs.items():
            seconds = statistics.median(s for s, _ in results)
            rss = max(r for _, r in results)
            print(f"{name:<20} {disk_mb(paths[name]):8.0f} {seconds:8.1f} {args.rows / seconds:12,.0f} {rss:12.0f}")


if __name__ == "__main__":
    main()
