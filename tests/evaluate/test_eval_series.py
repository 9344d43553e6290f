"""`compatctl eval --set v1=... --set v2=... --set v3=... --series`: the matrix, the series metrics, gates."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.evaluate.series import series_gate_report, series_metrics


def _matrix(values: dict) -> dict:
    names = sorted({q for q, _ in values})
    return {"sets": names, "pairs": [{"query": q, "gallery": g, "metrics": {"top1": v}} for (q, g), v in values.items()]}


def test_series_metrics_by_hand():
    values = {("a", "a"): 0.5, ("a", "b"): 0.1, ("a", "c"): 0.1,
              ("b", "a"): 0.6, ("b", "b"): 0.7, ("b", "c"): 0.2,
              ("c", "a"): 0.4, ("c", "b"): 0.75, ("c", "c"): 0.8}
    series = series_metrics(_matrix(values))
    assert [(p["newer"], p["older"]) for p in series["pairs"]] == [("b", "a"), ("c", "a"), ("c", "b")]
    assert [p["compatible"]["top1"] for p in series["pairs"]] == [True, False, True]
    assert series["p_compat"]["top1"] == pytest.approx(2 / 3)
    assert series["mean_gain"]["top1"] == pytest.approx((0.1 - 0.1 + 0.05) / 3, abs=1e-9)
    assert series["min_gain"]["top1"] == pytest.approx(-0.1, abs=1e-9)
    assert series_gate_report(series)["metrics"]["series.p_compat.top1"] == pytest.approx(2 / 3)


@pytest.fixture
def versions(tmp_path):
    """v1, v2, v3: the same items, less noise each version in one shared space; v3x: v3 rotated away."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 180)
    centers = rng.normal(size=(6, 16))
    paths = {}
    for name, noise in (("v1", 1.6), ("v2", 1.0), ("v3", 0.6)):
        rows = (centers[labels] + noise * rng.normal(size=(180, 16))).astype(np.float32)
        paths[name] = tmp_path / f"{name}.npz"
        np.savez(paths[name], embeddings=rows, labels=labels)
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    rotated = (np.load(paths["v3"])["embeddings"] @ rotation).astype(np.float32)
    paths["v3x"] = tmp_path / "v3x.npz"
    np.savez(paths["v3x"], embeddings=rotated, labels=labels)
    return paths


def _run(runner, paths, names, *extra):
    args = ["eval", "--series", *extra]
    for name in names:
        args += ["--set", f"{name}={paths[name]}"]
    return runner.invoke(app, args)


def test_compatible_series_passes_its_gates(runner, versions, tmp_path):
    result = _run(runner, versions, ["v1", "v2", "v3"], "--json", tmp_path / "r.json",
                  "--fail-under", "series.p_compat.top1=1", "--fail-under", "series.min_gain.top1=0")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["matrix"]["pairs"]) == 9
    series = report["series"]
    assert series["order"] == ["v1", "v2", "v3"] and len(series["pairs"]) == 3
    assert series["p_compat"] == {"top1": 1.0, "map": 1.0}
    assert series["min_gain"]["top1"] > 0
    assert "series v1 → v2 → v3" in result.output and "v3 / v1" in result.output
    assert "gates passed: series.p_compat.top1 = 1.0000 >= 1" in result.output


def test_a_version_off_the_series_fails_the_gate(runner, versions):
    result = _run(runner, versions, ["v1", "v2", "v3x"], "--fail-under", "series.p_compat.top1=1",
                  "--fail-under", "series.mean_gain.top1=-0.9")
    assert result.exit_code == 1, result.output
    assert "gate failed: series.p_compat.top1 = 0.3333 < 1" in result.output
    assert "mean_gain" not in result.output.split("gate failed")[-1]  # the passing gate is not a failure line


@pytest.mark.parametrize("args, message", [
    (["--series", "{v1}", "{v2}"], "--series reads the --set sets as versions"),
    (["--set", "a={v1}", "--set", "b={v2}", "--fail-under", "series.p_compat.top1=1"], "with --series, gates"),
    (["--series", "--set", "a={v1}", "--set", "b={v2}", "--fail-under", "top1=0.5"], "unknown metric 'top1'"),
    (["--series", "--set", "a={v1}", "--set", "b={v2}", "--fail-under", "series.p_compat.top1=2"], "fractions"),
])
def test_bad_series_usage(runner, versions, args, message):
    result = runner.invoke(app, ["eval", *(a.format(**{k: str(v) for k, v in versions.items()}) for a in args)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
