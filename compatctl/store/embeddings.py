"""Embedding sets: a directory of fixed-size safetensors shards plus a JSON manifest.

Layout of ``EMB/``::

    manifest.json                 written last, only when every shard is complete
    progress.part-I-of-N.json     one per writer while it works (shards done + sha256)
    shard-00000.safetensors       embeddings [n, D], ids int64 [n] (or ids_utf8), provenance uint8 [n],
    shard-00001.safetensors       labels int64 [n] (optional; or labels_utf8), uncertainty float32 [n] (optional)

Every file is written to a temp name and renamed, so a killed writer leaves at most a stray
``.tmp`` file; a re-run with the same inputs keeps the complete shards and redoes the rest.
Shard ``i`` always holds rows ``[i*shard_rows, (i+1)*shard_rows)`` of the writer's row order,
so ``--part I/N`` workers can fill disjoint shards of the same directory. String ids and labels
are stored as UTF-8 byte matrices (see ``columns.py``); the manifest says so in ``id_type`` /
``label_type``, keys absent for integer columns (so integer sets are written as before).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError, IntegrityError
from compatctl.store.blocks import EmbeddingBlock, IdIndex
from compatctl.store.sources import EmbeddingSource, MemorySource, open_embeddings, provenance_counts  # noqa: F401
from compatctl.store.artifacts import (FORMAT_VERSION, atomic_write_bytes, atomic_write_json,
                                       file_sha256)
from compatctl.store.columns import (INT64, UTF8, checked_column, column_type, decode_text, encode_text,
                                     read_text_or_int)
from compatctl.store.validate import check_manifest, check_progress_record, read_json_file

PROVENANCE = ("native", "transformed", "backfilled")
MANIFEST = "manifest.json"
DEFAULT_SHARD_ROWS = 65536
DTYPES = ("float32", "float16")


def parse_part(part: str | None) -> tuple[int, int]:
    """``"2/4"`` -> (2, 4); None -> (1, 1). Raises BadInputError on a malformed value."""
    if not part:
        return 1, 1
    try:
        index, count = (int(x) for x in part.split("/"))
    except ValueError:
        raise BadInputError(f"--part {part!r}: expected I/N with whole numbers, e.g. 1/4") from None
    if not 1 <= index <= count:
        raise BadInputError(f"--part {part!r}: I must be between 1 and N")
    return index, count


def check_embeddings(path: str, embeddings: np.ndarray) -> None:
    """A 2-D real-valued matrix with at least one row and one dim, or BadInputError saying why not."""
    if embeddings.dtype.kind not in "fiu":
        what = {"c": "complex (the imaginary part would be lost)", "b": "boolean",
                "O": "object (pickled)"}.get(embeddings.dtype.kind, "not numeric")
        raise BadInputError(f"{path}: 'embeddings' is {embeddings.dtype}, {what}; store real float values "
                            "(e.g. embeddings.astype('float32'))")
    if embeddings.ndim != 2:
        raise BadInputError(f"{path}: 'embeddings' must be 2-D [rows, dim], got shape {embeddings.shape}")
    if 0 in embeddings.shape:
        raise BadInputError(f"{path}: 'embeddings' has shape {embeddings.shape}: no "
                            f"{'rows' if not len(embeddings) else 'dims'}; store at least one row of one dim")


def check_rows(path: str, embeddings: np.ndarray, ids: np.ndarray, labels: np.ndarray | None) -> None:
    """Validate imported rows: 2-D finite embeddings, unique ids, labels of matching length."""
    check_embeddings(path, embeddings)
    rows = len(embeddings)
    if ids.shape != (rows,):
        raise BadInputError(f"{path}: 'ids' has shape {ids.shape} but there are {rows} embeddings")
    if labels is not None and labels.shape != (rows,):
        raise BadInputError(f"{path}: 'labels' has shape {labels.shape} but there are {rows} embeddings; "
                            "give one label per row")
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        raise BadInputError(f"{path}: {int(bad.sum())} rows hold NaN or Inf, first ids "
                            f"{ids[bad][:5].tolist()}; drop or re-embed them")
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != rows:
        raise BadInputError(f"{path}: 'ids' has duplicates, e.g. {unique[counts > 1][:5].tolist()}; "
                            "ids must be unique per row: drop or rename the duplicates")


def progress_file(path: Path, part: tuple[int, int]) -> Path:
    """Where writer ``part`` (I, N) records its complete shards while it works."""
    return Path(path) / f"progress.part-{part[0]}-of-{part[1]}.json"


def shard_file(path: Path, index: int) -> Path:
    return Path(path) / f"shard-{index:05d}.safetensors"


def claim_directory(path: Path, part: tuple[int, int], resume_key: str) -> None:
    """Record (atomically) that writer ``part`` with ``resume_key`` works in ``path``, before any shard lands:
    a kill between a shard's rename and its progress record must still leave a directory a re-run recognises."""
    if not progress_file(path, part).exists():
        atomic_write_json(progress_file(path, part), {"resume_key": resume_key, "shards": []})


