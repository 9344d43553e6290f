"""Embed a dataset split with a model into a (resumable, shardable) embedding set."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError

StageProgress = Callable[[str, int, int], None]  # progress(stage, done, total); stages: "decode", "embed"


def check_model_path(model_path: Path) -> None:
    """Refuse DATA or embeddings given where a model is expected, with the fix."""
    from compatctl.data import is_builtin
    from compatctl.data.files import DATA_SUFFIXES, is_embedding_set

    text = str(model_path)
    if is_builtin(text) or text.endswith(DATA_SUFFIXES) or model_path.is_dir():
        what = "an embedding set" if model_path.is_dir() and is_embedding_set(model_path) else "DATA"
        raise BadInputError(f"MODEL {text}: is {what}, not a model; usage: compatctl embed MODEL.safetensors DATA "
                            "--out EMB (the model file is written by train-new)")


def check_image_shape(header: dict, image_shape: tuple[int, int, int], model_path: Path, data_spec: str) -> None:
    """The data's images must have the shape (or at least the channels) the model was trained on."""
    expected = header.get("image_shape")
    channels = header["spec"].get("in_channels", 3)
    if (expected and tuple(expected) != tuple(image_shape)) or image_shape[2] != channels:
        want = "x".join(map(str, expected)) if expected else f"{channels} channels"
        raise BadInputError(f"DATA {data_spec}: images are {'x'.join(map(str, image_shape))} (HxWxC) but model "
                            f"{model_path} expects {want}; embed data shaped like the model's training data")


def resume_key(fingerprint: str, data_spec: str, split: str, dtype: str, shard_rows: int) -> str:
    """Identifies the inputs of an embed run, so a re-run resumes only when they are the same."""
    source = str(Path(data_spec).resolve()) if Path(data_spec).exists() else data_spec
    text = json.dumps([fingerprint, source, split, dtype, shard_rows])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def embed_dataset(model_path: Path | str, data_spec: str, out: Path | str, *, split: str = "test",
                  batch_size: int = 256, part: str | tuple[int, int] = "1/1", dtype: str = "float32",
                  shard_rows: int = 65536, device: str = "cpu",
                  progress: StageProgress | None = None) -> Path:
    """Embed split ``split`` of DATA with the model into the embedding set ``out``.

    Shards already complete in ``out`` (same model, data, split, dtype, shard size) are kept,
    so a re-run after a kill resumes. With ``part=(I, N)`` only this worker's shards are
    written; the manifest appears when every part is done. Rows carry the data's stable ids,
    its labels and provenance ``native``.

    Returns: ``out``. Raises: BadInputError for a non-model MODEL, non-DATA DATA, a shape
    mismatch between data and model, or an ``out`` holding another set.
    """
    from compatctl.data import load_data
    from compatctl.models import load_model, resolve_device
    from compatctl.store import EmbeddingSetWriter, parse_part

    model_path, out = Path(model_path), Path(out)
    part = parse_part(part) if isinstance(part, str) else tuple(part)
    if dtype not in ("float32", "float16"):
        raise BadInputError(f"--dtype {dtype!r}: use float32 or float16")
    if batch_size < 1 or shard_rows < 1:
        raise BadInputError(f"--batch-size {batch_size} / shard rows {shard_rows}: must be at least 1")
    check_model_path(model_path)
    device = resolve_device(device)
    model, header = load_model(model_path, device=device)
    decode = (lambda done, total: progress("decode", done, total)) if progress else None
    data = load_data(data_spec, split, progress=decode)
    check_image_shape(header, data.image_shape, model_path, data_spec)
    writer = EmbeddingSetWriter(
        out, rows=len(data), dim=model.embedding_width, dtype=dtype, shard_rows=shard_rows, part=part,
        has_labels=True, resume_key=resume_key(header["fingerprint"], data_spec, split, dtype, shard_rows),
        header=_set_header(header, data_spec, split, data.class_names))
    _write_pending(writer, model, header, data, batch_size=batch_size, device=device, progress=progress)
    writer.finish()
    return out


def _set_header(model_header: dict, data_spec: str, split: str, class_names: list[str]) -> dict:
    return {"model_fingerprint": model_header["fingerprint"], "config": model_header.get("config", {}),
            "source": {"data": str(data_spec), "split": split, "command": "embed"},
            "arch": model_header.get("arch"), "embedding_dim": model_header.get("embedding_dim"),
            "embedding_width": model_header.get("embedding_width"), "class_names": class_names,
            # eval compares a BT² set with its old model's set on the first compatible_dims dims
            "lineage": model_header.get("lineage"),
            "compatible_dims": (model_header.get("extra") or {}).get("compatible_dims")}


def _write_pending(writer, model, header: dict, data, *, batch_size: int, device: str, progress) -> None:
    """Embed and write this part's pending shards.

    Shard ``i`` is written by a background thread while shard ``i + 1`` is embedded, so the
    safetensors encoding, checksum and fsync hide behind the forward passes; at most two shards
    are in memory. A kill loses at most the shards not yet recorded, which a re-run redoes.
    """
    from concurrent.futures import ThreadPoolExecutor

    from compatctl.models import embed_images
    from compatctl.store import EmbeddingBlock

    pending = writer.pending_shards()
    total = sum(writer.shard_bounds(i)[1] - writer.shard_bounds(i)[0] for i in pending)
    done, writing = 0, None
    if progress is not None:
        progress("embed", 0, total)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer") as pool:
        for index in pending:
            start, stop = writer.shard_bounds(index)
            report = (lambda rows, _, base=done: progress("embed", base + rows, total)) if progress else None
            embeddings = embed_images(model, header, data.images[start:stop], batch_size=batch_size,
                                      device=device, progress=report)
            block = EmbeddingBlock(embeddings, data.ids[start:stop], data.labels[start:stop],
                                   np.zeros(stop - start, np.uint8))
            if writing is not None:
                writing.result()  # re-raises a failed write here
            writing = pool.submit(writer.write_shard, index, block)
            done += stop - start
        if writing is not None:
            writing.result()
