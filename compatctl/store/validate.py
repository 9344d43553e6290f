"""Checks on what compatctl reads from disk, before anything is allocated or trusted.

Everything here treats a file as possibly hostile: JSON is bounded in size and nesting depth;
manifests and artifact headers are validated as a whole (every problem in one line); sizes
claimed by metadata are checked against the bytes the file really holds, so a header can never
make compatctl ask for terabytes. Only numpy and safetensors are imported (``eval`` and
``inspect`` start fast).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from compatctl.errors import BadInputError, IntegrityError

MAX_JSON_BYTES = 64 << 20   # a manifest of 10^9 rows in 65536-row shards is ~3 MB
MAX_JSON_DEPTH = 64         # compatctl writes depth <= 6; Python's parser recurses per level
MAX_DIM = 1 << 15           # embedding width / transform dims
MAX_CLASSES = 1 << 20
MAX_IMAGE_SIDE = 1 << 14
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
SHARD_NAME = re.compile(r"shard-\d{5,}\.safetensors")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in JSON text (strings removed first); linear time, no recursion."""
    brackets = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8", "replace"), np.uint8)
    step = np.zeros(len(brackets), np.int64)
    step[(brackets == ord("[")) | (brackets == ord("{"))] = 1
    step[(brackets == ord("]")) | (brackets == ord("}"))] = -1
    return int(np.cumsum(step).max(initial=0))


def parse_json(text: str | bytes, where: str, *, limit: int = MAX_JSON_BYTES) -> Any:
    """Parse bounded JSON: at most ``limit`` bytes and MAX_JSON_DEPTH levels deep.

    Raises IntegrityError naming ``where`` for oversize, too deep, non-UTF-8 or invalid JSON.
    """
    if len(text) > limit:
        raise IntegrityError(f"{where}: {len(text)} bytes of JSON, more than the {limit} compatctl reads; "
                             "re-create the file with compatctl")
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if _depth(text) > MAX_JSON_DEPTH:
            raise IntegrityError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels; "
                                 "re-create the file with compatctl")
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, IntegrityError):
            raise
        raise IntegrityError(f"{where}: not valid JSON ({str(exc)[:80]}); re-create the file with compatctl") from None


