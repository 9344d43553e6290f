"""Embedding sets: a directory of fixed-size safetensors shards plus a JSON manifest.

Layout of ``EMB/``::

    manifest.json                 written last, only when every shard is complete
    progress.part-I-of-N.json     one per writer while it works (shards done + sha256)
    shard-00000.safetensors       embeddings [n, D], ids int64 [n], provenance uint8 [n],
    shard-00001.safetensors       labels int64 [n] (optional), uncertainty float32 [n] (optional)

Every file is written to a temp name and renamed, so a killed writer leaves at most a stray
``.tmp`` file; a re-run with the same inputs keeps the complete shards and redoes the rest.
Shard ``i`` always holds rows ``[i*shard_rows, (i+1)*shard_rows)`` of the writer's row order,
so ``--part I/N`` workers can fill disjoint shards of the same directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError, IntegrityError
from compatctl.store.artifacts import (FORMAT_VERSION, atomic_write_bytes, atomic_write_json,
                                       file_sha256)

PROVENANCE = ("native", "transformed", "backfilled")
MANIFEST = "manifest.json"
DEFAULT_SHARD_ROWS = 65536
DTYPES = ("float32", "float16")


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


def check_rows(path: str, embeddings: np.ndarray, ids: np.ndarray, labels: np.ndarray | None) -> None:
    """Validate imported rows: 2-D finite embeddings, unique ids, labels of matching length."""
    if embeddings.ndim != 2:
        raise BadInputError(f"{path}: 'embeddings' must be 2-D [rows, dim], got shape {embeddings.shape}")
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
                            "ids must be unique per row")


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


def is_temp_file(path: Path) -> bool:
    """A leftover of an interrupted ``atomic_write_bytes`` (``.NAME.XXXX.tmp``)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


class EmbeddingSetWriter:
    """Writes shards of an embedding set, resumably; ``finish`` writes the manifest.

    Args:
        path: the set's directory.
        rows: total rows of the whole set (all parts).
        dim: embedding width.
        header: metadata for the manifest (model_fingerprint, config, source, ...).
        resume_key: identifies the inputs; a directory written with another key is refused.
        part: (I, N) — this writer fills shards ``i`` with ``i % N == I - 1``.
    """

    def __init__(self, path: Path, *, rows: int, dim: int, header: dict, resume_key: str,
                 dtype: str = "float32", shard_rows: int = DEFAULT_SHARD_ROWS,
                 part: tuple[int, int] = (1, 1), has_labels: bool = False, has_uncertainty: bool = False):
        if dtype not in DTYPES:
            raise BadInputError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
        self.path, self.rows, self.dim, self.dtype = Path(path), rows, dim, dtype
        self.shard_rows, self.part, self.resume_key = shard_rows, part, resume_key
        self.header = dict(header, has_labels=has_labels, has_uncertainty=has_uncertainty)
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
        return [json.loads(file.read_text()) for file in files if file.is_file()]

    def _complete_shards(self) -> dict[int, dict]:
        """Shards any writer recorded as complete whose file is still there at its recorded size."""
        listed = {entry["index"]: entry for record in self._records() for entry in record.get("shards", [])}
        return {index: entry for index, entry in listed.items()
                if (self.path / entry["file"]).is_file()
                and (self.path / entry["file"]).stat().st_size == entry["bytes"]}

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
        tensors = {"embeddings": np.ascontiguousarray(block.embeddings, dtype=self.dtype),
                   "ids": np.ascontiguousarray(block.ids, dtype=np.int64),
                   "provenance": np.ascontiguousarray(
                       np.zeros(len(block), np.uint8) if block.provenance is None else block.provenance,
                       dtype=np.uint8)}
        if self.header["has_labels"]:
            tensors["labels"] = np.ascontiguousarray(block.labels, dtype=np.int64)
        if self.header["has_uncertainty"]:
            tensors["uncertainty"] = np.ascontiguousarray(block.uncertainty, dtype=np.float32)
        data = save(tensors, metadata={"compatctl": json.dumps({"shard": index, "rows": len(block)})})
        name = shard_file(self.path, index).name
        atomic_write_bytes(self.path / name, data)
        self.done[index] = {"index": index, "file": name, "rows": len(block), "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_json(self.progress_path, {"resume_key": self.resume_key,
                                               "shards": [self.done[i] for i in sorted(self.done)]})

    def finish(self) -> bool:
        """Write the manifest if every shard of every part is complete; True if written."""
        self.done.update(self._complete_shards())
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
                                has_uncertainty=block.uncertainty is not None)
    for index in writer.pending_shards():
        start, stop = writer.shard_bounds(index)
        writer.write_shard(index, block.take(slice(start, stop)))
    writer.finish()


