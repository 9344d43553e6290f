"""Shared fixtures: a tiny old gallery, the new model's embeddings of it, and fitted transforms."""

from __future__ import annotations

import types

import numpy as np
import pytest

from compatctl.store import EmbeddingBlock, open_embeddings, write_embedding_set

ROWS, OLD_DIM, NEW_DIM, CLASSES, SHARD_ROWS = 300, 8, 12, 6, 64


def make_world(root, seed: int = 0):
    """Old/new embeddings of ROWS items with scattered ids; the new set is stored shuffled."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, ROWS)
    centers = rng.normal(size=(CLASSES, NEW_DIM))
    new = (centers[labels] + 0.6 * rng.normal(size=(ROWS, NEW_DIM))).astype(np.float32)
    old = (new @ rng.normal(size=(NEW_DIM, OLD_DIM)) * 0.3 + 0.8 * rng.normal(size=(ROWS, OLD_DIM))).astype(np.float32)
    side = (new[:, :4] + 0.3 * rng.normal(size=(ROWS, 4))).astype(np.float32)
    ids = rng.choice(10**9, ROWS, replace=False).astype(np.int64)
    shuffle = rng.permutation(ROWS)
    world = types.SimpleNamespace(root=root, ids=ids, labels=labels, old=old, new=new, side=side)
    world.gallery = root / "old-gallery"
    write_embedding_set(world.gallery, EmbeddingBlock(old, ids, labels), header={"model_fingerprint": "old-fp"},
                        shard_rows=SHARD_ROWS)
    world.new_set = root / "new-embeddings"
    write_embedding_set(world.new_set, EmbeddingBlock(new[shuffle], ids[shuffle], labels[shuffle]),
                        header={"model_fingerprint": "new-fp"}, shard_rows=50)
    world.side_set = root / "side-info"
    write_embedding_set(world.side_set, EmbeddingBlock(side[shuffle], ids[shuffle]),
                        header={"model_fingerprint": "side-fp"}, shard_rows=70)
    return world


def fit(world, name: str, side_info=None, **overrides) -> str:
    from compatctl.transform import fit_transform, load_transform_config

    out = world.root / f"{name}.safetensors"
    config = load_transform_config(None, [f"{k}={v}" for k, v in overrides.items()] + ["min_matched=10"])
    fit_transform(world.gallery, world.new_set, out, side_info_path=side_info, config=config)
    return out


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The tiny world plus a linear transform and a side-info linear one (closed form: fast)."""
    world = make_world(tmp_path_factory.mktemp("backfill-world"))
    world.linear = fit(world, "linear", kind="linear")
    world.with_side = fit(world, "with-side", side_info=world.side_set, kind="linear")
    return world


@pytest.fixture(scope="session")
def uncertain(world):
    """A tiny mlp transform with FastFill's uncertainty head (trains a few seconds, once)."""
    return fit(world, "uncertain", kind="mlp", uncertainty="true", epochs=2, width=16, branch_width=16,
               blocks=0, threads=1)


def read_set(path) -> EmbeddingBlock:
    return open_embeddings(path).read_all()


def shard_records(path) -> list[dict]:
    """The manifest's shard list (file, rows, bytes, sha256): equal lists mean identical shards."""
    return open_embeddings(path).shards
