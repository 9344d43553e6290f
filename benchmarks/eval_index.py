"""`eval --index` against exact eval, from one script: wall time, top-k and recall@k of the approximate
neighbours against exact search (the issue-15 figure: 10k queries x 1,000,000 gallery rows).

    python benchmarks/eval_index.py --gallery-rows 1000000 --queries 10000 --dim 128

Synthetic clustered embeddings (--classes centres, unit-variance noise of --noise) in memory; the
queries are the first --queries gallery rows, so each query's own row is left out by id, as in
`compatctl eval Q G`. Rows: the exact top-k-only pass (`evaluate(..., with_map=False)`, what
`eval --no-map` runs), then each --index factory through `evaluate_approximate` (build + search;
recall@k against exact search on --recall-queries sampled queries). Wall times include building
the index. Threads: faiss and numpy use what OMP_NUM_THREADS allows.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def data(rows: int, dim: int, classes: int, noise: float, seed: int):
    from compatctl.store import EmbeddingBlock

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim), dtype=np.float32)
    labels = rng.integers(0, classes, rows)
    embeddings = centres[labels]
    for start in range(0, rows, 100_000):  # in place, block by block: no second gallery-sized temporary
        stop = min(start + 100_000, rows)
        embeddings[start:stop] += noise * rng.standard_normal((stop - start, dim), dtype=np.float32)
    return EmbeddingBlock(embeddings, np.arange(rows, dtype=np.int64), labels.astype(np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gallery-rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=2.0)
    parser.add_argument("--topk", default="1,10")
    parser.add_argument("--index", action="append", default=None,
                        help="factory[:nprobe], repeatable (default: IVF<sqrt(rows)>,Flat:16, then HNSW32)")
    parser.add_argument("--recall-queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from compatctl.evaluate import evaluate
    from compatctl.evaluate.approximate import evaluate_approximate
    from compatctl.store import MemorySource

    ks = tuple(int(k) for k in args.topk.split(","))
    block = data(args.gallery_rows, args.dim, args.classes, args.noise, args.seed)
    gallery = MemorySource(block, "gallery")
    queries = MemorySource(block.take(slice(0, args.queries)), "queries")
    names = [f"top{k}" for k in ks]
    print(f"{args.queries:,} queries x {args.gallery_rows:,} gallery rows x {args.dim} dims, {args.classes} classes, "
          f"cosine; recall@k against exact search on {args.recall_queries} sampled queries", flush=True)
    print(f"{'search':<22} {'wall s':>8} {'build s':>8} {'search s':>9} " + " ".join(f"{n:>7}" for n in names) +
          " " + " ".join(f"{'recall@' + str(k):>9}" for k in ks), flush=True)
    started = time.perf_counter()
    exact = evaluate(queries, gallery, topk=ks, with_map=False)
    show("exact (--no-map)", time.perf_counter() - started, exact["metrics"], None, ks)
    for spec in args.index or [f"IVF{max(16, int(args.gallery_rows ** 0.5))},Flat:16", "HNSW32"]:
        factory, _, probes = spec.partition(":")
        started = time.perf_counter()
        report = evaluate_approximate(queries, gallery, index=factory, nprobe=int(probes) if probes else None,
                                      topk=ks, recall_queries=args.recall_queries, seed=args.seed)
        show(spec, time.perf_counter() - started, report["metrics"], report["approximate"], ks)


def show(name: str, wall: float, metrics: dict, facts: dict | None, ks) -> None:
    """One table row, printed as soon as it is measured (a long run shows what it has)."""
    build = f"{facts['build_s']:8.1f}" if facts else f"{'-':>8}"
    search = f"{facts['search_s']:9.1f}" if facts else f"{'-':>9}"
    recall = " ".join(f"{100 * facts['recall_vs_exact'][f'recall@{k}']:8.2f}%" if facts else f"{'-':>9}" for k in ks)
    print(f"{name:<22} {wall:8.1f} {build} {search} " + " ".join(f"{100 * metrics[f'top{k}']:6.2f}%" for k in ks) +
          " " + recall, flush=True)


if __name__ == "__main__":
    main()
