"""`eval --backfill-with` simulates exactly what `backfill` does: same metrics at the same budget.

The curve runs from G = the gallery through the transform (budget 0) to NEW = the new-model
embeddings; at fractions 0.3 and 0.7 (curve points of --steps 10) it must report the metrics of
the real NEW_GALLERY that `backfill --budget 0.3/0.7` with the same order writes.
"""

import json

import pytest

from compatctl.cli import app

STEPS, BUDGETS = 10, (0.3, 0.7)


def report(runner, tmp_path, name: str, *args) -> dict:
    path = tmp_path / f"{name}.json"
    result = runner.invoke(app, ["eval", *map(str, args), "--json", str(path)])
    assert result.exit_code == 0, result.output
    return json.loads(path.read_text())


@pytest.mark.parametrize("order", ["random", "norm", "uncertainty"])
def test_curve_points_equal_real_backfills(runner, world, uncertain, tmp_path, order):
    transform = uncertain if order == "uncertainty" else world.linear
    base = ["backfill", str(world.gallery), "--transform", str(transform)]
    assert runner.invoke(app, [*base, "--out", str(tmp_path / "g0")]).exit_code == 0
    curve = report(runner, tmp_path, "curve", world.new_set, tmp_path / "g0", "--backfill-with", world.new_set,
                   "--order", order, "--steps", STEPS, "--seed", 3)["curve"]
    for budget in BUDGETS:
        out = tmp_path / f"g{budget}"
        result = runner.invoke(app, [*base, "--out", str(out), "--budget", str(budget), "--order", order,
                                     "--seed", "3", "--new-embeddings", str(world.new_set)])
        assert result.exit_code == 0, result.output
        metrics = report(runner, tmp_path, f"real{budget}", world.new_set, out)["metrics"]
        point = curve["fractions"].index(pytest.approx(budget))
        assert metrics["top1"] == pytest.approx(curve["top1"][point], abs=1e-12)
        assert metrics["map"] == pytest.approx(curve["map"][point], abs=1e-12)
    assert curve["top1"][0] != curve["top1"][-1]  # the curve does move: the check is not vacuous
