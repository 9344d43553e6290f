"""Every command refuses an unusable output path before any work (issue 12, classes 1-3).

Each case: exit 2, one line naming the path and the fix, no traceback, and every file the
test made (the command's inputs among them) byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.store import EmbeddingBlock, save_artifact, write_embedding_set
from compatctl.store.outputs import Output, claim_outputs
from tests.backfill.conftest import fit, make_world

LONG = "n" * 230  # under NAME_MAX (255) but leaves no room for compatctl's temp names


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Embedding sets, a transform, a model, a 40 % NEW_GALLERY and odd files, all inputs to the cases."""
    from compatctl.backfill import backfill

    world = make_world(tmp_path_factory.mktemp("outputs-world"))
    root = world.root
    world.linear = fit(world, "linear", kind="linear")
    world.other_linear = root / "other" / "h.safetensors"
    save_artifact(world.other_linear, {"w": np.eye(2, dtype=np.float32)}, "transform",
                  {"old_fingerprint": "someone-else", "new_fingerprint": "new-fp"})
    world.model = root / "run" / "model.safetensors"
    save_artifact(world.model, {"w": np.zeros(3, np.float32)}, "model", {})
    world.npz = root / "e.npz"
    rng = np.random.default_rng(0)
    np.savez(world.npz, embeddings=rng.normal(size=(20, 4)).astype(np.float32), labels=rng.integers(0, 3, 20))
    world.emb_file = root / "emb.safetensors"
    save_artifact(world.emb_file, {"embeddings": np.eye(4, dtype=np.float32)}, "embeddings", {})
    world.g40 = root / "g40"
    backfill(world.gallery, world.linear, world.g40, budget=0.4, order="norm", new_embeddings=world.new_set)
    world.config = root / "train.yaml"
    world.config.write_text("method: independent\n")
    world.plain_file = root / "notes.txt"
    world.plain_file.write_text("a user's file\n")
    world.binary_json = root / "binary.json"
    world.binary_json.write_bytes(b"\x89PNG not a report")
    (root / "foreign").mkdir()
    (root / "foreign" / "keep.txt").write_text("mine\n")
    (root / "user-run").mkdir()
    (root / "user-run" / "config.json").write_text("{}\n")
    (root / "demo").mkdir()
    (root / "demo" / ".compatctl-demo").write_text("made by compatctl demo\n")
    return world


