"""What an artifact is: the facts `compatctl inspect` shows, for any file compatctl reads."""

from __future__ import annotations

from pathlib import Path

from compatctl.errors import BadInputError
from compatctl.store.artifacts import read_header
from compatctl.store.embeddings import open_embeddings, provenance_counts

_SKIP = {"shards", "config", "resume_key"}


def describe(path: Path | str) -> dict:
    """A JSON-ready summary of a model, transform, embedding set or single-file embeddings.

    Raises BadInputError for paths compatctl cannot read.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        header = read_header(path)
        if header.get("kind") in ("model", "transform"):
            summary = {k: v for k, v in header.items() if k != "config"}
            return {"path": str(path), **summary, "config": header.get("config", {})}
    if path.is_file() and path.suffix not in (".npz", ".safetensors"):
        raise BadInputError(f"{path}: not a compatctl artifact (.safetensors, .npz or an embedding-set directory)")
    source = open_embeddings(path)
    info = {"path": str(path), "kind": "embeddings",
            "format": "embedding-set" if path.is_dir() else f"single-file {path.suffix}",
            "format_version": source.header.get("format_version"), "rows": source.rows, "dim": source.dim,
            "dtype": source.dtype, "fingerprint": source.model_fingerprint,
            "has_labels": source.has_labels, "has_uncertainty": source.has_uncertainty,
            "provenance": provenance_counts(source)}
    if path.is_dir():
        info["shards"] = len(source.shards)
        info.update({k: v for k, v in source.header.items() if k not in _SKIP and k not in info})
        info["config"] = source.header.get("config", {})
    return info
