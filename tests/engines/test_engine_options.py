"""``--engine`` options: one clear line and exit 2 before any work; Ray imported only for --engine ray."""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest

from compatctl.cli import app

# Ray made unimportable, then the CLI: `--engine ray` must say how to install it; other paths must not need it.
RUN_WITHOUT_RAY = ("import sys; sys.modules['ray'] = None; sys.argv = ['compatctl'] + sys.argv[1:]; "
                   "from compatctl.cli import main; main()")


@pytest.fixture
def emb(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "e.npz"
    np.savez(path, embeddings=rng.normal(size=(20, 4)).astype(np.float32), labels=rng.integers(0, 3, 20))
    return path


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_without_ray_installed_engine_ray_says_how_to_install(emb):
    result = subprocess.run([sys.executable, "-c", RUN_WITHOUT_RAY, "eval", str(emb), str(emb), "--engine", "ray"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert 'pip install "compatctl[ray]"' in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_local_engine_never_imports_ray(emb, tmp_path):
    result = subprocess.run([sys.executable, "-c", RUN_WITHOUT_RAY, "eval", str(emb), str(emb)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", ["embed", "backfill", "eval"])
def test_bad_engine_options(runner, emb, tmp_path, command):
    port = closed_port()
    base = {"embed": ["embed", str(tmp_path / "m.safetensors"), "builtin", "--out", str(tmp_path / "o")],
            "backfill": ["backfill", str(emb), "--transform", str(tmp_path / "t.safetensors"), "--out",
                         str(tmp_path / "o")],
            "eval": ["eval", str(emb), str(emb)]}[command]
    cases = [(["--engine", "spark"], "--engine 'spark': unknown"),
             (["--ray-address", "10.0.0.1:6379"], "--ray-address need --engine ray"),
             (["--engine", "ray", "--ray-address", f"127.0.0.1:{port}"],
              f"--ray-address 127.0.0.1:{port}: no Ray cluster answers at 127.0.0.1:{port}"),
             (["--engine", "ray", "--ray-address", "head-node"], "expected HOST:PORT")]
    if command != "eval":
        cases.append((["--engine", "ray", "--part", "1/2"], "--part 1/2 splits the work for a batch system"))
    for extra, message in cases:
        result = runner.invoke(app, base + extra)
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output and "Traceback" not in result.output, (extra, result.output)
        assert not (tmp_path / "o").exists()


def test_eval_on_ray_refuses_what_it_does_not_spread(runner, emb):
    result = runner.invoke(app, ["eval", str(emb), str(emb), "--engine", "ray", "--baseline", str(emb),
                                 "--ci", "0.9"])
    assert result.exit_code == 2
    assert "--baseline, --ci: not available with --engine ray" in result.output


def test_backfill_plan_only_is_not_spread(runner, emb, tmp_path):
    result = runner.invoke(app, ["backfill", str(emb), "--transform", str(tmp_path / "t.safetensors"),
                                 "--plan-only", "--plan", str(tmp_path / "p.csv"), "--engine", "ray"])
    assert result.exit_code == 2 and "--plan-only is one quick pass" in result.output
