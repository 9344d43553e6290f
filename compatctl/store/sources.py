"""The one embedding-source interface, and the registry that opens a path as a source.

A *source* is a table of rows (embedding, id, optional label, provenance, uncertainty) that
every command reads the same way, whatever holds it: a compatctl embedding set, an ``.npz`` /
``.safetensors`` file, a Parquet file or folder, a folder of ``.npy`` shards, a faiss index, or
an in-memory block. What a source answers:

- facts: ``path``, ``format``, ``rows``, ``dim``, ``dtype``, ``has_labels``, ``has_uncertainty``,
  ``id_type`` / ``label_type`` (``"int64"`` or ``"utf8"``), ``header`` (compatctl metadata the
  format carries, ``{}`` when none) and ``model_fingerprint``;
- ``read_range(start, stop)``: rows ``[start, stop)`` as an :class:`EmbeddingBlock` (float32
  embeddings); the one method a format must implement;
- ``iter_blocks(block_rows, part)``: rows streamed in blocks; memory is set by ``block_rows``.
  Rows are grouped in *segments* of ``segment_rows`` (a set's shards; 65,536 rows elsewhere);
  ``part=(I, N)`` streams segments ``i`` with ``i % N == I - 1`` (``--part`` workers);
- ``native_blocks(block_rows, part)``: the same blocks with the embeddings in the stored float
  dtype (float16 stays float16; possibly read-only views), for readers that convert once
  themselves (evaluation converts and normalises in one pass); formats that have nothing to
  save return ``iter_blocks``;
- ``segment_blocks(i)`` / ``column(name, segment)``: one segment, or one column (ids, labels,
  provenance, uncertainty) without the embeddings where the format allows;
- ``read_rows(ids)``: rows by id, in the order asked;
- ``checksums()`` (the format's own, or None), ``content_fingerprint()`` and ``check()``.

The registry (:data:`FORMATS`) picks the format from the path alone (suffix, folder contents),
without importing the format's library, so ``eval`` on a compatctl set never imports pyarrow
or faiss. Optional libraries are imported when a path of their format is opened, and a missing
one is one line saying which ``pip install`` fixes it.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError
from compatctl.store.blocks import EmbeddingBlock, IdIndex
from compatctl.store.columns import INT64, column_type

DEFAULT_SEGMENT_ROWS = 65536
COLUMN_ROLES = ("embedding", "id", "label", "provenance", "uncertainty", "versions")
DEFAULT_COLUMNS = {"embedding": "embedding", "id": "id", "label": "label", "provenance": "provenance",
                   "uncertainty": "uncertainty", "versions": "versions"}  # versions: backfill's per-row model


class EmbeddingSource(abc.ABC):
    """Rows of embeddings read through one interface (see the module docstring)."""

    format: str = "embeddings"
    path: Path
    rows: int
    dim: int
    dtype: str = "float32"
    has_labels: bool = False
    has_uncertainty: bool = False
    id_type: str = INT64
    label_type: str | None = None
    header: dict = {}
    model_fingerprint: str | None = None
    segment_rows: int = DEFAULT_SEGMENT_ROWS

    @abc.abstractmethod
    def read_range(self, start: int, stop: int, verify: bool = True) -> EmbeddingBlock:
        """Rows ``[start, stop)`` (0 <= start <= stop <= rows), embeddings as float32."""

    # ------------------------------------------------------------------ derived reads

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def num_segments(self) -> int:
        return max(1, -(-self.rows // self.segment_rows))

    def segment_bounds(self, index: int) -> tuple[int, int]:
        start = index * self.segment_rows
        return start, min(start + self.segment_rows, self.rows)

    def segment_blocks(self, index: int, block_rows: int = 65536, verify: bool = True) -> Iterator[EmbeddingBlock]:
        """The rows of segment ``index`` in blocks of at most ``block_rows``."""
        start, stop = self.segment_bounds(index)
        for first in range(start, stop, block_rows):
            yield self.read_range(first, min(first + block_rows, stop), verify)

    def part_segments(self, part: tuple[int, int] = (1, 1)) -> list[int]:
        index, count = part
        return [i for i in range(self.num_segments) if i % count == index - 1]

    def iter_blocks(self, block_rows: int = 65536, part: tuple[int, int] = (1, 1),
                    verify: bool = True) -> Iterator[EmbeddingBlock]:
        """Stream rows in blocks of at most ``block_rows``, segment by segment (``part``: see module doc)."""
        for index in self.part_segments(part):
            yield from self.segment_blocks(index, block_rows, verify)

    def native_blocks(self, block_rows: int = 65536, part: tuple[int, int] = (1, 1),
                      verify: bool = True) -> Iterator[EmbeddingBlock]:
        """:meth:`iter_blocks` with embeddings in the stored dtype (float16 or float32; do not modify them)."""
        return self.iter_blocks(block_rows, part, verify)

    def column(self, name: str, segment: int | None = None, verify: bool = True) -> np.ndarray | None:
        """One per-row column (``ids``, ``labels``, ``provenance``, ``uncertainty``) of the whole source
        or of one segment; None when the source has no such column."""
        blocks = self.iter_blocks(verify=verify) if segment is None else self.segment_blocks(segment, verify=verify)
        parts = [getattr(block, name) for block in blocks]
        if any(part is None for part in parts) or (not parts and name != "ids"):
            return None
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def read_all(self) -> EmbeddingBlock:
        """Every row in one block (loads the whole source into memory)."""
        return EmbeddingBlock.concat(list(self.iter_blocks(block_rows=1 << 30)))

    def read_rows(self, ids: np.ndarray, block_rows: int = 65536) -> EmbeddingBlock:
        """The rows holding ``ids``, in that order; BadInputError naming the first missing ids."""
        ids = np.asarray(ids)
        positions, found = IdIndex(self.column("ids")).locate(ids)
        if not found.all():
            missing = ids[~found]
            raise BadInputError(f"{self.name}: has no rows with ids {missing[:5].tolist()}"
                                f"{f' and {len(missing) - 5} more' if len(missing) > 5 else ''}; "
                                "ask only for ids the source holds")
        return self.read_positions(positions, block_rows)

    def read_positions(self, positions: np.ndarray, block_rows: int = 65536) -> EmbeddingBlock:
        """Rows at these row positions, in the order given (reads only the blocks that hold them)."""
        positions = np.asarray(positions, np.int64)
        if not len(positions):
            return self.read_range(0, 0).take(slice(0, 0))
        order = np.argsort(positions, kind="stable")
        ordered = positions[order]
        parts = []
        for block_index in np.unique(ordered // block_rows):
            lo, hi = np.searchsorted(ordered, [block_index * block_rows, (block_index + 1) * block_rows])
            wanted = ordered[lo:hi]
            block = self.read_range(int(wanted[0]), int(wanted[-1]) + 1)
            parts.append(block.take(wanted - wanted[0]))
        picked = EmbeddingBlock.concat(parts)
        return picked.take(np.argsort(order, kind="stable"))

    # ------------------------------------------------------------------ integrity and identity

    def files(self) -> list[Path]:
        """The files holding this source's rows (what ``content_fingerprint`` hashes by default)."""
        return [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*") if p.is_file())

    def checksums(self) -> list[str] | None:
        """The format's own per-file checksums (sha256 of a set's shards), or None when it has none."""
        return None

    def content_fingerprint(self) -> str:
        """16 hex chars naming the content: over the format's checksums, else over the files' bytes
        (one file: its sha256, as backfill lineages of single-file galleries always recorded)."""
        from compatctl.store.artifacts import file_sha256

        sums = self.checksums()
        if sums is None:
            files = self.files()
            if len(files) == 1:
                return self._with_columns(file_sha256(files[0])[:16])
            sums = [file_sha256(file) for file in files]
        facts = {"rows": int(self.rows), "dim": int(self.dim), "shards": sums}
        fingerprint = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
        return self._with_columns(fingerprint)

    def _with_columns(self, fingerprint: str) -> str:
        """Mix renamed columns (``--columns``) into a fingerprint: one file read through two mappings
        (say two embedding columns) is two contents. Default names leave the fingerprint as it was."""
        renamed = {role: name for role, name in (getattr(self, "names", None) or {}).items()
                   if DEFAULT_COLUMNS.get(role) != name}
        if not renamed:
            return fingerprint
        facts = {"content": fingerprint, "columns": renamed}
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]

    def check(self, *, quick: bool = False, progress=None) -> dict:
        """Read every row once (validating what the format can), or only the layout with ``quick``."""
        rows = 0
        if not quick:
            for block in self.iter_blocks(verify=True):
                rows += len(block)
                if progress is not None:
                    progress(rows, self.rows)
        return {"rows_checked": rows if not quick else 0,
                "checksums": "none in this format (rows read and validated)" if not quick else
                "skipped (--quick)"}

    def facts(self) -> dict:
        """Format-specific facts for ``inspect`` (files, shards, index type, ...)."""
        return {}


