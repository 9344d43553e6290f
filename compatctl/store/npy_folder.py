"""Folders of ``.npy`` shards, the layout of LAION / clip-retrieval / embedding-reader::

    FOLDER/img_emb/img_emb_0000.npy        float16/float32 [rows_i, dim], memory-mapped
    FOLDER/img_emb/img_emb_0001.npy
    FOLDER/metadata/metadata_0000.parquet  optional: id, label (and provenance, uncertainty) of shard 0
    FOLDER/metadata/metadata_0001.parquet

(or the ``.npy`` files directly in FOLDER). Shards are taken in natural order of their names
(``_2`` before ``_10``); metadata files are matched to shards by the same order, and each must
have its shard's row count. Without metadata (or without an ``id`` column in it) the ids are
the row numbers 0..N-1. Reading metadata needs pyarrow (``compatctl[parquet]``); the shards
themselves only numpy.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError
from compatctl.store.blocks import EmbeddingBlock
from compatctl.store.columns import column_type
from compatctl.store.sources import EmbeddingSource, HeldColumns, column_names

EMBEDDING_FOLDER, METADATA_FOLDER = "img_emb", "metadata"


def natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


class NpyFolderSource(HeldColumns, EmbeddingSource):
    """A folder of memory-mapped ``.npy`` shards with optional Parquet metadata."""

    format = "npy-folder"

    def __init__(self, path: Path, columns: dict[str, str] | None = None, *, lenient: bool = False):
        """``lenient``: as for :class:`~compatctl.store.parquet.ParquetSource` (only a named ``id`` is required)."""
        self.path, self._lenient = Path(path), lenient
        self.names = column_names(columns)
        folder = self.path / EMBEDDING_FOLDER if (self.path / EMBEDDING_FOLDER).is_dir() else self.path
        self._shards = sorted((p for p in folder.glob("*.npy") if p.is_file()), key=natural_key)
        if not self._shards:
            raise BadInputError(f"{folder}: holds no .npy shards; expected {EMBEDDING_FOLDER}/{EMBEDDING_FOLDER}_0000.npy")
        self._shapes = [self._map(file).shape for file in self._shards]  # (rows, dim): shards are mapped per read
        dims = {int(m[1]) for m in self._shapes}
        if len(dims) > 1:
            widths = ", ".join(f"{f.name}: {m[1]}" for f, m in list(zip(self._shards, self._shapes))[:4])
            raise BadInputError(f"{folder}: .npy shards of differing dims ({widths}); every shard of one folder "
                                "must hold embeddings of one width")
        self.dim = dims.pop()
        self.dtype = str(self._map(self._shards[0]).dtype)
        self._starts = np.concatenate([[0], np.cumsum([m[0] for m in self._shapes], dtype=np.int64)])
        self.rows = int(self._starts[-1])
        if not self.rows:
            raise BadInputError(f"{folder}: the shards hold no rows")
        self.header, self.model_fingerprint = {}, None
        self._ids, self._labels, self._provenance, self._uncertainty = self._read_metadata(columns or {})
        self.has_labels = self._labels is not None
        self.has_uncertainty = self._uncertainty is not None
        self.id_type = column_type(self._ids)
        self.label_type = None if self._labels is None else column_type(self._labels)

    def _map(self, file: Path) -> np.ndarray:
        with open(file, "rb") as handle:
            if handle.read(6) != b"\x93NUMPY":
                raise BadInputError(f"{file}: not a .npy file (no NUMPY header); save shards with numpy.save")
        try:
            matrix = np.load(file, mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # bad magic, pickled objects, truncated header
            raise BadInputError(f"{file}: not a readable .npy array ({str(exc)[:100]})") from None
        if matrix.ndim != 2 or matrix.dtype.kind != "f":
            raise BadInputError(f"{file}: holds {matrix.dtype} {matrix.shape}; a shard must be a 2-D float array "
                                "[rows, dim]")
        return matrix

    def _metadata_files(self) -> list[Path]:
        folder = self.path / METADATA_FOLDER
        files = sorted(folder.glob("*.parquet"), key=natural_key) if folder.is_dir() else []
        if files and len(files) != len(self._shards):
            raise BadInputError(f"{folder}: {len(files)} metadata files for {len(self._shards)} .npy shards; "
                                "give one metadata file per shard (matched by order) or none")
        return files

    def _read_metadata(self, explicit: dict):
        files = self._metadata_files()
        required = {"id"} if self._lenient else set(explicit)
        self._metadata_columns: list[str] = []
        self.missing_roles = {role for role in explicit if role not in required and role != "embedding"}
        if not files:
            if explicit.keys() & required:
                raise BadInputError(f"{self.path}: --columns names metadata columns, but there is no "
                                    f"{METADATA_FOLDER}/ folder of .parquet files")
            return np.arange(self.rows, dtype=np.int64), None, None, None
        from compatctl.store.parquet import _pyarrow, id_values

        _, pq = _pyarrow()
        columns = {role: [] for role in ("id", "label", "provenance", "uncertainty")}
        for index, (file, matrix) in enumerate(zip(files, self._shapes)):
            handle = pq.ParquetFile(file)
            if index == 0:
                self._header_from(handle.schema_arrow.metadata or {})
            have = handle.schema_arrow.names
            self._metadata_columns = self._metadata_columns or list(have)
            if handle.metadata.num_rows != matrix[0]:
                raise BadInputError(f"{file}: {handle.metadata.num_rows} metadata rows but {self._shards[index].name} "
                                    f"holds {matrix[0]} embeddings; metadata must match its shard row for row")
            missing = [self.names[r] for r in explicit if r in columns and r in required and self.names[r] not in have]
            self.missing_roles &= {r for r in explicit if self.names[r] not in have}
            if missing:
                raise BadInputError(f"{file}: no column {', '.join(map(repr, missing))} (columns: {', '.join(have)}); "
                                    "name the right ones with --columns id=COL,label=COL")
            wanted = [r for r in columns if self.names[r] in have]
            table = handle.read(columns=[self.names[r] for r in wanted], use_threads=False)
            for role in columns:
                if role not in wanted:
                    columns[role].append(None)
                    continue
                column = table.column(self.names[role])
                columns[role].append(id_values(column, str(file), self.names[role], role) if role in ("id", "label")
                                     else np.asarray(column.to_numpy(zero_copy_only=False)))
        merged = {}
        for role, parts in columns.items():
            present = [p is not None for p in parts]
            if any(present) and not all(present):
                raise BadInputError(f"{files[present.index(False)]}: lacks column {self.names[role]!r} that other "
                                    "metadata files have; give every metadata file the same columns")
            merged[role] = np.concatenate(parts) if all(present) else None
        ids = merged["id"] if merged["id"] is not None else np.arange(self.rows, dtype=np.int64)
        unique, counts = np.unique(ids, return_counts=True)
        if len(unique) != len(ids):
            raise BadInputError(f"{self.path / METADATA_FOLDER}: column {self.names['id']!r} has duplicates, e.g. "
                                f"{unique[counts > 1][:5].tolist()}; ids must be unique per row")
        provenance = merged["provenance"]
        if provenance is not None:
            if provenance.dtype.kind not in "iu" or not np.isin(provenance, (0, 1, 2)).all():
                raise BadInputError(f"{self.path / METADATA_FOLDER}: column 'provenance' must hold 0, 1 or 2")
            provenance = provenance.astype(np.uint8)
        uncertainty = None if merged["uncertainty"] is None else merged["uncertainty"].astype(np.float32)
        return ids, merged["label"], provenance, uncertainty

    def column_list(self) -> list[str]:
        """The metadata columns (for messages; none without metadata)."""
        return self._metadata_columns or ["(no metadata)"]

    def _header_from(self, metadata: dict) -> None:
        import json

        try:
            header = json.loads(metadata.get(b"compatctl", b"{}"))
        except ValueError:
            header = {}
        self.header = header if isinstance(header, dict) else {}
        fingerprint = self.header.get("model_fingerprint")
        self.model_fingerprint = fingerprint if isinstance(fingerprint, str) else None

    def read_range(self, start: int, stop: int, verify: bool = True) -> EmbeddingBlock:
        first = min(max(int(np.searchsorted(self._starts, start, side="right")) - 1, 0), len(self._shapes) - 1)
        parts = []
        for index in range(first, len(self._shapes)):
            begin = int(self._starts[index])
            if begin >= stop:
                break
            lo, hi = max(start, begin), min(stop, int(self._starts[index + 1]))
            if lo < hi:  # mapped for this read only: pages read leave the process's RSS when it is unmapped
                mapped = self._map(self._shards[index])
                parts.append(np.array(mapped[lo - begin:hi - begin], np.float32))
                del mapped
        embeddings = np.concatenate(parts) if len(parts) != 1 else parts[0]
        if not parts:
            embeddings = np.zeros((0, self.dim), np.float32)
        return self._block(embeddings, start, stop)

    def files(self) -> list[Path]:
        return [*self._shards, *self._metadata_files()]

    def facts(self) -> dict:
        return {"shards": len(self._shards), "metadata_files": len(self._metadata_files())}


def write_npy_folder(out: Path, source: EmbeddingSource, *, dtype: str = "float32", shard_rows: int = 1 << 20,
                     block_rows: int = 65536, progress=None) -> None:
    """Write ``source`` as ``out/img_emb/img_emb_NNNN.npy`` shards of ``shard_rows`` rows and, when it has
    anything beyond row-number ids, ``out/metadata/metadata_NNNN.parquet`` (id, label, provenance,
    uncertainty). Written into a hidden temp folder next to ``out``, renamed when complete."""
    import shutil
    import json
    import tempfile

    from numpy.lib import format as npy_format

    from compatctl.store.parquet import _pyarrow

    pa, pq = _pyarrow()  # ids, labels, provenance travel in the metadata files
    temp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (temp / EMBEDDING_FOLDER).mkdir()
        (temp / METADATA_FOLDER).mkdir()
        done = 0
        for index, start in enumerate(range(0, source.rows, shard_rows)):
            stop = min(start + shard_rows, source.rows)
            with open(temp / EMBEDDING_FOLDER / f"{EMBEDDING_FOLDER}_{index:04d}.npy", "wb") as matrix:
                npy_format.write_array_header_2_0(matrix, {"descr": npy_format.dtype_to_descr(np.dtype(dtype)),
                                                           "fortran_order": False, "shape": (stop - start, source.dim)})
                meta = {"id": [], "label": [], "provenance": [], "uncertainty": []}
                for first in range(start, stop, block_rows):
                    block = source.read_range(first, min(first + block_rows, stop))
                    with np.errstate(over="ignore"):
                        values = block.embeddings.astype(dtype)
                    if not np.isfinite(values).all():
                        raise BadInputError(f"{source.name}: rows near {first} hold NaN or Inf"
                                            f"{' (beyond float16 range: use --dtype float32)' if dtype == 'float16' else ''}"
                                            f"; {out} not written")
                    matrix.write(np.ascontiguousarray(values).tobytes())  # appended: no mapped pages held
                    meta["id"].append(block.ids)
                    meta["label"].append(block.labels)
                    meta["provenance"].append(np.zeros(len(block), np.uint8) if block.provenance is None
                                              else np.asarray(block.provenance, np.uint8))
                    meta["uncertainty"].append(block.uncertainty)
                    done += len(block)
                    if progress is not None:
                        progress(done, source.rows)
            arrays = {name: np.concatenate(parts) for name, parts in meta.items()
                      if parts and all(p is not None for p in parts)}
            table = pa.table({name: (values.tolist() if values.dtype.kind == "U" else values)
                              for name, values in arrays.items()})
            table = table.replace_schema_metadata({"compatctl": json.dumps(source.header, default=str)})
            pq.write_table(table, temp / METADATA_FOLDER / f"{METADATA_FOLDER}_{index:04d}.parquet")
        temp.rename(out)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)

