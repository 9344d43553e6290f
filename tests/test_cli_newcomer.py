"""The small things a newcomer met (issue 12): --version, config keys in --help, a passing gate's line,
eval's title kept whole, demo bars that end full, "Next, try" commands that copy-paste at 80 columns."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np

from compatctl import __version__
from compatctl.cli import app
from compatctl.cli._util import shell_command
from compatctl.cli.demo import next_commands


def test_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"compatctl {__version__}"


def test_fit_transform_help_lists_every_config_key(runner):
    import dataclasses

    from compatctl.transform.config import TransformConfig

    text = " ".join(runner.invoke(app, ["fit-transform", "--help"]).output.split())
    assert "Config keys" in text
    for field in dataclasses.fields(TransformConfig):
        assert f" {field.name} (" in text, field.name


def test_train_new_help_lists_keys_and_methods(runner):
    from compatctl.train.config import METHOD_NAMES

    text = " ".join(runner.invoke(app, ["train-new", "--help"]).output.split())
    for key in ("epochs (", "bct.weight (", "bt2.extra_dims (", "contrastive.temperature ("):
        assert key in text, key
    assert " | ".join(METHOD_NAMES) in text


def _npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, embeddings=rng.normal(size=(30, 4)).astype(np.float32), labels=rng.integers(0, 3, 30))
    return path


def test_a_passing_gate_prints_one_line(runner, tmp_path):
    query = _npz(tmp_path / "q.npz")
    result = runner.invoke(app, ["eval", str(query), str(query), "--fail-under", "top1=0", "--fail-under", "map=0"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("gates passed:")]
    assert len(lines) == 1 and "top1 = " in lines[0] and ">= 0" in lines[0] and "map = " in lines[0]
    assert "gates passed" not in runner.invoke(app, ["eval", str(query), str(query)]).output


def test_eval_title_keeps_long_file_names_whole(runner, tmp_path):
    folder = tmp_path / ("a-rather-long-folder-name-" * 3)
    folder.mkdir()
    query = _npz(folder / "query-embeddings-of-the-new-model.npz")
    result = runner.invoke(app, ["eval", str(query), str(query)])
    assert result.exit_code == 0, result.output
    assert f"{query} → {query}" in result.output


def test_next_commands_fit_80_columns_and_paste_back(tmp_path):
    for out in (Path("compatctl-demo"), tmp_path / "my runs" / ("long-name-" * 4)):
        for command in next_commands(out):
            text = shell_command(command)
            for line in text.splitlines():  # wider only where one argument alone is wider
                assert len(line) <= 80 or len(shlex.split(line.removesuffix(" \\"))) == 1, line
            assert shlex.split(text.replace("\\\n", " ")) == [str(arg) for arg in command]


def test_demo_fit_bar_ends_full_when_early_stopping_ends_the_fit(monkeypatch, tmp_path):
    import compatctl.transform.fit as fit_module
    from compatctl import demo

    def stops_early(old, new, out, *, config, progress):
        for epoch in (1, 2, 3):
            progress({"event": "epoch", "epoch": epoch, "epochs": 40, "loss": 1.0})
        return {}

    monkeypatch.setattr(fit_module, "fit_transform", stops_early)
    calls = []
    demo._fit(tmp_path, tmp_path, tmp_path / "t.safetensors", "mlp", demo.QUICK, lambda *a: calls.append(a))
    assert calls[-1] == ("fit-transform mlp", 40, 40)