class HeldColumns:
    """For sources that hold their per-row columns in memory (``_ids``, ``_labels``, ``_provenance``,
    ``_uncertainty``; None when absent) and read only the embeddings from disk."""

    _ids: np.ndarray
    _labels = _provenance = _uncertainty = None

    def _block(self, embeddings: np.ndarray, start: int, stop: int) -> EmbeddingBlock:
        """Rows [start, stop): the given embeddings with their held columns."""
        pick = lambda values: None if values is None else values[start:stop]  # noqa: E731
        return EmbeddingBlock(np.asarray(embeddings, np.float32), self._ids[start:stop], pick(self._labels),
                              pick(self._provenance), pick(self._uncertainty))

    def column(self, name: str, segment: int | None = None, verify: bool = True) -> np.ndarray | None:
        values = {"ids": self._ids, "labels": self._labels, "provenance": self._provenance,
                  "uncertainty": self._uncertainty}.get(name)
        if values is None or segment is None:
            return values
        return values[slice(*self.segment_bounds(segment))]


class MemorySource(EmbeddingSource):
    """An in-memory EmbeddingBlock seen through the source interface (tests, library callers).

    ``block.embeddings`` may be float16 (a file read as stored): reads convert only the rows they return.
    """

    format = "memory"

    def __init__(self, block: EmbeddingBlock, name: str = "<memory>", header: dict | None = None):
        self.block, self.path = block, Path(name)
        self._describe_block()
        self.header = dict(header or {})
        fingerprint = self.header.get("model_fingerprint")
        self.model_fingerprint = fingerprint if isinstance(fingerprint, str) else None

    def _describe_block(self) -> None:
        block = self.block
        self.rows, self.dim = block.embeddings.shape
        self.has_labels = block.labels is not None
        self.has_uncertainty = block.uncertainty is not None
        self.id_type = column_type(block.ids)
        self.label_type = None if block.labels is None else column_type(block.labels)

    def read_range(self, start: int, stop: int, verify: bool = True) -> EmbeddingBlock:
        return _as_float32(self.block.take(slice(start, stop)))

    def iter_blocks(self, block_rows: int = 65536, part=(1, 1), verify: bool = True) -> Iterator[EmbeddingBlock]:
        for index in self.part_segments(part):
            yield from self.segment_blocks(index, block_rows)

    def native_blocks(self, block_rows: int = 65536, part=(1, 1), verify: bool = True) -> Iterator[EmbeddingBlock]:
        for index in self.part_segments(part):
            start, stop = self.segment_bounds(index)
            for first in range(start, stop, block_rows):
                yield self.block.take(slice(first, min(first + block_rows, stop)))

    def column(self, name: str, segment: int | None = None, verify: bool = True) -> np.ndarray | None:
        values = getattr(self.block, name)
        if values is None or segment is None:
            return values
        return values[slice(*self.segment_bounds(segment))]

    def read_all(self) -> EmbeddingBlock:
        return _as_float32(self.block)


