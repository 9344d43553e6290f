"""Shared test helpers: tiny generated embeddings, a CLI runner."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def make_block(rows: int = 50, dim: int = 8, classes: int = 5, seed: int = 0, id_offset: int = 0):
    """A small EmbeddingBlock with clustered embeddings, labels and ids."""
    from compatctl.store import EmbeddingBlock

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    centers = rng.normal(size=(classes, dim))
    embeddings = (centers[labels] + 0.5 * rng.normal(size=(rows, dim))).astype(np.float32)
    return EmbeddingBlock(embeddings, np.arange(id_offset, id_offset + rows, dtype=np.int64), labels.astype(np.int64))
