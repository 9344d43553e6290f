"""`compatctl eval` against the FCT authors' evaluation code, whole process, alternating (prints a table).

    python benchmarks/eval_reference.py --ml-fct PATH [--repeats 3] [--cases 10000x64,3080x384]

PATH is a checkout of https://github.com/apple/ml-fct (or any folder holding its
``utils/eval_utils.py``): that file is imported at run time from there and never copied here.
The reference side is its own protocol, as its ``cmc_evaluate`` runs it: ``l2_distance_matrix``
(torch.cdist), ``cmc(topk=5, first_match_break=True)`` and ``mean_ap`` (scikit-learn's
average_precision_score per query), leave-one-out when the query labels equal the gallery labels.
The compatctl side is `compatctl eval Q Q --distance l2 --json OUT` (leave-one-out by id).

Each case writes one synthetic clustered set (100 classes) to an .npz, then runs both whole
processes alternately (order swapped every repeat), timing each from spawn to exit. Ratios are of
medians; on a shared machine compare ratios, not absolute seconds. Needs torch, scikit-learn and
tqdm (the reference imports them); compatctl's process imports none of them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def clustered_npz(path: Path, rows: int, dim: int, classes: int = 100, seed: int = 0, noise: float = 2.0) -> None:
    """The sets of benchmarks/eval_speed.py: class centres plus Gaussian noise, ids 0..rows-1."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(12345).normal(size=(classes, dim)).astype(np.float32)
    labels = rng.integers(0, classes, rows)
    embeddings = centers[labels] + noise * rng.normal(size=(rows, dim)).astype(np.float32)
    np.savez(path, embeddings=embeddings, ids=np.arange(rows, dtype=np.int64), labels=labels)


def run_reference(checkout: str, data: str, out: str) -> None:
    """The reference process: load, distance matrix, CMC top-1/top-5 and mAP with ml-fct's own functions."""
    sys.path.insert(0, checkout)
    import torch
    from utils.eval_utils import cmc, l2_distance_matrix, mean_ap

    arrays = np.load(data)
    features, labels = torch.from_numpy(arrays["embeddings"]), torch.from_numpy(arrays["labels"])
    distmat = l2_distance_matrix(features, features)
    scores = cmc(distmat=distmat, query_ids=labels, gallery_ids=labels, topk=5, single_gallery_shot=False,
                 first_match_break=True)
    average_precision = mean_ap(distmat=distmat, query_ids=labels, gallery_ids=labels)
    Path(out).write_text(json.dumps({"top1": float(scores[0]), "top5": float(scores[4]),
                                     "map": float(average_precision)}))


def timed_process(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def compare_case(rows: int, dim: int, checkout: str, repeats: int, root: Path) -> dict:
    data, ours_json, ref_json = root / f"set_{rows}x{dim}.npz", root / "ours.json", root / "reference.json"
    clustered_npz(data, rows, dim)
    ours = [sys.executable, "-m", "compatctl", "eval", str(data), str(data), "--distance", "l2",
            "--json", str(ours_json)]
    reference = [sys.executable, __file__, "--run-reference", checkout, str(data), str(ref_json)]
    times = {"ours": [], "reference": []}
    for repeat in range(repeats):
        order = [("ours", ours), ("reference", reference)]
        for name, command in (order if repeat % 2 == 0 else order[::-1]):
            if name == "ours":
                ours_json.unlink(missing_ok=True)  # a fresh report from this very run
            times[name].append(timed_process(command))
    report = json.loads(ours_json.read_text())
    expected = json.loads(ref_json.read_text())
    return {"case": f"{rows}x{rows}, {dim}-d", "times": times, "ours": report["metrics"],
            "library_s": report["elapsed_s"], "reference": expected,
            "max_diff": max(abs(report["metrics"][k] - expected[k]) for k in expected),
            "command": " ".join(["python", *ours[1:]])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ml-fct", help="path of an apple/ml-fct checkout (holding utils/eval_utils.py)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default="10000x64,3080x384", help="ROWSxDIM, comma-separated")
    parser.add_argument("--run-reference", nargs=3, metavar=("CHECKOUT", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_reference:
        run_reference(*args.run_reference)
        return
    if not args.ml_fct or not (Path(args.ml_fct) / "utils" / "eval_utils.py").is_file():
        parser.error(f"--ml-fct {args.ml_fct!r}: give a checkout of apple/ml-fct holding utils/eval_utils.py")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start "
          "(shared: absolute seconds are noisy; ratios come from alternating runs)")
    header = ("case", "compatctl s (median, runs)", "reference s (median, runs)", "ratio", "top1 ours/ref",
              "top5 ours/ref", "map ours/ref", "max |diff|")
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.cases.split(","):
            rows, dim = (int(x) for x in spec.lower().split("x"))
            result = compare_case(rows, dim, args.ml_fct, args.repeats, Path(tmp))
            ours, ref = statistics.median(result["times"]["ours"]), statistics.median(result["times"]["reference"])
            runs = lambda xs: "/".join(f"{x:.2f}" for x in xs)  # noqa: E731
            pair = lambda k: f"{result['ours'][k]:.6f}/{result['reference'][k]:.6f}"  # noqa: E731
            lines.append((result["case"], f"{ours:.2f} ({runs(result['times']['ours'])})",
                          f"{ref:.2f} ({runs(result['times']['reference'])})", f"{ref / ours:.1f}x",
                          pair("top1"), pair("top5"), pair("map"), f"{result['max_diff']:.1e}"))
            print(f"{result['case']}: compatctl library time (report elapsed_s, last run) "
                  f"{result['library_s']:.3f} s; command: {result['command']}")
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]
    for row in [header, *lines]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    main()
