"""Inputs of an evaluation: embedding sources, the distance, the dims compared, prepared blocks.

A *source* is a ``compatctl.store.sources.EmbeddingSource`` (what ``compatctl.store.open_embeddings``
returns for any format) or, for library users and tests, a plain in-memory ``EmbeddingBlock``. Every
score in compatctl's evaluation is "larger is better":

- ``cosine``: the inner product of the L2-normalised (first ``dims``) embeddings;
- ``l2``: minus the squared Euclidean distance on the raw embeddings, computed as
  ``q·g − ½‖g‖²`` (the query's own norm is the same for every gallery row of its ranking,
  so dropping it changes no ranking and saves a pass).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np

from compatctl.errors import BadInputError
from compatctl.store.blocks import EmbeddingBlock, IdIndex
from compatctl.store.sources import MemorySource, as_source  # noqa: F401  (as_source: re-exported)
from compatctl.store.columns import UTF8, same_column_types

# Rank ties (equal float32 scores) are broken by the gallery id: the smaller id ranks first.
# The same rule decides top-k and every positive's rank for mAP, so the two always agree.
TIE_RULE = "equal scores: the gallery row with the smaller id ranks first (same rule for top-k and mAP)"


@dataclasses.dataclass(frozen=True)
class Distance:
    """How a distance turns embeddings into larger-is-better scores."""

    name: str
    normalize: bool
    squared_norm_bias: bool
    description: str


DISTANCES: dict[str, Distance] = {
    "cosine": Distance("cosine", True, False, "inner product of L2-normalised embeddings"),
    "l2": Distance("l2", False, True, "raw Euclidean distance, no normalisation"),
}


def get_distance(name: str) -> Distance:
    """The Distance called ``name``; BadInputError for an unknown one."""
    if name not in DISTANCES:
        raise BadInputError(f"--distance {name!r}: unknown; use one of {', '.join(DISTANCES)}")
    return DISTANCES[name]


BlockSource = MemorySource  # the in-memory source; the interface itself lives in compatctl.store.sources


def source_name(source) -> str:
    return str(getattr(source, "path", "<memory>"))


def describe_source(source) -> dict:
    """The report's record of one input: path, model fingerprint, rows, dim."""
    return {"path": source_name(source), "model_fingerprint": source.model_fingerprint,
            "rows": int(source.rows), "dim": int(source.dim)}


def require_labels(*sources) -> None:
    """Every metric compares labels: refuse a source without them, naming it."""
    for source in sources:
        if not source.has_labels:
            raise BadInputError(f"{source_name(source)}: has no labels, but top-k and mAP need a label per row; "
                                "embed a split with labels or add a 'labels' array")


def prefix_lineage(query, gallery) -> str | None:
    """Why the narrower side may be compared with the first dims of the wider one, or None.

    A BT² model's embedding set records ``compatible_dims`` (its old model's width) and its
    ``lineage``; the prefix is compatible when that width is the narrower side's and the
    narrower side's model (when known) is in the lineage.
    """
    wide, narrow = (query, gallery) if query.dim > gallery.dim else (gallery, query)
    header = getattr(wide, "header", None) or {}
    from compatctl.series import compatible_entries  # a series: v3's first d1 dims are v1's space

    for entry in compatible_entries(header) if narrow.model_fingerprint is not None else ():
        if entry["fingerprint"] == narrow.model_fingerprint and entry["dims"] == narrow.dim:
            return (f"{source_name(wide)}'s model is compatible with {source_name(narrow)}'s on its first "
                    f"{narrow.dim} dims (lineage)")
    compatible = header.get("compatible_dims")
    if not isinstance(compatible, int) or isinstance(compatible, bool) or compatible != narrow.dim:
        return None
    lineage = header.get("lineage") if isinstance(header.get("lineage"), dict) else {}
    ancestors = lineage.get("ancestors") if isinstance(lineage.get("ancestors"), list) else []
    known = {lineage.get("old_model"), *ancestors} - {None}
    if narrow.model_fingerprint is not None and known and narrow.model_fingerprint not in known:
        return None
    return f"{source_name(wide)} is a BT² set whose first {compatible} dims are compatible with {source_name(narrow)}"


