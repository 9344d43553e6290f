"""`compatctl eval` and `inspect` must not import torch (pipelines call them many times; start-up matters)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

# Blocks torch and faiss (any import of them raises), then runs the CLI: the command fails if it imports either.
RUN_WITHOUT_TORCH = ("import sys; sys.modules['torch'] = None; sys.modules['faiss'] = None; "
                     "sys.argv = ['compatctl'] + sys.argv[1:]; from compatctl.cli import main; main()")


@pytest.mark.parametrize("command", [["eval", "{e}", "{e}"], ["inspect", "{e}"],
                                     ["eval", "{e}", "{e}", "--baseline", "{e}", "--ceiling", "{e}", "--ci", "0.9"],
                                     ["eval", "{e}", "{e}", "--baseline", "{e}", "--cache", "{c}"]])
def test_command_runs_without_torch(tmp_path, command):
    rng = np.random.default_rng(0)
    path = tmp_path / "e.npz"
    np.savez(path, embeddings=rng.normal(size=(20, 4)).astype(np.float32), labels=rng.integers(0, 3, 20))
    args = [part.format(e=path, c=tmp_path / "cache") for part in command]
    result = subprocess.run([sys.executable, "-c", RUN_WITHOUT_TORCH, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout


# Runs the CLI and, at exit, lists what it imported from the forbidden set (modules too heavy for eval/inspect).
FORBIDDEN = ("torch", "pyarrow", "ray", "matplotlib", "compatctl.transform", "compatctl.backfill", "compatctl.train")
RUN_LISTING_IMPORTS = ("import sys, atexit; forbidden = " + repr(FORBIDDEN) + "; "
                       "atexit.register(lambda: print('FORBIDDEN-LOADED', sorted(m for m in sys.modules if any("
                       "m == f or m.startswith(f + '.') for f in forbidden)), file=sys.stderr)); "
                       "sys.argv = ['compatctl'] + sys.argv[1:]; from compatctl.cli import main; main()")


@pytest.mark.parametrize("command", [["eval", "{e}", "{e}"], ["inspect", "{e}"],
                                     ["eval", "{e}", "{e}", "--backfill-with", "{e}", "--steps", "2"]])
def test_eval_and_inspect_import_neither_transform_nor_backfill(tmp_path, command):
    """`eval` (curves included: orders are the leaf compatctl.orders) and `inspect` load none of FORBIDDEN."""
    rng = np.random.default_rng(0)
    path = tmp_path / "e.npz"
    np.savez(path, embeddings=rng.normal(size=(20, 4)).astype(np.float32), labels=rng.integers(0, 3, 20))
    args = [part.format(e=path) for part in command]
    result = subprocess.run([sys.executable, "-c", RUN_LISTING_IMPORTS, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "FORBIDDEN-LOADED []" in result.stderr, result.stderr[-2000:]