class EmbeddingSet:
    """A complete embedding-set directory opened for streaming reads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            if any(self.path.glob("progress.part-*.json")):
                raise BadInputError(f"{self.path}: embedding set is incomplete (a writer was stopped); "
                                    "re-run the command that writes it to resume")
            raise BadInputError(f"{self.path}: no {MANIFEST}; this is not a compatctl embedding set")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            raise IntegrityError(f"{manifest_path}: not valid JSON; re-create the embedding set") from None
        if self.manifest.get("format_version") != FORMAT_VERSION or self.manifest.get("kind") != "embeddings":
            raise BadInputError(f"{manifest_path}: format_version {self.manifest.get('format_version')!r}, "
                                f"kind {self.manifest.get('kind')!r}; expected version {FORMAT_VERSION} "
                                "embeddings — re-create it with this compatctl")
        self.dim, self.rows = int(self.manifest["dim"]), int(self.manifest["rows"])
        self.dtype = self.manifest["dtype"]
        self.has_labels = bool(self.manifest.get("has_labels"))
        self.has_uncertainty = bool(self.manifest.get("has_uncertainty"))
        self.model_fingerprint = self.manifest.get("model_fingerprint")
        self.header = self.manifest
        self._verified: set[int] = set()

    @property
    def shards(self) -> list[dict]:
        return self.manifest["shards"]

    def _open_shard(self, index: int, verify: bool):
        from safetensors import safe_open

        entry = self.shards[index]
        file = self.path / entry["file"]
        if not file.is_file():
            raise IntegrityError(f"{file}: shard listed in the manifest is missing; "
                                 "re-run the command that wrote this set")
        if verify and index not in self._verified:
            if file.stat().st_size != entry["bytes"] or file_sha256(file) != entry["sha256"]:
                raise IntegrityError(f"{file}: checksum mismatch (truncated or corrupted shard); "
                                     "re-run the command that wrote this set to rebuild it")
            self._verified.add(index)
        handle = safe_open(str(file), framework="numpy")
        shape = handle.get_slice("embeddings").get_shape()
        if list(shape) != [entry["rows"], self.dim]:
            raise IntegrityError(f"{file}: holds {shape} embeddings but the manifest says "
                                 f"[{entry['rows']}, {self.dim}]; shards of one set must share a dim")
        return handle

    def part_shards(self, part: tuple[int, int] = (1, 1)) -> list[int]:
        index, count = part
        return [i for i in range(len(self.shards)) if i % count == index - 1]

    def read_column(self, index: int, name: str, verify: bool = False) -> np.ndarray | None:
        """One tensor (e.g. ``ids``) of shard ``index`` without reading its embeddings; None if absent."""
        handle = self._open_shard(index, verify)
        return handle.get_tensor(name) if name in handle.keys() else None

    def iter_blocks(self, block_rows: int = 65536, part: tuple[int, int] = (1, 1),
                    verify: bool = True) -> Iterator[EmbeddingBlock]:
        """Stream rows in blocks of at most ``block_rows``; memory is set by the block size."""
        for index in self.part_shards(part):
            handle = self._open_shard(index, verify)
            names = set(handle.keys())
            rows = self.shards[index]["rows"]
            for start in range(0, rows, block_rows):
                stop = min(start + block_rows, rows)
                read = lambda n: handle.get_slice(n)[start:stop] if n in names else None  # noqa: E731
                yield EmbeddingBlock(read("embeddings").astype(np.float32, copy=False), read("ids"),
                                     read("labels"), read("provenance"), read("uncertainty"))

    def read_all(self) -> EmbeddingBlock:
        """Every row in one block (loads the whole set into memory)."""
        return EmbeddingBlock.concat(list(self.iter_blocks(block_rows=1 << 30)))


class EmbeddingFile:
    """Single-file embeddings (.npz or .safetensors) brought in from any model; held in memory."""

    def __init__(self, path: Path):
        self.path = Path(path)
        arrays = self._load()
        if "embeddings" not in arrays:
            raise BadInputError(f"{self.path}: no 'embeddings' array (found: {', '.join(sorted(arrays)) or 'none'}); "
                                "save the matrix under the key 'embeddings'")
        embeddings = np.asarray(arrays["embeddings"])
        if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.number):
            raise BadInputError(f"{self.path}: 'embeddings' must be a 2-D numeric array, got "
                                f"{embeddings.dtype} {embeddings.shape}")
        ids = np.asarray(arrays["ids"]).astype(np.int64) if "ids" in arrays else np.arange(len(embeddings))
        labels = np.asarray(arrays["labels"]).astype(np.int64) if "labels" in arrays else None
        check_rows(str(self.path), embeddings, ids, labels)
        uncertainty = arrays.get("uncertainty")
        provenance = arrays.get("provenance")
        self.block = EmbeddingBlock(embeddings.astype(np.float32, copy=False), ids, labels,
                                    None if provenance is None else provenance.astype(np.uint8),
                                    None if uncertainty is None else uncertainty.astype(np.float32))
        self.rows, self.dim = embeddings.shape
        self.dtype = str(embeddings.dtype)
        self.has_labels = labels is not None
        self.has_uncertainty = uncertainty is not None
        self.model_fingerprint = self.header.get("model_fingerprint")

    def _load(self) -> dict:
        self.header: dict = {}
        if self.path.suffix == ".npz":
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    return {k: data[k] for k in data.files}
            except Exception as exc:
                raise BadInputError(f"{self.path}: cannot read as .npz ({exc})") from None
        from compatctl.store.artifacts import load_arrays, read_header

        self.header = read_header(self.path)
        if self.header.get("kind") in ("model", "transform"):
            raise BadInputError(f"{self.path}: is a {self.header['kind']}, not embeddings; "
                                "pass an embedding set or an .npz/.safetensors with 'embeddings'")
        return load_arrays(self.path)

    def part_shards(self, part: tuple[int, int] = (1, 1)) -> list[int]:
        return [0] if part[0] == 1 else []

    def iter_blocks(self, block_rows: int = 65536, part: tuple[int, int] = (1, 1),
                    verify: bool = True) -> Iterator[EmbeddingBlock]:
        if part[0] != 1:
            return
        for start in range(0, self.rows, block_rows):
            yield self.block.take(slice(start, start + block_rows))

    def read_all(self) -> EmbeddingBlock:
        return self.block


def open_embeddings(path: Path | str) -> EmbeddingSet | EmbeddingFile:
    """Open an embedding-set directory or a single .npz/.safetensors embeddings file."""
    path = Path(path)
    if path.is_dir():
        return EmbeddingSet(path)
    if not path.exists():
        raise BadInputError(f"{path}: not found; pass an embedding-set directory or an .npz/.safetensors file")
    if path.suffix not in (".npz", ".safetensors"):
        raise BadInputError(f"{path}: unsupported embeddings file; use an embedding-set directory, "
                            ".npz or .safetensors")
    return EmbeddingFile(path)


def provenance_counts(source: EmbeddingSet | EmbeddingFile) -> dict[str, int]:
    """Rows per provenance (native / transformed / backfilled), streamed."""
    counts = np.zeros(len(PROVENANCE), np.int64)
    for block in source.iter_blocks(verify=False):
        if block.provenance is None:
            counts[0] += len(block)
        else:
            counts += np.bincount(block.provenance, minlength=len(PROVENANCE))[: len(PROVENANCE)]
    return dict(zip(PROVENANCE, counts.tolist()))