def dims_for(query, gallery, dims: int | None) -> dict:
    """:func:`resolve_dims` for two sources: unequal widths need ``dims`` or BT² lineage metadata."""
    if dims is None and query.dim != gallery.dim and prefix_lineage(query, gallery) is None:
        narrow = min(query.dim, gallery.dim)
        raise BadInputError(f"{source_name(query)} has {query.dim} dims and {source_name(gallery)} {gallery.dim}: "
                            "sets of different widths are compared only with --dims N, or when the wider one "
                            "was embedded by a BT² model of the other's model; pass --dims "
                            f"{narrow} if their first {narrow} dims live in one space")
    return resolve_dims(query.dim, gallery.dim, dims, lineage=prefix_lineage(query, gallery))


def resolve_dims(query_dim: int, gallery_dim: int, dims: int | None, lineage: str | None = None) -> dict:
    """Which leading dims are compared, and why (the report's ``dims`` entry).

    Without ``dims``, a wider side (BT² appends extra dims after the old ones) is cut to the
    first min(D) dims; ``lineage`` says why that is right (see :func:`dims_for`). ``dims``
    forces N leading dims; it must not exceed either side.
    """
    narrow = min(query_dim, gallery_dim)
    if dims is not None:
        if not 1 <= dims <= narrow:
            raise BadInputError(f"--dims {dims}: query has {query_dim} dims and gallery {gallery_dim}; "
                                f"choose 1..{narrow}")
        used, note = dims, f"forced by --dims: first {dims} dims of both sides"
    elif query_dim != gallery_dim:
        used, note = narrow, (f"query has {query_dim} dims, gallery {gallery_dim}: "
                              f"compared the first {narrow} dims of both" + (f" ({lineage})" if lineage else ""))
    else:
        used, note = narrow, "all dims"
    return {"query": int(query_dim), "gallery": int(gallery_dim), "used": int(used),
            "truncated": used < max(query_dim, gallery_dim), "note": note}


