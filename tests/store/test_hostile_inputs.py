"""Bad bring-your-own files, damaged sets and hostile artifacts through the CLI (issue 12, classes 4-6).

Every case: exit 2, exactly one ``error:`` line that names the file (or key) and the fix, no
traceback, and every input file byte-identical afterwards.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save, save_file

from compatctl.cli import app
from compatctl.store import EmbeddingBlock, save_artifact, write_embedding_set

RNG = np.random.default_rng(0)
E = RNG.normal(size=(12, 4)).astype(np.float32)
LABELS = np.arange(12) % 3


def npz(**arrays):
    def build(tmp: Path) -> Path:
        path = tmp / "byo.npz"
        np.savez(path, **arrays)  # np.savez pickles object arrays: the reader must refuse them
        return path
    return build


def byo(**changes):
    return npz(**{"embeddings": E, "labels": LABELS, **changes})


def safetensors_file(tensors: dict, metadata: dict | None = None):
    def build(tmp: Path) -> Path:
        path = tmp / "byo.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        return path
    return build


def raw(name: str, data: bytes):
    def build(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name
    return build


def a_set(tmp: Path, name: str = "set", **block) -> Path:
    path = tmp / name
    write_embedding_set(path, EmbeddingBlock(E, np.arange(12), LABELS, **block), header={}, shard_rows=5)
    return path


def manifest(change):
    """A valid set whose manifest is then edited by ``change(dict) -> dict | str``."""
    def build(tmp: Path) -> Path:
        path = a_set(tmp)
        record = json.loads((path / "manifest.json").read_text())
        edited = change(record)
        text = edited if isinstance(edited, str) else json.dumps(record if edited is None else edited)
        (path / "manifest.json").write_text(text)
        return path
    return build


def edit(**keys):
    return manifest(lambda record: record.update(keys))


def shard_tensors(change):
    """Rewrite shard 1 with other tensors and record its new size and sha256 (a well-formed lie)."""
    def build(tmp: Path) -> Path:
        import hashlib

        path = a_set(tmp)
        shard = path / "shard-00001.safetensors"
        tensors = load_file(str(shard))
        data = save(change(tensors))
        shard.write_bytes(data)
        record = json.loads((path / "manifest.json").read_text())
        record["shards"][1].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        (path / "manifest.json").write_text(json.dumps(record))
        return path
    return build


def flipped(tmp: Path) -> Path:
    path = a_set(tmp)
    shard = path / "shard-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x01
    shard.write_bytes(bytes(data))
    return path


def model(change):
    """A real tiny model checkpoint whose header is then edited by ``change(header)``."""
    def build(tmp: Path) -> Path:
        import torch

        from compatctl.models import ModelSpec, build_model, save_model

        torch.manual_seed(0)
        path = tmp / "model.safetensors"
        save_model(path, build_model(ModelSpec("tiny_cnn", 6, 4)), config={}, lineage={},
                   normalization={"mean": [0.5] * 3, "std": [0.25] * 3}, image_shape=(16, 16, 3))
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            header = json.loads(handle.metadata()["compatctl"])
        change(header)
        save_file(tensors, str(path), metadata={"compatctl": json.dumps(header)})
        return path
    return build


def spec(**keys):
    return model(lambda header: header["spec"].update(keys))


def header(**keys):
    return model(lambda header: header.update(keys))


def transform(**keys):
    def build(tmp: Path) -> Path:
        path = tmp / "h.safetensors"
        meta = {"transform_kind": "linear", "old_dim": 4, "new_dim": 6, "side_info_dim": 0, **keys}
        save_artifact(path, {"old.weight": np.zeros((4, 6), np.float32), "bias": np.zeros(6, np.float32)},
                      "transform", meta)
        return path
    return build


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def images(kind: str):
    """An image-folder DATA with one bad image; embedded with a real model."""
    def build(tmp: Path) -> Path:
        from PIL import Image

        root = tmp / "data"
        for split in ("train", "test"):
            for label in ("a", "b"):
                (root / split / label).mkdir(parents=True)
                for i in range(2):
                    Image.new("RGB", (16, 16), (i * 40, 90, 10)).save(root / split / label / f"{i}.png")
        bad = io.BytesIO()
        if kind == "bomb":
            Image.new("L", (9000, 9000)).save(bad, "PNG")
        else:
            Image.new("RGB", (16, 16)).save(bad, "PNG")
        (root / "test" / "a" / "bad.png").write_bytes(bad.getvalue() if kind == "bomb" else bad.getvalue()[:40])
        model(lambda header: None)(tmp)
        return root
    return build


EVAL = ["eval", "{p}", "{p}"]
INSPECT = ["inspect", "{p}"]
EMBED = ["embed", "{p}", "builtin:classes=4,train=8,test=8,size=16", "--out", "{tmp}/emb", "--device", "cpu"]
EMBED_DATA = ["embed", "{tmp}/model.safetensors", "{p}", "--out", "{tmp}/emb", "--device", "cpu"]
FIT = ["fit-transform", "{p}", "{p}", "--out", "{tmp}/t.safetensors", "kind=linear"]

CASES = [
    # class 5: bring-your-own files (the reason, then the fix)
    ("float ids", byo(ids=np.arange(12.0)), EVAL, "'ids' is floating-point (float64) (integral values)"),
    ("fractional ids", byo(ids=np.arange(12) + 0.5), EVAL, "'ids' is floating-point"),
    ("NaN labels", byo(labels=np.where(LABELS == 1, np.nan, LABELS)), EVAL, "with 4 NaN/Inf"),
    ("float labels", byo(labels=LABELS.astype(float)), EVAL, "'labels' is floating-point"),
    ("bool labels", byo(labels=LABELS == 1), EVAL, "'labels' is boolean"),
    ("datetime labels", byo(labels=np.array(["2020-01-01"] * 12, "datetime64[D]")), EVAL, "'labels' is datetime"),
    ("bool ids", byo(ids=np.arange(12) % 2 == 0), EVAL, "'ids' is boolean"),
    ("complex embeddings", byo(embeddings=E + 1j), EVAL, "complex (the imaginary part would be lost)"),
    ("bool embeddings", byo(embeddings=E > 0), EVAL, "'embeddings' is bool, boolean"),
    ("text embeddings", byo(embeddings=E.astype(str)), EVAL, "not numeric"),
    ("object embeddings", byo(embeddings=np.array(list(E), dtype=object)), EVAL, "cannot read as .npz"),
    ("object ids", byo(ids=np.array(list(range(12)), dtype=object)), EVAL, "cannot read as .npz"),
    ("zero rows", byo(embeddings=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64)), EVAL, "no rows"),
    ("zero dims", byo(embeddings=np.zeros((12, 0), np.float32)), EVAL, "no dims"),
    ("1-D embeddings", byo(embeddings=E[:, 0]), EVAL, "must be 2-D"),
    ("3-D embeddings", byo(embeddings=E[:, :, None]), EVAL, "must be 2-D"),
    ("2-D ids", byo(ids=np.arange(12).reshape(6, 2)), EVAL, "'ids' must be 1-D"),
    ("short ids", byo(ids=np.arange(5)), EVAL, "'ids' has shape (5,) but there are 12"),
    ("short labels", byo(labels=LABELS[:5]), EVAL, "give one label per row"),
    ("duplicate text ids", byo(ids=np.array(["a", "b"] * 6)), EVAL, "'ids' has duplicates"),
    ("empty text id", byo(ids=np.array([""] + [f"x{i}" for i in range(11)])), EVAL, "empty strings"),
    ("huge text id", byo(ids=np.array(["x" * 2000] + [f"x{i}" for i in range(11)])), EVAL, "2000 UTF-8 bytes"),
    ("non-UTF-8 ids", byo(ids=np.array([b"\xff\xfe%d" % i for i in range(12)])), EVAL, "not UTF-8"),
    ("uint64 ids", byo(ids=np.arange(12, dtype=np.uint64) + np.uint64(2**63)), EVAL, "above 2^63-1"),
    ("NaN embedding", byo(embeddings=np.where(np.eye(12, 4) > 0, np.nan, E)), EVAL, "rows hold NaN or Inf"),
    ("Inf uncertainty", byo(uncertainty=np.full(12, np.inf, np.float32)), EVAL, "'uncertainty' must be 12 finite"),
    ("bad provenance", byo(provenance=np.full(12, 7, np.uint8)), EVAL, "'provenance' must hold 0"),
    ("no embeddings key", npz(vectors=E), EVAL, "no 'embeddings' array (found: vectors)"),
    ("not a zip", raw("byo.npz", b"PK\x03\x04 not really"), EVAL, "cannot read as .npz"),
    ("text vs int ids", byo(ids=np.array([f"d{i}" for i in range(12)])), ["eval", "{p}", "{tmp}/int.npz"],
     "never match"),
    ("unrelated widths", byo(), ["eval", "{p}", "{tmp}/wide.npz"], "pass --dims 4"),
    ("text vs int ids (fit)", byo(ids=np.array([f"d{i}" for i in range(12)])),
     ["fit-transform", "{p}", "{tmp}/int.npz", "--out", "{tmp}/t.safetensors"], "integer ids"),
    ("bad utf8 column", safetensors_file({"embeddings": E, "ids_utf8": np.full((12, 2), 0xFF, np.uint8)}), EVAL,
     "not valid UTF-8"),
    ("complex via fit", byo(embeddings=E + 1j), FIT, "complex"),
    # class 6: hostile artifacts
    ("garbage safetensors", raw("byo.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{{{{{{{{"), EVAL,
     "not a readable safetensors file"),
    ("deep metadata", safetensors_file({"embeddings": E}, {"compatctl": deep(100_000)}), EVAL,
     "nested deeper than 64"),
    ("metadata list", safetensors_file({"embeddings": E}, {"compatctl": "[1, 2]"}), EVAL, "must be a JSON object"),
    ("metadata not JSON", safetensors_file({"embeddings": E}, {"compatctl": "{nope"}), EVAL, "not valid JSON"),
    ("model: terabyte classifier", spec(num_classes=1 << 20, embedding_dim=1 << 15), INSPECT, "spec claims"),
    ("model: classes outside range", spec(num_classes=10**12), INSPECT, "'num_classes' = 1000000000000 is outside"),
    ("model: dim not a number", spec(embedding_dim="abc"), INSPECT, "'embedding_dim' must be a whole number"),
    ("model: normalization string", header(normalization="imagenet"), INSPECT, "'normalization' must be an object"),
    ("model: std zero", header(normalization={"mean": [0, 0, 0], "std": [0, 1, 1]}), INSPECT,
     "'normalization.std' must be positive"),
    ("model: mean short", header(normalization={"mean": [0], "std": [1, 1, 1]}), INSPECT,
     "'normalization.mean' must be a list of 3 finite numbers"),
    ("model: huge image", header(image_shape=[10**6, 10**6, 3]), INSPECT, "'image_shape' must be"),
    ("model via embed", header(normalization={"mean": "x"}), EMBED, "'normalization.mean'"),
    ("model: deep config", header(config=json.loads(deep(60)) and {"a": json.loads(deep(70))}), INSPECT,
     "nested deeper"),
    ("transform: huge dim", transform(new_dim=10**9), INSPECT, "'new_dim' = 1000000000 is outside"),
    ("transform: dim lies", transform(new_dim=4096), INSPECT, "'new_dim' = 4096 matches no stored tensor"),
    ("transform via backfill", transform(old_dim=-1),
     ["backfill", "{tmp}/int.npz", "--transform", "{p}", "--out", "{tmp}/g"], "'old_dim' = -1 is outside"),
    ("decompression bomb", images("bomb"), EMBED_DATA, "decompression bomb"),
    ("truncated image", images("truncated"), EMBED_DATA, "bad.png: image fails to decode"),
    # class 4: integrity of embedding sets
    ("manifest without dim", manifest(lambda r: r.pop("dim") and None), EVAL, "'dim' is missing"),
    ("dim not a number", edit(dim="4"), EVAL, "'dim' must be a whole number"),
    ("rows claimed > held", edit(rows=13), EVAL, "'rows' = 13 but its shards hold 12 rows"),
    ("terabyte rows", edit(rows=10**15), EVAL, "'rows' = 1000000000000000 is outside"),
    ("shards not a list", edit(shards={"a": 1}), INSPECT, "'shards' must be a list"),
    ("shard path traversal", manifest(lambda r: r["shards"][0].update(file="../../etc/passwd")), INSPECT,
     "is not a shard-NNNNN.safetensors name"),
    ("bad checksum text", manifest(lambda r: r["shards"][0].update(sha256="abc")), INSPECT, "'sha256' is not 64 hex"),
    ("has_labels yes", edit(has_labels="yes"), INSPECT, "'has_labels' must be true or false"),
    ("dtype int8", edit(dtype="int8"), INSPECT, "'dtype' \"int8\" is not one of float32, float16"),
    ("id_type pickle", edit(id_type="pickle"), INSPECT, "'id_type' \"pickle\" is not int64 or utf8"),
    ("shard rows uneven", manifest(lambda r: r["shards"][0].update(rows=4) or r["shards"][2].update(rows=3)),
     INSPECT, "every shard but the last must hold shard_rows"),
    ("deep manifest", manifest(lambda r: deep(5000)), INSPECT, "nested deeper"),
    ("manifest not JSON", manifest(lambda r: "{"), INSPECT, "not valid JSON"),
    ("manifest a list", manifest(lambda r: "[]"), INSPECT, "must be a JSON object"),
    ("flipped shard", flipped, INSPECT, "shard-00002.safetensors: checksum mismatch"),
    ("flipped shard (eval)", flipped, EVAL, "shard-00002.safetensors: checksum mismatch"),
    ("shard ids float", shard_tensors(lambda t: {**t, "ids": t["ids"].astype(np.float64)}), INSPECT,
     "shard-00001.safetensors: tensor 'ids'"),
    ("shard labels missing", shard_tensors(lambda t: {k: v for k, v in t.items() if k != "labels"}), INSPECT,
     "tensor 'labels' is missing"),
    ("shard 3-D embeddings", shard_tensors(lambda t: {**t, "embeddings": t["embeddings"][:, :, None]}), INSPECT,
     "shards of one set must share a dim"),
]


def _prepare(tmp: Path, build) -> tuple[Path, dict[Path, bytes]]:
    np.savez(tmp / "int.npz", embeddings=E, ids=np.arange(12), labels=LABELS)
    np.savez(tmp / "wide.npz", embeddings=np.ones((12, 7), np.float32), labels=LABELS)
    path = build(tmp)
    files = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}
    return path, files


@pytest.mark.parametrize("name, build, command, fragment", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_clean_line(runner, tmp_path, monkeypatch, name, build, command, fragment):
    monkeypatch.setenv("COMPATCTL_CACHE_DIR", str(tmp_path / "cache"))
    path, before = _prepare(tmp_path, build)
    args = [part.format(p=path, tmp=tmp_path) for part in command]
    result = runner.invoke(app, args)
    output = result.output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, output
    assert "Traceback" not in output and len(errors) == 1, output
    line = " ".join(output.split())
    assert fragment in line, output
    assert path.name in line or "--dims" in line or "ids" in line, output  # names the file (or the clash)
    assert any(word in line for word in ("re-", "store", "give", "use", "pass", "drop", "remove", "convert",
                                         "save", "fix", "embed")), output  # and says what to do
    assert {p: p.read_bytes() for p in before} == before  # inputs untouched


def test_case_count():
    assert len(CASES) >= 40
