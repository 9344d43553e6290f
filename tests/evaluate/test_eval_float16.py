"""float16 inputs: read as stored, converted to float32 once (fused with normalisation), same scores."""

from __future__ import annotations

import numpy as np
import pytest

from compatctl.errors import BadInputError
from compatctl.evaluate import evaluate
from compatctl.evaluate.sources import get_distance, prepare, stored_blocks, unify_columns
from compatctl.store import EmbeddingBlock, open_embeddings, write_embedding_set


def _half_block(rows: int, dim: int, seed: int, classes: int = 4, id_offset: int = 0) -> EmbeddingBlock:
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(rows, dim)).astype(np.float16)
    embeddings[rows // 3] = embeddings[rows // 4]  # exact ties
    return EmbeddingBlock(embeddings, np.arange(id_offset, id_offset + rows, dtype=np.int64),
                          rng.integers(0, classes, rows))


@pytest.mark.parametrize("distance", ["cosine", "l2"])
@pytest.mark.parametrize("dims", [5, 7])
def test_prepare_float16_is_the_float32_result_bit_for_bit(distance, dims):
    half = _half_block(9000, 7, seed=1)  # > one conversion chunk
    before = half.embeddings.copy()
    single = EmbeddingBlock(half.embeddings.astype(np.float32), half.ids, half.labels)
    got = prepare(half, dims, get_distance(distance), gallery=True)
    want = prepare(single, dims, get_distance(distance), gallery=True)
    assert got.matrix.dtype == np.float32 and got.matrix.flags.c_contiguous
    np.testing.assert_array_equal(got.matrix, want.matrix)
    if distance == "l2":
        np.testing.assert_array_equal(got.bias, want.bias)
        squares = np.einsum("ij,ij->i", single.embeddings[:, :dims], single.embeddings[:, :dims])
        np.testing.assert_allclose(got.bias, -0.5 * squares, rtol=1e-6)
    else:
        np.testing.assert_allclose(np.linalg.norm(got.matrix, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(half.embeddings, before)  # the caller's array is untouched


def test_prepare_float32_cosine_never_writes_the_callers_array():
    block = EmbeddingBlock(np.full((3, 4), 2.0, np.float32), np.arange(3), np.zeros(3, np.int64))
    prepared = prepare(block, 4, get_distance("cosine"), gallery=False)
    assert not np.shares_memory(prepared.matrix, block.embeddings)
    assert (block.embeddings == 2.0).all()
    np.testing.assert_allclose(prepared.matrix, 0.5, atol=1e-7)


def test_prepare_refuses_nan_and_inf_in_float16_but_not_huge_finite_float32():
    half = _half_block(10, 4, seed=2)
    half.embeddings[3, 1] = np.inf
    half.embeddings[7, 0] = np.nan
    with pytest.raises(BadInputError, match=r"q\.npz: 2 rows hold NaN or Inf, first ids \[3, 7\]"):
        prepare(half, 4, get_distance("cosine"), gallery=False, name="q.npz")
    huge = EmbeddingBlock(np.full((2, 3), 1e30, np.float32), np.arange(2), np.zeros(2, np.int64))
    prepared = prepare(huge, 3, get_distance("cosine"), gallery=True)  # squares overflow, values are finite
    assert np.isfinite(prepared.matrix).all()


def test_float16_npz_is_held_as_stored_and_read_as_float32(tmp_path):
    half = _half_block(50, 6, seed=3)
    np.savez(tmp_path / "g.npz", embeddings=half.embeddings, ids=half.ids, labels=half.labels)
    source = open_embeddings(tmp_path / "g.npz")
    assert source.dtype == "float16" and source.block.embeddings.dtype == np.float16  # no float32 copy held
    assert source.read_range(3, 9).embeddings.dtype == np.float32
    np.testing.assert_array_equal(source.read_all().embeddings, half.embeddings.astype(np.float32))
    blocks = list(stored_blocks(source, 20))
    assert [b.embeddings.dtype for b in blocks] == [np.float16] * 3 and sum(map(len, blocks)) == 50


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_float16_set_and_npz_give_the_float32_metrics_exactly(tmp_path, distance):
    half = _half_block(400, 8, seed=4, classes=5)
    single = EmbeddingBlock(half.embeddings.astype(np.float32), half.ids, half.labels)
    write_embedding_set(tmp_path / "set", half, header={"model_fingerprint": "m"}, dtype="float16", shard_rows=128)
    np.savez(tmp_path / "g.npz", embeddings=half.embeddings, ids=half.ids, labels=half.labels)
    assert {b.embeddings.dtype for b in open_embeddings(tmp_path / "set").native_blocks(100)} == {np.dtype("float16")}
    want = evaluate(single, single, distance=distance, topk=(1, 5), gallery_block=96)
    for path in ("set", "g.npz"):
        for with_map in (True, False):
            got = evaluate(open_embeddings(tmp_path / path), open_embeddings(tmp_path / path), distance=distance,
                           topk=(1, 5), gallery_block=96, with_map=with_map)
            for name, value in got["metrics"].items():  # mAP: sums over other query blocks (shards)
                assert value == pytest.approx(want["metrics"][name], abs=1e-12), (path, with_map, name)


def test_text_ids_keep_their_codes_on_the_stored_dtype_path(tmp_path):
    half = _half_block(30, 4, seed=5)
    text = np.array([f"doc-{i:03d}" for i in half.ids])
    np.savez(tmp_path / "g.npz", embeddings=half.embeddings, ids=text, labels=half.labels)
    (coded,) = unify_columns(open_embeddings(tmp_path / "g.npz"))
    blocks = list(coded.native_blocks(16))
    assert blocks[0].embeddings.dtype == np.float16
    np.testing.assert_array_equal(np.concatenate([b.ids for b in blocks]), np.arange(30))
