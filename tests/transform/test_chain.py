"""Transform chains v1 → v2 → v3 through backfill, links checked; mixed-version galleries."""

from __future__ import annotations

import types

import numpy as np
import pytest

from compatctl.cli import app
from compatctl.store import EmbeddingBlock, PROVENANCE, open_embeddings, write_embedding_set
from compatctl.transform import load_transform

ROWS, DIMS, CLASSES = 240, (8, 12, 16), 5


def _fit(root, old, new, name, kind="linear"):
    from compatctl.transform import fit_transform, load_transform_config

    out = root / f"{name}.safetensors"
    fit_transform(old, new, out, config=load_transform_config(None, [f"kind={kind}", "min_matched=10"]))
    return out


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """v1/v2/v3 embeddings of the same items (each a noisy projection of a shared signal) and H12, H23, H13."""
    root = tmp_path_factory.mktemp("chain")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, ROWS)
    signal = rng.normal(size=(CLASSES, 20))[labels] + 0.5 * rng.normal(size=(ROWS, 20))
    ids = np.arange(1000, 1000 + ROWS)
    world = types.SimpleNamespace(root=root, ids=ids, labels=labels, sets=[], rows=[])
    for version, dim in enumerate(DIMS, start=1):
        rows = (signal @ rng.normal(size=(20, dim)) + 0.2 * rng.normal(size=(ROWS, dim))).astype(np.float32)
        path = root / f"v{version}"
        write_embedding_set(path, EmbeddingBlock(rows, ids, labels), header={"model_fingerprint": f"fp-v{version}"},
                            shard_rows=64)
        world.sets.append(path)
        world.rows.append(rows)
    world.h12 = _fit(root, world.sets[0], world.sets[1], "h12")
    world.h23 = _fit(root, world.sets[1], world.sets[2], "h23")
    world.h13 = _fit(root, world.sets[0], world.sets[2], "h13")
    return world


def _backfill(runner, gallery, out, *transforms, extra=()):
    args = ["backfill", str(gallery), "--out", str(out), *extra]
    for transform in transforms:
        args += ["--transform", str(transform)]
    return runner.invoke(app, args)