def read_json_file(path: Path, what: str = "JSON file") -> dict:
    """A JSON object from ``path`` (bounded as in :func:`parse_json`); IntegrityError otherwise."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise IntegrityError(f"{path}: {size} bytes, more than the {MAX_JSON_BYTES} compatctl reads "
                                 f"for a {what}; re-create it with compatctl")
        value = parse_json(path.read_bytes(), str(path))
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read {what} ({exc.strerror}); check the path and permissions") from None
    if not isinstance(value, dict):
        raise IntegrityError(f"{path}: {what} must be a JSON object, got {type(value).__name__}; "
                             "re-create it with compatctl")
    return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_problem(record: dict, key: str, low: int, high: int) -> str | None:
    value = record.get(key)
    if not _is_int(value):
        return f"{key!r} must be a whole number, got {json.dumps(value)[:40]}" if key in record \
            else f"{key!r} is missing"
    if not low <= value <= high:
        return f"{key!r} = {value} is outside {low}..{high}"
    return None


def _shard_problems(manifest: dict) -> list[str]:
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        return [f"'shards' must be a list, got {type(shards).__name__}"]
    problems = []
    for position, entry in enumerate(shards):
        if not isinstance(entry, dict):
            problems.append(f"shards[{position}] must be an object")
            continue
        found = [p for p in (_int_problem(entry, "index", position, position),
                             _int_problem(entry, "rows", 0, 1 << 40), _int_problem(entry, "bytes", 1, 1 << 50)) if p]
        if not (isinstance(entry.get("file"), str) and SHARD_NAME.fullmatch(entry["file"])):
            found.append(f"'file' {json.dumps(entry.get('file'))[:60]} is not a shard-NNNNN.safetensors name")
        if not (isinstance(entry.get("sha256"), str) and SHA256_HEX.fullmatch(entry["sha256"])):
            found.append("'sha256' is not 64 hex digits")
        problems += [f"shards[{position}]: {p}" for p in found]
        if len(problems) > 5:
            break
    return problems


def _layout_problems(manifest: dict) -> list[str]:
    """Rows claimed against rows held: the total, the fixed shard size, enough bytes per shard."""
    shards, rows, shard_rows, dim = (manifest[k] for k in ("shards", "rows", "shard_rows", "dim"))
    problems = []
    held = sum(entry["rows"] for entry in shards)
    if held != rows:
        problems.append(f"'rows' = {rows} but its shards hold {held} rows")
    expected = max(1, -(-rows // shard_rows))
    if len(shards) != expected:
        problems.append(f"{len(shards)} shards listed, but {rows} rows in shards of {shard_rows} need {expected}")
    for entry in shards[:-1]:
        if entry["rows"] != shard_rows:
            problems.append(f"shard {entry['index']} holds {entry['rows']} rows; every shard but the last "
                            f"must hold shard_rows = {shard_rows}")
            break
    if shards and shards[-1]["rows"] > shard_rows:
        problems.append(f"the last shard holds {shards[-1]['rows']} rows, more than shard_rows = {shard_rows}")
    itemsize = 2 if manifest["dtype"] == "float16" else 4
    for entry in shards:
        if entry["bytes"] < entry["rows"] * dim * itemsize:
            problems.append(f"shard {entry['index']}: {entry['bytes']} bytes cannot hold {entry['rows']} rows "
                            f"of {dim} {manifest['dtype']} values")
            break
    return problems


def check_manifest(path: Path, manifest: dict, dtypes: tuple[str, ...]) -> None:
    """Validate an embedding-set manifest as a whole; IntegrityError with every problem in one line."""
    problems = [p for p in (_int_problem(manifest, "dim", 1, MAX_DIM), _int_problem(manifest, "rows", 1, 1 << 48),
                            _int_problem(manifest, "shard_rows", 1, 1 << 40)) if p]
    if manifest.get("dtype") not in dtypes:
        problems.append(f"'dtype' {json.dumps(manifest.get('dtype'))[:40]} is not one of {', '.join(dtypes)}")
    for key in ("has_labels", "has_uncertainty"):
        if not isinstance(manifest.get(key, False), bool):
            problems.append(f"{key!r} must be true or false")
    for key in ("id_type", "label_type"):
        if manifest.get(key, "int64") not in ("int64", "utf8"):
            problems.append(f"{key!r} {json.dumps(manifest.get(key))[:40]} is not int64 or utf8")
    fingerprint = manifest.get("model_fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        problems.append("'model_fingerprint' must be a string or null")
    problems += _shard_problems(manifest)
    if not problems:
        problems = _layout_problems(manifest)
    if problems:
        raise IntegrityError(f"{path}: invalid manifest: {'; '.join(problems[:6])}; "
                             "re-run the command that wrote this set (or re-create it)")


def check_progress_record(path: Path, record: dict) -> list[dict]:
    """The shard entries of a writer's progress file (or manifest) that are well formed."""
    shards = record.get("shards", [])
    if not isinstance(shards, list):
        raise IntegrityError(f"{path}: 'shards' must be a list; delete this file and re-run the writer")
    return [entry for entry in shards if isinstance(entry, dict)
            and _is_int(entry.get("index")) and entry["index"] >= 0
            and isinstance(entry.get("file"), str) and SHARD_NAME.fullmatch(entry["file"])
            and _is_int(entry.get("bytes")) and _is_int(entry.get("rows"))
            and isinstance(entry.get("sha256"), str) and SHA256_HEX.fullmatch(entry["sha256"])]


# ---- artifact headers ------------------------------------------------------------------------

