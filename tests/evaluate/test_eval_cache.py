"""compare(cache_dir=...) / `eval --cache`: the baseline and ceiling are reused only while nothing changed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.evaluate.compare import compare
from compatctl.store import open_embeddings
from tests.evaluate.test_eval_compare import three  # noqa: F401  (fixture)


def sources(folder, *names):
    return [open_embeddings(folder / f"{name}.npz") for name in names]


def test_second_run_reuses_baseline_and_ceiling_with_identical_results(three, tmp_path):  # noqa: F811
    folder, _ = three
    cand, old, new = sources(folder, "cand", "old", "new")
    plain = compare(cand, cand, baseline=old, ceiling=new, ci=0.9)
    cache = tmp_path / "cache"
    first = compare(cand, cand, baseline=old, ceiling=new, ci=0.9, cache_dir=cache)
    second = compare(cand, cand, baseline=old, ceiling=new, ci=0.9, cache_dir=cache)
    assert [first.report["comparison"][p]["cache"] for p in ("baseline", "ceiling")] == ["stored", "stored"]
    assert [second.report["comparison"][p]["cache"] for p in ("baseline", "ceiling")] == ["hit", "hit"]
    assert len(list(cache.glob("*.npz"))) == 2
    for result in (first, second):
        for part in ("metrics", "baseline", "ceiling", "gap_closed", "negative_flip_rate", "per_class", "ci"):
            assert result.report[part] == plain.report[part], part
        assert result.per_query_rows() == plain.per_query_rows()


def test_changed_input_or_option_is_a_miss(three, tmp_path):  # noqa: F811
    folder, sets = three
    cache = tmp_path / "cache"
    cand, old = sources(folder, "cand", "old")
    compare(cand, cand, baseline=old, cache_dir=cache)
    again = compare(cand, cand, baseline=old, cache_dir=cache, distance="l2")
    assert again.report["comparison"]["baseline"]["cache"] == "stored"
    changed = sets["old"].embeddings.copy()
    changed[0] += 1.0
    np.savez(folder / "old.npz", embeddings=changed, ids=sets["old"].ids, labels=sets["old"].labels)
    moved = compare(cand, cand, baseline=open_embeddings(folder / "old.npz"), cache_dir=cache)
    assert moved.report["comparison"]["baseline"]["cache"] == "stored"
    assert len(list(cache.glob("*.npz"))) == 3


def test_damaged_entry_is_recomputed(three, tmp_path):  # noqa: F811
    folder, _ = three
    cand, old = sources(folder, "cand", "old")
    cache = tmp_path / "cache"
    expected = compare(cand, cand, baseline=old, cache_dir=cache).report["baseline"]
    (entry,) = cache.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    result = compare(cand, cand, baseline=old, cache_dir=cache)
    assert result.report["comparison"]["baseline"]["cache"] == "stored"
    assert result.report["baseline"] == expected


def test_cli_cache(runner, three, tmp_path):  # noqa: F811
    folder, _ = three
    args = ["eval", str(folder / "cand.npz"), str(folder / "cand.npz"), "--baseline", str(folder / "old.npz"),
            "--cache", str(tmp_path / "cache")]
    for expected in ("stored", "hit"):
        report_path = tmp_path / f"{expected}.json"
        result = runner.invoke(app, [*args, "--json", str(report_path)])
        assert result.exit_code == 0, result.output
        assert json.loads(report_path.read_text())["comparison"]["baseline"]["cache"] == expected


@pytest.mark.parametrize("case", ["no_baseline", "file"])
def test_cli_cache_bad_usage(runner, three, case):  # noqa: F811
    folder, _ = three
    args = ["eval", str(folder / "cand.npz"), str(folder / "cand.npz")]
    if case == "no_baseline":
        args += ["--cache", str(folder / "cache")]
    else:
        args += ["--baseline", str(folder / "old.npz"), "--cache", str(folder / "new.npz")]
    before = (folder / "new.npz").read_bytes()
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "--cache" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert (folder / "new.npz").read_bytes() == before


def test_cache_inside_an_input_set_is_refused(tmp_path):
    from compatctl.errors import BadInputError
    from compatctl.store import write_embedding_set
    from tests.conftest import make_block

    write_embedding_set(tmp_path / "old", make_block(40, 4, 3, seed=0), header={})
    old = open_embeddings(tmp_path / "old")
    with pytest.raises(BadInputError, match="lies inside the input"):
        compare(old, old, baseline=old, cache_dir=tmp_path / "old" / "cache")
    assert not (tmp_path / "old" / "cache").exists()


def test_one_parquet_file_through_two_column_mappings_is_two_entries(three, tmp_path):  # noqa: F811
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    folder, sets = three
    old, new = sets["old"], sets["new"]
    table = pa.table({"id": old.ids, "label": old.labels,
                      "old_vec": list(old.embeddings), "new_vec": list(new.embeddings)})
    path = tmp_path / "both.parquet"
    pq.write_table(table, path)
    cand = open_embeddings(folder / "cand.npz")
    cache = tmp_path / "cache"
    through_old = compare(cand, cand, baseline=open_embeddings(path, {"embedding": "old_vec"}), cache_dir=cache)
    through_new = compare(cand, cand, baseline=open_embeddings(path, {"embedding": "new_vec"}), cache_dir=cache)
    assert through_new.report["comparison"]["baseline"]["cache"] == "stored"  # a miss, not the old_vec entry
    assert len(list(cache.glob("*.npz"))) == 2
    plain = compare(cand, cand, baseline=open_embeddings(path, {"embedding": "new_vec"}))
    assert through_new.report["baseline"] == plain.report["baseline"]
    assert through_old.report["baseline"] != through_new.report["baseline"]
