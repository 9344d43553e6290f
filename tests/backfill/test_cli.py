"""`compatctl backfill` on the command line: success output and every bad input (exit 2, one line)."""

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.store import EmbeddingBlock, write_embedding_set
from tests.backfill.conftest import read_set


def run(runner, world, out, *extra, transform=None):
    args = ["backfill", str(world.gallery), "--transform", str(transform or world.linear), "--out", str(out), *extra]
    return runner.invoke(app, args)


def assert_bad_input(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.output.replace("\n", " ")
    assert "Traceback" not in result.output


def test_cli_backfills_and_reports(runner, world, tmp_path):
    result = run(runner, world, tmp_path / "g", "--budget", "0.5", "--order", "norm",
                 "--new-embeddings", str(world.new_set))
    assert result.exit_code == 0, result.output
    assert "150 rows by norm order" in result.output and "rows/s" in result.output
    assert (read_set(tmp_path / "g").provenance == 2).sum() == 150


def test_cli_plan_only(runner, world, tmp_path):
    result = run(runner, world, tmp_path / "g", "--budget", "0.1", "--plan-only", "--plan", str(tmp_path / "p.jsonl"))
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 30


@pytest.mark.parametrize("budget", ["1.5", "-0.1"])
def test_budget_outside_unit_interval(runner, world, tmp_path, budget):
    result = run(runner, world, tmp_path / "g", "--budget", budget, "--new-embeddings", str(world.new_set))
    assert_bad_input(result, f"--budget {float(budget)}: must be a fraction between 0 and 1")


def test_uncertainty_order_needs_an_uncertainty_head(runner, world, tmp_path):
    result = run(runner, world, tmp_path / "g", "--budget", "0.2", "--order", "uncertainty",
                 "--new-embeddings", str(world.new_set))
    assert_bad_input(result, "has no uncertainty head")


@pytest.mark.parametrize("sources", [[], ["--new-model", "m.safetensors", "--new-embeddings", "e"]])
def test_exactly_one_source_of_new_rows(runner, world, tmp_path, sources):
    result = run(runner, world, tmp_path / "g", "--budget", "0.2", *sources)
    assert_bad_input(result, "needs exactly one of --new-model MODEL (with --data DATA) or --new-embeddings EMB")


def test_unknown_order(runner, world, tmp_path):
    result = run(runner, world, tmp_path / "g", "--budget", "0.2", "--order", "loudest",
                 "--new-embeddings", str(world.new_set))
    assert_bad_input(result, "--order 'loudest': unknown; valid orders: random, uncertainty, norm")


def test_existing_new_gallery_from_another_transform(runner, world, tmp_path):
    assert run(runner, world, tmp_path / "g").exit_code == 0
    other = tmp_path / "other.safetensors"
    from tests.backfill.conftest import fit

    other = fit(world, "linear-other", kind="linear", ridge=0.5)
    result = run(runner, world, tmp_path / "g", transform=other)
    assert_bad_input(result, "holds a NEW_GALLERY made from another transform")


def test_existing_new_gallery_from_another_gallery(runner, world, tmp_path):
    assert run(runner, world, tmp_path / "g").exit_code == 0
    other_gallery = tmp_path / "other-gallery"
    write_embedding_set(other_gallery, EmbeddingBlock(world.old[::-1].copy(), world.ids),
                        header={"model_fingerprint": "old-fp"}, shard_rows=64)
    result = runner.invoke(app, ["backfill", str(other_gallery), "--transform", str(world.linear),
                                 "--out", str(tmp_path / "g")])
    assert_bad_input(result, "holds a NEW_GALLERY made from another GALLERY")


def test_out_holding_an_embed_output_is_refused(runner, world, tmp_path):
    result = run(runner, world, world.new_set)
    assert_bad_input(result, "holds an embedding set that compatctl backfill did not write")


def test_unfinished_run_with_other_settings(runner, world, tmp_path):
    out = tmp_path / "g"
    assert run(runner, world, out, "--budget", "0.2", "--new-embeddings", str(world.new_set), "--part", "1/2").exit_code == 0
    result = run(runner, world, out, "--budget", "0.3", "--new-embeddings", str(world.new_set))
    assert_bad_input(result, "holds an unfinished backfill with other inputs or settings")


def test_plan_only_needs_a_plan_file(runner, world, tmp_path):
    result = run(runner, world, tmp_path / "g", "--budget", "0.2", "--plan-only")
    assert_bad_input(result, "--plan-only needs --plan FILE")


def test_new_embeddings_of_another_model(runner, world, tmp_path):
    foreign = tmp_path / "foreign"
    write_embedding_set(foreign, EmbeddingBlock(world.new, world.ids), header={"model_fingerprint": "zzz"})
    result = run(runner, world, tmp_path / "g", "--budget", "0.2", "--new-embeddings", str(foreign))
    assert_bad_input(result, "model fingerprint zzz differs from the new model the transform was fit on (new-fp)")
    forced = run(runner, world, tmp_path / "g", "--budget", "0.2", "--new-embeddings", str(foreign), "--force")
    assert forced.exit_code == 0
    assert "differs from the new model the transform was fit on (new-fp) (applied anyway: --force)" in \
        " ".join(forced.output.split())


def test_side_info_required_by_the_transform(runner, world, tmp_path):
    result = run(runner, world, tmp_path / "g", transform=world.with_side)
    assert_bad_input(result, "was fit with side-info; pass the side-info embeddings")


def test_gallery_of_another_old_model(runner, world, tmp_path):
    gallery = tmp_path / "gallery"
    write_embedding_set(gallery, EmbeddingBlock(world.old, world.ids), header={"model_fingerprint": "other"})
    result = runner.invoke(app, ["backfill", str(gallery), "--transform", str(world.linear), "--out",
                                 str(tmp_path / "g")])
    assert_bad_input(result, "--force to apply anyway")
    np.testing.assert_array_equal(read_set(gallery).embeddings, world.old)


def test_gallery_missing_a_shard_is_named(runner, world, tmp_path):
    import shutil

    gallery = tmp_path / "gallery"
    shutil.copytree(world.gallery, gallery)
    (gallery / "shard-00001.safetensors").unlink()
    result = runner.invoke(app, ["backfill", str(gallery), "--transform", str(world.linear), "--out",
                                 str(tmp_path / "g"), "--budget", "0.3", "--order", "random",
                                 "--new-embeddings", str(world.new_set)])
    assert_bad_input(result, "shard-00001.safetensors: shard listed in the manifest is missing")
