"""A plain `compatctl eval` stays off the modules it does not use (start-up time): no yaml, no backfill/transform
package, no thread pool module for a small set."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

BLOCKED = ("torch", "faiss", "yaml", "compatctl.backfill", "compatctl.transform", "concurrent.futures")
RUN_BLOCKED = ("import sys; [sys.modules.__setitem__(name, None) for name in sys.argv[1].split(',')]; "
               "sys.argv = ['compatctl'] + sys.argv[2:]; from compatctl.cli import main; main()")


def test_plain_eval_imports_only_what_it_uses(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "e.npz"
    np.savez(path, embeddings=rng.normal(size=(30, 4)).astype(np.float32), labels=rng.integers(0, 3, 30))
    result = subprocess.run([sys.executable, "-c", RUN_BLOCKED, ",".join(BLOCKED), "eval", str(path), str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "top1" in result.stdout
