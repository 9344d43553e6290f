"""`backfill --columns`: Parquet inputs whose columns have other names, one mapping for every input."""

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from compatctl.cli import app  # noqa: E402
from compatctl.store import open_embeddings  # noqa: E402
from tests.backfill.conftest import read_set  # noqa: E402

MAPPING = "embedding=vector,id=doc_id,label=cls"


def renamed_parquet(path, source_path, *, extra: dict | None = None, group_rows: int = 50, text_ids: bool = True):
    """The rows of ``source_path`` as Parquet with columns doc_id (string ids), vector, cls (+ ``extra``)."""
    block = open_embeddings(source_path).read_all()
    flat = pa.array(block.embeddings.reshape(-1), type=pa.float32())
    data = {"doc_id": pa.array([f"doc-{i}" for i in block.ids] if text_ids else block.ids),
            "vector": pa.FixedSizeListArray.from_arrays(flat, block.embeddings.shape[1])}
    if block.labels is not None:
        data["cls"] = pa.array(block.labels)
    for name, values in (extra or {}).items():
        data[name] = values(block)
    pq.write_table(pa.table(data), path, row_group_size=group_rows)
    return path


def run(runner, gallery, transform, out, *extra):
    result = runner.invoke(app, ["backfill", str(gallery), "--transform", str(transform), "--out", str(out), *extra])
    return result, result.output.replace("\n", " ")


