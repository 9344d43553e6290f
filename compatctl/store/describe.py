"""What an artifact is: the facts `compatctl inspect` shows, for any file compatctl reads."""

from __future__ import annotations

from pathlib import Path

from compatctl.errors import IntegrityError
from compatctl.store.artifacts import fingerprint_arrays, load_arrays, read_header
from compatctl.store.sources import open_embeddings, provenance_counts

_SKIP = {"shards", "config", "resume_key"}


def describe(path: Path | str, *, quick: bool = False, columns: dict | None = None) -> dict:
    """A JSON-ready summary of a model, transform, or embeddings in any format compatctl reads.

    Integrity is checked on the way: an embedding set's manifest, row totals, every shard's size
    and tensors and (unless ``quick``) sha256; a model's or transform's weights against its
    fingerprint (unless ``quick``). The summary's ``integrity`` entry says what was checked.

    Raises BadInputError for paths compatctl cannot read, IntegrityError (naming the shard or
    file) for a corrupt artifact.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        header = read_header(path)
        if header.get("kind") in ("model", "transform"):
            summary = {k: v for k, v in header.items() if k != "config"}
            if header.get("kind") == "model":
                from compatctl.series import chain_lines

                summary["series"] = chain_lines(header) or None  # oldest first; None: not part of a series
            integrity = "fingerprint not checked (--quick)" if quick else _check_fingerprint(path, header)
            return {"path": str(path), **summary, "integrity": integrity, "config": header.get("config", {})}
    source = open_embeddings(path, columns)
    info = {"path": str(path), "kind": "embeddings", "format": _format_name(source, path),
            "format_version": source.header.get("format_version"), "rows": source.rows, "dim": source.dim,
            "dtype": source.dtype, "fingerprint": source.model_fingerprint,
            "has_labels": source.has_labels, "has_uncertainty": source.has_uncertainty,
            "id_type": source.id_type, "provenance": provenance_counts(source)}
    info["integrity"] = source.check(quick=quick)
    info.update(source.facts())
    if source.format == "set":
        info.update({k: v for k, v in source.header.items() if k not in _SKIP and k not in info})
        info["config"] = source.header.get("config", {})
    return info


def _format_name(source, path: Path) -> str:
    if source.format == "set":
        return "embedding-set"
    if source.format == "file":
        return f"single-file {path.suffix}"
    return source.format


def _check_fingerprint(path: Path, header: dict) -> str:
    """The weights hash to the header's fingerprint, or IntegrityError (the file was altered)."""
    if fingerprint_arrays(load_arrays(path)) != header.get("fingerprint"):
        raise IntegrityError(f"{path}: weights do not match the fingerprint in its metadata (a corrupted or "
                             "edited file); re-create it with the command that wrote it")
    return "weights match the fingerprint"
