"""The robustness matrix (benchmarks/robustness.py) in its small size: every method with default
settings trains, embeds and evaluates on the built-in data and the scikit-learn digits, and the
compatible methods beat the independent model's new/old by a wide margin (slow)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "robustness.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("robustness", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules["robustness"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_small_matrix_runs_with_defaults(tmp_path):
    settings = "builtin,digits" if importlib.util.find_spec("sklearn") else "builtin"
    robustness = load_benchmark()
    report = tmp_path / "rows.json"
    robustness.main(["--out", str(tmp_path / "runs"), "--size", "small", "--settings", settings,
                     "--json", str(report)])
    rows = json.loads(report.read_text())
    assert set(rows) == set(settings.split(","))
    for name, row in rows.items():
        assert all(math.isfinite(value) for value in row.values()), name
        # An independent model is incompatible; BCT and BT² must be far above it across models.
        for method in ("bct", "bt2"):
            assert row[f"{method} new/old"] > row["independent new/old"] + 0.05, (name, method, row)
