"""Fuzzing every reader of files users bring or damage: success or a clean CompatctlError, nothing else.

Mutated manifests, shards, .npz files, safetensors headers and artifact metadata go through the
library functions the CLI calls (``open_embeddings`` + a full read, ``describe``, ``read_header``).
The default suite runs a few hundred generated files; ``-m slow`` runs over 10,000.
"""

from __future__ import annotations

import hashlib
import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compatctl.errors import CompatctlError
from compatctl.store import EmbeddingBlock, fingerprint_arrays, open_embeddings, read_header, write_embedding_set
from compatctl.store.describe import describe

FAST, SLOW = 60, 2100  # examples per reader: 5 readers -> 300 files by default, 10,500 with -m slow
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=12)
byte_edits = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6)


def save_artifact(path: Path, tensors: dict, kind: str, meta: dict) -> None:
    """store.save_artifact's bytes, written without its fsync (thousands of files)."""
    from safetensors.numpy import save

    header = {"format_version": 1, "kind": kind, "fingerprint": fingerprint_arrays(tensors), **meta}
    path.write_bytes(save(tensors, metadata={"compatctl": json.dumps(header)}))


def read_everything(path: Path) -> None:
    """What the CLI does with an input: open it, stream every row, describe it."""
    try:
        source = open_embeddings(path)
        for block in source.iter_blocks(block_rows=7):
            assert len(block.embeddings) == len(block.ids)
        describe(path)
    except CompatctlError:
        pass


_TEMPLATES: dict[bool, dict[str, bytes]] = {}


def _set(root: Path, text_ids: bool) -> Path:
    """A valid 3-shard set in ``root/set``: written once per id type, then copied (no fsync per example)."""
    if text_ids not in _TEMPLATES:
        rng = np.random.default_rng(0)
        ids = np.array([f"id-{i}" for i in range(20)]) if text_ids else np.arange(20)
        block = EmbeddingBlock(rng.normal(size=(20, 3)).astype(np.float32), ids, np.arange(20) % 4,
                               uncertainty=rng.random(20).astype(np.float32))
        with tempfile.TemporaryDirectory() as tmp:
            write_embedding_set(Path(tmp) / "set", block, header={"model_fingerprint": "f" * 16}, shard_rows=8)
            _TEMPLATES[text_ids] = {p.name: p.read_bytes() for p in (Path(tmp) / "set").iterdir()}
    (root / "set").mkdir()
    for name, data in _TEMPLATES[text_ids].items():
        (root / "set" / name).write_bytes(data)
    return root / "set"


def _mutate_json(record, path: list, value):
    """Set (or delete, when value is the string '<del>') the item at ``path`` inside ``record``."""
    target = record
    for step in path[:-1]:
        if isinstance(target, dict) and target:
            target = target[sorted(target)[step % len(target)]]
        elif isinstance(target, list) and target:
            target = target[step % len(target)]
    if isinstance(target, dict) and target:
        key = sorted(target)[path[-1] % len(target)]
        target.pop(key) if value == "<del>" else target.__setitem__(key, value)
    elif isinstance(target, list) and target:
        target[path[-1] % len(target)] = value
    return record


def _flip(data: bytes, edits, start: int = 0) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[start + position % max(1, len(out) - start)] = value
    return bytes(out)


def _check_manifest(path, value, text_ids):
    with tempfile.TemporaryDirectory() as tmp:
        folder = _set(Path(tmp), text_ids)
        record = _mutate_json(json.loads((folder / "manifest.json").read_text()), *value)
        (folder / "manifest.json").write_text(json.dumps(record))
        read_everything(folder)


def _check_shard(edits, text_ids, fix_checksum):
    with tempfile.TemporaryDirectory() as tmp:
        folder = _set(Path(tmp), text_ids)
        shard = folder / "shard-00001.safetensors"
        data = _flip(shard.read_bytes(), edits)
        shard.write_bytes(data)
        if fix_checksum:  # a well-formed lie: only the content checks stand between it and the user
            record = json.loads((folder / "manifest.json").read_text())
            record["shards"][1].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
            (folder / "manifest.json").write_text(json.dumps(record))
        read_everything(folder)


def _check_npz(arrays, edits):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "byo.npz"
        np.savez(path, **arrays)
        if edits:
            path.write_bytes(_flip(path.read_bytes(), edits))
        read_everything(path)


def _check_safetensors_header(metadata, edits):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "byo.safetensors"
        rng = np.random.default_rng(1)
        save_artifact(path, {"embeddings": rng.normal(size=(6, 3)).astype(np.float32),
                             "labels": np.arange(6)}, "embeddings", metadata)
        data = path.read_bytes()
        if edits:
            header_length = struct.unpack("<Q", data[:8])[0]
            data = _flip(data[: 8 + header_length], edits, start=8) + data[8 + header_length:]
        path.write_bytes(data)
        read_everything(path)


def _check_artifact(kind, metadata):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "artifact.safetensors"
        save_artifact(path, {"old.weight": np.zeros((4, 6), np.float32), "w": np.zeros((6, 5), np.float32)},
                      kind, metadata)
        try:
            read_header(path)
            describe(path)
        except CompatctlError:
            pass


manifest_edits = st.tuples(st.lists(st.integers(0, 50), min_size=1, max_size=4), json_values | st.just("<del>"))
arrays = st.dictionaries(
    st.sampled_from(["embeddings", "ids", "labels", "uncertainty", "provenance", "ids_utf8"]),
    st.one_of(
        st.builds(lambda shape, dtype: np.zeros(shape, dtype), st.lists(st.integers(0, 5), max_size=3),
                  st.sampled_from(["float32", "float64", "int64", "uint64", "bool", "complex64", "U3", "S2", "uint8",
                                   "datetime64[D]"])),
        st.builds(lambda values: np.array(values), st.lists(st.floats() | st.integers(-2**63, 2**63 - 1),
                                                            max_size=6))),
    max_size=5)
artifact_meta = st.dictionaries(st.sampled_from(["spec", "normalization", "old_dim", "new_dim", "side_info_dim",
                                                 "image_shape", "config", "lineage"]), json_values, max_size=4)
spec_meta = st.fixed_dictionaries({"spec": st.fixed_dictionaries(
    {"arch": st.sampled_from(["tiny_cnn", 3]), "embedding_dim": st.integers(-2, 2**40) | json_values,
     "num_classes": st.integers(-2, 2**40), "in_channels": st.integers(0, 4)})}, optional={
    "normalization": json_values, "image_shape": json_values})


def run(examples: int):
    common = dict(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    return [
        settings(**common)(given(manifest_edits, st.booleans())(lambda value, text: _check_manifest(None, value, text))),
        settings(**common)(given(byte_edits, st.booleans(), st.booleans())(_check_shard)),
        settings(**common)(given(arrays, st.none() | byte_edits)(_check_npz)),
        settings(**common)(given(artifact_meta, st.none() | byte_edits)(_check_safetensors_header)),
        settings(**common)(given(st.sampled_from(["model", "transform"]), artifact_meta | spec_meta)(_check_artifact)),
    ]


@pytest.mark.parametrize("reader", range(5), ids=["manifest", "shard", "npz", "safetensors-header", "artifact"])
def test_readers_fail_cleanly(reader):
    run(FAST)[reader]()


@pytest.mark.slow
@pytest.mark.parametrize("reader", range(5), ids=["manifest", "shard", "npz", "safetensors-header", "artifact"])
def test_readers_fail_cleanly_10k(reader):
    run(SLOW)[reader]()
