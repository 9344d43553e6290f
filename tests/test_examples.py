"""The shipped examples run as documented (slow: they chain many real commands)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_byo_embeddings_example_runs_and_gate_passes(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["bash", str(ROOT / "examples/byo_embeddings/run.sh"), str(tmp_path / "byo")],
                            capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "gate passed" in result.stdout
    assert (tmp_path / "byo" / "gallery_30" / "manifest.json").is_file()
