"""A mixed-version gallery as Parquet: backfill reads each row's model from a string `versions` column."""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from compatctl.store import open_embeddings  # noqa: E402
from tests.transform.test_chain import _backfill, _bad, _mixed, series  # noqa: E402,F401  (series: the fixture)


def _as_parquet(npz, path, *, versions_name="versions", versions=None):
    with np.load(npz) as data:
        rows, ids, labels = data["embeddings"], data["ids"], data["labels"]
        versions = data["versions"].tolist() if versions is None else versions
    flat = pa.array(rows.reshape(-1), type=pa.float32())
    table = pa.table({"id": pa.array(ids), "embedding": pa.FixedSizeListArray.from_arrays(flat, rows.shape[1]),
                      "label": pa.array(labels), versions_name: pa.array(versions, type=pa.string())})
    pq.write_table(table, path, row_group_size=50)
    return path


def test_parquet_versions_column_equals_the_npz_one(runner, series, tmp_path):
    versions = ["fp-v1"] * 150 + ["fp-v2"] * 60 + ["fp-v3"] * 30
    npz = _mixed(series, tmp_path / "mixed.npz", versions, width=16)
    result = _backfill(runner, npz, tmp_path / "from-npz", series.h12, series.h23)
    assert result.exit_code == 0, result.output
    expected = open_embeddings(tmp_path / "from-npz").read_all()
    table = _as_parquet(npz, tmp_path / "mixed.parquet")
    renamed = _as_parquet(npz, tmp_path / "renamed.parquet", versions_name="model")
    for gallery, extra, out in ((table, (), "a"), (renamed, ("--columns", "versions=model"), "b")):
        result = _backfill(runner, gallery, tmp_path / out, series.h12, series.h23, extra=extra)
        assert result.exit_code == 0, result.output
        got = open_embeddings(tmp_path / out).read_all()
        np.testing.assert_allclose(got.embeddings, expected.embeddings, atol=1e-6)
        np.testing.assert_array_equal(got.provenance, expected.provenance)
    assert (expected.provenance[210:] == 0).all()  # v3 rows kept native: the versions were read
    # without --columns the renamed table has no versions: one version, 16-d, which h12 does not map
    _bad(_backfill(runner, renamed, tmp_path / "c", series.h12, series.h23), "holds 16-d embeddings")


def test_parquet_versions_bad_input(runner, series, tmp_path):
    npz = _mixed(series, tmp_path / "mixed.npz", ["fp-v1"] * 200 + ["fp-v2"] * 40)
    nulls = _as_parquet(npz, tmp_path / "nulls.parquet", versions=["fp-v1"] * 120 + [None] + ["fp-v2"] * 119)
    _bad(_backfill(runner, nulls, tmp_path / "a", series.h12), "column 'versions' (version) is null at row 120;")
    unknown = _as_parquet(npz, tmp_path / "unknown.parquet", versions=["fp-v1"] * 239 + ["fp-zz"])
    _bad(_backfill(runner, unknown, tmp_path / "b", series.h12), "row 239 has version fp-zz")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