def _bad(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_chain_applies_the_links_in_order(runner, series, tmp_path):
    result = _backfill(runner, series.sets[0], tmp_path / "v3-gallery", series.h12, series.h23)
    assert result.exit_code == 0, result.output
    written = open_embeddings(tmp_path / "v3-gallery").read_all()
    step, _ = load_transform(series.h12).apply(series.rows[0])
    expected, _ = load_transform(series.h23).apply(step)
    np.testing.assert_allclose(written.embeddings, expected, atol=1e-5)
    assert (written.provenance == PROVENANCE.index("transformed")).all()
    assert open_embeddings(tmp_path / "v3-gallery").model_fingerprint == "fp-v3"
    # fit-transform fits v1 → v3 directly too; both land in v3's 16 dims
    direct, _ = load_transform(series.h13).apply(series.rows[0])
    assert direct.shape == expected.shape == (ROWS, 16)


def test_links_that_do_not_connect_are_named(runner, series, tmp_path):
    _bad(_backfill(runner, series.sets[0], tmp_path / "a", series.h23, series.h12),
         "link 2", "maps 8-d embeddings of model fp-v1", "makes 16-d ones of model fp-v3", "do not connect")
    other = series.root / "other-v2"
    if not other.exists():
        write_embedding_set(other, EmbeddingBlock(series.rows[1], series.ids, series.labels),
                            header={"model_fingerprint": "fp-other"}, shard_rows=64)
    h_other = _fit(series.root, other, series.sets[2], "h-other")
    _bad(_backfill(runner, series.sets[0], tmp_path / "b", series.h12, h_other),
         f"--transform {h_other} (link 2)", "maps from model fp-other", f"link 1 ({series.h12}) maps to model fp-v2")
    result = _backfill(runner, series.sets[0], tmp_path / "c", series.h12, h_other, extra=["--force"])
    assert result.exit_code == 0 and "fp-other" in result.output, result.output
    _bad(_backfill(runner, series.sets[1], tmp_path / "d", series.h12, series.h23), "holds 12-d embeddings")
    assert not any((tmp_path / name).exists() for name in "abd")


def _mixed(series, path, versions: list[str], width: int = 12):
    """Rows of the given versions (v1 rows in the first 8 columns, zero-padded), as one .npz."""
    rows = np.zeros((ROWS, width), np.float32)
    for index, version in enumerate(versions):
        dim = DIMS[int(version[-1]) - 1]
        rows[index, :dim] = series.rows[int(version[-1]) - 1][index]
    np.savez(path, embeddings=rows, ids=series.ids, labels=series.labels, versions=np.array(versions))
    return path


def test_mixed_version_gallery_sends_each_row_through_the_links_it_needs(runner, series, tmp_path):
    versions = ["fp-v1"] * 150 + ["fp-v2"] * 60 + ["fp-v3"] * 30
    gallery = _mixed(series, tmp_path / "mixed.npz", versions, width=16)
    result = _backfill(runner, gallery, tmp_path / "out", series.h12, series.h23)
    assert result.exit_code == 0, result.output
    written = open_embeddings(tmp_path / "out").read_all()
    h12, h23 = load_transform(series.h12), load_transform(series.h23)
    np.testing.assert_allclose(written.embeddings[:150], h23.apply(h12.apply(series.rows[0][:150])[0])[0], atol=1e-5)
    np.testing.assert_allclose(written.embeddings[150:210], h23.apply(series.rows[1][150:210])[0], atol=1e-5)
    np.testing.assert_allclose(written.embeddings[210:], series.rows[2][210:], atol=1e-6)
    assert (written.provenance[:210] == PROVENANCE.index("transformed")).all()
    assert (written.provenance[210:] == PROVENANCE.index("native")).all()


def test_mixed_version_row_without_a_link_is_refused(runner, series, tmp_path):
    gallery = _mixed(series, tmp_path / "mixed.npz", ["fp-v1"] * 200 + ["fp-v2"] * 40)
    _bad(_backfill(runner, gallery, tmp_path / "out", series.h23), "row 0 has version fp-v1",
         "no --transform link maps from")
    assert not (tmp_path / "out").exists()
    # one link is enough when every version starts it: v1 rows through h12, v2 rows kept
    result = _backfill(runner, gallery, tmp_path / "ok", series.h12)
    assert result.exit_code == 0, result.output
    written = open_embeddings(tmp_path / "ok").read_all()
    np.testing.assert_allclose(written.embeddings[200:], series.rows[1][200:], atol=1e-6)


def test_chain_with_a_budget_merges_newest_rows(runner, series, tmp_path):
    result = _backfill(runner, series.sets[0], tmp_path / "g", series.h12, series.h23,
                       extra=["--budget", "0.25", "--new-embeddings", str(series.sets[2])])
    assert result.exit_code == 0, result.output
    written = open_embeddings(tmp_path / "g").read_all()
    backfilled = written.provenance == PROVENANCE.index("backfilled")
    assert backfilled.sum() == ROWS // 4
    np.testing.assert_allclose(written.embeddings[backfilled], series.rows[2][backfilled], atol=1e-6)


def test_only_the_first_link_takes_side_info(runner, series, tmp_path):
    from compatctl.transform import fit_transform, load_transform_config

    side = tmp_path / "side"
    write_embedding_set(side, EmbeddingBlock(series.rows[0][:, :4].copy(), series.ids), header={"model_fingerprint": "s"})
    h23_side = tmp_path / "h23-side.safetensors"
    fit_transform(series.sets[1], series.sets[2], h23_side, side_info_path=side,
                  config=load_transform_config(None, ["kind=linear", "min_matched=10"]))
    _bad(_backfill(runner, series.sets[0], tmp_path / "out", series.h12, h23_side),
         "(link 2): was fit with side-info; in a chain only the first link may take side-info")
