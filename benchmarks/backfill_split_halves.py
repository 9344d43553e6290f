"""Split embedding sets by id parity into a fit half (even ids) and an eval half (odd ids).

    python benchmarks/backfill_split_halves.py OUT_DIR NAME=EMB [NAME=EMB ...]

Writes OUT_DIR/NAME-fit.npz and OUT_DIR/NAME-eval.npz (embeddings, ids, labels), so a transform
can be fit on items disjoint from those its backfill curve is measured on when only one split
was embedded (see docs/backfill.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from compatctl.store import open_embeddings


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    print("| set | rows | dim | fit | eval |\n|---|---:|---:|---:|---:|")
    for item in sys.argv[2:]:
        name, path = item.split("=", 1)
        block = open_embeddings(path).read_all()
        halves = {"fit": block.ids % 2 == 0, "eval": block.ids % 2 == 1}
        for half, rows in halves.items():
            np.savez(out / f"{name}-{half}.npz", embeddings=block.embeddings[rows], ids=block.ids[rows],
                     labels=block.labels[rows])
        print(f"| {name} | {len(block)} | {block.embeddings.shape[1]} | {halves['fit'].sum()} | {halves['eval'].sum()} |")


if __name__ == "__main__":
    main()
