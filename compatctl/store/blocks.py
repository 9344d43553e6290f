"""Rows in memory: a block of consecutive rows and an id index (numpy only, no format knowledge)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class EmbeddingBlock:
    """A run of consecutive rows. ``embeddings`` is float32; ``provenance`` indexes PROVENANCE."""

    embeddings: np.ndarray
    ids: np.ndarray
    labels: np.ndarray | None = None
    provenance: np.ndarray | None = None
    uncertainty: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index: np.ndarray | slice) -> "EmbeddingBlock":
        """Rows selected by ``index`` (a slice, integer or boolean array)."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return EmbeddingBlock(self.embeddings[index], self.ids[index], pick(self.labels),
                              pick(self.provenance), pick(self.uncertainty))

    @staticmethod
    def concat(blocks: list["EmbeddingBlock"]) -> "EmbeddingBlock":
        def cat(name):
            parts = [getattr(b, name) for b in blocks]
            return None if not parts or any(p is None for p in parts) else np.concatenate(parts)
        return EmbeddingBlock(*(cat(f.name) for f in dataclasses.fields(EmbeddingBlock)))


class IdIndex:
    """Where ids sit in a set of rows: one sort when built, then any number of lookups."""

    def __init__(self, ids: np.ndarray):
        self._by_id = np.argsort(ids, kind="stable")
        self._sorted = np.asarray(ids)[self._by_id]

    def locate(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, found): ``rows[i]`` is the row holding ``wanted[i]``, valid where ``found[i]``."""
        wanted = np.asarray(wanted)
        if not len(self._sorted):
            return np.zeros(len(wanted), np.int64), np.zeros(len(wanted), bool)
        where = np.minimum(np.searchsorted(self._sorted, wanted), len(self._sorted) - 1)
        return self._by_id[where], self._sorted[where] == wanted
