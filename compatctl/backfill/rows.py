"""Streamed access to gallery rows, shard by shard, and by-id merges spilled to disk.

A backfill writes shard ``i`` of NEW_GALLERY from rows ``[i*S, (i+1)*S)`` of GALLERY, where S
is GALLERY's own shard size (its source's segments: 65,536 rows for formats without shards). Rows from other sources
(side-info, new-model embeddings) are matched by id; a :class:`RowSpill` streams such a source
once and lays the matched rows out on disk in gallery row order, so that each output shard
reads one contiguous range and memory stays bounded by the block size, not the gallery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError
from compatctl.store import EmbeddingBlock, IdIndex

SPILL_CHUNK_ROWS = 8192  # rows written per memory map, so mapped pages stay few


def content_fingerprint(source) -> str:
    """A hash naming an embedding source's content (its format's checksums, or its files' bytes)."""
    return source.content_fingerprint()


class GalleryShards:
    """GALLERY seen as consecutive shards of ``shard_rows`` rows (its source's segments), read in blocks."""

    def __init__(self, gallery, block_rows: int):
        self.gallery, self.block_rows = gallery, block_rows
        self.rows = gallery.rows
        self.shard_rows = gallery.segment_rows
        self.num_shards = gallery.num_segments
        sizes = [stop - start for start, stop in map(gallery.segment_bounds, range(self.num_shards))]
        if any(size != self.shard_rows for size in sizes[:-1]) or sizes[-1] > self.shard_rows:
            raise BadInputError(f"{gallery.path}: shards have uneven sizes {sizes[:5]}...; "
                                "re-write the gallery with compatctl embed or compatctl export")

    def bounds(self, index: int) -> tuple[int, int]:
        return self.gallery.segment_bounds(index)

    def blocks(self, index: int) -> Iterator[tuple[int, EmbeddingBlock]]:
        """(first gallery row, block) for the blocks of shard ``index``."""
        row = self.bounds(index)[0]
        for block in self.gallery.segment_blocks(index, self.block_rows):
            yield row, block
            row += len(block)

    def ids(self, index: int) -> np.ndarray:
        """The ids of shard ``index`` without reading its embeddings (where the format allows)."""
        return self.gallery.column("ids", segment=index, verify=False)


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
