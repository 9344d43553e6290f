"""Backfill throughput and peak memory: `compatctl backfill` of a large gallery with --new-embeddings.

    python benchmarks/backfill_speed.py                        # 1,000,000 x 128, budget 0.3
    python benchmarks/backfill_speed.py --rows 200000 --order norm

Writes (streamed, shard by shard) an old gallery and a new-embeddings set of the same ids (the
new set in another row order, so the merge by id is real work), fits a linear transform on a
small sample, then runs the real command in a subprocess and reads its peak RSS from
RUSAGE_CHILDREN (the only child process this script starts). Prints one table.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from compatctl.store import EmbeddingBlock, EmbeddingSetWriter, write_embedding_set

SHARD_ROWS = 65536


def write_streamed(path: Path, rows: int, dim: int, seed: int, fingerprint: str, shuffle: bool) -> None:
    """A set of ``rows`` pseudo-embeddings, written shard by shard; ids 0..rows-1, shuffled if asked."""
    writer = EmbeddingSetWriter(path, rows=rows, dim=dim, header={"model_fingerprint": fingerprint},
                                resume_key=f"bench-{seed}", shard_rows=SHARD_ROWS, has_labels=True)
    ids = np.random.default_rng(seed).permutation(rows) if shuffle else np.arange(rows)
    for index in writer.pending_shards():
        start, stop = writer.shard_bounds(index)
        rng = np.random.default_rng([seed, index])
        embeddings = rng.standard_normal((stop - start, dim), dtype=np.float32)
        writer.write_shard(index, EmbeddingBlock(embeddings, ids[start:stop].astype(np.int64), ids[start:stop] % 100))
    writer.finish()


def fit_linear(root: Path, old: Path, new: Path, out: Path, sample: int = 5000) -> None:
    """A linear transform fit on a sample (its quality does not matter for speed)."""
    from compatctl.store import open_embeddings
    from compatctl.transform import fit_transform, load_transform_config

    block = next(open_embeddings(old).iter_blocks(block_rows=sample))
    noise = np.random.default_rng(3).standard_normal(block.embeddings.shape, dtype=np.float32)
    write_embedding_set(root / "old-sample", block, header={"model_fingerprint": "old-model"})
    write_embedding_set(root / "new-sample", EmbeddingBlock(block.embeddings + noise, block.ids, block.labels),
                        header={"model_fingerprint": open_embeddings(new).model_fingerprint})
    fit_transform(root / "old-sample", root / "new-sample", out,
                  config=load_transform_config(None, ["kind=linear", "min_matched=100"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--budget", type=float, default=0.3)
    parser.add_argument("--order", default="random")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp folder, removed after")
    args = parser.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="backfill-bench-"))
    try:
        started = time.perf_counter()
        write_streamed(root / "gallery", args.rows, args.dim, 1, "old-model", shuffle=False)
        write_streamed(root / "new", args.rows, args.dim, 2, "new-model", shuffle=True)
        fit_linear(root, root / "gallery", root / "new", root / "t.safetensors")
        setup = time.perf_counter() - started
        command = [sys.executable, "-m", "compatctl", "backfill", str(root / "gallery"), "--transform",
                   str(root / "t.safetensors"), "--out", str(root / "out"), "--budget", str(args.budget),
                   "--order", args.order, "--new-embeddings", str(root / "new")]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        gallery_mb = sum(f.stat().st_size for f in (root / "gallery").iterdir()) / 2**20
        print(f"| rows | dim | budget | order | seconds | rows/s | peak RSS MB | gallery MB | setup s |")
        print("|---:|---:|---:|---|---:|---:|---:|---:|---:|")
        print(f"| {args.rows:,} | {args.dim} | {args.budget} | {args.order} | {seconds:.1f} | "
              f"{args.rows / seconds:,.0f} | {peak_mb:,.0f} | {gallery_mb:,.0f} | {setup:.0f} |")
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
