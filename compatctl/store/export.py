"""`compatctl export`: write any embedding source as Parquet, a .npy shard folder, a faiss index or
a compatctl embedding set, so an upgraded gallery goes straight back to where it is served.

The target is chosen by OUT: ``*.parquet`` → one Parquet file; ``*.faiss`` / ``*.index`` → a faiss
index (``--index FACTORY``, default ``Flat``, wrapped in ``IDMap2`` so ids survive; an index that
needs training is trained on ``--train-rows`` rows drawn with ``--seed``, stated in the result and
in the index's ``.meta.npz``); any other name → a folder, ``.npy`` shards by default
(``--to set`` for a compatctl embedding set). An existing OUT is never replaced.
"""

from __future__ import annotations

from pathlib import Path

from compatctl.errors import BadInputError
from compatctl.store.sources import FAISS_SUFFIXES, EmbeddingSource

TARGETS = ("parquet", "npy", "faiss", "set")


def target_of(out: Path, to: str | None) -> str:
    """Which format OUT asks for (``to`` must agree with a file suffix)."""
    by_suffix = "parquet" if out.suffix == ".parquet" else "faiss" if out.suffix in FAISS_SUFFIXES else None
    if to is not None and to not in TARGETS:
        raise BadInputError(f"--to {to!r}: unknown; use one of {', '.join(TARGETS)}")
    if by_suffix and to and to != by_suffix:
        raise BadInputError(f"OUT {out} ends in {out.suffix}, which names {by_suffix}, but --to says {to}; "
                            "make them agree")
    if not by_suffix and to in ("parquet", "faiss"):
        example = out.with_suffix(".parquet" if to == "parquet" else ".faiss")
        raise BadInputError(f"--to {to}: name OUT with its suffix, e.g. {example}")
    return by_suffix or to or "npy"


def refuse_existing(out: Path, target: str) -> None:
    """export never replaces: an existing OUT (or a faiss index's .meta.npz) is refused."""
    from compatctl.store.faiss_index import meta_file

    taken = [p for p in ([out] + ([meta_file(out)] if target == "faiss" else []))
             if p.is_symlink() or p.is_file() or (p.is_dir() and any(p.iterdir()))]
    if taken:
        raise BadInputError(f"{taken[0]}: already exists; export never replaces anything: choose a new OUT, "
                            "or delete it first")


def export(source: EmbeddingSource, out: Path, *, target: str, dtype: str = "float32", index: str = "Flat",
           metric: str = "ip", train_rows: int = 100_000, seed: int = 0, shard_rows: int = 1 << 20,
           block_rows: int = 65536, progress=None) -> dict:
    """Write ``source`` to ``out`` as ``target`` (a key of TARGETS); returns what was written."""
    out = Path(out)
    if dtype not in ("float32", "float16"):
        raise BadInputError(f"--dtype {dtype!r}: use float32 or float16")
    if target != "faiss" and (index != "Flat" or metric != "ip"):
        raise BadInputError("--index and --metric apply to a faiss OUT (.faiss or .index); drop them")
    if target == "faiss" and dtype != "float32":
        raise BadInputError("--dtype applies to Parquet, .npy and set outputs; a faiss index stores what its "
                            "factory says (e.g. --index SQfp16 for float16)")
    if metric not in ("ip", "l2"):
        raise BadInputError(f"--metric {metric!r}: use ip (inner product; cosine on normalised rows) or l2")
    refuse_existing(out, target)
    result = {"source": source.name, "format": source.format, "out": str(out), "target": target,
              "rows": int(source.rows), "dim": int(source.dim)}
    if target == "parquet":
        from compatctl.store.parquet import write_parquet

        write_parquet(out, source, dtype=dtype, block_rows=block_rows, progress=progress)
    elif target == "npy":
        from compatctl.store.npy_folder import write_npy_folder

        write_npy_folder(out, source, dtype=dtype, shard_rows=shard_rows, block_rows=block_rows, progress=progress)
    elif target == "faiss":
        from compatctl.store.faiss_index import write_faiss_index

        result["index"] = write_faiss_index(out, source, factory=index, metric=metric, train_rows=train_rows,
                                            seed=seed, block_rows=block_rows, progress=progress)
    else:
        _write_set(out, source, dtype=dtype, shard_rows=min(shard_rows, 1 << 20), block_rows=block_rows,
                   progress=progress)
    return result


def _write_set(out: Path, source: EmbeddingSource, *, dtype: str, shard_rows: int, block_rows: int, progress) -> None:
    from compatctl.store.columns import INT64
    from compatctl.store.embeddings import EmbeddingBlock, EmbeddingSetWriter

    header = {k: v for k, v in source.header.items() if k not in ("format_version", "kind", "resume_key", "dim",
                                                                  "dtype", "rows", "shard_rows", "shards",
                                                                  "has_labels", "has_uncertainty", "id_type",
                                                                  "label_type")}
    header["source"] = {"exported_from": source.name, "format": source.format}
    writer = EmbeddingSetWriter(out, rows=source.rows, dim=source.dim, header=header,
                                resume_key=f"export:{source.content_fingerprint()}", dtype=dtype, shard_rows=shard_rows,
                                has_labels=source.has_labels, has_uncertainty=source.has_uncertainty,
                                id_type=source.id_type, label_type=source.label_type or INT64)
    done = 0
    for index in writer.pending_shards():
        start, stop = writer.shard_bounds(index)
        block = EmbeddingBlock.concat([source.read_range(first, min(first + block_rows, stop))
                                       for first in range(start, stop, block_rows)])
        writer.write_shard(index, block)
        done += len(block)
        if progress is not None:
            progress(done, source.rows)
    writer.finish()
