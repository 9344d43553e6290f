"""The same embeddings as .npz, Parquet (string ids), .npy folder, compatctl set and an exported faiss
IDMap2 index: eval's metrics from each, and the largest difference from the .npz's (issue 15: <= 1e-6).

    python benchmarks/formats_parity.py --rows 20000 --dim 64

Synthetic clustered rows (--classes centres, noise 2.0); leave-one-out eval of each source against
itself (top-1, top-5, mAP), cosine and l2. String ids are "item-%09d" of the integer ids, so they
sort like them and ties break the same way.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    args = parser.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq

    from compatctl.evaluate import evaluate
    from compatctl.store import EmbeddingBlock, open_embeddings, write_embedding_set
    from compatctl.store.export import export

    rng = np.random.default_rng(0)
    labels = rng.integers(0, args.classes, args.rows)
    embeddings = (rng.standard_normal((args.classes, args.dim))[labels] +
                  2.0 * rng.standard_normal((args.rows, args.dim))).astype(np.float32)
    ids = rng.choice(10**9, args.rows, replace=False).astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        np.savez(root / "e.npz", embeddings=embeddings, ids=ids, labels=labels)
        write_embedding_set(root / "set", EmbeddingBlock(embeddings, ids, labels), header={}, shard_rows=4096)
        source = open_embeddings(root / "set")
        export(source, root / "npy", target="npy", shard_rows=5000)
        export(source, root / "g.faiss", target="faiss")
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), args.dim)
        pq.write_table(pa.table({"id": [f"item-{i:09d}" for i in ids], "embedding": vectors, "label": labels}),
                       root / "strings.parquet", row_group_size=3000)
        paths = {".npz": root / "e.npz", "parquet (string ids)": root / "strings.parquet",
                 ".npy folder": root / "npy", "compatctl set": root / "set", "faiss IDMap2,Flat": root / "g.faiss"}
        print(f"{args.rows:,} rows x {args.dim} dims, {args.classes} classes; leave-one-out, each source vs itself")
        print(f"{'source':<22} {'distance':<8} {'top1':>9} {'top5':>9} {'map':>9} {'max |diff| vs .npz':>19}")
        for distance in ("cosine", "l2"):
            reference = None
            for name, path in paths.items():
                opened = open_embeddings(path)
                metrics = evaluate(opened, opened, distance=distance)["metrics"]
                reference = reference or metrics
                diff = max(abs(metrics[k] - reference[k]) for k in reference)
                print(f"{name:<22} {distance:<8} " + " ".join(f"{metrics[k]:9.6f}" for k in ("top1", "top5", "map")) +
                      f" {diff:19.2e}")


if __name__ == "__main__":
    main()
