"""The backfill library: row semantics, orders, merges by id, plans, parts and continuation."""

import hashlib

import numpy as np
import pytest

from compatctl.backfill import backfill, backfill_order, budget_rows, read_plan
from compatctl.errors import BadInputError
from compatctl.store import PROVENANCE
from compatctl.transform import load_transform
from tests.backfill.conftest import ROWS, read_set, shard_records

TRANSFORMED, BACKFILLED = PROVENANCE.index("transformed"), PROVENANCE.index("backfilled")


def tree_hash(path) -> str:
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()


def expected_order(world, transform_path, order, seed=0):
    """The order computed in memory from the whole transformed gallery, as eval would."""
    transformed, uncertainty = load_transform(transform_path).apply(world.old)
    return backfill_order(order, ids=world.ids, uncertainty=uncertainty, embeddings=transformed, seed=seed)


def test_budget_zero_only_applies_the_transform(world, tmp_path):
    before = tree_hash(world.gallery)
    summary = backfill(world.gallery, world.linear, tmp_path / "g0")
    out = read_set(tmp_path / "g0")
    np.testing.assert_array_equal(out.ids, world.ids)
    np.testing.assert_array_equal(out.labels, world.labels)
    np.testing.assert_allclose(out.embeddings, load_transform(world.linear).apply(world.old)[0], rtol=1e-6, atol=1e-6)
    assert (out.provenance == TRANSFORMED).all() and out.uncertainty is None
    assert summary["complete"] and summary["budget_rows"] == 0
    assert tree_hash(world.gallery) == before  # GALLERY is never modified


@pytest.mark.parametrize("order", ["random", "norm"])
def test_budget_rows_follow_the_order_and_merge_by_id(world, tmp_path, order):
    backfill(world.gallery, world.linear, tmp_path / "g", budget=0.3, order=order, seed=7,
             new_embeddings=world.new_set)
    out = read_set(tmp_path / "g")
    chosen = expected_order(world, world.linear, order, seed=7)[:budget_rows(0.3, ROWS)]
    assert len(chosen) == 90
    np.testing.assert_array_equal(np.flatnonzero(out.provenance == BACKFILLED), np.sort(chosen))
    np.testing.assert_array_equal(out.embeddings[chosen], world.new[chosen])  # new set is stored shuffled
    rest = out.provenance == TRANSFORMED
    np.testing.assert_allclose(out.embeddings[rest], load_transform(world.linear).apply(world.old)[0][rest],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out.ids, world.ids)


def test_uncertainty_order_and_stored_uncertainty(world, uncertain, tmp_path):
    backfill(world.gallery, uncertain, tmp_path / "g", budget=0.25, order="uncertainty",
             new_embeddings=world.new_set)
    out = read_set(tmp_path / "g")
    chosen = expected_order(world, uncertain, "uncertainty")[:budget_rows(0.25, ROWS)]
    np.testing.assert_array_equal(np.flatnonzero(out.provenance == BACKFILLED), np.sort(chosen))
    np.testing.assert_allclose(out.uncertainty, load_transform(uncertain).apply(world.old)[1], rtol=1e-5, atol=1e-6)


def test_missing_new_embeddings_are_named(world, tmp_path):
    from compatctl.store import EmbeddingBlock, write_embedding_set

    partial = tmp_path / "partial"
    write_embedding_set(partial, EmbeddingBlock(world.new[:10], world.ids[:10]), header={})
    with pytest.raises(BadInputError, match=r"lacks \d+ gallery ids \(\d+"):
        backfill(world.gallery, world.linear, tmp_path / "g", budget=0.5, new_embeddings=partial)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_plan_only_writes_ordered_ids_and_no_gallery(world, tmp_path, suffix):
    plan = tmp_path / f"plan{suffix}"
    summary = backfill(world.gallery, world.linear, tmp_path / "g", budget=0.1, order="norm",
                       plan_only=True, plan_path=plan)
    ranks, ids = read_plan(plan)
    order = expected_order(world, world.linear, "norm")
    np.testing.assert_array_equal(ids, world.ids[order[:30]])
    np.testing.assert_array_equal(ranks, np.arange(30))
    assert summary["planned_rows"] == 30 and not (tmp_path / "g").exists()
    if suffix == ".csv":
        assert plan.read_text().startswith("rank,id\n")


