"""The CIFAR-10 compatibility protocol, end to end, with compatctl commands.

    python examples/cifar10/run_protocol.py ../shared/data/cifar10_jpg.tar.gz --out runs/cifar10

Trains the old model (first 5 classes), then on all 10 classes an independent new model,
BCT, BT² (distilling from the independent model) and a contrastive side-info model; embeds
the test split with each; evaluates query/gallery pairs (leave-one-out on the test split) and
prints old/old and, per method, new/new and new/old (top-1 and mAP). BT²'s new/old compares
the first d_old (compatible) dims of its embeddings: the BT² set's lineage metadata (written by
embed) tells eval that its first d_old dims are the old space. Steps
already done are skipped (a killed run resumes), so re-running is cheap. ``--skip-eval`` stops after the embeddings.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (run name, config, old model run or None, extra overrides); order matters (bt2 needs independent).
RUNS = [
    ("old", "old.yaml", None, []),
    ("independent", "independent.yaml", None, []),
    ("bct", "bct.yaml", "old", []),
    ("bt2", "bt2.yaml", "old", ["bt2.teacher={out}/independent/model.safetensors"]),
    ("side_info", "side_info.yaml", None, []),
]
# (row label, query embeddings, gallery embeddings)
CASES = [
    ("old/old", "old", "old"),
    ("independent new/new", "independent", "independent"),
    ("independent new/old", "independent", "old"),
    ("bct new/new", "bct", "bct"),
    ("bct new/old", "bct", "old"),
    ("bt2 new/new", "bt2", "bt2"),
    ("bt2 new/old", "bt2", "old"),  # the first d_old dims (compatible_dims + lineage in the BT² set)
]


def compatctl(*args: str) -> subprocess.CompletedProcess:
    """Run one compatctl command (``$COMPATCTL`` or ``python -m compatctl``), echoing it; stop on failure."""
    command = shlex.split(os.environ.get("COMPATCTL", f"{shlex.quote(sys.executable)} -m compatctl")) + list(args)
    print("+ compatctl " + " ".join(shlex.quote(a) for a in args), flush=True)
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f"command failed with exit code {result.returncode}")
    return result


def train(out: Path, data: str, overrides: list[str]) -> None:
    for name, config, old, extra in RUNS:
        run_dir = out / name
        if (run_dir / "train_state.safetensors").exists():
            flags = ["--resume"]  # finished runs return at once; killed ones continue
        else:
            flags = []
        old_flags = ["--old", str(out / old / "model.safetensors")] if old else []
        extra = [item.format(out=out) for item in extra]
        compatctl("train-new", str(HERE / config), *old_flags, "--out", str(run_dir), *flags,
                  f"data={data}", *extra, *overrides)


def embed(out: Path, data: str) -> None:
    for name, _, _, _ in RUNS:
        target = out / "embeddings" / name
        if not (target / "manifest.json").exists():
            compatctl("embed", str(out / name / "model.safetensors"), data, "--out", str(target), "--split", "test")


def evaluate(out: Path) -> dict[str, dict]:
    """metrics (top1, map) per case, from `compatctl eval --json`."""
    results = {}
    for label, query, gallery in CASES:
        report = out / "reports" / f"{query}__{gallery}.json"
        report.parent.mkdir(parents=True, exist_ok=True)
        compatctl("eval", str(out / "embeddings" / query), str(out / "embeddings" / gallery), "--json", str(report))
        results[label] = json.loads(report.read_text())["metrics"]
    return results


def print_table(results: dict[str, dict]) -> None:
    print(f"\n{'case':<24}{'top-1':>8}{'mAP':>8}")
    for label, metrics in results.items():
        print(f"{label:<24}{100 * metrics['top1']:>8.1f}{100 * metrics['map']:>8.1f}")
    old = results["old/old"]["top1"]
    print(f"\nBCT new/old > old/old: {results['bct new/old']['top1'] > old}; "
          f"BT2 new/old > old/old: {results['bt2 new/old']['top1'] > old}; "
          f"BT2 new/new / independent new/new = "
          f"{results['bt2 new/new']['top1'] / results['independent new/new']['top1']:.3f} (target >= 0.97)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="CIFAR-10 DATA spec, e.g. ../shared/data/cifar10_jpg.tar.gz")
    parser.add_argument("--out", type=Path, default=Path("runs/cifar10"))
    parser.add_argument("--skip-eval", action="store_true", help="stop after embedding the test split")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every training run (e.g. device=cpu)")
    args = parser.parse_intermixed_args()
    train(args.out, args.data, args.overrides)
    embed(args.out, args.data)
    if not args.skip_eval:
        results = evaluate(args.out)
        (args.out / "table.json").write_text(json.dumps(results, indent=2) + "\n")
        print_table(results)


if __name__ == "__main__":
    main()