def is_temp_file(path: Path) -> bool:
    """A leftover of an interrupted ``atomic_write_bytes`` (``.NAME.XXXX.tmp``)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


# Set by deferred_manifest(): writers then leave the manifest to a coordinator (see there).
_DEFERRED_MANIFEST: contextvars.ContextVar[list | None] = contextvars.ContextVar("deferred_manifest", default=None)


@contextlib.contextmanager
def deferred_manifest() -> Iterator[list[dict]]:
    """Writers finishing inside this block write no manifest; each appends its settings to the
    list yielded instead, so a coordinator of several workers (``--engine ray``) can write the
    manifest once, with ``EmbeddingSetWriter(**settings).finish()``, after every worker ended."""
    settings: list[dict] = []
    token = _DEFERRED_MANIFEST.set(settings)
    try:
        yield settings
    finally:
        _DEFERRED_MANIFEST.reset(token)


class EmbeddingSetWriter:
    """Writes shards of an embedding set, resumably; ``finish`` writes the manifest.

    Args:
        path: the set's directory.
        rows: total rows of the whole set (all parts).
        dim: embedding width.
        header: metadata for the manifest (model_fingerprint, config, source, ...).
        resume_key: identifies the inputs; a directory written with another key is refused.
        part: (I, N) — this writer fills shards ``i`` with ``i % N == I - 1``.
        id_type, label_type: ``"int64"`` or ``"utf8"`` (text, stored as ``ids_utf8`` / ``labels_utf8``).

    A shard already on disk is kept only when its size and sha256 match the record, so re-running
    the writer repairs a corrupt or truncated shard. Rows holding NaN or Inf are refused.
    """

    def __init__(self, path: Path, *, rows: int, dim: int, header: dict, resume_key: str,
                 dtype: str = "float32", shard_rows: int = DEFAULT_SHARD_ROWS,
                 part: tuple[int, int] = (1, 1), has_labels: bool = False, has_uncertainty: bool = False,
                 id_type: str = INT64, label_type: str = INT64):
        if dtype not in DTYPES:
            raise BadInputError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
        if rows < 1 or dim < 1:
            raise BadInputError(f"{path}: an embedding set needs at least one row and one dim "
                                f"(got {rows} rows of {dim} dims); check the input data")
        self.path, self.rows, self.dim, self.dtype = Path(path), rows, dim, dtype
        self.shard_rows, self.part, self.resume_key = shard_rows, part, resume_key
        self.header = dict(header, has_labels=has_labels, has_uncertainty=has_uncertainty)
        self.id_type, self.label_type = id_type, label_type
        if id_type == UTF8:  # absent for integers: integer sets stay byte-identical to earlier versions
            self.header["id_type"] = UTF8
        if has_labels and label_type == UTF8:
            self.header["label_type"] = UTF8
        self.num_shards = max(1, -(-rows // shard_rows))
        self._check_destination()
        self.path.mkdir(parents=True, exist_ok=True)
        self.done = self._complete_shards()
        if not (self.path / MANIFEST).exists():
            claim_directory(self.path, self.part, self.resume_key)

    @property
    def progress_path(self) -> Path:
        return progress_file(self.path, self.part)

    def _check_destination(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise BadInputError(f"{self.path}: exists and is not a directory; choose another --out")
        if not self.path.is_dir() or not any(not is_temp_file(p) for p in self.path.iterdir()):
            return  # empty, or only temp files of writes a kill interrupted
        keys = {record.get("resume_key") for record in self._records()}
        if not keys:
            raise BadInputError(f"{self.path}: exists and is not a compatctl embedding set; "
                                "choose another --out or empty it")
        if keys != {self.resume_key}:
            raise BadInputError(f"{self.path}: holds an embedding set made from other inputs or settings; "
                                "choose another --out or delete it to start over")

    def _records(self) -> list[dict]:
        """The manifest and every part's progress file found in the directory, parsed."""
        files = [self.path / MANIFEST, *self.path.glob("progress.part-*.json")]
        return [read_json_file(file, "embedding-set record") for file in files if file.is_file()]

    def _intact(self, entry: dict) -> bool:
        """The shard file is there with the recorded size and sha256 (hashing reads it once)."""
        file = self.path / entry["file"]
        return (entry["index"] < self.num_shards and file.is_file() and file.stat().st_size == entry["bytes"]
                and file_sha256(file) == entry["sha256"])

    def _complete_shards(self, known: dict[int, dict] | None = None) -> dict[int, dict]:
        """Shards any writer recorded as complete whose file is intact; ``known`` ones are not re-hashed."""
        known = known or {}
        listed = {entry["index"]: entry for record in self._records()
                  for entry in check_progress_record(self.path, record)}
        return {index: entry for index, entry in listed.items()
                if known.get(index) == entry or self._intact(entry)}

    def shard_bounds(self, index: int) -> tuple[int, int]:
        start = index * self.shard_rows
        return start, min(start + self.shard_rows, self.rows)

    def pending_shards(self) -> list[int]:
        """Indices of this part's shards still to write, in order."""
        index, count = self.part
        return [i for i in range(self.num_shards) if i % count == index - 1 and i not in self.done]

    def write_shard(self, index: int, block: EmbeddingBlock) -> None:
        """Write shard ``index`` atomically, then record it in this part's progress file."""
        from safetensors.numpy import save

        start, stop = self.shard_bounds(index)
        if len(block) != stop - start or block.embeddings.shape[1:] != (self.dim,):
            raise ValueError(f"shard {index} expects {stop - start} rows of dim {self.dim}, "
                             f"got {block.embeddings.shape}")
        with np.errstate(over="ignore"):  # float16 overflow becomes Inf, refused just below
            embeddings = np.ascontiguousarray(block.embeddings, dtype=self.dtype)
        self._refuse_non_finite(index, embeddings, block)
        tensors = {"embeddings": embeddings, **self._column("ids", block.ids, self.id_type),
                   "provenance": np.ascontiguousarray(
                       np.zeros(len(block), np.uint8) if block.provenance is None else block.provenance,
                       dtype=np.uint8)}
        if self.header["has_labels"]:
            tensors.update(self._column("labels", block.labels, self.label_type))
        if self.header["has_uncertainty"]:
            tensors["uncertainty"] = np.ascontiguousarray(block.uncertainty, dtype=np.float32)
        data = save(tensors, metadata={"compatctl": json.dumps({"shard": index, "rows": len(block)})})
        name = shard_file(self.path, index).name
        atomic_write_bytes(self.path / name, data)
        self.done[index] = {"index": index, "file": name, "rows": len(block), "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_json(self.progress_path, {"resume_key": self.resume_key,
                                               "shards": [self.done[i] for i in sorted(self.done)]})

    def _refuse_non_finite(self, index: int, embeddings: np.ndarray, block: EmbeddingBlock) -> None:
        bad = ~np.isfinite(embeddings).all(axis=1)
        if not bad.any():
            return
        overflow = self.dtype == "float16" and np.isfinite(np.asarray(block.embeddings)[bad]).all()
        cause = ("values beyond float16's range (65504); write with --dtype float32" if overflow else
                 "the model or transform produced them; check the model (train-new stops on a NaN loss) "
                 "or the input rows")
        raise BadInputError(f"{self.path}: shard {index} would hold {int(bad.sum())} rows of NaN or Inf, first ids "
                            f"{np.asarray(block.ids)[bad][:5].tolist()}; not written: {cause}")

    @staticmethod
    def _column(name: str, values: np.ndarray, kind: str) -> dict[str, np.ndarray]:
        if kind == UTF8:
            return {f"{name}_utf8": encode_text(values)}
        if column_type(values) == UTF8:
            raise ValueError(f"{name}: text values for a set declared with integer {name}")
        return {name: np.ascontiguousarray(values, dtype=np.int64)}

    def settings(self) -> dict:
        """Keyword arguments that rebuild this writer (part 1/1): a coordinator's finishing writer."""
        header = {k: v for k, v in self.header.items() if k not in ("has_labels", "has_uncertainty")}
        return {"path": str(self.path), "rows": self.rows, "dim": self.dim, "header": header,
                "resume_key": self.resume_key, "dtype": self.dtype, "shard_rows": self.shard_rows,
                "has_labels": self.header["has_labels"], "has_uncertainty": self.header["has_uncertainty"],
                "id_type": self.id_type, "label_type": self.label_type}

    def finish(self) -> bool:
        """Write the manifest if every shard of every part is complete; True if written.

        Inside :func:`deferred_manifest` nothing is written (False): the writer's settings are
        handed to the coordinator instead."""
        deferred = _DEFERRED_MANIFEST.get()
        if deferred is not None:
            deferred.append(self.settings())
            return False
        self.done.update(self._complete_shards(known=self.done))
        if len(self.done) < self.num_shards:
            return False
        shards = [self.done[i] for i in range(self.num_shards)]
        manifest = {"format_version": FORMAT_VERSION, "kind": "embeddings", "resume_key": self.resume_key,
                    "dim": self.dim, "dtype": self.dtype, "rows": self.rows, "shard_rows": self.shard_rows,
                    **self.header, "shards": shards}
        atomic_write_json(self.path / MANIFEST, manifest)
        for file in self.path.glob("progress.part-*.json"):
            file.unlink(missing_ok=True)
        return True


