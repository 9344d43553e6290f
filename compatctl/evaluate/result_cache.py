"""A folder of finished evaluations (report + per-query records), keyed by what they were computed from.

A CI gate re-evaluates the same baseline (old/old) and ceiling (new/new) on every run; only the
candidate changes. ``compare(..., cache_dir=DIR)`` stores those two evaluations here and reuses
them while the key matches. The key is the sha256 of:

- each input's content: a file's sha256 (with its renamed ``--columns``); an embedding set's manifest (it records the sha256 and
  size of every shard, and every shard is checked against it when read); an in-memory block's bytes;
- every option that changes a number (distance, top-k, dims, mAP@R, metrics, the qrels file's sha256);
- the evaluation code itself (the sha256 of compatctl/evaluate/*.py) and the cache format.

So a changed input, option or compatctl version is a miss, never a stale hit. Entries are
``<key>.npz`` files written atomically; an unreadable entry is treated as a miss and rewritten.
Nothing else in the folder is read or touched.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError
from compatctl.evaluate.records import QueryRecords

CACHE_FORMAT = 1
RESULT_OPTIONS = ("distance", "topk", "dims", "with_map", "map_at_r", "metrics")  # block sizes change no number
_CODE_DIGEST: list[str] = []


def code_digest() -> str:
    """sha256 over the evaluation package's source files (computed once per process)."""
    if not _CODE_DIGEST:
        digest = hashlib.sha256()
        for path in sorted(Path(__file__).parent.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        _CODE_DIGEST.append(digest.hexdigest())
    return _CODE_DIGEST[0]


def source_digest(source) -> str:
    """sha256 naming the content of an embeddings source (see the module doc)."""
    from compatctl.store.artifacts import file_sha256

    inner = getattr(source, "_source", source)  # text ids: the coded view of the same source
    path = Path(str(getattr(inner, "path", "")))
    if getattr(inner, "manifest", None) is not None and path.is_dir():
        return hashlib.sha256(json.dumps(inner.manifest, sort_keys=True).encode()).hexdigest()
    if path.is_file():  # one file read through renamed --columns is another content
        with_columns = getattr(inner, "_with_columns", None)
        return with_columns(file_sha256(path)) if with_columns is not None else file_sha256(path)
    block, digest = inner.read_all(), hashlib.sha256()
    for name in ("embeddings", "ids", "labels"):
        values = getattr(block, name)
        if values is not None:
            values = np.ascontiguousarray(values)
            digest.update(f"{name}:{values.dtype.str}:{values.shape}".encode())
            digest.update(values.tobytes() if values.dtype.kind != "U" else "\0".join(values.tolist()).encode())
    return digest.hexdigest()


class ResultCache:
    """Evaluations stored under ``folder`` (created on first store)."""

    def __init__(self, folder: Path | str, inputs=()):
        """``inputs``: paths the evaluation reads; the folder may be none of them nor lie inside one."""
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise BadInputError(f"--cache {self.folder}: is a file, not a folder; give a folder for cached "
                                "evaluations (it is created if missing)")
        where = self.folder.resolve()
        for path in inputs:
            path = Path(path).resolve()
            if where == path or (path.is_dir() and where.is_relative_to(path)):
                raise BadInputError(f"--cache {self.folder}: is or lies inside the input {path}; "
                                    "keep cached evaluations in a folder of their own, e.g. .compatctl-cache")

    def key(self, query, gallery, options: dict) -> str:
        """The entry name of evaluating ``query`` against ``gallery`` with ``options``."""
        from compatctl.store.artifacts import file_sha256

        qrels = options.get("qrels")
        material = {"format": CACHE_FORMAT, "code": code_digest(), "query": source_digest(query),
                    "gallery": source_digest(gallery),
                    "options": {name: _plain(options.get(name)) for name in RESULT_OPTIONS},
                    "qrels": None if qrels is None else file_sha256(qrels.path)}
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def load(self, key: str) -> tuple[dict, QueryRecords] | None:
        """(report, records) stored under ``key``, or None (missing or unreadable)."""
        path = self.folder / f"{key}.npz"
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
            report = json.loads(bytes(arrays.pop("report")).decode())
            values = {name[len("value:"):]: arrays[name] for name in arrays if name.startswith("value:")}
            return report, QueryRecords(arrays["ids"], arrays.get("labels"), arrays["first_rank"],
                                        arrays["positives"], values)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # JSONDecodeError is a ValueError
            return None

    def store(self, key: str, report: dict, records: QueryRecords) -> None:
        """Write one entry atomically (a temp file and a rename)."""
        from compatctl.store.artifacts import atomic_write_bytes

        arrays = {"report": np.frombuffer(json.dumps(report).encode(), np.uint8), "ids": records.ids,
                  "first_rank": records.first_rank, "positives": records.positives,
                  **{f"value:{name}": values for name, values in records.values.items()}}
        if records.labels is not None:
            arrays["labels"] = records.labels
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(self.folder / f"{key}.npz", buffer.getvalue())


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