def _tensor_shapes(path: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        return {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}


def _normalization_problems(value, channels: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return ["'normalization' must be an object with 'mean' and 'std' lists"]
    problems = []
    for key in ("mean", "std"):
        numbers = value.get(key)
        if not (isinstance(numbers, list) and len(numbers) == channels
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in numbers)):
            problems.append(f"'normalization.{key}' must be a list of {channels} finite numbers, "
                            f"got {json.dumps(numbers)[:40]}")
        elif key == "std" and min(numbers) <= 0:
            problems.append(f"'normalization.std' must be positive, got {numbers}")
    return problems


def _model_problems(path: Path, header: dict) -> list[str]:
    spec = header.get("spec")
    if "spec" not in header:
        return []  # load_model names the missing spec
    if not isinstance(spec, dict):
        return ["'spec' must be an object (arch, embedding_dim, num_classes, ...)"]
    problems = [p for p in (_int_problem(spec, "embedding_dim", 1, MAX_DIM),
                            _int_problem(spec, "num_classes", 1, MAX_CLASSES)) if p]
    if not isinstance(spec.get("arch"), str):
        problems.append("'spec.arch' must be a string")
    if spec.get("in_channels", 3) not in (1, 3) or isinstance(spec.get("in_channels"), bool):
        problems.append(f"'spec.in_channels' must be 1 or 3, got {json.dumps(spec.get('in_channels'))[:20]}")
    extra = spec.get("extra_dims", 0)
    if not (_is_int(extra) and 0 <= extra <= MAX_DIM):
        problems.append(f"'spec.extra_dims' must be a whole number in 0..{MAX_DIM}")
    if not isinstance(spec.get("basis_transform", False), bool):
        problems.append("'spec.basis_transform' must be true or false")
    if problems:
        return problems
    problems += _normalization_problems(header.get("normalization"), spec.get("in_channels", 3))
    shape = header.get("image_shape")
    if shape is not None and not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(s) for s in shape)
                                  and all(1 <= s <= MAX_IMAGE_SIDE for s in shape[:2]) and shape[2] in (1, 3)):
        problems.append(f"'image_shape' must be [H, W, 1 or 3] with sides up to {MAX_IMAGE_SIDE}")
    # The classifier (width x classes floats) is stored in the file: its size bounds what may be built.
    width = spec["embedding_dim"] + extra
    weights = max(width * spec["num_classes"], width * width if spec.get("basis_transform") else 0) * 4
    if weights > path.stat().st_size:
        problems.append(f"spec claims {spec['num_classes']} classes of width {width} ({weights} bytes of "
                        f"weights) but the file holds {path.stat().st_size} bytes")
    return problems


def _transform_problems(path: Path, header: dict) -> list[str]:
    dims = {"old_dim": 1, "new_dim": 1, "side_info_dim": 0}  # checked when present (the loader needs them)
    problems = [p for p in (_int_problem(header, key, low, MAX_DIM) for key, low in dims.items() if key in header)
                if p]
    if problems:
        return problems
    axes = {axis for shape in _tensor_shapes(path).values() for axis in shape}
    for key in ("old_dim", "new_dim", "side_info_dim"):
        if header.get(key) and header[key] not in axes:
            problems.append(f"{key!r} = {header[key]} matches no stored tensor")
    return problems


HEADER_CHECKS = {"model": _model_problems, "transform": _transform_problems}


def check_header(path: Path, header: dict) -> None:
    """Validate a model or transform header against its kind and its file (sizes before allocation).

    Raises IntegrityError naming the file and every problem found.
    """
    check = HEADER_CHECKS.get(header.get("kind"))
    problems = check(Path(path), header) if check else []
    if problems:
        raise IntegrityError(f"{path}: invalid {header.get('kind')} metadata: {'; '.join(problems[:6])}; "
                             "re-create it with the command that wrote it")