def assert_bad_input(result, text, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    for fragment in fragments:
        assert fragment in text, result.output


def test_backfill_reads_renamed_parquet_gallery_and_new_embeddings(runner, world, tmp_path):
    reference = tmp_path / "from-sets"
    result, text = run(runner, world.gallery, world.linear, reference, "--budget", "0.4", "--order", "norm",
                       "--new-embeddings", str(world.new_set))
    assert result.exit_code == 0, text
    gallery = renamed_parquet(tmp_path / "g.parquet", world.gallery)
    new = renamed_parquet(tmp_path / "new.parquet", world.new_set, group_rows=37)
    out = tmp_path / "from-parquet"
    result, text = run(runner, gallery, world.linear, out, "--budget", "0.4", "--order", "norm",
                       "--new-embeddings", str(new), "--columns", MAPPING)
    assert result.exit_code == 0, text
    expected, got = read_set(reference), read_set(out)
    np.testing.assert_array_equal(got.ids, np.array([f"doc-{i}" for i in expected.ids]))
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_array_equal(got.provenance, expected.provenance)
    np.testing.assert_allclose(got.embeddings, expected.embeddings, atol=1e-6)
    assert (got.provenance == 2).sum() == 120


def test_one_mapping_skips_inputs_without_columns(runner, world, tmp_path):
    """A renamed Parquet gallery next to a side-info *set* and new embeddings as a set: they ignore --columns."""
    gallery = renamed_parquet(tmp_path / "g.parquet", world.gallery, text_ids=False)
    reference, out = tmp_path / "ref", tmp_path / "out"
    options = ["--side-info", str(world.side_set), "--budget", "0.3", "--new-embeddings", str(world.new_set)]
    result, text = run(runner, world.gallery, world.with_side, reference, *options)
    assert result.exit_code == 0, text
    result, text = run(runner, gallery, world.with_side, out, *options, "--columns", MAPPING)
    assert result.exit_code == 0, text
    expected, got = read_set(reference), read_set(out)
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_array_equal(got.provenance, expected.provenance)
    np.testing.assert_allclose(got.embeddings, expected.embeddings, atol=1e-5)
    # a renamed Parquet side-info with string ids next to the same gallery as Parquet: both read the mapping
    side = renamed_parquet(tmp_path / "side.parquet", world.side_set)
    text_gallery = renamed_parquet(tmp_path / "gt.parquet", world.gallery)
    result, text = run(runner, text_gallery, world.with_side, tmp_path / "out2", "--side-info", str(side),
                       "--columns", MAPPING)
    assert result.exit_code == 0, text
    np.testing.assert_allclose(read_set(tmp_path / "out2").embeddings[got.provenance != 2],
                               expected.embeddings[got.provenance != 2], atol=1e-5)


def test_missing_named_column_lists_the_columns_the_file_has(runner, world, tmp_path):
    gallery = renamed_parquet(tmp_path / "g.parquet", world.gallery)
    result, text = run(runner, gallery, world.linear, tmp_path / "out", "--columns", "embedding=emb,id=doc_id")
    assert_bad_input(result, text, f"{gallery}: no column 'emb'", "columns: doc_id, vector, cls", "--columns")
    assert not (tmp_path / "out").exists()
    # the default names are not in the file either: the same line, for 'embedding'
    result, text = run(runner, gallery, world.linear, tmp_path / "out")
    assert_bad_input(result, text, "no column 'embedding'", "columns: doc_id, vector, cls")
    # the mapping fits the gallery but not --new-embeddings (default names): that file is named
    new = tmp_path / "new.parquet"
    pq.write_table(pq.read_table(gallery).rename_columns(["id", "embedding", "label"]), new)
    result, text = run(runner, gallery, world.linear, tmp_path / "out", "--columns", MAPPING, "--budget", "0.1",
                       "--new-embeddings", str(new))
    assert_bad_input(result, text, f"{new}: no column 'vector'", "columns: id, embedding, label")
    assert not (tmp_path / "out").exists()


def test_a_named_optional_column_no_input_has_is_refused(runner, world, tmp_path):
    """label/provenance/uncertainty/versions may be missing from some inputs of one mapping, not from all."""
    gallery = renamed_parquet(tmp_path / "g.parquet", world.gallery)
    for role in ("label", "versions", "uncertainty"):
        result, text = run(runner, gallery, world.linear, tmp_path / "out", "--columns",
                           f"embedding=vector,id=doc_id,{role}=klass")
        assert_bad_input(result, text, f"--columns {role}=klass: no column 'klass' in GALLERY {gallery}",
                         "(columns: doc_id, vector, cls)")
    assert not (tmp_path / "out").exists()


def test_columns_that_fit_no_input_are_refused(runner, world, tmp_path):
    result, text = run(runner, world.gallery, world.linear, tmp_path / "out", "--columns", MAPPING,
                       "--side-info", str(world.side_set))
    assert_bad_input(result, text, "--columns applies to Parquet", f"GALLERY {world.gallery}",
                     f"--side-info {world.side_set}", "drop --columns")
    result, text = run(runner, world.gallery, world.linear, tmp_path / "out", "--columns", "vector")
    assert_bad_input(result, text, "expected ROLE=COLUMN pairs")
    assert not (tmp_path / "out").exists()


def test_another_embedding_column_of_the_same_file_is_another_gallery(runner, world, tmp_path):
    """Resume keys name the columns read: one file, two embedding columns, two galleries."""
    shifted = lambda block: pa.FixedSizeListArray.from_arrays(  # noqa: E731
        pa.array((block.embeddings + 1).reshape(-1), type=pa.float32()), block.embeddings.shape[1])
    gallery = renamed_parquet(tmp_path / "g.parquet", world.gallery, extra={"vector2": shifted})
    out = tmp_path / "out"
    result, text = run(runner, gallery, world.linear, out, "--columns", MAPPING)
    assert result.exit_code == 0, text
    first = read_set(out).embeddings
    result, text = run(runner, gallery, world.linear, out, "--columns", "embedding=vector2,id=doc_id,label=cls")
    assert_bad_input(result, text, "made from another GALLERY", "same path, other content or --columns")
    np.testing.assert_array_equal(read_set(out).embeddings, first)
    result, text = run(runner, gallery, world.linear, tmp_path / "out2", "--columns",
                       "embedding=vector2,id=doc_id,label=cls")
    assert result.exit_code == 0, text
    assert np.abs(read_set(tmp_path / "out2").embeddings - first).max() > 1e-3


def test_npy_folder_metadata_and_parquet_share_one_mapping(runner, world, tmp_path):
    """An .npy gallery whose metadata names ids doc_id and labels cls, new rows in a renamed Parquet table."""
    from compatctl.store.export import export

    gallery = tmp_path / "g-npy"
    export(open_embeddings(world.gallery), gallery, target="npy", shard_rows=100)
    for file in sorted((gallery / "metadata").glob("*.parquet")):
        table = pq.read_table(file)
        pq.write_table(table.rename_columns([{"id": "doc_id", "label": "cls"}.get(n, n) for n in table.schema.names]),
                       file)
    new = renamed_parquet(tmp_path / "new.parquet", world.new_set, text_ids=False)
    reference, out = tmp_path / "ref", tmp_path / "out"
    options = ["--budget", "0.3", "--order", "norm"]
    result, text = run(runner, world.gallery, world.linear, reference, *options, "--new-embeddings", str(world.new_set))
    assert result.exit_code == 0, text
    result, text = run(runner, gallery, world.linear, out, *options, "--new-embeddings", str(new), "--columns", MAPPING)
    assert result.exit_code == 0, text
    expected, got = read_set(reference), read_set(out)
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_allclose(got.embeddings, expected.embeddings, atol=1e-6)
    # without the mapping the metadata has no 'id' column: row numbers, which --new-embeddings lacks
    result, text = run(runner, gallery, world.linear, tmp_path / "bad", *options,
                       "--new-embeddings", str(world.new_set))
    assert result.exit_code == 2 and f"--new-embeddings {world.new_set}: lacks 90 gallery ids" in text, text
