"""Parquet tables of embeddings (needs ``pyarrow``: ``pip install 'compatctl[parquet]'``).

A table holds one row per item: an ``embedding`` column (``list<float>``, ``large_list`` or
``fixed_size_list`` of float16/float32/float64), an ``id`` column (integers or strings; absent:
row numbers), and optionally ``label`` (integers or strings), ``provenance`` (0/1/2) and
``uncertainty`` (float), and ``versions`` (strings: each row's model fingerprint, read only by
``backfill`` through ``column("versions")``). Other column names are mapped with
``--columns embedding=vector,id=doc_id``.
A path is one ``.parquet`` file or a folder whose ``.parquet`` files (recursively, sorted by
path, hidden and ``_``-prefixed names skipped) are read as one table. compatctl metadata (model
fingerprint, lineage) travels in the schema metadata under the key ``compatctl``.

Reads are streamed by record batches (memory set by the block size and the file's row groups);
reads by row range read only the row groups that hold the rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError
from compatctl.store.blocks import EmbeddingBlock
from compatctl.store.columns import INT64, UTF8, checked_column
from compatctl.store.sources import EmbeddingSource, column_names, require_extra

FLOATS = {"halffloat": "float16", "float": "float32", "double": "float64"}


def _pyarrow():
    require_extra("pyarrow", "parquet", "reading or writing Parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


def parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*.parquet") if p.is_file() and
                   not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
    if not files:
        raise BadInputError(f"{path}: holds no .parquet files; pass a Parquet file or a folder of them")
    return files


def embedding_matrix(column, where: str, first_row: int, dim: int | None, name: str) -> np.ndarray:
    """A pyarrow list column as a float32 [rows, dim] matrix; BadInputError for nulls or ragged rows."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if column.null_count:
        row = first_row + int(np.flatnonzero(np.asarray(column.is_null()))[0])
        raise BadInputError(f"{where}: column {name!r} is null at row {row}; every row needs an embedding")
    rows = len(column)
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
    else:
        lengths = np.diff(np.asarray(column.offsets))
        width = int(lengths[0]) if rows else (dim or 0)
        expected = width if dim is None else dim
        bad = np.flatnonzero(lengths != expected)
        if len(bad):
            raise BadInputError(f"{where}: column {name!r} has lists of different lengths: row {first_row + int(bad[0])} "
                                f"has {int(lengths[bad[0]])} values, the rows before {expected}; every embedding "
                                "must have the same number of dims")
    if dim is not None and width != dim:
        raise BadInputError(f"{where}: column {name!r} has {width} dims from row {first_row}, the rows before "
                            f"{dim}; every file of the table must hold embeddings of one width")
    values = column.flatten()
    if values.null_count:
        position = int(np.flatnonzero(np.asarray(values.is_null()))[0])
        raise BadInputError(f"{where}: column {name!r} holds a null value in row {first_row + position // max(width, 1)}; "
                            "fill or drop that row")
    matrix = values.to_numpy(zero_copy_only=False).reshape(rows, width)
    return matrix.astype(np.float32, copy=False)


def id_values(column, where: str, name: str, role: str, first_row: int | None = None) -> np.ndarray:
    """An id/label column as int64 or text values (nulls refused, naming the table row when
    ``first_row``, the row of the column's first value, is known)."""
    import pyarrow as pa

    if column.null_count:
        chunked = column if isinstance(column, pa.ChunkedArray) else pa.chunked_array([column])
        row = int(np.flatnonzero(np.asarray(chunked.is_null()))[0])
        at = f"row {row} of this batch" if first_row is None else f"row {first_row + row}"
        raise BadInputError(f"{where}: column {name!r} ({role}) is null at {at}; give every row a value")
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype == object:
        values = np.array(values.tolist(), dtype=str) if len(values) else np.zeros(0, "U1")
    return checked_column(where, role + "s", values)


