import json

import numpy as np
import pytest

from compatctl.errors import BadInputError, IntegrityError
from compatctl.store import (EmbeddingBlock, EmbeddingSetWriter, open_embeddings, parse_part,
                             provenance_counts, write_embedding_set)
from tests.conftest import make_block


def test_round_trip_and_blocks(tmp_path):
    block = make_block(rows=103, dim=6)
    block.uncertainty = np.linspace(0, 1, 103).astype(np.float32)
    write_embedding_set(tmp_path / "emb", block, header={"model_fingerprint": "abc"}, shard_rows=20)
    source = open_embeddings(tmp_path / "emb")
    assert (source.rows, source.dim, len(source.shards)) == (103, 6, 6)
    assert source.model_fingerprint == "abc" and source.has_labels and source.has_uncertainty
    sizes = [len(b) for b in source.iter_blocks(block_rows=7)]
    assert max(sizes) <= 7 and sum(sizes) == 103
    back = source.read_all()
    np.testing.assert_array_equal(back.embeddings, block.embeddings)
    np.testing.assert_array_equal(back.ids, block.ids)
    np.testing.assert_array_equal(back.labels, block.labels)
    np.testing.assert_array_equal(back.uncertainty, block.uncertainty)
    assert provenance_counts(source) == {"native": 103, "transformed": 0, "backfilled": 0}


def test_parts_fill_disjoint_shards_and_last_one_writes_manifest(tmp_path):
    block = make_block(rows=50, dim=4)
    out = tmp_path / "emb"
    for part in [(2, 2), (1, 2)]:
        writer = EmbeddingSetWriter(out, rows=50, dim=4, header={}, resume_key="k", shard_rows=10,
                                    part=part, has_labels=True)
        assert all(i % 2 == part[0] - 1 for i in writer.pending_shards())
        for index in writer.pending_shards():
            start, stop = writer.shard_bounds(index)
            writer.write_shard(index, block.take(slice(start, stop)))
        assert writer.finish() == (part == (1, 2))
    np.testing.assert_array_equal(open_embeddings(out).read_all().ids, block.ids)
    source = open_embeddings(out)
    assert [len(list(source.iter_blocks(part=p))) for p in [(1, 2), (2, 2)]] == [3, 2]


def test_resume_keeps_complete_shards_and_refuses_other_inputs(tmp_path):
    block = make_block(rows=30, dim=4)
    out = tmp_path / "emb"
    writer = EmbeddingSetWriter(out, rows=30, dim=4, header={}, resume_key="k", shard_rows=10)
    writer.write_shard(0, block.take(slice(0, 10)))
    (out / "shard-00001.safetensors").write_bytes(b"half-written")  # not in progress: redone
    with pytest.raises(BadInputError, match="incomplete"):
        open_embeddings(out)
    again = EmbeddingSetWriter(out, rows=30, dim=4, header={}, resume_key="k", shard_rows=10)
    assert again.pending_shards() == [1, 2]
    with pytest.raises(BadInputError, match="other inputs"):
        EmbeddingSetWriter(out, rows=30, dim=4, header={}, resume_key="other", shard_rows=10)


def test_corrupted_and_missing_shards_are_named(tmp_path):
    write_embedding_set(tmp_path / "emb", make_block(rows=30), header={}, shard_rows=10)
    shard = tmp_path / "emb" / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="shard-00001.*checksum"):
        open_embeddings(tmp_path / "emb").read_all()
    shard.write_bytes(bytes(data[:-20]))
    with pytest.raises(IntegrityError, match="shard-00001.*checksum"):
        open_embeddings(tmp_path / "emb").read_all()
    shard.unlink()
    with pytest.raises(IntegrityError, match="shard-00001.*missing"):
        open_embeddings(tmp_path / "emb").read_all()


def test_shards_with_different_dims(tmp_path):
    write_embedding_set(tmp_path / "a", make_block(rows=20, dim=4), header={}, shard_rows=10)
    write_embedding_set(tmp_path / "b", make_block(rows=20, dim=6), header={}, shard_rows=10)
    (tmp_path / "a" / "shard-00001.safetensors").write_bytes((tmp_path / "b" / "shard-00001.safetensors").read_bytes())
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    other = json.loads((tmp_path / "b" / "manifest.json").read_text())
    manifest["shards"][1] = other["shards"][1]
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="share a dim"):
        open_embeddings(tmp_path / "a").read_all()


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_single_file_embeddings(tmp_path, suffix):
    path = tmp_path / f"e{suffix}"
    arrays = {"embeddings": np.ones((4, 3), np.float32), "labels": np.array([0, 1, 0, 1])}
    if suffix == ".npz":
        np.savez(path, **arrays)
    else:
        from safetensors.numpy import save_file
        save_file(arrays, str(path))
    source = open_embeddings(path)
    assert (source.rows, source.dim) == (4, 3)
    np.testing.assert_array_equal(source.read_all().ids, np.arange(4))


@pytest.mark.parametrize("arrays, message", [
    ({"embeddings": np.array([[1.0, np.nan], [0, 1], [np.inf, 0]]), "ids": np.array([7, 8, 9])},
     r"2 rows hold NaN or Inf, first ids \[7, 9\]"),
    ({"embeddings": np.ones((3, 2)), "ids": np.array([1, 1, 2])}, "duplicates"),
    ({"embeddings": np.ones((3, 2)), "labels": np.array([1, 2])}, "one label per row"),
    ({"vectors": np.ones((3, 2))}, "no 'embeddings' array"),
])
def test_bad_single_files(tmp_path, arrays, message):
    np.savez(tmp_path / "e.npz", **arrays)
    with pytest.raises(BadInputError, match=message):
        open_embeddings(tmp_path / "e.npz")


def test_parse_part():
    assert parse_part("2/4") == (2, 4) and parse_part(None) == (1, 1)
    for bad in ["0/4", "5/4", "a/b", "3"]:
        with pytest.raises(BadInputError, match="--part"):
            parse_part(bad)


def test_block_concat_and_take():
    block = make_block(rows=10)
    joined = EmbeddingBlock.concat([block.take(slice(0, 4)), block.take(slice(4, 10))])
    np.testing.assert_array_equal(joined.embeddings, block.embeddings)
    assert joined.uncertainty is None


def test_id_index_locates_rows_and_reports_missing():
    from compatctl.store import IdIndex

    index = IdIndex(np.array([30, 10, 20]))
    rows, found = index.locate(np.array([20, 99, 30, 10]))
    assert found.tolist() == [True, False, True, True]
    assert rows[found].tolist() == [2, 0, 1]
    rows, found = IdIndex(np.array([], np.int64)).locate(np.array([1, 2]))
    assert not found.any() and len(rows) == 2