def _as_float32(block: EmbeddingBlock) -> EmbeddingBlock:
    """The block with float32 embeddings (converted here when held as float16: one block at a time)."""
    if block.embeddings.dtype == np.float32:
        return block
    return dataclasses.replace(block, embeddings=block.embeddings.astype(np.float32))


def as_source(source) -> EmbeddingSource:
    """Accept an opened source or an EmbeddingBlock."""
    return MemorySource(source) if isinstance(source, EmbeddingBlock) else source


# ---------------------------------------------------------------------- --columns

def parse_columns(text: str | None) -> dict[str, str]:
    """``"embedding=vector,id=doc_id"`` -> {"embedding": "vector", "id": "doc_id"}; BadInputError if malformed."""
    if not text:
        return {}
    mapping = {}
    for item in text.split(","):
        role, sep, column = (part.strip() for part in item.partition("="))
        if not sep or not column or role not in COLUMN_ROLES:
            raise BadInputError(f"--columns {text!r}: expected ROLE=COLUMN pairs separated by commas, ROLE one of "
                                f"{', '.join(COLUMN_ROLES)} (e.g. --columns embedding=vector,id=doc_id)")
        mapping[role] = column
    return mapping


def column_names(columns: dict[str, str] | None) -> dict[str, str]:
    """The column name of every role: the defaults overridden by ``columns``."""
    return {**DEFAULT_COLUMNS, **(columns or {})}


