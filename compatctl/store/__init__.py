"""Artifacts on disk: safetensors models/transforms, sharded embedding sets, and every embedding
format compatctl reads through one source interface (``compatctl.store.sources``)."""

from compatctl.store.artifacts import (FORMAT_VERSION, atomic_write_bytes, atomic_write_json, expect_kind,
                                       fingerprint_arrays, load_arrays, read_header, save_artifact)
from compatctl.store.blocks import EmbeddingBlock, IdIndex
from compatctl.store.embeddings import (PROVENANCE, EmbeddingFile, EmbeddingSet, EmbeddingSetWriter, check_rows,
                                        parse_part, write_embedding_set)
from compatctl.store.sources import (FORMATS, EmbeddingSource, MemorySource, as_source, open_embeddings,
                                     parse_columns, provenance_counts)

__all__ = [
    "FORMATS", "FORMAT_VERSION", "PROVENANCE", "EmbeddingBlock", "EmbeddingFile", "EmbeddingSet", "EmbeddingSetWriter",
    "EmbeddingSource", "IdIndex", "MemorySource", "as_source", "atomic_write_bytes", "atomic_write_json", "check_rows",
    "expect_kind", "fingerprint_arrays", "load_arrays", "open_embeddings", "parse_columns", "parse_part",
    "provenance_counts", "read_header", "save_artifact", "write_embedding_set",
]
