"""Run ``compatctl ARGS...`` and SIGKILL it at a chosen point (used by test_kill_resume.py).

``python -m tests.backfill.killer K WHEN compatctl-args...``: WHEN is ``before``/``after`` the
K-th atomic file write (shards, progress files, manifest), ``mid`` (a half-written temp file of
the K-th write is left behind, as a kill during the write would), or ``spill`` (during the K-th
batch of rows merged into the on-disk spill).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def patch_writes(k: int, when: str) -> None:
    import compatctl.store.artifacts as artifacts
    import compatctl.store.embeddings as embeddings

    real, count = artifacts.atomic_write_bytes, [0]

    def write(path, data):
        count[0] += 1
        if count[0] == k and when == "mid":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            (Path(path).parent / f".{Path(path).name}.killed.tmp").write_bytes(data[: len(data) // 2])
            die()
        if count[0] == k and when == "before":
            die()
        real(path, data)
        if count[0] == k and when == "after":
            die()

    artifacts.atomic_write_bytes = embeddings.atomic_write_bytes = write


def patch_spill(k: int) -> None:
    from compatctl.backfill.rows import RowSpill

    real, count = RowSpill.add, [0]

    def add(self, ids, rows):
        count[0] += 1
        real(self, ids, rows)
        if count[0] == k:
            die()

    RowSpill.add = add


def main() -> None:
    k, when, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    patch_spill(k) if when == "spill" else patch_writes(k, when)
    from compatctl.cli import app

    app(args, prog_name="compatctl")


if __name__ == "__main__":
    main()
