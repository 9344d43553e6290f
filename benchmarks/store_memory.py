"""Write then stream back a large float16 embedding set; print time and peak RSS.

    python benchmarks/store_memory.py --rows 2000000 --dim 128

Each phase runs in its own subprocess so its peak RSS (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _measure import run_phase


def write(path: str, rows: int, dim: int, shard_rows: int) -> None:
    import numpy as np

    from compatctl.store import EmbeddingBlock, EmbeddingSetWriter

    writer = EmbeddingSetWriter(Path(path), rows=rows, dim=dim, header={"model_fingerprint": "bench"},
                                resume_key="bench", dtype="float16", shard_rows=shard_rows, has_labels=True)
    rng = np.random.default_rng(0)
    for index in writer.pending_shards():
        start, stop = writer.shard_bounds(index)
        n = stop - start
        block = EmbeddingBlock(rng.standard_normal((n, dim), dtype=np.float32), np.arange(start, stop),
                               rng.integers(0, 1000, n))
        writer.write_shard(index, block)
    writer.finish()


def stream(path: str, block_rows: int) -> None:
    from compatctl.store import open_embeddings

    total = 0.0
    for block in open_embeddings(path).iter_blocks(block_rows=block_rows):
        total += float(block.embeddings[:, 0].sum())
    print(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--shard-rows", type=int, default=65536)
    parser.add_argument("--block-rows", type=int, default=65536)
    parser.add_argument("--phase", choices=["write", "stream"])
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.phase == "write":
        return write(args.path, args.rows, args.dim, args.shard_rows)
    if args.phase == "stream":
        return stream(args.path, args.block_rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "emb")
        common = ["--rows", str(args.rows), "--dim", str(args.dim), "--path", path]
        w_time, w_rss = run_phase(__file__, ["--phase", "write", "--shard-rows", str(args.shard_rows), *common])
        s_time, s_rss = run_phase(__file__, ["--phase", "stream", "--block-rows", str(args.block_rows), *common])
        size_mb = sum(f.stat().st_size for f in Path(path).iterdir()) / 1e6
    print(f"embedding set: {args.rows:,} x {args.dim} float16, {size_mb:,.0f} MB on disk")
    print(f"{'phase':<8} {'seconds':>8} {'rows/s':>12} {'peak RSS MB':>12}")
    print(f"{'write':<8} {w_time:8.1f} {args.rows / w_time:12,.0f} {w_rss:12.0f}")
    print(f"{'stream':<8} {s_time:8.1f} {args.rows / s_time:12,.0f} {s_rss:12.0f}")


if __name__ == "__main__":
    main()