def write_embedding_set(path: Path, block: EmbeddingBlock, *, header: dict, resume_key: str = "",
                        dtype: str = "float32", shard_rows: int = DEFAULT_SHARD_ROWS) -> None:
    """Write a whole in-memory block as a complete embedding set (small sets, tests, imports)."""
    writer = EmbeddingSetWriter(path, rows=len(block), dim=block.embeddings.shape[1], header=header,
                                resume_key=resume_key, dtype=dtype, shard_rows=shard_rows,
                                has_labels=block.labels is not None,
                                has_uncertainty=block.uncertainty is not None, id_type=column_type(block.ids),
                                label_type=INT64 if block.labels is None else column_type(block.labels))
    for index in writer.pending_shards():
        start, stop = writer.shard_bounds(index)
        writer.write_shard(index, block.take(slice(start, stop)))
    writer.finish()


STORED = {"float32": "F32", "float16": "F16", "int64": "I64", "uint8": "U8"}  # safetensors dtype names


class EmbeddingSet(EmbeddingSource):
    """A complete embedding-set directory opened for streaming reads.

    Opening validates the manifest as a whole and checks that every shard file is there with its
    recorded size (cheap: one ``stat`` per shard); each shard's sha256 is checked before its first
    use (``verify=True``), or for all shards at once by :meth:`check`.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            if any(self.path.glob("progress.part-*.json")):
                raise BadInputError(f"{self.path}: embedding set is incomplete (a writer was stopped); "
                                    "re-run the command that writes it to resume")
            raise BadInputError(f"{self.path}: no {MANIFEST}; this is not a compatctl embedding set")
        self.manifest = read_json_file(manifest_path, "manifest")
        if self.manifest.get("format_version") != FORMAT_VERSION or self.manifest.get("kind") != "embeddings":
            raise BadInputError(f"{manifest_path}: format_version {self.manifest.get('format_version')!r}, "
                                f"kind {self.manifest.get('kind')!r}; expected version {FORMAT_VERSION} "
                                "embeddings — re-create it with this compatctl")
        check_manifest(manifest_path, self.manifest, DTYPES)
        self.dim, self.rows = self.manifest["dim"], self.manifest["rows"]
        self.dtype = self.manifest["dtype"]
        self.has_labels = self.manifest.get("has_labels", False)
        self.has_uncertainty = self.manifest.get("has_uncertainty", False)
        self.id_type = self.manifest.get("id_type", INT64)
        self.label_type = self.manifest.get("label_type", INT64) if self.has_labels else None
        self.model_fingerprint = self.manifest.get("model_fingerprint")
        self.header = self.manifest
        self._verified: set[int] = set()
        for index in range(len(self.shards)):
            self._check_size(index)

    @property
    def shards(self) -> list[dict]:
        return self.manifest["shards"]

    def _check_size(self, index: int) -> Path:
        entry = self.shards[index]
        file = self.path / entry["file"]
        if not file.is_file():
            raise IntegrityError(f"{file}: shard listed in the manifest is missing; "
                                 "re-run the command that wrote this set to rebuild it")
        if file.stat().st_size != entry["bytes"]:
            raise IntegrityError(f"{file}: checksum mismatch ({file.stat().st_size} bytes, the manifest says "
                                 f"{entry['bytes']}: a truncated or corrupted shard); re-run the command that "
                                 "wrote this set to rebuild it")
        return file

    def _open_shard(self, index: int, verify: bool):
        from safetensors import safe_open

        entry = self.shards[index]
        file = self._check_size(index)
        if verify and index not in self._verified:
            if file_sha256(file) != entry["sha256"]:
                raise IntegrityError(f"{file}: checksum mismatch (truncated or corrupted shard); "
                                     "re-run the command that wrote this set to rebuild it")
            self._verified.add(index)
        try:
            handle = safe_open(str(file), framework="numpy")
            shapes = {name: (list(handle.get_slice(name).get_shape()), handle.get_slice(name).get_dtype())
                      for name in handle.keys()}
        except Exception as exc:  # safetensors raises several types for damaged files
            raise IntegrityError(f"{file}: not a readable shard ({str(exc)[:80]}); re-run the command that "
                                 "wrote this set to rebuild it") from None
        self._check_tensors(file, entry["rows"], shapes)
        return handle

    def _check_tensors(self, file: Path, rows: int, shapes: dict[str, tuple[list[int], str]]) -> None:
        """Every tensor the manifest promises, with the right shape and dtype (names the shard)."""
        shape = shapes.get("embeddings", (None, None))[0]
        if shape != [rows, self.dim]:
            raise IntegrityError(f"{file}: holds {shape} embeddings but the manifest says "
                                 f"[{rows}, {self.dim}]; shards of one set must share a dim")
        wanted = {"embeddings": self.dtype, "provenance": "uint8"}
        for name, kind in (("ids", self.id_type), ("labels", self.label_type if self.has_labels else None)):
            if kind is not None:
                wanted[name if kind == INT64 else f"{name}_utf8"] = "int64" if kind == INT64 else "uint8"
        if self.has_uncertainty:
            wanted["uncertainty"] = "float32"
        for name, dtype in wanted.items():
            found = shapes.get(name)
            ndim = 2 if name == "embeddings" or name.endswith("_utf8") else 1
            if not (found and found[0][:1] == [rows] and len(found[0]) == ndim and found[1] == STORED[dtype]):
                raise IntegrityError(f"{file}: tensor {name!r} is {found or 'missing'}, expected {dtype} with "
                                     f"{rows} rows; re-run the command that wrote this set to rebuild it")

    def check(self, *, quick: bool = False, progress=None) -> dict:
        """Verify every shard: size, tensors and (unless ``quick``) sha256, plus the row total.

        Returns ``{"shards_checked", "rows_checked", "bytes_hashed"}``; raises IntegrityError naming
        the first bad shard.
        """
        hashed = 0
        for index in range(len(self.shards)):
            self._open_shard(index, verify=not quick)
            hashed += 0 if quick else self.shards[index]["bytes"]
            if progress is not None:
                progress(index + 1, len(self.shards))
        return {"shards_checked": len(self.shards), "rows_checked": self.rows, "bytes_hashed": hashed,
                "checksums": "skipped (--quick)" if quick else "verified"}

    # Segments are the shards: a --part worker reads whole shards, and rows by position find their shard.
    @property
    def segment_rows(self) -> int:
        return self.shards[0]["rows"] if self.shards else DEFAULT_SHARD_ROWS

    @property
    def num_segments(self) -> int:
        return len(self.shards)

    def _offsets(self) -> np.ndarray:
        if getattr(self, "_starts", None) is None:
            self._starts = np.concatenate([[0], np.cumsum([s["rows"] for s in self.shards], dtype=np.int64)])
        return self._starts

    def segment_bounds(self, index: int) -> tuple[int, int]:
        starts = self._offsets()
        return int(starts[index]), int(starts[index + 1])

    def part_shards(self, part: tuple[int, int] = (1, 1)) -> list[int]:
        return self.part_segments(part)

    def checksums(self) -> list[str]:
        return [s["sha256"] for s in self.shards]

    def files(self) -> list[Path]:
        return [self.path / s["file"] for s in self.shards]

    def facts(self) -> dict:
        return {"shards": len(self.shards)}

    @staticmethod
    def _read(handle, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray | None:
        """Tensor ``name`` rows [start, stop); text columns (``name_utf8``) decoded; None if absent."""
        names = set(handle.keys())
        if name in names:
            return handle.get_slice(name)[start:stop]
        if f"{name}_utf8" in names:
            return decode_text(handle.get_slice(f"{name}_utf8")[start:stop], f"shard column {name}_utf8")
        return None

    def read_column(self, index: int, name: str, verify: bool = False) -> np.ndarray | None:
        """One tensor (e.g. ``ids``) of shard ``index`` without reading its embeddings; None if absent."""
        return self._read(self._open_shard(index, verify), name)

    def column(self, name: str, segment: int | None = None, verify: bool = True) -> np.ndarray | None:
        if segment is not None:
            return self.read_column(segment, name, verify)
        parts = [self.read_column(i, name, verify) for i in range(len(self.shards))]
        if any(part is None for part in parts):
            return None
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _shard_block(self, handle, start: int, stop: int, native: bool = False) -> EmbeddingBlock:
        read = lambda n: self._read(handle, n, start, stop)  # noqa: E731
        embeddings = read("embeddings")
        return EmbeddingBlock(embeddings if native else embeddings.astype(np.float32, copy=False), read("ids"),
                              read("labels"), read("provenance"), read("uncertainty"))

    def segment_blocks(self, index: int, block_rows: int = 65536, verify: bool = True,
                       native: bool = False) -> Iterator[EmbeddingBlock]:
        handle = self._open_shard(index, verify)
        rows = self.shards[index]["rows"]
        for start in range(0, rows, block_rows):
            yield self._shard_block(handle, start, min(start + block_rows, rows), native)

    def native_blocks(self, block_rows: int = 65536, part: tuple[int, int] = (1, 1),
                      verify: bool = True) -> Iterator[EmbeddingBlock]:
        for index in self.part_segments(part):  # float16 shards stay float16: the reader converts once
            yield from self.segment_blocks(index, block_rows, verify, native=True)

    def read_range(self, start: int, stop: int, verify: bool = True) -> EmbeddingBlock:
        starts = self._offsets()
        first = min(max(int(np.searchsorted(starts, start, side="right")) - 1, 0), len(self.shards) - 1)
        if start >= stop:
            return self._shard_block(self._open_shard(first, verify), 0, 0)
        parts = []
        for index in range(first, len(self.shards)):
            begin = int(starts[index])
            if begin >= stop:
                break
            lo, hi = max(start, begin), min(stop, int(starts[index + 1]))
            if lo < hi:
                parts.append(self._shard_block(self._open_shard(index, verify), lo - begin, hi - begin))
        return EmbeddingBlock.concat(parts)


class EmbeddingFile(MemorySource):
    """Single-file embeddings (.npz or .safetensors) brought in from any model; held in memory."""

    def __init__(self, path: Path):
        self.path = Path(path)
        arrays = self._load()
        if "embeddings" not in arrays:
            raise BadInputError(f"{self.path}: no 'embeddings' array (found: {', '.join(sorted(arrays)) or 'none'}); "
                                "save the matrix under the key 'embeddings'")
        embeddings = np.asarray(arrays["embeddings"])
        where = str(self.path)
        check_embeddings(where, embeddings)
        ids = read_text_or_int(arrays, "ids")
        ids = np.arange(len(embeddings)) if ids is None else checked_column(where, "ids", ids)
        labels = read_text_or_int(arrays, "labels")
        labels = None if labels is None else checked_column(where, "labels", labels)
        check_rows(where, embeddings, ids, labels)
        uncertainty = self._optional(arrays, "uncertainty", "f", len(embeddings))
        provenance = self._optional(arrays, "provenance", "iu", len(embeddings))
        if provenance is not None and not np.isin(provenance, np.arange(len(PROVENANCE))).all():
            raise BadInputError(f"{where}: 'provenance' must hold 0 (native), 1 (transformed) or 2 (backfilled); "
                                "drop the array to mark every row native")
        # Held as stored (float16 stays float16): reads convert only the rows they return, so an
        # evaluation converts each block once, fused with its normalisation (no whole float32 copy).
        self.block = EmbeddingBlock(embeddings if embeddings.dtype in (np.float16, np.float32)
                                    else embeddings.astype(np.float32), ids, labels,
                                    None if provenance is None else provenance.astype(np.uint8),
                                    None if uncertainty is None else uncertainty.astype(np.float32))
        self._describe_block()
        self.dtype = str(embeddings.dtype)
        fingerprint = self.header.get("model_fingerprint")
        self.model_fingerprint = fingerprint if isinstance(fingerprint, str) else None

    def _optional(self, arrays: dict, name: str, kinds: str, rows: int) -> np.ndarray | None:
        """An optional per-row array: 1-D, ``rows`` long, of a dtype kind in ``kinds``, finite."""
        if name not in arrays:
            return None
        values = np.asarray(arrays[name])
        if values.shape != (rows,) or values.dtype.kind not in kinds or \
                (values.dtype.kind == "f" and not np.isfinite(values).all()):
            want = "finite floats" if kinds == "f" else "integers"
            raise BadInputError(f"{self.path}: '{name}' must be {rows} {want} (one per row), got "
                                f"{values.dtype} {values.shape}; fix or drop the array")
        return values

    def _load(self) -> dict:
        self.header: dict = {}
        if self.path.suffix == ".npz":
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    return {k: data[k] for k in data.files}
            except Exception as exc:  # zip, npy-header and pickle refusals all land here
                raise BadInputError(f"{self.path}: cannot read as .npz ({str(exc)[:120] or type(exc).__name__}); "
                                    "save it with numpy.savez and no object arrays") from None
        from compatctl.store.artifacts import load_arrays, read_header

        self.header = read_header(self.path)
        if self.header.get("kind") in ("model", "transform"):
            raise BadInputError(f"{self.path}: is a {self.header['kind']}, not embeddings; "
                                "pass an embedding set or an .npz/.safetensors with 'embeddings'")
        return load_arrays(self.path)
