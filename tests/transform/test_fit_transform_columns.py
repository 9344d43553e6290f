"""`fit-transform --columns`: old, new and side-info embeddings from Parquet tables with other column names."""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from compatctl.cli import app  # noqa: E402
from compatctl.transform import load_transform  # noqa: E402
from tests.transform.helpers import clustered_old, nonlinear_new, save_set  # noqa: E402

MAPPING = "embedding=vector,id=doc_id,label=cls"


def _table(path, embeddings, ids, labels=None, *, order=None):
    """Rows as Parquet with columns doc_id (int64: pairs sort as in the sets, so the validation split is
    the same), vector (list<float>), cls; rows in ``order``."""
    order = np.arange(len(ids)) if order is None else order
    data = {"doc_id": pa.array(np.asarray(ids, np.int64)[order]),
            "vector": pa.array([row.tolist() for row in np.asarray(embeddings, np.float32)[order]],
                               type=pa.list_(pa.float32()))}
    if labels is not None:
        data["cls"] = pa.array(np.asarray(labels)[order])
    pq.write_table(pa.table(data), path, row_group_size=64)
    return path


@pytest.fixture
def rows():
    old, labels = clustered_old(240, 6)
    return old, nonlinear_new(old, 8), labels, np.arange(240) * 3 + 5


def _run(runner, *args):
    result = runner.invoke(app, ["fit-transform", *map(str, args)])
    return result, result.output.replace("\n", " ")


def test_fit_transform_from_renamed_parquet_equals_the_fit_from_sets(runner, rows, tmp_path):
    old, new, labels, ids = rows
    old_set = save_set(tmp_path / "old", old, ids=ids, labels=labels)
    new_set = save_set(tmp_path / "new", new, ids=ids, labels=labels)
    side = old[:, :3] * 2
    side_set = save_set(tmp_path / "side", side, ids=ids)
    settings = ["kind=linear", "cv_folds=0", "validation_fraction=0.25"]
    result, text = _run(runner, old_set, new_set, "--out", tmp_path / "sets.safetensors", "--side-info", side_set,
                        *settings)
    assert result.exit_code == 0, text
    shuffled = np.random.default_rng(3).permutation(len(ids))  # pairs are matched by id, not by row
    old_table = _table(tmp_path / "old.parquet", old, ids, labels)
    new_table = _table(tmp_path / "new.parquet", new, ids, labels, order=shuffled)
    side_table = _table(tmp_path / "side.parquet", side, ids, order=shuffled[::-1])  # no cls: lenient
    result, text = _run(runner, old_table, new_table, "--out", tmp_path / "tables.safetensors",
                        "--side-info", side_table, "--columns", MAPPING, *settings)
    assert result.exit_code == 0, text
    assert "240 (old 240, new 240)" in text and "180 / 60" in text
    from_sets, from_tables = (load_transform(tmp_path / f"{n}.safetensors") for n in ("sets", "tables"))
    assert from_tables.side_info_dim == 3
    probe = np.random.default_rng(4).normal(size=(20, 6)).astype(np.float32)
    side_probe = np.random.default_rng(5).normal(size=(20, 3)).astype(np.float32)
    np.testing.assert_allclose(from_tables.apply(probe, side_probe)[0], from_sets.apply(probe, side_probe)[0],
                               atol=1e-4)


def test_fit_transform_columns_bad_input(runner, rows, tmp_path):
    old, new, labels, ids = rows
    old_table = _table(tmp_path / "old.parquet", old, ids, labels)
    new_table = _table(tmp_path / "new.parquet", new, ids, labels)
    out = tmp_path / "h.safetensors"
    result, text = _run(runner, old_table, new_table, "--out", out, "--columns", "embedding=emb,id=doc_id")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len([line for line in result.output.splitlines() if "error" in line]) == 1, result.output
    assert f"{old_table}: no column 'emb' (columns: doc_id, vector, cls)" in text
    result, text = _run(runner, old_table, new_table, "--out", out)  # default names: 'embedding' is missing
    assert result.exit_code == 2 and "no column 'embedding' (columns: doc_id, vector, cls)" in text, result.output
    result, text = _run(runner, old_table, new_table, "--out", out, "--columns", "embedding=vector,id=doc_id,label=y")
    assert result.exit_code == 2 and "--columns label=y: no column 'y' in OLD_EMBEDDINGS" in text, result.output
    old_set, new_set = save_set(tmp_path / "old", old, ids=ids), save_set(tmp_path / "new", new, ids=ids)
    result, text = _run(runner, old_set, new_set, "--out", out, "--columns", MAPPING)
    assert result.exit_code == 2 and "--columns applies to Parquet" in text and "drop --columns" in text, result.output
    assert not out.exists()
