"""`compatctl demo`: folder safety and the table (fast), the whole run on reduced data (slow)."""

import json

import pytest

from compatctl.cli import app
from compatctl.demo import MARKER, DemoSettings, prepare_out, run_demo, summary_rows
from compatctl.errors import BadInputError


def test_demo_refuses_a_foreign_nonempty_folder_and_replaces_its_own(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(BadInputError, match="not made by `compatctl demo`"):
        prepare_out(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "user data"
    own = tmp_path / "demo"
    prepare_out(own)
    (own / "old").mkdir()
    prepare_out(own)
    assert (own / MARKER).exists() and not (own / "old").exists()


def test_demo_cli_bad_out_exit_2(runner, tmp_path):
    (tmp_path / "x").write_text("a file")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "not a directory" in result.output


def test_summary_rows_mark_compatibility_and_gap():
    cases = {"old/old": {"top1": 0.4, "map": 0.3}, "independent new/new": {"top1": 0.8, "map": 0.6},
             "independent new/old": {"top1": 0.1, "map": 0.1}, "bt2 new/old": {"top1": 0.5, "map": 0.35},
             "new/h(old) mlp": {"top1": 0.7, "map": 0.5}}
    curve = {"fractions": [0, 0.5, 1], "auc": {"top1": 0.75, "map": 0.55}}
    rows = {row[0]: row for row in summary_rows({"cases": cases, "curves": {"random": curve}})}
    assert "NOT compatible" in rows["independent new/old"][3] and rows["bt2 new/old"][3] == "compatible"
    assert rows["new/h(old) mlp"][3] == "gap closed 0.75"
    assert rows["backfill AUC (random)"][1:3] == ("0.750", "0.550")


@pytest.mark.slow
def test_demo_end_to_end_reduced(tmp_path):
    # The demo's own data and training (what `compatctl demo` runs); only the transform epochs and
    # curve steps are cut. On 2,000 images x 8 epochs BT² new/old only tied old/old (0.458 both).
    settings = DemoSettings(transform_epochs=10, curve_steps=4)
    report = run_demo(tmp_path / "demo", settings=settings)
    cases = report["cases"]
    expected = {"old/old", "new/h(old) mlp", "new/h(old) linear"} | {
        f"{m} {c}" for m in ("independent", "bct", "bt2") for c in ("new/new", "new/old")}
    assert set(cases) == expected
    assert cases["bt2 new/old"]["top1"] > cases["old/old"]["top1"]
    assert cases["independent new/old"]["top1"] < cases["old/old"]["top1"]
    assert set(report["curves"]) == {"random", "uncertainty"}
    for curve in report["curves"].values():
        assert len(curve["fractions"]) == 5 and curve["fractions"][0] == 0 and curve["fractions"][-1] == 1
    saved = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert saved["cases"] == cases
    assert (tmp_path / "demo" / "backfill_curve.png").stat().st_size > 1000
    rows = summary_rows(report)
    assert rows[0][0] == "old/old" and rows[-1][0] == "backfill AUC (uncertainty)"
