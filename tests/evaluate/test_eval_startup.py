"""`compatctl eval` must not import torch (pipelines call it many times; start-up matters)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np


def test_eval_does_not_import_torch(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "e.npz", embeddings=rng.normal(size=(20, 4)).astype(np.float32),
             labels=rng.integers(0, 3, 20))
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "compatctl", "eval",
                             str(tmp_path / "e.npz"), str(tmp_path / "e.npz")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "import time:" in line}
    assert "torch" not in imported and "faiss" not in imported
    assert "numpy" in imported
