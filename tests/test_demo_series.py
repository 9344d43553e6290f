"""`compatctl demo --series`: the class shares (fast), the whole series on reduced data (slow)."""

import json

import pytest

from compatctl.cli import app
from compatctl.demo import DemoSettings
from compatctl.demo_series import version_classes
from compatctl.store import read_header


def test_version_classes_follow_cifar10s_4_7_10():
    assert [version_classes(v, 10) for v in ("v1", "v2", "v3")] == \
        ["classes=[0,1,2,3]", "classes=[0,1,2,3,4,5,6]", "classes=all"]
    assert version_classes("v1", 6) == "classes=[0,1]" and version_classes("v2", 6) == "classes=[0,1,2,3]"


@pytest.mark.slow
def test_series_demo_end_to_end(runner, tmp_path, monkeypatch):
    """Reduced data: checks the artifacts and the report's shape, and that the BT² chain keeps v1's prefix."""
    import compatctl.demo as demo

    small = DemoSettings(data="builtin:classes=6,train=600,test=200", epochs=2, transform_epochs=3)
    monkeypatch.setattr(demo, "QUICK", small)
    out = tmp_path / "series"
    result = runner.invoke(app, ["demo", "--series", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["series"]) == {"bt2", "bct"}
    for method, result_ in report["series"].items():
        assert len(result_["matrix"]["pairs"]) == 9 and len(result_["series"]["pairs"]) == 3
    v3 = read_header(out / "bt2-v3" / "model.safetensors")
    v1 = read_header(out / "v1" / "model.safetensors")
    assert v3["lineage"]["compatible_with"][-1] == {"fingerprint": v1["fingerprint"], "dims": 32, "method": "bt2"}
    assert set(report["transforms"]) == {"v1/v1", "v3/v3 (independent)", "v3/H23∘H12(v1)", "v3/H13(v1)"}
    assert "series v1 → v2 → v3" in result.output and "chain vs direct" in result.output
