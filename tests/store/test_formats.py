"""Embeddings where users keep them: Parquet, .npy shard folders, faiss indexes, read through one
source interface; `compatctl export` writes them; bad input is one line, exit 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from compatctl.cli import app  # noqa: E402
from compatctl.evaluate import evaluate  # noqa: E402
from compatctl.store import EmbeddingBlock, MemorySource, open_embeddings, write_embedding_set  # noqa: E402
from compatctl.store.export import export  # noqa: E402
from tests.conftest import make_block  # noqa: E402


def _block(rows=240, dim=8, seed=0):
    block = make_block(rows=rows, dim=dim, classes=6, seed=seed)
    rng = np.random.default_rng(seed + 1)
    return EmbeddingBlock(block.embeddings, block.ids * 7 + 3, block.labels, rng.integers(0, 3, rows).astype(np.uint8),
                          rng.random(rows).astype(np.float32))


def _write_parquet_table(path, ids, matrix, labels=None, *, fixed=True, value_type=None, names=("id", "embedding",
                                                                                               "label"), groups=64):
    value_type = value_type or pa.float32()
    flat = pa.array(matrix.reshape(-1).astype(value_type.to_pandas_dtype()), type=value_type)
    if fixed:
        column = pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
    else:
        column = pa.ListArray.from_arrays(pa.array(np.arange(0, matrix.size + 1, matrix.shape[1]), pa.int32()), flat)
    data = {names[0]: pa.array(list(ids)), names[1]: column}
    if labels is not None:
        data[names[2]] = pa.array(list(labels))
    pq.write_table(pa.table(data), path, row_group_size=groups)


@pytest.fixture
def every_format(tmp_path):
    """The same rows as .npz, a compatctl set, Parquet, an .npy folder and a faiss IDMap2 index."""
    block = _block()
    np.savez(tmp_path / "e.npz", embeddings=block.embeddings, ids=block.ids, labels=block.labels)
    write_embedding_set(tmp_path / "set", block, header={"model_fingerprint": "f" * 16}, shard_rows=50)
    source = open_embeddings(tmp_path / "set")
    export(source, tmp_path / "t.parquet", target="parquet", block_rows=45)
    export(source, tmp_path / "npy", target="npy", shard_rows=70, block_rows=33)
    export(source, tmp_path / "g.faiss", target="faiss")
    return block, {name: tmp_path / name for name in ("e.npz", "set", "t.parquet", "npy", "g.faiss")}


def test_every_format_reads_the_same_rows_through_the_interface(every_format):
    block, paths = every_format
    for name, path in paths.items():
        source = open_embeddings(path)
        assert (source.rows, source.dim, source.has_labels) == (240, 8, True), name
        whole = source.read_all()
        np.testing.assert_allclose(whole.embeddings, block.embeddings, atol=1e-7, err_msg=name)
        np.testing.assert_array_equal(whole.ids, block.ids, err_msg=name)
        np.testing.assert_array_equal(whole.labels, block.labels, err_msg=name)
        # ranges across shard / row-group / file boundaries, and rows by id in the order asked
        part = source.read_range(37, 151)
        np.testing.assert_array_equal(part.ids, block.ids[37:151], err_msg=name)
        wanted = block.ids[[200, 3, 99, 0]]
        picked = source.read_rows(wanted)
        np.testing.assert_array_equal(picked.ids, wanted, err_msg=name)
        np.testing.assert_allclose(picked.embeddings, block.embeddings[[200, 3, 99, 0]], atol=1e-7, err_msg=name)
        # --part workers: disjoint segments that together cover every row once
        seen = np.concatenate([b.ids for p in (1, 2, 3) for b in source.iter_blocks(16, part=(p, 3))])
        assert sorted(seen.tolist()) == sorted(block.ids.tolist()), name
        assert sum(len(b) for b in source.iter_blocks(16)) == 240
        assert len(source.content_fingerprint()) == 16


def test_provenance_uncertainty_and_header_travel_with_the_rows(every_format):
    block, paths = every_format
    for name in ("set", "t.parquet", "npy", "g.faiss"):
        source = open_embeddings(paths[name])
        np.testing.assert_array_equal(source.column("provenance"), block.provenance, err_msg=name)
        np.testing.assert_allclose(source.column("uncertainty"), block.uncertainty, atol=0, err_msg=name)
        assert source.model_fingerprint == "f" * 16, name
    columns = pq.read_schema(paths["t.parquet"]).names
    assert columns == ["id", "embedding", "label", "provenance", "uncertainty"]


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_same_metrics_from_every_format_to_1e6(tmp_path, every_format, distance):
    """The closing note's first figure: npz, Parquet with string ids, .npy folder, set, faiss IDMap2."""
    block, paths = every_format
    texts = np.array([f"item-{i:06d}" for i in block.ids])  # same order as the integers: same tie-breaks
    _write_parquet_table(tmp_path / "strings.parquet", texts, block.embeddings, block.labels, fixed=False)
    reference = evaluate(open_embeddings(paths["e.npz"]), open_embeddings(paths["e.npz"]), distance=distance)
    assert reference["metrics"]["top1"] > 0.3  # a real signal, not a degenerate table
    for name, path in [*paths.items(), ("strings.parquet", tmp_path / "strings.parquet")]:
        source = open_embeddings(path)
        report = evaluate(source, source, distance=distance, query_block=50, gallery_block=70)
        for metric, value in reference["metrics"].items():
            assert report["metrics"][metric] == pytest.approx(value, abs=1e-6), (name, metric)


