"""Fit cost and accuracy of compatctl's transforms vs the FCT paper's transformation.

Synthetic pairs (default): a random nonlinear teacher maps clustered latents to a noisier
"old" and a cleaner "new" 128-d embedding; 50,000 train and 10,000 test items.

    python benchmarks/transform_fit.py --cores 2                       # synthetic, ours on 2 cores
    python benchmarks/transform_fit.py --old-train O --new-train N --old-test OT --new-test NT \
        [--side-train S --side-test ST] --cores 2                      # real embedding sets

Rows are paired by id. Cases: raw old/old, new/new, new/old; then new queries against the
transformed old gallery for linear, procrustes, mlp, auto (+ side-info), and the FCT reference
(~5.7 M params; BatchNorm; Adam 5e-4, wd 2^-15, batch 1024, 80 epochs, cosine with 5 warm-up
epochs, BN frozen from epoch 40; on CUDA when present). Top-1 is leave-one-out on the test split
(l2); gap closed = (M(case) − M(old/old)) / (M(new/new) − M(old/old)).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("old", "new", "side"):
        for split in ("train", "test"):
            parser.add_argument(f"--{name}-{split}", type=Path)
    parser.add_argument("--train-rows", type=int, default=50_000)
    parser.add_argument("--test-rows", type=int, default=10_000)
    parser.add_argument("--cores", type=int, default=None, help="pin compatctl's fits to this many CPU cores")
    parser.add_argument("--reference-epochs", type=int, default=80)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--kinds", nargs="*", default=["linear", "procrustes", "mlp", "auto"],
                        help="compatctl kinds to fit (e.g. --kinds auto for the timing alone)")
    parser.add_argument("--distance", choices=("l2", "cosine"), default="l2")
    parser.add_argument("--set", nargs="*", default=[], help="extra key=value for compatctl's mlp config")
    return parser.parse_args()


def synthetic_pairs(train_rows: int, test_rows: int, dim: int = 128, classes: int = 100, seed: int = 0):
    """(train, test) dicts of old/new/labels from a random nonlinear teacher."""
    rng = np.random.default_rng(seed)
    latent_dim, rows = 64, train_rows + test_rows
    labels = rng.integers(0, classes, rows)
    latent = rng.normal(size=(classes, latent_dim))[labels] + 1.0 * rng.normal(size=(rows, latent_dim))

    def teacher(z, hidden=512):
        first = rng.normal(size=(z.shape[1], hidden)) / np.sqrt(z.shape[1])
        second = rng.normal(size=(hidden, dim)) / np.sqrt(hidden)
        return (np.maximum(z @ first, 0) @ second).astype(np.float32)

    old = teacher(latent + 1.0 * rng.normal(size=latent.shape))  # the old model sees a noisier view
    new = teacher(latent)
    split = lambda a: (a[:train_rows], a[train_rows:])  # noqa: E731
    parts = [split(old), split(new), split(labels)]
    return [{"old": parts[0][i], "new": parts[1][i], "labels": parts[2][i], "side": None} for i in (0, 1)]


def real_pairs(args):
    """(train, test) dicts paired by id from embedding sets given on the command line."""
    from compatctl.transform.pairs import pair_by_id

    splits = []
    for split in ("train", "test"):
        side = getattr(args, f"side_{split}")
        pairs = pair_by_id(getattr(args, f"old_{split}"), getattr(args, f"new_{split}"), side).pairs
        splits.append({"old": pairs.old, "new": pairs.new, "labels": pairs.labels, "side": pairs.side_info,
                       "ids": pairs.ids})
    return splits


def top1(queries, gallery, labels, distance):
    from compatctl.transform import leave_one_out_top1

    return leave_one_out_top1(queries, gallery, labels, distance)


def fit_ours(train, kind, workdir: Path, side: bool, overrides: list[str]):
    """Fit with compatctl's public API (files in, transform out); return (Transform, seconds, report)."""
    from compatctl.transform import fit_transform, load_transform, load_transform_config

    ids = np.arange(len(train["old"]))
    np.savez(workdir / "old.npz", embeddings=train["old"], ids=ids, labels=train["labels"])
    np.savez(workdir / "new.npz", embeddings=train["new"], ids=ids, labels=train["labels"])
    side_path = None
    if side:
        side_path = workdir / "side.npz"
        np.savez(side_path, embeddings=train["side"], ids=ids)
    config = load_transform_config(None, [f"kind={kind}", *(overrides if kind in ("mlp", "auto") else [])])
    out = workdir / f"{kind}{'-side' if side else ''}.safetensors"
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    report = fit_transform(workdir / "old.npz", workdir / "new.npz", out, side_info_path=side_path, config=config)
    report["cpu_seconds"] = _cpu_seconds() - cpu_started
    return load_transform(out), time.perf_counter() - started, report


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads (on a loaded machine wall time is not
    the cost: torch's OpenMP threads spin while waiting for a core, so compare both)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    args = parse_args()
    train, test = real_pairs(args) if args.old_train else synthetic_pairs(args.train_rows, args.test_rows)
    all_cores = os.sched_getaffinity(0)
    if args.cores:
        os.sched_setaffinity(0, set(sorted(all_cores)[: args.cores]))
    import torch

    torch.set_num_threads(args.cores or torch.get_num_threads())
    metric = lambda gallery: top1(test["new"], gallery, test["labels"], args.distance)  # noqa: E731
    old_old = top1(test["old"], test["old"], test["labels"], args.distance)
    new_new = metric(test["new"])
    rows = [("old/old", old_old, None, "", "", ""), ("new/new", new_new, None, "", "", ""),
            ("new/old (no transform)", metric(test["old"]) if test["old"].shape == test["new"].shape else math.nan,
             None, "", "", "")]
    print(f"train pairs {len(train['old']):,}, test {len(test['old']):,}, dims old {train['old'].shape[1]} "
          f"new {train['new'].shape[1]}, side {None if train['side'] is None else train['side'].shape[1]}; "
          f"compatctl fits on {len(os.sched_getaffinity(0))} cores, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(kind, False) for kind in args.kinds]
        cases += [("linear", True), ("mlp", True)] if train["side"] is not None else []
        for kind, side in cases:
            transform, seconds, report = fit_ours(train, kind, Path(tmp), side, args.set)
            mapped, _ = transform.apply(test["old"], test["side"] if side else None)
            epochs = report["architecture"].get("epochs_run", "")
            epochs = f"{epochs} {report['kind']}" if kind == "auto" else epochs
            rows.append((f"new/h(old) {kind}{' +side' if side else ''}", metric(mapped), _rel_mse(mapped, test["new"]),
                         f"{transform.parameter_count():,}", f"{seconds:.1f}",
                         f"{epochs} cpu, {report['cpu_seconds']:.1f} cpu s"))
    os.sched_setaffinity(0, all_cores)
    if not args.skip_reference:
        from transform_fct_reference import fit_fct_reference  # noqa: E402  (same folder)

        for side in ([False, True] if train["side"] is not None else [False]):
            mapped, params, seconds, where = fit_fct_reference(train, test, side, args.reference_epochs)
            rows.append((f"new/h(old) FCT reference{' +side' if side else ''}", metric(mapped),
                         _rel_mse(mapped, test["new"]), f"{params:,}", f"{seconds:.1f}", where))
    _print_table(rows, old_old, new_new)


def _rel_mse(mapped, target) -> float:
    return float(((mapped - target) ** 2).sum(1).mean() / ((target - target.mean(0)) ** 2).sum(1).mean())


def _print_table(rows, old_old, new_new) -> None:
    print(f"{'case':<34}{'top1':>7}{'gap closed':>11}{'rel mse':>9}{'params':>12}{'fit s':>8}  epochs/where")
    for name, value, rel, params, seconds, where in rows:
        gap = (value - old_old) / (new_new - old_old) if new_new != old_old else math.nan
        rel_text = "" if rel is None else f"{rel:.3f}"
        print(f"{name:<34}{value:>7.3f}{gap:>11.2f}{rel_text:>9}{params:>12}{seconds:>8}  {where}")


if __name__ == "__main__":
    main()