def require_extra(module: str, extra: str, what: str):
    """Import an optional library, or BadInputError saying which pip install adds it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise BadInputError(f"{what} needs {module}, which is not installed; "
                            f"pip install 'compatctl[{extra}]' (or pip install {module})") from None


# ---------------------------------------------------------------------- the registry

@dataclasses.dataclass(frozen=True)
class Format:
    """A format compatctl reads: ``claims(path)`` decides from the path alone (no library imported),
    ``open(path, columns)`` returns the source (a format that takes columns also takes ``lenient=True``:
    see :func:`open_embeddings`'s ``shared_columns``)."""

    name: str
    description: str
    claims: Callable[[Path], bool]
    open: Callable[[Path, dict | None], EmbeddingSource]
    takes_columns: bool = False


FORMATS: list[Format] = []


def register_format(fmt: Format) -> None:
    """Add a format (later registrations are tried first, so a plug-in can claim a narrower case)."""
    FORMATS.insert(0, fmt)


def _has(path: Path, pattern: str) -> bool:
    return path.is_dir() and next(iter(path.glob(pattern)), None) is not None


def _open_set(path: Path, columns) -> EmbeddingSource:
    from compatctl.store.embeddings import EmbeddingSet

    return EmbeddingSet(path)


def _open_file(path: Path, columns) -> EmbeddingSource:
    from compatctl.store.embeddings import EmbeddingFile

    return EmbeddingFile(path)


def _open_parquet(path: Path, columns, **options) -> EmbeddingSource:
    from compatctl.store.parquet import ParquetSource

    return ParquetSource(path, columns, **options)


def _open_npy_folder(path: Path, columns, **options) -> EmbeddingSource:
    from compatctl.store.npy_folder import NpyFolderSource

    return NpyFolderSource(path, columns, **options)


def _open_faiss(path: Path, columns) -> EmbeddingSource:
    from compatctl.store.faiss_index import FaissIndexSource

    return FaissIndexSource(path)


FAISS_SUFFIXES = (".faiss", ".index")

FORMATS.extend((  # tried in this order; the first that claims the path opens it
    Format("faiss", "a faiss index file (.faiss/.index: Flat, IDMap/IDMap2 over Flat)",
           lambda p: p.is_file() and p.suffix in FAISS_SUFFIXES, _open_faiss),
    Format("file", "one .npz or .safetensors file with an 'embeddings' array",
           lambda p: p.is_file() and p.suffix in (".npz", ".safetensors"), _open_file),
    Format("parquet", "a Parquet file, or a folder of .parquet files (columns id, embedding, label)",
           lambda p: (p.is_file() and p.suffix == ".parquet") or
           (_has(p, "*.parquet") and not (p / "manifest.json").exists()), _open_parquet, takes_columns=True),
    Format("npy-folder", "a folder of .npy shards (img_emb/img_emb_0000.npy + optional metadata/*.parquet)",
           lambda p: (p / "img_emb").is_dir() or (_has(p, "*.npy") and not (p / "manifest.json").exists()),
           _open_npy_folder, takes_columns=True),
    Format("set", "a compatctl embedding-set folder (manifest.json + safetensors shards)",
           lambda p: p.is_dir(), _open_set),
))


def format_of(path: Path | str) -> Format | None:
    """The registered format that claims ``path``, or None."""
    path = Path(path)
    return next((fmt for fmt in FORMATS if fmt.claims(path)), None)


def open_embeddings(path: Path | str, columns: dict[str, str] | None = None, *,
                    shared_columns: bool = False) -> EmbeddingSource:
    """Open any embedding source compatctl reads, the format chosen by the path.

    Args:
        path: a compatctl set folder, .npz/.safetensors, .parquet file or folder, .npy shard folder,
            or faiss index file.
        columns: Parquet/metadata column names by role (``{"embedding": "vector", "id": "doc_id"}``).
        shared_columns: ``columns`` were given once for several inputs (backfill, fit-transform):
            a format without columns ignores them instead of refusing them, and a named optional
            column (label, provenance, uncertainty, versions) that this input lacks is absent
            rather than an error (see :func:`check_columns_apply` and :func:`check_named_columns`).
    """
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: not found; pass an embedding set, .npz/.safetensors, .parquet, "
                            "a folder of .npy shards or a faiss index")
    fmt = format_of(path)
    if fmt is None:
        raise BadInputError(f"{path}: unsupported embeddings file; use an embedding-set directory, .npz, "
                            ".safetensors, .parquet (file or folder), a folder of .npy shards, or a faiss index "
                            f"({', '.join(FAISS_SUFFIXES)})")
    if columns and not fmt.takes_columns and shared_columns:
        columns = None
    if columns and not fmt.takes_columns:
        raise BadInputError(f"--columns applies to Parquet tables and .npy folders' metadata, not to {path} "
                            f"({fmt.name}); drop --columns")
    source = fmt.open(path, columns, lenient=True) if columns and shared_columns else fmt.open(path, columns)
    source.format = fmt.name
    return source


