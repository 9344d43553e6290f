"""Single-file safetensors artifacts (models, transforms) with versioned JSON metadata.

The header carries one string entry, ``compatctl``, holding JSON: ``format_version``, ``kind``,
``fingerprint`` and whatever the writer adds (config, dims, architecture, lineage). Reading the
header never loads the tensors. This module imports numpy and safetensors only; torch tensors
are accepted when torch is already imported by the caller.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from compatctl.errors import BadInputError, IntegrityError

FORMAT_VERSION = 1
META_KEY = "compatctl"
KINDS = ("model", "transform", "embeddings")


# Write failures the user fixes on their side (space, quota, permissions): one line, exit 2.
_USER_FIXABLE = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                 errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                 errno.EPERM: "permission denied"}
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it (other threads may be creating files)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # no /proc: the classic set-and-restore
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def honour_umask(fd: int) -> None:
    """Give a file made by ``tempfile.mkstemp`` (mode 0600) the mode ``open`` would: 0666 & ~umask."""
    os.fchmod(fd, 0o666 & ~current_umask())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename.

    The file gets the mode a plain ``open`` would give (0666 minus the umask). On any failure
    the temp file is removed and ``path`` is untouched; a full disk, quota or permission
    problem raises BadInputError naming ``path``.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            honour_umask(handle.fileno())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _USER_FIXABLE:
            raise BadInputError(f"{path}: cannot write it: {_USER_FIXABLE[exc.errno]} ({exc.strerror}); "
                                "nothing was changed there; free space or fix permissions and re-run") from None
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def fingerprint_arrays(arrays: dict[str, np.ndarray]) -> str:
    """A stable hash of named arrays (names, dtypes, shapes and bytes): 16 hex characters."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in chunks (memory stays small)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    return value.detach().cpu().contiguous().numpy()  # a torch tensor


def save_artifact(path: Path, tensors: dict[str, Any], kind: str, meta: dict) -> str:
    """Atomically write ``tensors`` (numpy or torch) and metadata; return the fingerprint.

    The fingerprint is a hash of the tensors, so it names the weights, not the file.
    """
    from safetensors.numpy import save

    arrays = {name: np.ascontiguousarray(_to_numpy(t)) for name, t in tensors.items()}
    fingerprint = fingerprint_arrays(arrays)
    header = {"format_version": FORMAT_VERSION, "kind": kind, "fingerprint": fingerprint, **meta}
    atomic_write_bytes(Path(path), save(arrays, metadata={META_KEY: json.dumps(header, sort_keys=True)}))
    return fingerprint


def read_header(path: Path) -> dict:
    """The compatctl metadata of a safetensors file, or ``{}`` for a foreign safetensors file.

    Raises BadInputError if the file is missing or is not safetensors at all.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata() or {}
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise IntegrityError(f"{path}: not a readable safetensors file ({exc}); "
                             "re-create it with the command that wrote it") from None
    if META_KEY not in meta:
        return {}
    from compatctl.store.validate import check_header, parse_json

    header = parse_json(meta[META_KEY], f"{path}: compatctl metadata")
    if not isinstance(header, dict):
        raise IntegrityError(f"{path}: compatctl metadata must be a JSON object, got {type(header).__name__}; "
                             "re-create the file")
    version = header.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise BadInputError(f"{path}: format_version {version!r} is not supported by this compatctl "
                            f"(reads {FORMAT_VERSION}); re-create it or upgrade compatctl")
    check_header(path, header)
    return header


def expect_kind(path: Path, kind: str) -> dict:
    """Read the header and check it is a compatctl artifact of ``kind``; return the header."""
    header = read_header(path)
    found = header.get("kind")
    if found != kind:
        what = f"a {found}" if found else "not a compatctl artifact"
        raise BadInputError(f"{path}: expected a {kind} file but this is {what}; "
                            f"pass the {kind} written by compatctl")
    return header


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as numpy arrays (loads the whole file)."""
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as exc:
        raise IntegrityError(f"{path}: cannot read tensors ({exc}); re-create the file") from None
