"""Transform chains: H12 then H23 (then ...) applied in order, and mixed-version galleries.

``backfill GALLERY --transform H12 --transform H23`` brings a v1 gallery to v3 through v2.
Links connect when each link's new model is the next link's old model: same width always,
same model fingerprint unless ``--force`` (a fingerprint not recorded only warns, as for a
single transform). Errors name the link and both fingerprints.

A **mixed-version gallery** holds rows embedded by different models of the series, e.g. most
rows still v1, some already v2. Each row's model is its *version*: a text column ``versions``
(model fingerprints) in a single-file gallery (``.npz``/``.safetensors``; as ``versions_utf8``
bytes in safetensors, see store/columns.py), in every shard of an embedding set, or a string
column of a Parquet gallery (``versions``, or the name given by ``--columns versions=COL``). One pass
brings every row to the chain's newest model: a row at the old model of link i goes through
links i, i+1, ...; a row already at the newest model is kept as it is (provenance native). A
row whose version starts no link is refused (exit 2), naming it. Rows narrower than the
file (v1 rows next to wider BT² v2 rows) sit in the first columns, the rest zero.

Uncertainty (FastFill orders): the last link's log-variance of each transformed row (the
uncertainty of the step into the newest model, not of the whole path); rows kept native get
``NATIVE_LOG_VARIANCE``, last in an uncertainty order. Side-info: only the first link may take it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError
from compatctl.transform.artifact import Transform, load_transform
from compatctl.transform.compat import check_compatible, check_fingerprint

NATIVE_LOG_VARIANCE = -1e30  # finite (sets refuse non-finite uncertainty) and below any real log-variance


def short(fingerprint: str | None) -> str:
    return (fingerprint or "unknown")[:12]


def check_links(links: list[Transform], *, force: bool = False) -> list[str]:
    """Each link's new model must be the next link's old model. Returns warnings; raises BadInputError."""
    warnings = []
    for number, (before, after) in enumerate(zip(links, links[1:]), start=2):
        if after.side_info_dim:
            raise BadInputError(f"--transform {after.path} (link {number}): was fit with side-info; in a chain only "
                                "the first link may take side-info: re-fit it without side-info")
        if before.new_dim != after.old_dim:
            raise BadInputError(f"--transform {after.path} (link {number}): maps {after.old_dim}-d embeddings of model "
                                f"{short(after.old_fingerprint)}, but link {number - 1} ({before.path}) makes "
                                f"{before.new_dim}-d ones of model {short(before.new_fingerprint)}; the links do not "
                                "connect: pass the transforms in series order, each fit on the previous one's new model")
        try:
            warnings += check_fingerprint(before.new_fingerprint, after.old_fingerprint, force=force,
                                          source=f"link {number - 1} ({before.path})", what="old model of link "
                                          f"{number} ({after.path})")
        except BadInputError:
            raise BadInputError(f"--transform {after.path} (link {number}): maps from model "
                                f"{short(after.old_fingerprint)}, but link {number - 1} ({before.path}) maps to model "
                                f"{short(before.new_fingerprint)}; the links do not connect: pass the transforms in "
                                "series order, each fit on the previous one's new model (or --force)") from None
    return warnings


class TransformChain:
    """Links applied in order, with optional per-row versions (a mixed-version gallery).

    Duck-types :class:`Transform` where backfill uses it: ``old_dim`` (first link), ``new_dim``,
    ``new_fingerprint`` (last link), ``fingerprint`` (of the link list), ``has_uncertainty`` (last
    link), ``side_info_dim`` (first link), ``apply``.
    """

    def __init__(self, links: list[Transform], versions: np.ndarray | None = None):
        self.links, self.versions = links, versions
        first, last = links[0], links[-1]
        self.path = " + ".join(link.path for link in links)
        self.kind = "chain"
        self.old_dim, self.new_dim = first.old_dim, last.new_dim
        self.old_fingerprint, self.new_fingerprint = first.old_fingerprint, last.new_fingerprint
        self.side_info_dim, self.side_info_fingerprint = first.side_info_dim, first.side_info_fingerprint
        self.has_uncertainty = last.has_uncertainty
        facts = {"links": [link.fingerprint for link in links], "versions": None if versions is None else
                 hashlib.sha256(np.asarray(versions).astype(str).tobytes()).hexdigest()[:16]}
        self.fingerprint = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
        self.starts = {link.old_fingerprint: index for index, link in enumerate(links) if link.old_fingerprint}

    def row_starts(self, start: int, stop: int, rows: int) -> np.ndarray:
        """Per row of gallery rows [start, stop): the first link it goes through; len(links) = kept native."""
        if self.versions is None:
            return np.zeros(rows, np.int64)
        versions = self.versions[start:stop]
        starts = np.full(len(versions), -1, np.int64)
        for version in np.unique(versions):
            starts[versions == version] = len(self.links) if version == self.new_fingerprint \
                else self.starts.get(str(version), -1)
        return starts

    def native_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows of [start, stop) already at the newest model (kept as they are)."""
        return self.row_starts(start, stop, stop - start) == len(self.links)

    def apply(self, old: np.ndarray, side_info: np.ndarray | None = None, *,
              rows: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows [n, D] (gallery rows ``rows`` = (start, stop) when versions are known) to the newest model.

        Returns (embeddings float32 [n, new_dim], last link's log-variance [n] or None).
        """
        start, stop = rows if rows is not None else (0, len(old))
        starts = self.row_starts(start, stop, len(old))
        out = np.zeros((len(old), self.new_dim), np.float32)
        log_var = np.full(len(old), NATIVE_LOG_VARIANCE, np.float32) if self.has_uncertainty else None
        native = starts == len(self.links)
        if native.any():
            out[native] = old[native, :self.new_dim]
        for first in np.unique(starts[~native]):
            picked = starts == first
            current, side = old[picked, :self.links[first].old_dim], None
            if first == 0 and side_info is not None:
                side = side_info[picked]
            for link in self.links[first:]:
                current, uncertainty = link.apply(current, side)
                side = None
            out[picked] = current
            if log_var is not None:
                log_var[picked] = uncertainty
        return out, log_var


def read_versions(gallery) -> np.ndarray | None:
    """The gallery's per-row model versions (text [N]), or None when it has no ``versions`` column."""
    from compatctl.store import EmbeddingSet, load_arrays
    from compatctl.store.columns import read_text_or_int

    if getattr(gallery, "format", None) == "parquet":  # a string column, named by --columns versions=COL
        versions = gallery.column("versions")
        if versions is None:
            return None
    elif isinstance(gallery, EmbeddingSet):
        parts = [gallery.read_column(index, "versions") for index in range(len(gallery.shards))]
        if all(part is None for part in parts):
            return None
        if any(part is None for part in parts):
            raise BadInputError(f"{gallery.path}: only some shards hold a 'versions' column; give every row a version")
        versions = np.concatenate(parts)
    else:
        path = Path(gallery.path)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files if name.startswith("versions")}
        elif path.suffix == ".safetensors":
            arrays = load_arrays(path)
        else:  # .npy folders, faiss indexes: per-row versions are not read from them (docs/backfill.md)
            return None
        versions = read_text_or_int(arrays, "versions")
        if versions is None:
            return None
    if versions.dtype.kind not in "US" or versions.shape != (gallery.rows,):
        raise BadInputError(f"{gallery.path}: 'versions' must hold {gallery.rows} model fingerprints (text, one per "
                            f"row), got {versions.dtype} {versions.shape}")
    return versions.astype(str)


def _check_versions(chain: TransformChain, gallery, versions: np.ndarray) -> None:
    """Every version starts a link (or is the newest model); rows fit in the file's width."""
    known = [*chain.starts, chain.new_fingerprint]
    for version in np.unique(versions):
        index = chain.starts.get(str(version), len(chain.links) if version == chain.new_fingerprint else None)
        row = int(np.flatnonzero(versions == version)[0])
        if index is None:
            raise BadInputError(f"{gallery.path}: row {row} has version {short(str(version))}, which no --transform "
                                f"link maps from (links map from {', '.join(short(k) for k in known[:-1])}; newest "
                                f"{short(known[-1])}); add the missing link, or backfill that row's version first")
        width = chain.links[index].old_dim if index < len(chain.links) else chain.new_dim
        if width > gallery.dim:
            raise BadInputError(f"{gallery.path}: rows of version {short(str(version))} need {width} dims but the file "
                                f"holds {gallery.dim}; store every row padded to the widest version")


def open_chain(paths: list, gallery, *, force: bool = False, side_info_source=None) -> tuple[TransformChain, list[str]]:
    """Load the links, check that they connect and fit ``gallery`` (per-row versions when it has them).

    Returns (chain, warnings). Raises BadInputError naming the link or row that does not fit.
    """
    links = [load_transform(path) for path in paths]
    warnings = check_links(links, force=force)
    versions = read_versions(gallery)
    chain = TransformChain(links, versions)
    if versions is None:
        warnings += check_compatible(links[0], gallery, force=force, side_info_source=side_info_source)
        return chain, warnings
    _check_versions(chain, gallery, versions)
    if side_info_source is not None or links[0].side_info_dim:
        raise BadInputError(f"{gallery.path}: a mixed-version gallery cannot take side-info (rows of later "
                            "versions skip the first link); re-fit the first link without side-info")
    return chain, warnings