def check_columns_apply(columns: dict[str, str] | None, inputs: dict[str, Path | str | None]) -> None:
    """``--columns`` given once for several inputs (``{"GALLERY": path, "--side-info": path, ...}``)
    must fit at least one of them: BadInputError naming the inputs when none has columns.

    Inputs that have columns (Parquet, .npy folders' metadata) all read them; others ignore them.
    """
    if not columns:
        return
    given = {name: Path(path) for name, path in inputs.items() if path is not None}
    formats = {name: format_of(path) for name, path in given.items() if path.exists()}
    if formats and len(formats) == len(given) and not any(fmt is not None and fmt.takes_columns
                                                          for fmt in formats.values()):
        shown = ", ".join(f"{name} {path}" for name, path in given.items())
        raise BadInputError(f"--columns applies to Parquet tables and .npy folders' metadata, and none of the "
                            f"inputs is one ({shown}); drop --columns")


def check_named_columns(columns: dict[str, str] | None, sources: dict[str, EmbeddingSource | None]) -> None:
    """After opening inputs with ``shared_columns``: every optional column ``columns`` names must be in
    at least one of ``sources`` that has columns (a typo is refused, listing the columns they have)."""
    opened = {name: source for name, source in sources.items() if hasattr(source, "missing_roles")}
    if not columns or not opened:
        return
    for role in [role for role in columns if role not in ("embedding", "id")]:  # those two: required where named
        if all(role in source.missing_roles for source in opened.values()):
            shown = "; ".join(f"{name} {source.path} (columns: {', '.join(source.column_list())})"
                              for name, source in opened.items())
            raise BadInputError(f"--columns {role}={columns[role]}: no column {columns[role]!r} in {shown}; "
                                f"name the right column, or drop {role}= from --columns")


def provenance_counts(source: EmbeddingSource) -> dict[str, int]:
    """Rows per provenance (native / transformed / backfilled), streamed (ids and provenance only where possible)."""
    from compatctl.store.embeddings import PROVENANCE

    counts = np.zeros(len(PROVENANCE), np.int64)
    provenance = source.column("provenance", verify=False)
    if provenance is None:
        counts[0] = source.rows
    else:
        counts += np.bincount(provenance, minlength=len(PROVENANCE))[: len(PROVENANCE)]
    return dict(zip(PROVENANCE, counts.tolist()))