def test_parquet_columns_float16_lists_and_folders(tmp_path):
    block = _block(rows=100, dim=6)
    folder = tmp_path / "table"
    folder.mkdir()
    half = block.embeddings.astype(np.float16)
    _write_parquet_table(folder / "part-0.parquet", block.ids[:60], half[:60], block.labels[:60], fixed=False,
                         value_type=pa.float16(), names=("doc_id", "vector", "cls"), groups=25)
    _write_parquet_table(folder / "part-1.parquet", block.ids[60:], half[60:], block.labels[60:], fixed=False,
                         value_type=pa.float16(), names=("doc_id", "vector", "cls"), groups=25)
    (folder / "_SUCCESS").write_text("")
    source = open_embeddings(folder, {"embedding": "vector", "id": "doc_id", "label": "cls"})
    assert (source.rows, source.dim, source.dtype, source.format) == (100, 6, "float16", "parquet")
    whole = source.read_all()
    np.testing.assert_array_equal(whole.embeddings, half.astype(np.float32))
    np.testing.assert_array_equal(whole.labels, block.labels)
    np.testing.assert_array_equal(source.read_range(55, 65).ids, block.ids[55:65])


def _cli(runner, *args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def _one_line(output):
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_bad_parquet_inputs_are_one_line(tmp_path, runner):
    block = _block(rows=20, dim=4)
    good = tmp_path / "good.parquet"
    _write_parquet_table(good, block.ids, block.embeddings, block.labels)
    code, out = _cli(runner, "inspect", good, "--columns", "embedding=vector")
    assert code == 2 and "no column 'vector'" in _one_line(out) and "columns: id, embedding, label" in out
    ragged = tmp_path / "ragged.parquet"
    rows = [list(map(float, r)) for r in block.embeddings]
    rows[13] = rows[13][:3]
    pq.write_table(pa.table({"id": block.ids, "embedding": rows, "label": block.labels}), ragged)
    code, out = _cli(runner, "eval", ragged, ragged)
    assert code == 2 and "row 13 has 3 values" in _one_line(out)
    code, out = _cli(runner, "eval", good, good, "--columns", "bogus=1")
    assert code == 2 and "--columns" in _one_line(out)


def test_bad_npy_folders_are_one_line(tmp_path, runner):
    folder = tmp_path / "laion"
    (folder / "img_emb").mkdir(parents=True)
    np.save(folder / "img_emb" / "img_emb_0000.npy", np.ones((5, 4), np.float16))
    np.save(folder / "img_emb" / "img_emb_0001.npy", np.ones((5, 3), np.float16))
    code, out = _cli(runner, "inspect", folder)
    assert code == 2 and "differing dims" in _one_line(out)
    np.save(folder / "img_emb" / "img_emb_0001.npy", np.ones((5, 4), np.float16))
    (folder / "metadata").mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3, 4, 5]}), folder / "metadata" / "metadata_0000.parquet")
    pq.write_table(pa.table({"id": [6, 7, 8, 9]}), folder / "metadata" / "metadata_0001.parquet")
    code, out = _cli(runner, "inspect", folder)
    assert code == 2 and "4 metadata rows but img_emb_0001.npy holds 5" in _one_line(out)
    pq.write_table(pa.table({"id": [6, 7, 8, 9, 10]}), folder / "metadata" / "metadata_0001.parquet")
    source = open_embeddings(folder)
    assert source.rows == 10 and source.column("ids").tolist() == list(range(1, 11)) and source.dtype == "float16"


