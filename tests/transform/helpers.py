"""Tiny synthetic old/new embedding pairs for the transform tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compatctl.store import EmbeddingBlock, write_embedding_set


def clustered_old(rows: int, dim: int, classes: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    old = rng.normal(size=(classes, dim))[labels] + 0.7 * rng.normal(size=(rows, dim))
    return old.astype(np.float32), labels.astype(np.int64)


def nonlinear_new(old: np.ndarray, new_dim: int, seed: int = 1) -> np.ndarray:
    """A random two-layer tanh teacher: the MLP can learn it, a linear map cannot fully."""
    rng = np.random.default_rng(seed)
    hidden = np.tanh(old @ rng.normal(size=(old.shape[1], 64)) / np.sqrt(old.shape[1]) * 2)
    return (hidden @ rng.normal(size=(64, new_dim)) / 8).astype(np.float32)


def save_set(path: Path, embeddings, ids=None, labels=None, fingerprint: str | None = None) -> Path:
    """An embedding-set directory (with a model fingerprint) holding the rows."""
    ids = np.arange(len(embeddings), dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    block = EmbeddingBlock(np.asarray(embeddings, np.float32), ids, labels)
    write_embedding_set(path, block, header={"model_fingerprint": fingerprint or path.name}, shard_rows=4096)
    return path


def save_npz(path: Path, embeddings, ids=None, labels=None) -> Path:
    arrays = {"embeddings": embeddings}
    if ids is not None:
        arrays["ids"] = ids
    if labels is not None:
        arrays["labels"] = labels
    np.savez(path, **arrays)
    return path
