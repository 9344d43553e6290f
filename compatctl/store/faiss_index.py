"""faiss index files as embedding sources, and exporting a source to a faiss index.

Readable: indexes that give back their vectors exactly — ``Flat`` (IndexFlatIP / IndexFlatL2)
and ``IDMap`` / ``IDMap2`` over Flat; ids come from the IDMap (row numbers without one). A faiss
index holds no labels or compatctl metadata, so ``compatctl export`` writes them next to the
index in ``INDEX.meta.npz`` (``ids``, ``labels`` or ``labels_utf8``, ``provenance``,
``uncertainty``, ``header``: compatctl metadata as UTF-8 JSON bytes, including how a trained index
was trained); the reader uses that file when it is there and its ids match the index's.
faiss holds the whole index in memory when it reads one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError
from compatctl.store.blocks import EmbeddingBlock
from compatctl.store.columns import INT64, UTF8, checked_column, column_type, decode_text, encode_text
from compatctl.store.sources import EmbeddingSource, HeldColumns

READABLE = "Flat (IndexFlatIP/IndexFlatL2) and IDMap/IDMap2 over Flat"
METRICS = {"ip": 0, "l2": 1}  # faiss.METRIC_INNER_PRODUCT, faiss.METRIC_L2


def meta_file(index_path: Path) -> Path:
    return Path(str(index_path) + ".meta.npz")


class FaissIndexSource(HeldColumns, EmbeddingSource):
    """A Flat (optionally IDMap/IDMap2-wrapped) faiss index read as rows."""

    format = "faiss"

    def __init__(self, path: Path):
        import faiss

        self.path = Path(path)
        try:
            index = faiss.read_index(str(self.path))
        except Exception as exc:  # faiss raises RuntimeError with its C++ message
            reason = str(exc).splitlines()[0].rpartition(": ")[2][:100]  # faiss prefixes its C++ location
            raise BadInputError(f"{self.path}: not a readable faiss index ({reason}); pass a file written by "
                                "faiss.write_index or compatctl export") from None
        top = faiss.downcast_index(index)
        self.index_type = type(top).__name__
        if isinstance(top, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            ids = faiss.vector_to_array(top.id_map).astype(np.int64)
            inner = faiss.downcast_index(top.index)
        else:
            ids, inner = np.arange(top.ntotal, dtype=np.int64), top
        if not isinstance(inner, faiss.IndexFlat):
            raise BadInputError(f"{self.path}: a {self.index_type} over {type(inner).__name__} index cannot give back "
                                f"its vectors exactly; compatctl reads {READABLE} — export the gallery with "
                                "compatctl export SET OUT.faiss (default --index Flat)")
        self._index, self._inner = index, inner
        self.rows, self.dim, self.dtype = int(inner.ntotal), int(inner.d), "float32"
        self.metric = "ip" if inner.metric_type == METRICS["ip"] else "l2"
        if not self.rows:
            raise BadInputError(f"{self.path}: the index holds no vectors")
        self._ids = ids
        self._labels = self._provenance = self._uncertainty = None
        self.header, self.model_fingerprint = {}, None
        self._read_meta()
        self.has_labels = self._labels is not None
        self.has_uncertainty = self._uncertainty is not None
        self.id_type = INT64
        self.label_type = None if self._labels is None else column_type(self._labels)

    def _read_meta(self) -> None:
        file = meta_file(self.path)
        if not file.is_file():
            return
        try:
            with np.load(file, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except Exception as exc:
            raise BadInputError(f"{file}: cannot read as .npz ({str(exc)[:100]}); delete it or re-export") from None
        if "ids" not in arrays or not np.array_equal(arrays["ids"], self._ids):
            raise BadInputError(f"{file}: its ids are not the index's ids (written for another index?); "
                                "delete it or re-export the index")
        if "labels" in arrays or "labels_utf8" in arrays:
            labels = arrays["labels"] if "labels" in arrays else decode_text(arrays["labels_utf8"], f"{file} labels_utf8")
            self._labels = checked_column(str(file), "labels", labels)
        if "provenance" in arrays:
            self._provenance = arrays["provenance"].astype(np.uint8)
        if "uncertainty" in arrays:
            self._uncertainty = arrays["uncertainty"].astype(np.float32)
        if "header" in arrays:
            header = json.loads(arrays["header"].tobytes().decode() or "{}")
            self.header = header if isinstance(header, dict) else {}
            fingerprint = self.header.get("model_fingerprint")
            self.model_fingerprint = fingerprint if isinstance(fingerprint, str) else None
        for name, values in (("labels", self._labels), ("provenance", self._provenance),
                             ("uncertainty", self._uncertainty)):
            if values is not None and values.shape != (self.rows,):
                raise BadInputError(f"{file}: '{name}' has shape {values.shape}, the index {self.rows} rows; re-export")

    def read_range(self, start: int, stop: int, verify: bool = True) -> EmbeddingBlock:
        embeddings = self._inner.reconstruct_n(start, stop - start) if stop > start else \
            np.zeros((0, self.dim), np.float32)
        return self._block(embeddings, start, stop)

    def files(self) -> list[Path]:
        return [self.path] + ([meta_file(self.path)] if meta_file(self.path).is_file() else [])

    def facts(self) -> dict:
        return {"index_type": self.index_type, "metric": self.metric,
                "metadata_file": str(meta_file(self.path)) if meta_file(self.path).is_file() else None}


def sample_positions(rows: int, count: int, seed: int) -> np.ndarray:
    """``count`` distinct row positions drawn with ``seed`` (all rows when count >= rows), sorted."""
    if count >= rows:
        return np.arange(rows, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(rows, size=count, replace=False))


def build_index(factory: str, dim: int, metric: str):
    """``faiss.index_factory`` with a one-line error for a factory string faiss refuses."""
    import faiss

    try:
        return faiss.index_factory(dim, factory, METRICS[metric])
    except Exception as exc:
        raise BadInputError(f"--index {factory!r}: faiss cannot build it for {dim} dims "
                            f"({str(exc).splitlines()[0][:100]}); use a faiss factory string such as Flat, "
                            "HNSW32, IVF1024,Flat or IVF4096,PQ32") from None


def write_faiss_index(out: Path, source: EmbeddingSource, *, factory: str = "Flat", metric: str = "ip",
                      train_rows: int = 100_000, seed: int = 0, block_rows: int = 65536, progress=None) -> dict:
    """Add every row of ``source`` to a faiss index built from ``factory`` wrapped in IDMap2 (ids kept),
    training it first on ``train_rows`` rows drawn with ``seed`` when it needs training; write it to
    ``out`` and its labels/provenance/uncertainty/metadata to ``out.meta.npz``. Returns what was done."""
    import faiss

    if source.id_type == UTF8:
        raise BadInputError(f"{source.name}: has string ids, but a faiss index holds int64 ids only; export to "
                            ".parquet instead, or re-key the rows with integer ids")
    index = build_index(factory, source.dim, metric)
    if not factory.replace(" ", "").upper().startswith("IDMAP"):
        index = faiss.IndexIDMap2(index)
    trained = None
    if not index.is_trained:
        positions = sample_positions(source.rows, train_rows, seed)
        sample = source.read_positions(positions).embeddings
        try:
            index.train(np.ascontiguousarray(sample, np.float32))
        except Exception as exc:
            raise BadInputError(f"--index {factory!r}: training on {len(sample)} rows failed "
                                f"({str(exc).splitlines()[0][:120]}); raise --train-rows or pick a smaller index") from None
        trained = {"rows": int(len(positions)), "of": int(source.rows), "seed": seed,
                   "rule": "distinct rows drawn uniformly with numpy default_rng(seed)"}
    meta = {"ids": [], "labels": [], "provenance": [], "uncertainty": []}
    done = 0
    for block in source.iter_blocks(block_rows):
        index.add_with_ids(np.ascontiguousarray(block.embeddings, np.float32), np.asarray(block.ids, np.int64))
        meta["ids"].append(np.asarray(block.ids, np.int64))
        meta["labels"].append(block.labels)
        meta["provenance"].append(np.zeros(len(block), np.uint8) if block.provenance is None else block.provenance)
        meta["uncertainty"].append(block.uncertainty)
        done += len(block)
        if progress is not None:
            progress(done, source.rows)
    header = dict(source.header, exported_index={"factory": factory, "metric": metric, "trained_on": trained})
    arrays = {name: np.concatenate(parts) for name, parts in meta.items() if parts and all(p is not None for p in parts)}
    if "labels" in arrays and column_type(arrays["labels"]) == UTF8:
        arrays["labels_utf8"] = encode_text(arrays.pop("labels"))
    arrays["header"] = np.frombuffer(json.dumps(header, default=str).encode(), np.uint8)
    _atomic(meta_file(out), lambda temp: _savez(temp, arrays))
    _atomic(out, lambda temp: faiss.write_index(index, temp))
    return {"factory": factory, "wrapped": "IDMap2" if not factory.upper().startswith("IDMAP") else None,
            "metric": metric, "trained_on": trained, "rows": done, "metadata_file": str(meta_file(out))}


def _savez(path: str, arrays: dict) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _atomic(path: Path, write) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