def _tree(*roots: Path) -> dict[str, str]:
    """sha256 of every file below ``roots`` (the command's inputs and everything else the test made)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


def ft(w, out, *extra):
    return ["fit-transform", str(w.gallery), str(w.new_set), "--out", str(out), *extra]


def ev(w, *extra):
    return ["eval", str(w.npz), str(w.npz), *extra]


def curve(w, *extra):
    return ["eval", str(w.new_set), str(w.gallery), "--backfill-with", str(w.new_set), *extra]


def bf(w, out, *extra):
    return ["backfill", str(w.gallery), "--transform", str(w.linear), "--out", str(out), *extra]


def emb(w, out, data="builtin:classes=2,train=10,test=10"):
    return ["embed", str(w.model), data, "--out", str(out)]


def tn(w, out, *extra):
    return ["train-new", str(w.config), "--out", str(out), *extra]


# (case id, argv(world, tmp), fragment the one line must hold)
CASES = [
    # class 1: an output that is, holds or lies inside an input
    ("ft-out-is-old-input", lambda w, t: ft(w, w.gallery), "is also an input"),
    ("ft-out-is-npz-input", lambda w, t: ["fit-transform", str(w.npz), str(w.new_set), "--out", str(w.npz)],
     "is also an input"),
    ("ft-out-symlink-to-input", lambda w, t: ["fit-transform", str(w.emb_file), str(w.new_set), "--out",
                                              str(_link(t, w.emb_file, "l.safetensors"))], "is also an input"),
    ("ft-out-hardlink-to-input", lambda w, t: ["fit-transform", str(_hardlink(t, w.emb_file)), str(w.new_set),
                                               "--out", str(w.emb_file)], "is also an input"),
    ("ft-out-inside-input-folder", lambda w, t: ft(w, w.new_set / "h.safetensors"), "lies inside the input folder"),
    ("ft-out-is-config", lambda w, t: ft(w, _copy(t, w.linear, "cfg.safetensors"), "--config",
                                         str(t / "cfg.safetensors")), "is also an input"),
    ("ft-out-onto-model", lambda w, t: ft(w, w.model), "holds a model checkpoint, not a transform"),
    ("ft-out-onto-embeddings-file", lambda w, t: ft(w, w.emb_file), "holds an embeddings file, not a transform"),
    ("ft-out-onto-other-lineage", lambda w, t: ft(w, w.other_linear), "fitted on other embeddings"),
    ("ft-out-onto-foreign-safetensors", lambda w, t: ft(w, _foreign(t)), "compatctl did not write, not a transform"),
    ("ft-out-onto-garbage", lambda w, t: ft(w, _garbage(t, "g.safetensors")), "holds no readable safetensors data"),
    ("eval-json-is-query", lambda w, t: ev(w, "--json", str(w.npz)), "is also an input"),
    ("eval-json-is-gallery-dir", lambda w, t: ["eval", str(w.new_set), str(w.gallery), "--json", str(w.gallery)],
     "is also an input"),
    ("eval-json-inside-gallery", lambda w, t: ["eval", str(w.new_set), str(w.gallery), "--json",
                                               str(w.gallery / "r.json")], "lies inside the input folder"),
    ("eval-json-is-set", lambda w, t: ["eval", "--set", f"a={w.npz}", "--set", f"b={w.gallery}",
                                       "--json", str(w.npz)], "is also an input"),
    ("eval-plot-is-new-gallery", lambda w, t: curve(w, "--plot", str(w.new_set)), "is also an input"),
    ("eval-json-onto-binary", lambda w, t: ev(w, "--json", str(w.binary_json)), "is not a JSON report"),
    ("eval-summary-onto-transform", lambda w, t: ev(w, "--summary-md", str(w.linear)), "holds a safetensors file"),
    ("eval-summary-onto-npz", lambda w, t: ev(w, "--summary-md", str(_copy(t, w.npz, "other.npz"))),
     "holds a .npz (zip) archive"),
    ("eval-per-query-onto-npz", lambda w, t: ev(w, "--per-query", str(_copy(t, w.npz, "rows.jsonl"))),
     "holds a .npz (zip) archive"),
    ("bf-out-is-gallery", lambda w, t: bf(w, w.gallery), "is also an input"),
    ("bf-out-is-transform", lambda w, t: bf(w, w.linear), "is also an input"),
    ("bf-out-is-new-embeddings", lambda w, t: bf(w, w.new_set, "--budget", "0.2", "--new-embeddings",
                                                 str(w.new_set)), "is also an input"),
    ("bf-out-holds-inputs", lambda w, t: bf(w, w.root), "holds the input"),
    ("bf-out-inside-gallery", lambda w, t: bf(w, w.gallery / "g"), "lies inside the input folder"),
    ("bf-plan-is-gallery-file", lambda w, t: ["backfill", str(w.npz), "--transform", str(w.linear), "--plan-only",
                                              "--plan", str(w.npz)], "is also an input"),
    ("bf-smaller-budget", lambda w, t: bf(w, w.g40, "--budget", "0.1", "--order", "norm", "--new-embeddings",
                                          str(w.new_set)), "would throw re-embedded rows away"),
    ("bf-budget-0-onto-40", lambda w, t: bf(w, w.g40), "--budget 0.0 would throw"),
    ("embed-out-is-model", lambda w, t: emb(w, w.model), "is also an input"),
    ("embed-out-is-data", lambda w, t: emb(w, w.npz, data=str(w.npz)), "is also an input"),
    ("embed-out-inside-data", lambda w, t: emb(w, w.gallery / "x", data=str(w.gallery)), "lies inside the input"),
    ("embed-out-holds-model", lambda w, t: emb(w, w.model.parent), "holds the input"),
    ("train-out-holds-old", lambda w, t: tn(w, w.model.parent, "--old", str(w.model)), "holds the input"),
    ("train-out-is-config", lambda w, t: tn(w, w.config), "is also an input"),
    ("train-out-holds-teacher", lambda w, t: tn(w, _copy(_dir(t, "teacher-run"), w.model, "model.safetensors").parent,
                                                "method=bt2", f"bt2.teacher={t / 'teacher-run' / 'model.safetensors'}",
                                                "--old", str(w.model)), "holds the input"),
    ("train-out-is-data", lambda w, t: tn(w, _dir(t, "images"), f"data={t / 'images'}"), "is also an input"),
    ("train-out-inside-data", lambda w, t: tn(w, w.npz.parent / "run-in-data", f"data={w.npz.parent}"),
     "lies inside the input folder"),
    # class 1: an existing output of another kind
    ("embed-out-onto-transform", lambda w, t: emb(w, w.linear), "is a file, not a directory"),
    ("embed-out-onto-training-run", lambda w, t: emb(w, _training_run(t)), "holds a train-new run"),
    ("embed-out-onto-demo", lambda w, t: emb(w, w.root / "demo"), "an earlier `compatctl demo`"),
    ("embed-out-onto-foreign", lambda w, t: emb(w, w.root / "foreign"), "files compatctl did not write"),
    ("bf-out-onto-model-file", lambda w, t: bf(w, w.model), "is a file, not a directory"),
    ("bf-out-onto-foreign", lambda w, t: bf(w, w.root / "foreign"), "files compatctl did not write"),
    ("bf-out-onto-training-run", lambda w, t: bf(w, _training_run(t)), "a train-new run"),
    ("train-out-onto-embeddings", lambda w, t: tn(w, w.new_set), "holds an embedding set"),
    ("train-out-onto-user-config", lambda w, t: tn(w, w.root / "user-run"), "config.json that train-new would"),
    ("train-out-onto-file", lambda w, t: tn(w, w.plain_file), "is a file, not a directory"),
    ("demo-out-onto-file", lambda w, t: ["demo", "--out", str(w.plain_file)], "is a file, not a directory"),
    ("demo-out-onto-foreign", lambda w, t: ["demo", "--out", str(w.root / "foreign")], "did not write"),
    ("demo-out-onto-embeddings", lambda w, t: ["demo", "--out", str(w.gallery)], "holds an embedding set"),
    # class 2: unusable paths, caught before any work
    ("ft-out-is-folder", lambda w, t: ft(w, _dir(t, "d.safetensors")), "is a folder"),
    ("ft-out-suffix", lambda w, t: ft(w, t / "h.npz"), "must end in .safetensors"),
    ("ft-out-parent-is-file", lambda w, t: ft(w, w.plain_file / "h.safetensors"), "is a file, not a folder"),
    ("ft-out-grandparent-is-file", lambda w, t: ft(w, w.plain_file / "a" / "h.safetensors"), "is a file, not a"),
    ("ft-out-too-long", lambda w, t: ft(w, t / f"{LONG}.safetensors"), "choose a shorter name"),
    ("ft-out-dir-too-long", lambda w, t: ft(w, t / ("d" * 300) / "h.safetensors"), "choose a shorter name"),
    ("ft-out-unwritable", lambda w, t: ft(w, _unwritable() / "h.safetensors"), "cannot create files"),
    ("eval-json-is-folder", lambda w, t: ev(w, "--json", str(_dir(t, "r.json"))), "is a folder"),
    ("eval-json-suffix", lambda w, t: ev(w, "--json", str(t / "r.npz")), "must end in .json"),
    ("eval-json-parent-is-file", lambda w, t: ev(w, "--json", str(w.plain_file / "r.json")), "is a file, not a"),
    ("eval-json-too-long", lambda w, t: ev(w, "--json", str(t / f"{LONG}.json")), "choose a shorter name"),
    ("eval-json-unwritable", lambda w, t: ev(w, "--json", str(_unwritable() / "r.json")), "cannot create files"),
    ("eval-json-empty-name", lambda w, t: ev(w, "--json", ""), "is a folder"),
    ("eval-plot-gif", lambda w, t: curve(w, "--plot", str(t / "c.gif")), "must end in .png"),
    ("eval-plot-no-suffix", lambda w, t: curve(w, "--plot", str(t / "curve")), "must end in .png"),
    ("eval-plot-is-folder", lambda w, t: curve(w, "--plot", str(_dir(t, "c.png"))), "is a folder"),
    ("eval-plot-parent-is-file", lambda w, t: curve(w, "--plot", str(w.plain_file / "c.png")), "is a file, not"),
    ("eval-matrix-json-suffix", lambda w, t: ["eval", "--set", f"a={w.npz}", "--set", f"b={w.npz}",
                                              "--json", str(t / "m.yaml")], "must end in .json"),
    ("bf-out-parent-is-file", lambda w, t: bf(w, w.plain_file / "g"), "is a file, not a folder"),
    ("bf-out-too-long", lambda w, t: bf(w, t / LONG), "choose a shorter name"),
    ("bf-out-unwritable", lambda w, t: bf(w, _unwritable() / "g"), "cannot create files"),
    ("bf-plan-suffix", lambda w, t: ["backfill", str(w.gallery), "--transform", str(w.linear), "--plan-only",
                                     "--plan", str(t / "p.txt"), "--budget", "0.1"], "must end in .csv"),
    ("bf-plan-is-folder", lambda w, t: ["backfill", str(w.gallery), "--transform", str(w.linear), "--plan-only",
                                        "--plan", str(_dir(t, "p.csv")), "--budget", "0.1"], "is a folder"),
    ("embed-out-parent-is-file", lambda w, t: emb(w, w.plain_file / "e"), "is a file, not a folder"),
    ("embed-out-too-long", lambda w, t: emb(w, t / LONG), "choose a shorter name"),
    ("embed-out-unwritable", lambda w, t: emb(w, _unwritable() / "e"), "cannot create files"),
    ("train-out-parent-is-file", lambda w, t: tn(w, w.plain_file / "run"), "is a file, not a folder"),
    ("train-out-too-long", lambda w, t: tn(w, t / LONG), "choose a shorter name"),
    ("train-out-unwritable", lambda w, t: tn(w, _unwritable() / "run"), "cannot create files"),
    ("demo-out-parent-is-file", lambda w, t: ["demo", "--out", str(w.plain_file / "d")], "is a file, not a folder"),
    ("demo-out-too-long", lambda w, t: ["demo", "--out", str(t / LONG)], "choose a shorter name"),
    # class 3: another run holds the output
    ("ft-out-locked", lambda w, t: ft(w, _held(t / "h.safetensors", "transform")), "is writing it"),
    ("eval-json-locked", lambda w, t: ev(w, "--json", str(_held(t / "r.json", "report"))), "is writing it"),
    ("eval-plot-locked", lambda w, t: curve(w, "--plot", str(_held(t / "c.png", "plot"))), "is writing it"),
    ("bf-out-locked", lambda w, t: bf(w, _held(t / "g", "embeddings")), "is writing it"),
    ("bf-part-locked", lambda w, t: bf(w, _held(t / "g", "embeddings", (2, 3)), "--part", "2/3"), "is writing it"),
    ("bf-whole-while-part-runs", lambda w, t: bf(w, _held(t / "g", "embeddings", (1, 2))), "is writing it"),
    ("embed-out-locked", lambda w, t: emb(w, _held(t / "e", "embeddings")), "is writing it"),
    ("train-out-locked", lambda w, t: tn(w, _held(t / "run", "training")), "is writing it"),
    ("demo-out-locked", lambda w, t: ["demo", "--out", str(_held(t / "d", "demo"))], "is writing it"),
]

_HELD = []  # claims the current case holds (released after it)


def _held(path: Path, kind: str, part=(1, 1)) -> Path:
    _HELD.append(claim_outputs([Output(path, kind, part=part)]))
    return path


def _link(tmp: Path, target: Path, name: str) -> Path:
    (tmp / name).symlink_to(target)
    return tmp / name


def _hardlink(tmp: Path, target: Path) -> Path:
    os.link(target, tmp / "hard.safetensors")
    return tmp / "hard.safetensors"


def _copy(tmp: Path, source: Path, name: str) -> Path:
    (tmp / name).write_bytes(source.read_bytes())
    return tmp / name


def _dir(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    return tmp / name


def _garbage(tmp: Path, name: str) -> Path:
    (tmp / name).write_bytes(b"not safetensors at all")
    return tmp / name


def _foreign(tmp: Path) -> Path:
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(2, np.float32)}, str(tmp / "foreign.safetensors"))
    return tmp / "foreign.safetensors"


def _training_run(tmp: Path) -> Path:
    (tmp / "run").mkdir()
    save_artifact(tmp / "run" / "model.safetensors", {"w": np.zeros(3, np.float32)}, "model", {})
    return tmp / "run"


def _unwritable() -> Path:
    """A folder nothing can be created in, even by root (sysfs); the case is skipped where /sys is writable."""
    try:
        probe = Path("/sys") / ".compatctl-probe"
        probe.touch()
        probe.unlink()
    except OSError:
        return Path("/sys") / "compatctl-out"
    pytest.skip("/sys is writable here")


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_output_is_refused_before_any_work(runner, world, tmp_path, argv, fragment):
    try:
        args = argv(world, tmp_path)
        before = _tree(world.root, tmp_path)
        result = runner.invoke(app, args)
        after = _tree(world.root, tmp_path)
    finally:
        while _HELD:
            _HELD.pop().release()
    text = result.output
    assert result.exit_code == 2, text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    assert fragment in text, text
    assert any(word in text for word in ("choose", "pass", "give", "wait", "delete", "move")), text
    assert after == before  # inputs, and everything else, byte-identical


def test_at_least_80_cases():
    assert len(CASES) >= 80 and len({c[0] for c in CASES}) == len(CASES)


def test_refused_lock_names_the_holder(runner, world, tmp_path):
    with claim_outputs([Output(tmp_path / "r.json", "report", "--json")]):
        result = runner.invoke(app, ev(world, "--json", str(tmp_path / "r.json")))
    assert result.exit_code == 2 and f"pid {os.getpid()}" in result.output, result.output
    assert runner.invoke(app, ev(world, "--json", str(tmp_path / "r.json"))).exit_code == 0  # released
    assert not list(tmp_path.glob(".*.lock"))


def test_larger_budget_and_force_still_allowed(runner, world, tmp_path):
    out = tmp_path / "g"
    out.mkdir()
    for item in world.g40.iterdir():
        (out / item.name).write_bytes(item.read_bytes())
    smaller = bf(world, out, "--budget", "0.1", "--order", "norm", "--new-embeddings", str(world.new_set))
    assert runner.invoke(app, smaller).exit_code == 2
    forced = runner.invoke(app, smaller + ["--force"])
    assert forced.exit_code == 0, forced.output
    from compatctl.store import open_embeddings

    assert (open_embeddings(out).read_all().provenance == 2).sum() == 30