def test_faiss_index_that_cannot_reconstruct_is_refused(tmp_path, runner, every_format):
    code, out = _cli(runner, "export", every_format[1]["set"], tmp_path / "ivf.faiss", "--index", "IVF4,Flat",
                     "--train-rows", "120")
    assert code == 0 and "trained on 120 of 240 rows (seed 0)" in out
    code, out = _cli(runner, "eval", tmp_path / "ivf.faiss", tmp_path / "ivf.faiss")
    assert code == 2 and "cannot give back its vectors" in _one_line(out) and "IDMap/IDMap2 over Flat" in out


def test_export_never_replaces_and_refuses_string_ids_in_faiss(tmp_path, runner, every_format):
    paths = every_format[1]
    before = paths["t.parquet"].read_bytes()
    code, out = _cli(runner, "export", paths["set"], paths["t.parquet"])
    assert code == 2 and "already exists" in _one_line(out)
    assert paths["t.parquet"].read_bytes() == before
    texts = tmp_path / "texts.npz"
    np.savez(texts, embeddings=np.ones((3, 2), np.float32), ids=np.array(["a", "b", "c"]))
    code, out = _cli(runner, "export", texts, tmp_path / "t.faiss")
    assert code == 2 and "string ids" in _one_line(out) and not (tmp_path / "t.faiss").exists()


def test_missing_pyarrow_is_one_line_naming_the_extra(tmp_path, every_format):
    code = ("import sys; sys.modules['pyarrow'] = None; sys.argv = ['compatctl', 'inspect', sys.argv[1]]; "
            "from compatctl.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code, str(every_format[1]["t.parquet"])], capture_output=True,
                            text=True)
    assert result.returncode == 2, result.stderr
    assert "pip install 'compatctl[parquet]'" in result.stderr and "Traceback" not in result.stderr


def test_memory_source_is_the_in_memory_source():
    block = _block(rows=30)
    source = MemorySource(block)
    assert source.column("ids", segment=0).tolist() == block.ids.tolist()
    np.testing.assert_array_equal(source.read_rows(block.ids[::-1]).ids, block.ids[::-1])


def test_eval_and_inspect_cli_read_parquet_with_columns(tmp_path, runner):
    block = _block(rows=80, dim=6)
    npz, table = tmp_path / "e.npz", tmp_path / "t.parquet"
    np.savez(npz, embeddings=block.embeddings, ids=block.ids, labels=block.labels)
    _write_parquet_table(table, block.ids, block.embeddings, block.labels, names=("doc", "vec", "cls"))
    mapping = ["--columns", "embedding=vec,id=doc,label=cls"]
    code, out = _cli(runner, "eval", table, table, *mapping, "--json", tmp_path / "p.json")
    assert code == 0, out
    code, out = _cli(runner, "eval", npz, npz, "--json", tmp_path / "n.json")
    assert code == 0, out
    import json

    parquet_report, npz_report = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("p", "n"))
    assert parquet_report["metrics"] == pytest.approx(npz_report["metrics"], abs=1e-12)
    code, out = _cli(runner, "inspect", table, *mapping, "--json")
    assert code == 0 and '"format": "parquet"' in out and '"rows": 80' in out
    code, out = _cli(runner, "inspect", npz, *mapping)
    assert code == 2 and "--columns applies to Parquet" in _one_line(out)


@pytest.mark.parametrize("out", ["big.parquet", "big-npy"])
def test_export_refuses_float16_overflow_and_leaves_no_out(tmp_path, out):
    block = _block(rows=30, dim=4)
    block.embeddings[17, 2] = 1e6  # beyond float16's 65504
    source = MemorySource(block, "big")
    target = "parquet" if out.endswith(".parquet") else "npy"
    with pytest.raises(Exception, match="NaN or Inf.*float16 range"):
        export(source, tmp_path / out, target=target, dtype="float16", block_rows=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no OUT, no temp left behind
    export(source, tmp_path / out, target=target, dtype="float32", block_rows=8)
    assert open_embeddings(tmp_path / out).read_all().embeddings[17, 2] == 1e6


@pytest.mark.parametrize("name,message", [("x.parquet", "not a readable Parquet file"),
                                          ("x.faiss", "not a readable faiss index"),
                                          ("shards/a.npy", "not a .npy file")])
def test_garbage_files_of_each_format_are_one_line(tmp_path, runner, name, message):
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"garbage, not embeddings\n" * 4)
    code, out = _cli(runner, "inspect", path.parent if name.startswith("shards") else path)
    assert code == 2 and message in _one_line(out)