class ParquetSource(EmbeddingSource):
    """A Parquet file or folder of files read as one embedding table."""

    format = "parquet"

    def __init__(self, path: Path, columns: dict[str, str] | None = None, *, lenient: bool = False):
        """``lenient``: ``columns`` is one mapping shared by several inputs; optional roles it names
        (label, provenance, uncertainty, versions) that this table lacks are absent, not an error
        (they are listed in ``missing_roles``)."""
        pa, pq = _pyarrow()
        self.path = Path(path)
        self.names = column_names(columns)
        self._explicit, self._lenient = set(columns or {}), lenient
        self._files = parquet_files(self.path)
        self._handles = []
        for file in self._files:
            try:
                self._handles.append(pq.ParquetFile(file))
            except Exception as exc:  # pyarrow raises several types for a damaged or foreign file
                raise BadInputError(f"{file}: not a readable Parquet file ({str(exc)[:100]})") from None
        schema = self._handles[0].schema_arrow
        self._check_schema(self._files[0], schema, columns or {})
        for file, handle in zip(self._files[1:], self._handles[1:]):
            self._check_same(file, handle.schema_arrow, schema)
        self._groups = [(f, g, handle.metadata.row_group(g).num_rows)
                        for f, handle in enumerate(self._handles) for g in range(handle.metadata.num_row_groups)]
        self._starts = np.concatenate([[0], np.cumsum([n for _, _, n in self._groups], dtype=np.int64)])
        self.rows = int(self._starts[-1])
        if not self.rows:
            raise BadInputError(f"{self.path}: the table has no rows; export at least one row")
        self.dim = self._first_width()
        self.header = self._read_header(schema)
        fingerprint = self.header.get("model_fingerprint")
        self.model_fingerprint = fingerprint if isinstance(fingerprint, str) else None
        self._cached: tuple[int, EmbeddingBlock] | None = None
        self._check_ids()

    # ------------------------------------------------------------------ opening

    def _check_schema(self, file: Path, schema, explicit: dict) -> None:
        import pyarrow as pa

        have = schema.names
        emb = self.names["embedding"]
        required = ("embedding", "id") if self._lenient else ("embedding", "id", "label", "provenance", "uncertainty")
        missing = [self.names[role] for role in required if
                   (role == "embedding" or role in explicit) and self.names[role] not in have]
        self.missing_roles = {role for role in explicit if role not in required and self.names[role] not in have}
        if missing:
            raise BadInputError(f"{file}: no column {', '.join(map(repr, missing))} (columns: {', '.join(have)}); "
                                "name the right ones with --columns embedding=COL,id=COL,label=COL")
        kind = schema.field(emb).type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)) or \
                str(kind.value_type) not in FLOATS:
            raise BadInputError(f"{file}: column {emb!r} is {kind}; expected a list of float16/float32/float64 "
                                "(list<float> or fixed_size_list<float>)")
        self.dtype = FLOATS[str(kind.value_type)]
        self._present = {role: self.names[role] in have for role in ("id", "label", "provenance", "uncertainty",
                                                                      "versions")}
        self.has_labels = self._present["label"]
        self.has_uncertainty = self._present["uncertainty"]
        self.id_type = self._text_or_int(file, schema, "id") if self._present["id"] else INT64
        self.label_type = self._text_or_int(file, schema, "label") if self.has_labels else None
        self._schema = schema

    def _text_or_int(self, file: Path, schema, role: str) -> str:
        import pyarrow as pa

        kind = schema.field(self.names[role]).type
        if pa.types.is_integer(kind):
            return INT64
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return UTF8
        raise BadInputError(f"{file}: column {self.names[role]!r} ({role}) is {kind}; use integers or strings")

    def _check_same(self, file: Path, schema, first) -> None:
        for role in ("embedding", "id", "label", "provenance", "uncertainty", "versions"):
            name = self.names[role]
            if (name in first.names) != (name in schema.names) or \
                    (name in first.names and schema.field(name).type != first.field(name).type):
                found = schema.field(name).type if name in schema.names else "missing"
                raise BadInputError(f"{file}: column {name!r} is {found} but {self._files[0]} has "
                                    f"{first.field(name).type if name in first.names else 'none'}; every file of a "
                                    "Parquet folder must have the same columns")

    def _first_width(self) -> int:
        import pyarrow as pa

        kind = self._schema.field(self.names["embedding"]).type
        if pa.types.is_fixed_size_list(kind):
            return int(kind.list_size)
        first = next(g for g, (_, _, n) in enumerate(self._groups) if n)
        column = self._read_group(first, [self.names["embedding"]]).column(0)
        chunk = column.chunk(0) if column.num_chunks else column
        width = int(np.diff(np.asarray(chunk.offsets))[0]) if len(chunk) else 0
        if width < 1:
            raise BadInputError(f"{self.path}: the first embedding has no values; every row needs one")
        return width

    def _read_header(self, schema) -> dict:
        raw = (schema.metadata or {}).get(b"compatctl")
        if not raw:
            return {}
        try:
            header = json.loads(raw)
        except ValueError:
            raise BadInputError(f"{self._files[0]}: schema metadata 'compatctl' is not JSON; drop it or re-export") from None
        return header if isinstance(header, dict) else {}

    def _check_ids(self) -> None:
        if not self._present["id"]:
            return  # row numbers
        ordered = self.column("ids")
        ordered.sort()  # in place: one id column in memory, not np.unique's several
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        if len(repeated):
            raise BadInputError(f"{self.path}: column {self.names['id']!r} has duplicates, e.g. "
                                f"{np.unique(repeated)[:5].tolist()}; ids must be unique per row")

    # ------------------------------------------------------------------ reading

    def _read_group(self, group: int, names: list[str]):
        file, index, _ = self._groups[group]
        return self._handles[file].read_row_group(index, columns=names)

    def _wanted(self, roles=("embedding", "id", "label", "provenance", "uncertainty")) -> list[str]:
        return [self.names[r] for r in roles if r == "embedding" or self._present.get(r)]

    def _block(self, table, first_row: int, where: str) -> EmbeddingBlock:
        names = table.schema.names
        get = lambda role: table.column(self.names[role]) if self.names[role] in names else None  # noqa: E731
        rows = table.num_rows
        embeddings = embedding_matrix(get("embedding"), where, first_row, self.dim, self.names["embedding"])
        ids = id_values(get("id"), where, self.names["id"], "id", first_row) if self._present["id"] else \
            np.arange(first_row, first_row + rows, dtype=np.int64)
        labels = id_values(get("label"), where, self.names["label"], "label", first_row) if self.has_labels else None
        provenance = uncertainty = None
        if self._present["provenance"]:
            provenance = np.asarray(get("provenance").to_numpy(zero_copy_only=False))
            if provenance.dtype.kind not in "iu" or not np.isin(provenance, (0, 1, 2)).all():
                raise BadInputError(f"{where}: column {self.names['provenance']!r} must hold 0 (native), "
                                    "1 (transformed) or 2 (backfilled); drop it to mark every row native")
            provenance = provenance.astype(np.uint8)
        if self.has_uncertainty:
            uncertainty = np.asarray(get("uncertainty").to_numpy(zero_copy_only=False), np.float32)
        return EmbeddingBlock(embeddings, ids, labels, provenance, uncertainty)

    def _group_block(self, group: int) -> EmbeddingBlock:
        if self._cached is None or self._cached[0] != group:
            table = self._read_group(group, self._wanted())
            self._cached = (group, self._block(table, int(self._starts[group]), str(self._files[self._groups[group][0]])))
        return self._cached[1]

    def read_range(self, start: int, stop: int, verify: bool = True) -> EmbeddingBlock:
        first = min(max(int(np.searchsorted(self._starts, start, side="right")) - 1, 0), len(self._groups) - 1)
        parts = []
        for group in range(first, len(self._groups)):
            begin = int(self._starts[group])
            if begin >= stop and parts:
                break
            lo, hi = max(start, begin), min(stop, int(self._starts[group + 1]))
            if lo < hi or not parts:
                parts.append(self._group_block(group).take(slice(lo - begin, max(lo, hi) - begin)))
        return EmbeddingBlock.concat(parts)

    def iter_blocks(self, block_rows: int = 65536, part: tuple[int, int] = (1, 1),
                    verify: bool = True) -> Iterator[EmbeddingBlock]:
        if part != (1, 1):
            yield from super().iter_blocks(block_rows, part, verify)
            return
        yield from self._stream(self._wanted(), block_rows)

    def _stream(self, names: list[str], block_rows: int, build=None) -> Iterator:
        row = 0
        for file, handle in zip(self._files, self._handles):
            # one row group at a time: over the whole file, pyarrow's reader buffers far ahead (289 MB pool
            # for 1M x 128 float16 rows, against 33 MB row group by row group)
            for group in range(handle.metadata.num_row_groups):
                for batch in handle.iter_batches(batch_size=block_rows, row_groups=[group], columns=names,
                                                 use_threads=False):
                    yield (build or self._block)(batch, row, str(file))
                    row += batch.num_rows

    def column(self, name: str, segment: int | None = None, verify: bool = True) -> np.ndarray | None:
        role = {"ids": "id", "labels": "label"}.get(name, name)
        if role == "versions" and not self._present[role] and role in self._explicit:
            raise BadInputError(f"{self._files[0]}: no column {self.names[role]!r} (columns: "
                                f"{', '.join(self._schema.names)}); name the right one with --columns versions=COL")
        if role not in self._present:
            return None
        if segment is not None and role != "versions":  # versions are not a block field: read whole, then sliced
            return getattr(self.read_range(*self.segment_bounds(segment)), name)
        if not self._present[role]:
            return np.arange(self.rows, dtype=np.int64) if role == "id" else None
        parts, start = [], 0
        for file, handle in zip(self._files, self._handles):
            for group in range(handle.metadata.num_row_groups):  # row group by row group, as in _stream
                column = handle.read_row_group(group, columns=[self.names[role]], use_threads=False).column(0)
                if role in ("id", "label", "versions"):
                    parts.append(id_values(column, str(file), self.names[role], role.rstrip("s"), start))
                else:
                    parts.append(np.asarray(column.to_numpy(zero_copy_only=False)))
                start += len(column)
        values = np.concatenate(parts) if len(parts) != 1 else parts[0]
        if segment is not None:
            values = values[slice(*self.segment_bounds(segment))]
        return values.astype(np.uint8) if role == "provenance" else values

    def files(self) -> list[Path]:
        return list(self._files)

    def column_list(self) -> list[str]:
        """The table's column names (for messages)."""
        return list(self._schema.names)

    def facts(self) -> dict:
        return {"files": len(self._files), "row_groups": len(self._groups),
                "columns": {role: self.names[role] for role in ("embedding", "id", "label", "provenance",
                                                                "uncertainty", "versions")
                            if role == "embedding" or self._present[role]}}


