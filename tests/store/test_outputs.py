"""store.outputs and the atomic writes: locks, per-run scratch, file modes, a full disk (issue 12, classes 2, 3, 7)."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.errors import BadInputError
from compatctl.store import atomic_write_bytes, open_embeddings, write_embedding_set
from compatctl.store.outputs import Output, claim_outputs, lock_file, remove_stale_scratch
from tests.backfill.conftest import fit, make_world
from tests.conftest import make_block

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    world = make_world(tmp_path_factory.mktemp("outputs-store"))
    world.linear = fit(world, "linear", kind="linear")
    return world


def backfill_args(world, out) -> list[str]:
    return ["backfill", str(world.gallery), "--transform", str(world.linear), "--out", str(out),
            "--budget", "0.4", "--order", "norm", "--new-embeddings", str(world.new_set)]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    write_embedding_set(tmp_path / "set", make_block(rows=10, dim=4), header={}, shard_rows=5)
    assert _mode(tmp_path / "a.bin") == mode
    assert {_mode(p) for p in (tmp_path / "set").iterdir()} == {mode}


def test_commands_write_readable_files(runner, world, tmp_path, umask):
    umask(0o022)
    assert runner.invoke(app, backfill_args(world, tmp_path / "g")).exit_code == 0
    report = tmp_path / "r.json"
    assert runner.invoke(app, ["eval", str(tmp_path / "g"), str(tmp_path / "g"), "--json", str(report)]).exit_code == 0
    assert {_mode(p) for p in [report, *(tmp_path / "g").iterdir()]} == {0o644}


def test_disk_full_is_one_line_and_leaves_the_old_file(runner, world, tmp_path, monkeypatch):
    import compatctl.store.artifacts as artifacts

    report = tmp_path / "r.json"
    report.write_text('{"old": true}\n')

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(artifacts.os, "fsync", full)
    result = runner.invoke(app, ["eval", str(world.new_set), str(world.new_set), "--json", str(report)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "r.json: cannot write it: the disk is full" in error[0], result.output
    assert report.read_text() == '{"old": true}\n' and not list(tmp_path.glob(".*.tmp"))


def test_disk_full_outside_the_atomic_writes_is_one_line(runner, world, tmp_path, monkeypatch):
    import compatctl.cli.eval as eval_cli

    def full(report):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x"))

    monkeypatch.setattr(eval_cli, "_show_report", full)
    result = runner.invoke(app, ["eval", str(world.new_set), str(world.new_set)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().startswith("error:") and "disk full" in result.output


def test_write_refused_by_permissions_is_bad_input(tmp_path, monkeypatch):
    import compatctl.store.artifacts as artifacts

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(artifacts.tempfile, "mkstemp", denied)
    with pytest.raises(BadInputError, match="a.bin: cannot write it: permission denied"):
        atomic_write_bytes(tmp_path / "a.bin", b"x")


def test_parts_share_an_output_but_not_a_part(tmp_path):
    out = tmp_path / "g"
    first = claim_outputs([Output(out, "embeddings", part=(1, 2))])
    second = claim_outputs([Output(out, "embeddings", part=(2, 2))])
    with pytest.raises(BadInputError, match=f"pid {os.getpid()}"):
        claim_outputs([Output(out, "embeddings", part=(2, 2))])
    with pytest.raises(BadInputError, match="is writing it"):
        claim_outputs([Output(out, "embeddings")])
    first.release()
    second.release()
    assert not list(tmp_path.glob(".g*.lock"))  # the last holder removes the lock files
    with claim_outputs([Output(out, "embeddings")]):
        assert lock_file(out).read_text().strip() == str(os.getpid())


# Claims an output (argv: path, optional I/N), says so, then waits to be killed.
CLAIM_AND_WAIT = """
import sys, time
from pathlib import Path
from compatctl.store.outputs import Output, claim_outputs
part = tuple(map(int, sys.argv[2].split("/"))) if len(sys.argv) > 2 else (1, 1)
claim_outputs([Output(Path(sys.argv[1]), "embeddings", part=part)])
print("claimed", flush=True)
time.sleep(60)
"""


def _claim_and_kill(out: Path, *part: str) -> None:
    """A run that holds ``out``'s locks and is SIGKILLed: nothing of it releases them."""
    child = subprocess.Popen([sys.executable, "-c", CLAIM_AND_WAIT, str(out), *part], cwd=REPO, text=True,
                             env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == "claimed"
    child.kill()
    child.wait()


def test_lock_files_of_killed_runs_are_removed_by_the_next_run(tmp_path):
    out = tmp_path / "g"
    _claim_and_kill(out)
    _claim_and_kill(out, "2/3")  # a killed --part worker leaves the (empty) shared lock and its part lock
    assert sorted(p.name for p in tmp_path.iterdir()) == [".g.lock", ".g.part-2-of-3.lock"]
    with claim_outputs([Output(out, "embeddings", part=(1, 2))]):  # a stale lock file blocks nobody
        with pytest.raises(BadInputError, match=f"another compatctl run \\(pid {os.getpid()}\\) is writing"):
            claim_outputs([Output(out, "embeddings")])  # names the live holder, not the killed worker
    assert not list(tmp_path.iterdir())  # the next run to finish removed every lock file
    _claim_and_kill(out, "1/2")
    with claim_outputs([Output(out, "embeddings")]):
        pass
    assert not list(tmp_path.iterdir())


def _exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_scratch_is_reported_and_removed(runner, world, tmp_path):
    out = tmp_path / "g"
    dead = tmp_path / f".g.scratch-part-1-of-1.pid-{_exited_pid()}"
    legacy = tmp_path / ".g.scratch-part-1-of-1"  # the name before scratch was per run
    for folder in (dead, legacy):
        folder.mkdir()
        (folder / "new-rows.f32").write_bytes(b"\0" * 2_000_000)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        running = tmp_path / f".g.scratch-part-2-of-2.pid-{live.pid}"
        running.mkdir()
        other_host = tmp_path / f".g.scratch-part-1-of-2.pid-{_exited_pid()}.host-00000000"
        other_host.mkdir()
        result = runner.invoke(app, backfill_args(world, out))
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        assert f"removed {dead.name} (2.0 MB), scratch space left by a stopped run" in text
        assert f"removed {legacy.name}" in text
        assert not dead.exists() and not legacy.exists() and running.exists()  # a live run's scratch stays
        assert other_host.exists()  # another host's run: this host cannot tell whether it still works
        assert remove_stale_scratch(out) == []
    finally:
        live.kill()
        live.wait()


# Runs the CLI with its first file write slowed down, so that a second run surely starts meanwhile.
SLOW_FIRST_WRITE = """
import sys, time
import compatctl.store.artifacts as artifacts, compatctl.store.embeddings as embeddings
real, calls = artifacts.atomic_write_bytes, []
def slow(path, data):
    calls.append(path)
    if len(calls) == 1:
        time.sleep(2.0)
    real(path, data)
artifacts.atomic_write_bytes = embeddings.atomic_write_bytes = slow
from compatctl.cli import app
app(sys.argv[1:], prog_name="compatctl")
"""


def test_two_identical_backfills_one_writes_one_is_refused(runner, world, tmp_path):
    out, reference = tmp_path / "g", tmp_path / "reference"
    assert runner.invoke(app, backfill_args(world, reference)).exit_code == 0
    env = dict(os.environ, PYTHONPATH=str(REPO))
    first = subprocess.Popen([sys.executable, "-c", SLOW_FIRST_WRITE, *backfill_args(world, out)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while not (lock_file(out).is_file() and lock_file(out).read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run([sys.executable, "-m", "compatctl", *backfill_args(world, out)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    first_output, _ = first.communicate(timeout=60)
    assert first.returncode == 0, first_output
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"another compatctl run (pid {first.pid}) is writing it" in " ".join(second.stderr.split())
    assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    written, single = open_embeddings(out), open_embeddings(reference)
    assert written.shards == single.shards  # sha256 of every shard: byte-identical to one run
    for entry in single.shards:
        assert (out / entry["file"]).read_bytes() == (reference / entry["file"]).read_bytes()
    assert json.loads((out / "manifest.json").read_text())["resume_key"] == single.manifest["resume_key"]
    assert not list(tmp_path.glob(".g*")) and np.array_equal(written.read_all().ids, single.read_all().ids)
