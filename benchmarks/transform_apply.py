"""Throughput of applying a transform (numpy, no torch at apply time) vs the machine's GEMM peak.

Run:  python benchmarks/transform_apply.py [--rows 1000000] [--dim 128] [--threads N]

Prints rows/s, achieved GFLOP/s (counting only the matrix products) and that as a fraction
of the float32 GEMM peak measured here with a large square numpy matmul. Weights are random
(the cost does not depend on their values); the mlp uses the default TransformConfig sizes.
"""

from __future__ import annotations

import argparse
import os
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads (sets OPENBLAS/OMP_NUM_THREADS)")
    parser.add_argument("--block-rows", type=int, nargs="*", default=[2048, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="threads running blocks")
    return parser.parse_args()


def gemm_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of a size x size x size numpy matmul."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def gemm_flops_per_row(transform) -> int:
    """2 * (sum of in*out over the weight matrices) per row."""
    return 2 * sum(t.shape[0] * t.shape[1] for t in transform.tensors.values() if t.ndim == 2)


def mlp_transform(dim: int):
    import numpy as np

    from compatctl.transform import Transform, TransformConfig

    config = TransformConfig()
    rng = np.random.default_rng(0)
    branch, width = config.branch_width, config.width
    shapes = {"old_in.weight": (dim, branch), "old_in.bias": (branch,), "merge.weight": (branch, width),
              "merge.bias": (width,), "head.weight": (width, dim), "head.bias": (dim,), "skip.weight": (dim, dim)}
    for i in range(config.blocks):
        shapes.update({f"block{i}.fc1.weight": (width, width), f"block{i}.fc1.bias": (width,),
                       f"block{i}.fc2.weight": (width, width), f"block{i}.fc2.bias": (width,)})
    tensors = {name: (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
               for name, shape in shapes.items()}
    for name in tensors:  # weights after a LayerNorm are stored centered (see artifact.py)
        if name.endswith("fc1.weight") or name == "head.weight":
            tensors[name] -= tensors[name].mean(axis=0, keepdims=True)
    header = {"transform_kind": "mlp", "old_dim": dim, "new_dim": dim}
    return Transform(header, tensors), f"mlp {branch}/{width}x{config.blocks}"


def linear_transform(dim: int):
    import numpy as np

    from compatctl.transform import Transform

    rng = np.random.default_rng(0)
    tensors = {"old.weight": rng.standard_normal((dim, dim), dtype=np.float32), "bias": np.zeros(dim, np.float32)}
    return Transform({"transform_kind": "linear", "old_dim": dim, "new_dim": dim}, tensors), "linear"


def main() -> None:
    args = parse_args()
    if args.threads:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(args.threads)
    import numpy as np

    peak = gemm_peak_gflops()
    old = np.random.default_rng(2).standard_normal((args.rows, args.dim), dtype=np.float32)
    print(f"rows {args.rows:,} x {args.dim}; float32 GEMM peak (2048^3 matmul): {peak:.1f} GFLOP/s; "
          f"cpus {os.cpu_count()}, threads {args.threads or 'default'}")
    print(f"{'transform':<18}{'workers':>8}{'block rows':>11}{'seconds':>9}{'rows/s':>13}{'GFLOP/s':>9}{'of peak':>9}")
    for transform, name in (linear_transform(args.dim), mlp_transform(args.dim)):
        flops = gemm_flops_per_row(transform)
        for workers, block_rows in ((w, b) for w in args.workers for b in args.block_rows):
            transform.apply(old[:block_rows * 2], block_rows=block_rows, workers=workers)  # warm-up
            seconds = min(_timed(lambda: transform.apply(old, block_rows=block_rows, workers=workers))
                          for _ in range(args.repeats))
            rate = args.rows / seconds
            print(f"{name:<18}{workers:>8}{block_rows:>11}{seconds:>9.2f}{rate:>13,.0f}{rate * flops / 1e9:>9.1f}"
                  f"{rate * flops / 1e9 / peak:>9.2f}")


if __name__ == "__main__":
    main()
