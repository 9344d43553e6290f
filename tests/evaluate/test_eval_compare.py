"""`compatctl eval --baseline/--ceiling/--ci`: gap closed, flips by id, per-class change, intervals,
--per-query, --summary-md, gates on all of it, and the bad inputs (exit 2, one line)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.evaluate import evaluate
from compatctl.evaluate.compare import compare
from compatctl.store import EmbeddingBlock
from tests.conftest import make_block


def noisy(block: EmbeddingBlock, scale: float, seed: int, ids=None) -> EmbeddingBlock:
    rng = np.random.default_rng(seed)
    embeddings = block.embeddings + scale * rng.normal(size=block.embeddings.shape).astype(np.float32)
    return EmbeddingBlock(embeddings, block.ids if ids is None else ids, block.labels)


@pytest.fixture
def three(tmp_path):
    """new (clean), old (noisier), cand (in between); text ids, so matching is by text."""
    clean = make_block(150, 8, 5, seed=3)
    ids = np.array([f"item-{i:03d}" for i in range(150)])
    sets = {"new": noisy(clean, 0.1, 1, ids), "old": noisy(clean, 1.6, 2, ids), "cand": noisy(clean, 0.8, 4, ids)}
    for name, block in sets.items():
        np.savez(tmp_path / f"{name}.npz", embeddings=block.embeddings, ids=block.ids, labels=block.labels)
    return tmp_path, sets


def run(runner, *args):
    return runner.invoke(app, ["eval", *map(str, args)])


def test_three_way_report_matches_separate_evaluations(three):
    _, sets = three
    result = compare(sets["cand"], sets["cand"], baseline=sets["old"], ceiling=sets["new"], ci=0.9, resamples=200)
    report = result.report
    plain = {name: evaluate(block, block)["metrics"] for name, block in sets.items()}
    for metric in ("top1", "top5", "map"):
        assert report["metrics"][metric] == pytest.approx(plain["cand"][metric])
        assert report["baseline"][metric] == pytest.approx(plain["old"][metric])
        assert report["ceiling"][metric] == pytest.approx(plain["new"][metric])
        gap = (plain["cand"][metric] - plain["old"][metric]) / (plain["new"][metric] - plain["old"][metric])
        assert report["gap_closed"][metric] == pytest.approx(gap)
        assert report["ci"]["low"][metric] <= report["metrics"][metric] <= report["ci"]["high"][metric]
        assert report["ci"]["low"][f"diff.{metric}"] <= report["ci"]["high"][f"diff.{metric}"]
    rows = result.per_query_rows()
    negative = sum(r["flipped"] == "negative" for r in rows)
    assert report["flips"]["negative"] == negative and report["negative_flip_rate"] == pytest.approx(negative / 150)
    assert sum(r["correct_at_1"] for r in rows) / 150 == pytest.approx(report["metrics"]["top1"])
    assert np.mean([r["ap"] for r in rows]) == pytest.approx(report["metrics"]["map"])
    worst = report["per_class"]["worst"]
    assert [w["change"] for w in worst] == sorted(w["change"] for w in worst)


def test_flips_follow_ids_not_row_order(three):
    _, sets = three
    shuffled = sets["old"].take(np.random.default_rng(0).permutation(150))
    straight = compare(sets["cand"], sets["cand"], baseline=sets["old"]).report
    moved = compare(sets["cand"], sets["cand"], baseline=shuffled).report
    assert moved["negative_flip_rate"] == straight["negative_flip_rate"]
    assert moved["positive_flip_rate"] == straight["positive_flip_rate"]


def test_cli_gates_per_query_and_summary(runner, three):
    d, _ = three
    result = run(runner, d / "cand.npz", d / "cand.npz", "--baseline", d / "old.npz", "--ceiling", d / "new.npz",
                 "--ci", "0.95", "--json", d / "r.json", "--per-query", d / "q.jsonl", "--summary-md", d / "s.md",
                 "--fail-under", "gap_closed.top1=-5", "--fail-over", "negative_flip_rate=0.9",
                 "--fail-under", "ci_low.top1=0.05")
    assert result.exit_code == 0, result.output
    assert result.output.count("gates passed:") == 1 and "negative_flip_rate =" in result.output
    report = json.loads((d / "r.json").read_text())
    assert {"metrics", "baseline", "ceiling", "gap_closed", "negative_flip_rate", "positive_flip_rate",
            "per_class", "ci"} <= set(report)
    lines = [json.loads(line) for line in (d / "q.jsonl").read_text().splitlines()]
    assert len(lines) == 150 and lines[0]["id"] == "item-000"
    assert {"id", "first_relevant_rank", "ap", "correct_at_1", "flipped"} <= set(lines[0])
    summary = (d / "s.md").read_text()
    assert "| `top1` |" in summary and "gap closed" in summary and "pass" in summary and "Flips" in summary
    failing = run(runner, d / "cand.npz", d / "cand.npz", "--baseline", d / "old.npz",
                  "--fail-over", "negative_flip_rate=0.0", "--summary-md", d / "step_summary_1")
    assert failing.exit_code == 1 and "gate failed: negative_flip_rate" in failing.output
    assert "**FAIL**" in (d / "step_summary_1").read_text()  # any name, as $GITHUB_STEP_SUMMARY


BAD = [
    (["--baseline", "{d}/other.npz"], "no query id in common"),
    (["--ci", "1.5"], "strictly between 0 and 1"),
    (["--ci", "0"], "strictly between 0 and 1"),
    (["--fail-under", "gap_closed.top1=0.8"], "unknown metric 'gap_closed.top1'"),
    (["--baseline", "{d}/old.npz", "--fail-under", "ci_low.top1=0.5"], "unknown metric 'ci_low.top1'"),
    (["--fail-over", "negative_flip_rate=0.1"], "unknown metric 'negative_flip_rate'"),
    (["--baseline", "{d}/cand.npz", "--ceiling", "{d}/cand.npz", "--fail-under", "gap_closed.top1=0.5"],
     "equals the baseline"),
    (["--baseline-gallery", "{d}/old.npz"], "--baseline-gallery needs --baseline"),
    (["--baseline", "{d}/old.npz", "--no-map"], "needs the full ranking"),
    (["--per-query", "{d}/p.json"], "must end in .jsonl"),
    (["--summary-md", "{d}"], "is a folder"),
    (["--qrels", "{d}/missing.tsv"], "not found"),
    (["--metrics", "ndcg@0"], "unknown metric"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_input_exits_2_with_one_line(runner, three, args, message):
    d, sets = three
    other = sets["old"]
    np.savez(d / "other.npz", embeddings=other.embeddings, ids=np.array([f"x{i}" for i in range(150)]),
             labels=other.labels)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    result = run(runner, d / "cand.npz", d / "cand.npz", *(a.format(d=d) for a in args))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 or "error:" in result.output.splitlines()[0]
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.name in before} == before