def write_parquet(out: Path, source: EmbeddingSource, *, dtype: str = "float32", block_rows: int = 65536,
                  header: dict | None = None, progress=None) -> None:
    """Stream ``source`` into one Parquet file at ``out`` (written to a temp name, then renamed).

    Columns: ``id`` (int64 or string), ``embedding`` (fixed_size_list<float16|float32>), ``label``
    when the source has labels, ``provenance`` (uint8) and ``uncertainty`` (float32, when present);
    one row group per block; compatctl metadata in the schema metadata key ``compatctl``.
    """
    import os
    import tempfile

    pa, pq = _pyarrow()
    value_type = pa.float16() if dtype == "float16" else pa.float32()
    fields = [pa.field("id", pa.string() if source.id_type == UTF8 else pa.int64(), nullable=False),
              pa.field("embedding", pa.list_(value_type, source.dim), nullable=False)]
    if source.has_labels:
        fields.append(pa.field("label", pa.string() if source.label_type == UTF8 else pa.int64()))
    fields.append(pa.field("provenance", pa.uint8()))
    if source.has_uncertainty:
        fields.append(pa.field("uncertainty", pa.float32()))
    metadata = {"compatctl": json.dumps(header if header is not None else source.header, default=str)}
    schema = pa.schema(fields, metadata=metadata)
    fd, temp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        # no dictionary pages for embeddings and ids (unique values): reading them back is twice as fast
        with pq.ParquetWriter(temp, schema, use_dictionary=["label"] if source.has_labels else False) as writer:
            done = 0
            for block in source.iter_blocks(block_rows):
                with np.errstate(over="ignore"):
                    matrix = np.ascontiguousarray(block.embeddings, dtype=dtype)
                if not np.isfinite(matrix).all():
                    raise BadInputError(f"{source.name}: rows near {done} hold NaN or Inf"
                                        f"{' (beyond float16 range: use --dtype float32)' if dtype == 'float16' else ''}; "
                                        f"{out} not written")
                flat = pa.array(matrix.reshape(-1), type=value_type)
                arrays = [pa.array(block.ids.tolist() if source.id_type == UTF8 else block.ids, type=fields[0].type),
                          pa.FixedSizeListArray.from_arrays(flat, source.dim)]
                if source.has_labels:
                    arrays.append(pa.array(block.labels.tolist() if source.label_type == UTF8 else block.labels,
                                           type=fields[2].type))
                provenance = np.zeros(len(block), np.uint8) if block.provenance is None else block.provenance
                arrays.append(pa.array(np.asarray(provenance, np.uint8)))
                if source.has_uncertainty:
                    arrays.append(pa.array(np.asarray(block.uncertainty, np.float32)))
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
                done += len(block)
                if progress is not None:
                    progress(done, source.rows)
        os.replace(temp, out)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