@dataclasses.dataclass
class Prepared:
    """A block ready for scoring: ``scores = queries.matrix @ gallery.matrix.T + gallery.bias``."""

    matrix: np.ndarray          # float32 [n, dims], C-contiguous
    ids: np.ndarray             # int64 [n]
    labels: np.ndarray | None   # int64 [n]
    bias: np.ndarray | None = None  # float32 [n]: −½‖g‖² for l2 galleries
    _groups: tuple | None = None

    def label_groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(classes sorted, start of each class in ``by_label``, ``by_label`` = rows sorted by label)."""
        if self._groups is None:
            by_label = np.argsort(self.labels, kind="stable")
            classes, starts = np.unique(self.labels[by_label], return_index=True)
            self._groups = (classes, np.append(starts, len(by_label)), by_label)
        return self._groups


_CONVERT_ROWS = 4096  # rows converted, checked and normalised together: the chunk stays in cache


def prepare(block: EmbeddingBlock, dims: int, distance: Distance, *, gallery: bool, name: str = "") -> Prepared:
    """Cut to the first ``dims`` dims, normalise for cosine, add the l2 bias for a gallery block.

    ``block.embeddings`` may be float16 (``native_blocks``): it is converted to float32 once,
    chunk by chunk, each chunk checked and normalised while it is in cache. A float32 block is
    used as it is when nothing changes it (l2), else copied once. Scores are the same bits
    either way (each row's norm is the same float32 reduction).

    Raises:
        BadInputError: a row holds NaN or Inf (``name`` is the source named in the message).
    """
    stored = block.embeddings[:, :dims]
    rows = len(stored)
    if stored.dtype == np.float32 and stored.flags.c_contiguous and not distance.normalize:
        matrix = stored  # read only below
    else:
        matrix = np.empty((rows, dims), np.float32)  # the one conversion/copy
    squares = np.empty(rows, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):  # a row with NaN/Inf is refused just below
        for first in range(0, rows, _CONVERT_ROWS):
            chunk = matrix[first:first + _CONVERT_ROWS]
            if matrix is not stored:
                np.copyto(chunk, stored[first:first + _CONVERT_ROWS], casting="unsafe")
            np.einsum("ij,ij->i", chunk, chunk, dtype=np.float32, out=squares[first:first + len(chunk)])
            if distance.normalize:
                chunk /= np.maximum(np.sqrt(squares[first:first + len(chunk)]), np.float32(1e-30))[:, None]
    # A NaN or Inf makes its row's sum of squares non-finite (so can a huge finite value: look closer there).
    suspects = np.flatnonzero(~np.isfinite(squares))
    if len(suspects):
        bad = suspects[~np.isfinite(np.asarray(stored[suspects], np.float32)).all(axis=1)]
        if len(bad):
            raise BadInputError(f"{name or 'embeddings'}: {len(bad)} rows hold NaN or Inf, first ids "
                                f"{block.ids[bad][:5].tolist()}; drop or re-embed them")
    bias = None
    if gallery and distance.squared_norm_bias:
        bias = np.float32(-0.5) * squares
    labels = None if block.labels is None else np.asarray(block.labels, np.int64)
    return Prepared(matrix, np.asarray(block.ids, np.int64), labels, bias)


def stored_blocks(source, block_rows: int) -> Iterator[EmbeddingBlock]:
    """A source's blocks with embeddings as stored (float16 too), for :func:`prepare` to convert once."""
    native = getattr(source, "native_blocks", None)
    return native(block_rows) if native is not None else source.iter_blocks(block_rows)


def score(queries: Prepared, gallery: Prepared) -> np.ndarray:
    """float32 [q, g] larger-is-better scores (one GEMM)."""
    scores = queries.matrix @ gallery.matrix.T
    if gallery.bias is not None:
        scores += gallery.bias[None, :]
    return scores


def exclude_self(scores: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out by id: set each query's own gallery row to −inf; returns (query rows, gallery cols)."""
    if len(gallery_ids) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    positions, found = IdIndex(gallery_ids).locate(query_ids)
    rows = np.flatnonzero(found)
    cols = positions[rows]
    scores[rows, cols] = -np.inf
    return rows, cols


class Gallery:
    """A gallery source prepared block by block; held in memory when small, else re-streamed.

    Blocks are cached when the prepared gallery takes at most ``cache_bytes``; otherwise every
    pass reads the source again, so memory stays set by ``block_rows``.
    """

    def __init__(self, source, dims: int, distance: Distance, block_rows: int, cache_bytes: int = 256 << 20):
        self.source, self.dims, self.distance, self.block_rows = source, dims, distance, block_rows
        self.rows = int(source.rows)
        self._cache = [] if self.rows * dims * 4 <= cache_bytes else None
        if self._cache is not None:
            self._cache = list(self._read())
        self.kept = self._cache is not None

    def _read(self) -> Iterator[tuple[int, Prepared]]:
        start = 0
        for block in stored_blocks(self.source, self.block_rows):
            yield start, prepare(block, self.dims, self.distance, gallery=True, name=source_name(self.source))
            start += len(block)

    def blocks(self) -> Iterator[tuple[int, Prepared]]:
        """(first row index, prepared block) in gallery row order."""
        return iter(self._cache) if self._cache is not None else self._read()


def query_blocks(source, dims: int, distance: Distance, block_rows: int) -> Iterator[Prepared]:
    """The query source, prepared block by block."""
    for block in stored_blocks(source, block_rows):
        yield prepare(block, dims, distance, gallery=False, name=source_name(source))


ProgressFn = Callable[[str, int, int], None]


def report_progress(progress: ProgressFn | None, description: str, done: int, total: int) -> None:
    """Call the caller's progress callback (description, done, total) if there is one."""
    if progress is not None:
        progress(description, done, total)


def _column_kind(source, name: str) -> str | None:
    if name == "labels" and not source.has_labels:
        return None
    kind = getattr(source, "id_type" if name == "ids" else "label_type", None)
    return kind or "int64"


def _column_values(source, name: str) -> np.ndarray:
    """All ``ids`` or ``labels`` of a source, without its embeddings where the format allows."""
    return source.column(name, verify=True)


column_values = _column_values


class CodedSource:
    """A source whose text ids/labels are seen as int64 codes: positions in vocabularies sorted
    over every source of one evaluation, so matching, ties (smaller id first) and orders are the
    same as on the text itself."""

    def __init__(self, source, vocabularies: dict[str, np.ndarray]):
        self._source, self._vocabularies = source, vocabularies

    def __getattr__(self, name):
        return getattr(self._source, name)

    def _code(self, block: EmbeddingBlock) -> EmbeddingBlock:
        coded = {name: np.searchsorted(vocab, getattr(block, name)).astype(np.int64)
                 for name, vocab in self._vocabularies.items() if getattr(block, name) is not None}
        return dataclasses.replace(block, **coded)

    def iter_blocks(self, block_rows: int = 65536, part=(1, 1), verify: bool = True) -> Iterator[EmbeddingBlock]:
        for block in self._source.iter_blocks(block_rows, part=part, verify=verify):
            yield self._code(block)

    def native_blocks(self, block_rows: int = 65536, part=(1, 1), verify: bool = True) -> Iterator[EmbeddingBlock]:
        native = getattr(self._source, "native_blocks", self._source.iter_blocks)
        for block in native(block_rows, part=part, verify=verify):
            yield self._code(block)

    def read_all(self) -> EmbeddingBlock:
        return self._code(self._source.read_all())

    def read_range(self, start: int, stop: int, verify: bool = True) -> EmbeddingBlock:
        return self._code(self._source.read_range(start, stop, verify))

    def segment_blocks(self, index: int, block_rows: int = 65536, verify: bool = True) -> Iterator[EmbeddingBlock]:
        for block in self._source.segment_blocks(index, block_rows, verify):
            yield self._code(block)

    def column(self, name: str, segment: int | None = None, verify: bool = True) -> np.ndarray | None:
        values = self._source.column(name, segment, verify)
        if values is None or name not in self._vocabularies:
            return values
        return np.searchsorted(self._vocabularies[name], values).astype(np.int64)


def decode_column(source, name: str, codes: np.ndarray) -> np.ndarray:
    """Stored ``ids``/``labels`` values of codes seen through a CodedSource (other sources: as they are)."""
    vocabularies = getattr(source, "_vocabularies", None) if isinstance(source, CodedSource) else None
    if vocabularies and name in vocabularies:
        return vocabularies[name][codes]
    return codes


def code_values(source, name: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, known) of stored ``ids``/``labels`` values as ``source`` sees them (the reverse of decode_column)."""
    vocabularies = getattr(source, "_vocabularies", None) if isinstance(source, CodedSource) else None
    if not (vocabularies and name in vocabularies):
        return values.astype(np.int64), np.ones(len(values), bool)
    vocabulary = vocabularies[name]
    codes = np.minimum(np.searchsorted(vocabulary, values), max(len(vocabulary) - 1, 0))
    known = vocabulary[codes] == values if len(vocabulary) else np.zeros(len(values), bool)
    return codes.astype(np.int64), known


def unify_columns(*sources):
    """The sources, with text ids and labels replaced by codes shared by all of them.

    Integer columns pass through untouched. Raises BadInputError when one source has text ids
    (or labels) and another integers: they could never match.
    """
    vocabularies = {}
    for name in ("ids", "labels"):
        kinds = {source_name(s): _column_kind(s, name) for s in sources if _column_kind(s, name)}
        same_column_types(name, {who: np.zeros(0, "U1" if kind == UTF8 else np.int64) for who, kind in kinds.items()})
        if UTF8 in kinds.values():
            vocabularies[name] = np.unique(np.concatenate([_column_values(s, name) for s in sources
                                                           if _column_kind(s, name)]))
    if not vocabularies:
        return sources
    return tuple(CodedSource(source, vocabularies) for source in sources)
