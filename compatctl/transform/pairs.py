"""Training pairs for a transform: rows of the old, new (and side-info) sets matched by id.

Pairing needs every row in memory (``read_all``): fitting a transform uses a sample of the
gallery (tens or hundreds of thousands of rows), not the whole gallery.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError
from compatctl.store import EmbeddingBlock, IdIndex, check_rows, open_embeddings
from compatctl.store.columns import UTF8, column_type, same_column_types
from compatctl.store.sources import check_columns_apply, check_named_columns


@dataclasses.dataclass
class Pairs:
    """Matched rows: ``old[i]``, ``new[i]``, ``side_info[i]`` and ``labels[i]`` share ``ids[i]``.

    ``ids`` are int64 or text (as stored); text labels become int64 class codes.
    """

    old: np.ndarray
    new: np.ndarray
    ids: np.ndarray
    side_info: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index: np.ndarray) -> "Pairs":
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return Pairs(self.old[index], self.new[index], self.ids[index], pick(self.side_info), pick(self.labels))


@dataclasses.dataclass
class PairedSources:
    """The pairs plus what the artifact records about their sources."""

    pairs: Pairs
    old_rows: int
    new_rows: int
    old_fingerprint: str | None
    new_fingerprint: str | None
    side_info_fingerprint: str | None


def read_checked(path: Path | str, columns: dict | None = None):
    """Open an embedding source and read all rows, rejecting NaN/Inf and duplicate ids.

    ``columns``: --columns, given once for every input (ignored by formats without columns)."""
    source = open_embeddings(path, columns, shared_columns=True)
    block = source.read_all()
    check_rows(str(path), block.embeddings, block.ids, block.labels)
    return source, block


def pair_by_id(old_path, new_path, side_info_path=None, *, min_matched: int = 1,
               columns: dict | None = None) -> PairedSources:
    """Match old and new rows by id (and take side-info rows for the same ids).

    Raises BadInputError when no ids overlap, fewer than ``min_matched`` pairs match, or the
    side-info set does not cover every id of the old set.
    """
    check_columns_apply(columns, {"OLD_EMBEDDINGS": old_path, "NEW_EMBEDDINGS": new_path,
                                  "--side-info": side_info_path})
    old_source, old = read_checked(old_path, columns)
    new_source, new = read_checked(new_path, columns)
    check_named_columns(columns, {"OLD_EMBEDDINGS": old_source, "NEW_EMBEDDINGS": new_source})
    same_column_types("ids", {str(old_path): old.ids, str(new_path): new.ids})
    common, old_index, new_index = np.intersect1d(old.ids, new.ids, assume_unique=True, return_indices=True)
    if len(common) == 0:
        raise BadInputError(f"{old_path} and {new_path} share no ids; embed the same items with both models "
                            "(ids must match) and pass those sets")
    if len(common) < min_matched:
        raise BadInputError(f"only {len(common)} ids of {old_path} match {new_path}, fewer than "
                            f"min_matched={min_matched}; embed more shared items or lower min_matched")
    side_info, side_fingerprint = None, None
    if side_info_path is not None:
        side_source, side = read_checked(side_info_path, columns)
        same_column_types("ids", {str(old_path): old.ids, str(side_info_path): side.ids})
        side_info = _rows_for_ids(side, old.ids, side_info_path, old_path)[old_index]
        side_fingerprint = side_source.model_fingerprint
    labels = new.labels[new_index] if new.labels is not None else (
        old.labels[old_index] if old.labels is not None else None)
    if labels is not None and column_type(labels) == UTF8:
        labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)  # the fit only compares classes
    pairs = Pairs(old.embeddings[old_index], new.embeddings[new_index], common, side_info, labels)
    return PairedSources(pairs, len(old), len(new), old_source.model_fingerprint,
                         new_source.model_fingerprint, side_fingerprint)


def _rows_for_ids(side: EmbeddingBlock, ids: np.ndarray, side_path, old_path) -> np.ndarray:
    """Side-info embeddings in the order of ``ids``; every id must be present."""
    rows, found = IdIndex(side.ids).locate(ids)
    if not found.all():
        missing = ids[~found]
        raise BadInputError(f"{side_path} lacks side-info for {len(missing)} ids of {old_path} "
                            f"(e.g. {missing[:5].tolist()}); embed every old item with the side-info model")
    return side.embeddings[rows]


def split_validation(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (train, validation) row indices; validation gets ``fraction`` of rows (at least 1 if > 0)."""
    order = np.random.default_rng(seed).permutation(count)
    held = 0 if fraction <= 0 else min(count - 1, max(1, int(round(fraction * count))))
    return np.sort(order[held:]), np.sort(order[:held])
