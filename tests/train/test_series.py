"""A series of updates v1 → v2 → v3: lineage along the chain, BT² prefixes, inspect, --require-compatible."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.series import chain_lines, chain_problem, lineage_for
from compatctl.store import read_header
from compatctl.train import train_model
from tests.train.helpers import config

V1, V2, V3 = "classes=[0,1]", "classes=[0,1,2]", "classes=all"


@pytest.fixture(scope="module")
def bt2_series(tmp_path_factory):
    """v1 independent (8 dims) → v2 BT² (8 + 4) → v3 BT² (12 + 4), on growing class sets."""
    root = tmp_path_factory.mktemp("series")
    v1 = train_model(config(V1), out_dir=root / "v1")
    v2 = train_model(config(V2, "method=bt2", "bt2.extra_dims=4", "seed=1"), out_dir=root / "v2", old_model=v1)
    v3 = train_model(config(V3, "method=bt2", "bt2.extra_dims=4", "embedding_dim=12", "seed=2"),
                     out_dir=root / "v3", old_model=v2)
    return v1, v2, v3


def test_bt2_lineage_lists_every_ancestor_with_its_compatible_prefix(bt2_series):
    v1, v2, v3 = (read_header(path) for path in bt2_series)
    assert v3["embedding_width"] == 16 and v2["embedding_width"] == 12
    lineage = v3["lineage"]
    assert lineage["ancestors"] == [v2["fingerprint"], v1["fingerprint"]]
    assert [(e["fingerprint"], e["dims"]) for e in lineage["compatible_with"]] == \
        [(v2["fingerprint"], 12), (v1["fingerprint"], 8)]
    assert v1["lineage"]["compatible_with"] == [] and v1["lineage"]["ancestors"] == []


def test_bt2_along_a_series_holds_every_ancestor_prefix(bt2_series, monkeypatch):
    from compatctl.train import methods
    from compatctl.train.methods import _bt2_prefixes
    from compatctl.train.setup import build_setup

    setup = build_setup(config(V3, "method=bt2", "bt2.extra_dims=4", "embedding_dim=12"),
                        methods.get_method("bt2"), bt2_series[1])
    assert _bt2_prefixes(setup) == [12, 8]
    setup = build_setup(config(V3, "method=bt2", "bt2.extra_dims=4", "embedding_dim=12",
                               "bt2.keep_ancestor_prefixes=false"), methods.get_method("bt2"), bt2_series[1])
    assert _bt2_prefixes(setup) == [12]


def test_bct_series_is_compatible_transitively_and_independent_breaks_the_chain(tmp_path, bt2_series):
    v1 = bt2_series[0]
    # no self-check: one epoch on 64 images may fail it, which is chain_problem's other refusal (below)
    v2 = train_model(config(V2, "method=bct", "seed=1", "validation_fraction=0"), out_dir=tmp_path / "v2",
                     old_model=v1)
    v3 = train_model(config(V3, "method=bct", "seed=2", "validation_fraction=0"), out_dir=tmp_path / "v3",
                     old_model=v2)
    fp1, fp2 = read_header(v1)["fingerprint"], read_header(v2)["fingerprint"]
    entries = read_header(v3)["lineage"]["compatible_with"]
    assert [(e["fingerprint"], e["dims"], e["method"]) for e in entries] == [(fp2, 8, "bct"), (fp1, 8, "bct")]
    broken = train_model(config(V2, "seed=3"), out_dir=tmp_path / "indep", old_model=v1)
    header = read_header(broken)
    assert header["lineage"]["ancestors"] == [fp1] and header["lineage"]["compatible_with"] == []
    assert chain_problem(read_header(v3), v3) is None
    assert fp1[:12] in chain_problem(header, broken)
    failed = {**read_header(v3), "extra": {"self_check": {"compatible": False, "new_old": {"top1": 0.2},
                                                          "old_old": {"top1": 0.3}}}}
    assert "failed its own self-check" in chain_problem(failed, v3)


def test_lineage_of_a_model_written_before_series_support_is_inferred():
    old = {"fingerprint": "b" * 16, "embedding_width": 12, "extra": {"compatible_dims": 8},
           "lineage": {"method": "bt2", "old_model": "a" * 16, "ancestors": ["a" * 16]}}
    lineage = lineage_for("bt2", old, 12)
    assert [(e["fingerprint"], e["dims"]) for e in lineage["compatible_with"]] == [("b" * 16, 12), ("a" * 16, 8)]
    assert lineage["ancestors"] == ["b" * 16, "a" * 16]
    assert lineage_for("independent", old, 12)["compatible_with"] == []
    assert chain_lines({"fingerprint": "c" * 16, "lineage": lineage}) == [
        "v1 aaaaaaaaaaaa (compatible: first 8 dims)", "v2 bbbbbbbbbbbb (compatible: first 12 dims)",
        "v3 cccccccccccc (this model, bt2)"]


def test_inspect_shows_the_series(runner, bt2_series):
    result = runner.invoke(app, ["inspect", str(bt2_series[2]), "--json"])
    assert result.exit_code == 0, result.output
    series = json.loads(result.output)["series"]
    fp1, fp2, fp3 = (read_header(p)["fingerprint"][:12] for p in bt2_series)
    assert series == [f"v1 {fp1} (compatible: first 8 dims)", f"v2 {fp2} (compatible: first 12 dims)",
                      f"v3 {fp3} (this model, bt2)"]
    table = runner.invoke(app, ["inspect", str(bt2_series[2])])
    assert f"v1 {fp1}" in table.output and "→ v3" in table.output


def test_require_compatible_refuses_an_old_model_off_the_chain(runner, tmp_path, bt2_series):
    broken = train_model(config(V2, "seed=3"), out_dir=tmp_path / "indep", old_model=bt2_series[0])
    yaml_path = tmp_path / "train.yaml"
    yaml_path.write_text("method: bct\n")
    fp1 = read_header(bt2_series[0])["fingerprint"][:12]
    from tests.train.helpers import BASE

    result = runner.invoke(app, ["train-new", str(yaml_path), "--out", str(tmp_path / "v3"), "--old", str(broken),
                                 "--require-compatible", *BASE])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert f"is not compatible with its ancestor {fp1}" in result.output
    assert not (tmp_path / "v3").exists()


def test_eval_compares_v3_with_v1_on_v1s_prefix(tmp_path, bt2_series):
    from compatctl.evaluate import evaluate
    from compatctl.models.embed import embed_dataset
    from compatctl.store import open_embeddings
    from tests.train.helpers import DATA

    v1_set = open_embeddings(embed_dataset(bt2_series[0], DATA, tmp_path / "e1", split="test"))
    v3_set = open_embeddings(embed_dataset(bt2_series[2], DATA, tmp_path / "e3", split="test"))
    report = evaluate(v3_set, v1_set)
    assert report["dims"]["used"] == 8 and "lineage" in report["dims"]["note"]
    assert np.isfinite(report["metrics"]["top1"])