def test_two_parts_one_after_the_other_equal_one_run(world, tmp_path):
    args = dict(budget=0.4, order="random", new_embeddings=world.new_set)
    backfill(world.gallery, world.linear, tmp_path / "one", **args)
    first = backfill(world.gallery, world.linear, tmp_path / "parts", part=(2, 2), **args)
    assert not first["complete"] and first["shards_written"] == 2
    second = backfill(world.gallery, world.linear, tmp_path / "parts", part=(1, 2), **args)
    assert second["complete"] and second["shards_written"] == 3
    assert shard_records(tmp_path / "parts") == shard_records(tmp_path / "one")


def test_rerun_of_a_complete_run_writes_nothing(world, tmp_path):
    args = dict(budget=0.2, new_embeddings=world.new_set)
    backfill(world.gallery, world.linear, tmp_path / "g", **args)
    again = backfill(world.gallery, world.linear, tmp_path / "g", **args)
    assert again["shards_written"] == 0 and again["complete"]


def test_larger_budget_continues_without_redoing_backfilled_rows(world, tmp_path):
    from compatctl.store import EmbeddingBlock, write_embedding_set

    order = expected_order(world, world.linear, "norm")
    backfill(world.gallery, world.linear, tmp_path / "g", budget=0.2, order="norm", new_embeddings=world.new_set)
    # The second source holds only the rows the larger budget adds: nothing else may be needed.
    delta = order[60:150]
    only_delta = tmp_path / "delta"
    write_embedding_set(only_delta, EmbeddingBlock(world.new[delta], world.ids[delta]),
                        header={"model_fingerprint": "new-fp"})
    plan = tmp_path / "plan.csv"
    planned = backfill(world.gallery, world.linear, tmp_path / "g", budget=0.5, order="norm",
                       plan_only=True, plan_path=plan)
    assert planned["already_backfilled"] == 60
    np.testing.assert_array_equal(read_plan(plan)[1], world.ids[delta])
    summary = backfill(world.gallery, world.linear, tmp_path / "g", budget=0.5, order="norm",
                       new_embeddings=only_delta)
    assert (summary["mode"], summary["reused_rows"], summary["new_rows"]) == ("continue", 60, 90)
    backfill(world.gallery, world.linear, tmp_path / "fresh", budget=0.5, order="norm",
             new_embeddings=world.new_set)
    continued, fresh = read_set(tmp_path / "g"), read_set(tmp_path / "fresh")
    np.testing.assert_array_equal(continued.embeddings, fresh.embeddings)
    np.testing.assert_array_equal(continued.provenance, fresh.provenance)


def test_side_info_is_merged_by_id(world, tmp_path):
    backfill(world.gallery, world.with_side, tmp_path / "g", side_info_path=world.side_set)
    out = read_set(tmp_path / "g")
    expected = load_transform(world.with_side).apply(world.old, world.side)[0]
    np.testing.assert_allclose(out.embeddings, expected, rtol=1e-5, atol=1e-6)


def test_side_info_missing_ids_are_named(world, tmp_path):
    from compatctl.store import EmbeddingBlock, write_embedding_set

    short = tmp_path / "short-side"
    write_embedding_set(short, EmbeddingBlock(world.side[5:], world.ids[5:]), header={"model_fingerprint": "side-fp"})
    with pytest.raises(BadInputError, match="lacks 5 gallery ids"):
        backfill(world.gallery, world.with_side, tmp_path / "g", side_info_path=short)


def test_out_equal_to_gallery_is_refused(world):
    with pytest.raises(BadInputError, match="GALLERY is never modified"):
        backfill(world.gallery, world.linear, world.gallery)


def test_single_file_gallery(world, tmp_path):
    npz = tmp_path / "gallery.npz"
    np.savez(npz, embeddings=world.old, ids=world.ids, labels=world.labels)
    backfill(npz, world.linear, tmp_path / "g", budget=0.5, new_embeddings=world.new_set)
    out = read_set(tmp_path / "g")
    assert (out.provenance == BACKFILLED).sum() == 150
    np.testing.assert_array_equal(out.ids, world.ids)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"backfill": {"budget": "lots"}}', "[1, 2]"])
def test_budget_check_reads_a_hostile_manifest_through_the_bounded_reader(tmp_path, text):
    """check_budget runs before any work on whatever --out holds: never a RecursionError or a TypeError;
    an unreadable manifest is left to prepare_destination's one clear line."""
    from compatctl.backfill.destination import check_budget, prepare_destination

    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "manifest.json").write_text(text)
    check_budget(tmp_path / "g", 0.1, force=False)
    with pytest.raises(BadInputError, match=str(tmp_path / "g")):  # names --out or its manifest
        prepare_destination(tmp_path / "g", resume_key="k", lineage={"shard_rows": 8, "rows": 40}, part=(1, 1))
