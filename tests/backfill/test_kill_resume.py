"""SIGKILL a backfill at many points, re-run the same command: the result equals an uninterrupted run."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compatctl.cli import app
from tests.backfill.conftest import shard_records

REPO = Path(__file__).resolve().parents[2]
# A fresh 5-shard run makes 12 atomic writes: the first progress file, (shard, progress) x 5,
# the manifest. 2/after is a shard renamed into place but not yet recorded.
DEFAULT_POINTS = [(1, "mid"), (2, "after"), (3, "before"), (6, "mid"), (12, "before"), (2, "spill")]
ALL_POINTS = [(k, when) for k in range(1, 13) for when in ("before", "after", "mid")] + [(1, "spill"), (3, "spill")]


def backfill_args(world, out, budget="0.4"):
    return ["backfill", str(world.gallery), "--transform", str(world.linear), "--out", str(out),
            "--budget", budget, "--order", "norm", "--new-embeddings", str(world.new_set)]


def killed(args, k: int, when: str) -> int:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "tests.backfill.killer", str(k), when, *args],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    return result.returncode


def assert_resumes_identically(runner, args, out: Path, reference: Path, k: int, when: str) -> None:
    code = killed(args, k, when)
    assert code == -signal.SIGKILL, f"the run was not killed at write {k} ({when}): exit {code}"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert shard_records(out) == shard_records(reference)
    assert not list(out.glob("progress.*")) and not list(out.glob(".*.tmp"))
    assert not list(out.parent.glob(f".{out.name}.scratch-*"))


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("reference") / "g"
    assert CliRunner().invoke(app, backfill_args(world, out)).exit_code == 0
    return out


@pytest.mark.parametrize("k,when", DEFAULT_POINTS)
def test_kill_then_rerun_equals_uninterrupted(runner, world, reference, tmp_path, k, when):
    out = tmp_path / "g"
    assert_resumes_identically(runner, backfill_args(world, out), out, reference, k, when)


@pytest.mark.slow
@pytest.mark.parametrize("k,when", ALL_POINTS)
def test_kill_at_every_write(runner, world, reference, tmp_path, k, when):
    out = tmp_path / "g"
    assert_resumes_identically(runner, backfill_args(world, out), out, reference, k, when)


@pytest.mark.parametrize("k,when", [(1, "after"), (2, "mid"), (3, "before"), (5, "after")])
def test_kill_during_a_continuation(runner, world, reference, tmp_path, k, when):
    """Continue a 0.1 NEW_GALLERY to 0.4 in place; kill; re-run: equals the direct 0.4 run."""
    out = tmp_path / "g"
    assert runner.invoke(app, backfill_args(world, out, budget="0.1")).exit_code == 0
    assert_resumes_identically(runner, backfill_args(world, out), out, reference, k, when)


@pytest.mark.slow
def test_kill_at_random_moments(runner, world, tmp_path):
    """Real SIGKILLs from outside at random times until a run completes."""
    args = backfill_args(world, tmp_path / "g")
    assert runner.invoke(app, args[:4] + ["--out", str(tmp_path / "ref")] + args[6:]).exit_code == 0
    rng, env = random.Random(0), dict(os.environ, PYTHONPATH=str(REPO))
    for _ in range(50):
        process = subprocess.Popen([sys.executable, "-m", "compatctl", *args], cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.2))
        process.send_signal(signal.SIGKILL)
        if process.wait() == 0:
            break
    assert runner.invoke(app, args).exit_code == 0
    assert shard_records(tmp_path / "g") == shard_records(tmp_path / "ref")
