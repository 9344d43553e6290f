"""Streamed access to gallery rows, shard by shard, and by-id merges spilled to disk.

A backfill writes shard ``i`` of NEW_GALLERY from rows ``[i*S, (i+1)*S)`` of GALLERY, where S
is GALLERY's own shard size (65,536 rows for a single-file gallery). Rows from other sources
(side-info, new-model embeddings) are matched by id; a :class:`RowSpill` streams such a source
once and lays the matched rows out on disk in gallery row order, so that each output shard
reads one contiguous range and memory stays bounded by the block size, not the gallery.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError
from compatctl.store import EmbeddingBlock, EmbeddingSet, IdIndex
from compatctl.store.artifacts import file_sha256
from compatctl.store.embeddings import DEFAULT_SHARD_ROWS

SPILL_CHUNK_ROWS = 8192  # rows written per memory map, so mapped pages stay few


def content_fingerprint(source) -> str:
    """A hash naming an embedding source's content (manifest checksums, or the file's bytes)."""
    if isinstance(source, EmbeddingSet):
        facts = {"rows": source.rows, "dim": source.dim, "shards": [s["sha256"] for s in source.shards]}
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    return file_sha256(source.path)[:16]


class GalleryShards:
    """GALLERY seen as consecutive shards of ``shard_rows`` rows, read in blocks."""

    def __init__(self, gallery, block_rows: int):
        self.gallery, self.block_rows = gallery, block_rows
        self.rows = gallery.rows
        self.shard_rows = self._shard_rows(gallery)
        self.num_shards = max(1, -(-self.rows // self.shard_rows))

    @staticmethod
    def _shard_rows(gallery) -> int:
        if not isinstance(gallery, EmbeddingSet):
            return DEFAULT_SHARD_ROWS
        sizes = [s["rows"] for s in gallery.shards]
        if any(size != sizes[0] for size in sizes[:-1]) or sizes[-1] > sizes[0]:
            raise BadInputError(f"{gallery.path}: shards have uneven sizes {sizes[:5]}...; "
                                "re-write the gallery with compatctl embed")
        return sizes[0]

    def bounds(self, index: int) -> tuple[int, int]:
        start = index * self.shard_rows
        return start, min(start + self.shard_rows, self.rows)

    def blocks(self, index: int) -> Iterator[tuple[int, EmbeddingBlock]]:
        """(first gallery row, block) for the blocks of shard ``index``."""
        start, stop = self.bounds(index)
        if isinstance(self.gallery, EmbeddingSet):
            blocks = self.gallery.iter_blocks(self.block_rows, part=(index + 1, self.num_shards))
        else:
            whole = self.gallery.read_all()
            blocks = (whole.take(slice(s, min(s + self.block_rows, stop)))
                      for s in range(start, stop, self.block_rows))
        row = start
        for block in blocks:
            yield row, block
            row += len(block)

    def ids(self, index: int) -> np.ndarray:
        """The ids of shard ``index`` without reading its embeddings."""
        if isinstance(self.gallery, EmbeddingSet):
            return self.gallery.read_column(index, "ids")
        start, stop = self.bounds(index)
        return self.gallery.read_all().ids[start:stop]


def missing_ids_message(what: str, path, missing: np.ndarray, fix: str) -> str:
    shown = ", ".join(str(i) for i in missing[:5].tolist())
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return f"{path}: lacks {len(missing)} {what} ids ({shown}{more}); {fix}"


class RowSpill:
    """Rows of another source, matched by id and stored on disk in gallery row order.

    Args:
        directory: scratch folder (removed by :meth:`close`).
        name: file name inside it.
        target_rows: sorted gallery row indices whose rows are wanted.
        target_ids: the ids of those rows.
        dim: width of the source's embeddings.
    """

    def __init__(self, directory: Path, name: str, target_rows: np.ndarray, target_ids: np.ndarray, dim: int):
        self.target_rows, self.dim = np.asarray(target_rows, np.int64), dim
        self.file = Path(directory) / name
        self._targets = IdIndex(target_ids)
        self.found = np.zeros(len(self.target_rows), bool)
        if len(self.target_rows):
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.file, "wb") as handle:
                handle.truncate(len(self.target_rows) * dim * 4)

    def _map(self, mode: str) -> np.memmap:
        return np.memmap(self.file, dtype=np.float32, mode=mode, shape=(len(self.target_rows), self.dim))

    def add(self, ids: np.ndarray, embeddings: np.ndarray) -> None:
        """Store the rows of ``ids`` that are targets; others are ignored."""
        if not len(self.target_rows) or not len(ids):
            return
        slots, hit = self._targets.locate(ids)
        slots, rows = slots[hit], np.asarray(embeddings, np.float32)[hit]
        for start in range(0, len(slots), SPILL_CHUNK_ROWS):
            spill = self._map("r+")
            spill[slots[start:start + SPILL_CHUNK_ROWS]] = rows[start:start + SPILL_CHUNK_ROWS]
            spill.flush()
            del spill  # unmap: the written pages leave this process's memory
        self.found[slots] = True

    def fill(self, blocks: Iterator[EmbeddingBlock], progress: Callable[[int], None] | None = None) -> None:
        """Stream ``blocks`` of the source into the spill."""
        for block in blocks:
            self.add(block.ids, block.embeddings)
            if progress:
                progress(len(block))

    def missing_ids(self, target_ids: np.ndarray) -> np.ndarray:
        """Ids of targets no source row matched (sorted)."""
        return np.sort(np.asarray(target_ids)[~self.found])

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Spilled rows of the targets inside gallery rows ``[start, stop)``, in row order."""
        lo, hi = np.searchsorted(self.target_rows, [start, stop])
        if hi == lo:
            return np.empty((0, self.dim), np.float32)
        spill = self._map("r")
        out = np.array(spill[lo:hi])
        del spill
        return out


def scratch_dir(out: Path, part: tuple[int, int]) -> Path:
    """This run's scratch folder next to NEW_GALLERY (same disk): one per run and --part, so
    concurrent workers never share one; what a killed run left is removed by the next run
    (:func:`compatctl.store.outputs.remove_stale_scratch`)."""
    from compatctl.store.outputs import scratch_folder

    return scratch_folder(Path(out), f"part-{part[0]}-of-{part[1]}")
