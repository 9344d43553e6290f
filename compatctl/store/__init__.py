"""Artifacts on disk: safetensors models/transforms and sharded embedding sets."""

from compatctl.store.artifacts import (FORMAT_VERSION, atomic_write_bytes, atomic_write_json, expect_kind,
                                       fingerprint_arrays, load_arrays, read_header, save_artifact)
from compatctl.store.embeddings import (PROVENANCE, EmbeddingBlock, IdIndex, EmbeddingFile, EmbeddingSet,
                                        EmbeddingSetWriter, check_rows, open_embeddings, parse_part,
                                        provenance_counts, write_embedding_set)

__all__ = [
    "FORMAT_VERSION", "PROVENANCE", "EmbeddingBlock", "EmbeddingFile", "EmbeddingSet", "EmbeddingSetWriter", "IdIndex",
    "atomic_write_bytes", "atomic_write_json", "check_rows", "expect_kind", "fingerprint_arrays",
    "load_arrays", "open_embeddings", "parse_part", "provenance_counts", "read_header", "save_artifact",
    "write_embedding_set",
]
