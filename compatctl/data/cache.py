"""A disk cache of decoded image splits, so JPEG datasets are decoded once, not once per command.

Decoding CIFAR-10's 60,000 JPEGs takes seconds of pure-Python work per load; a pipeline loads
the same splits in train-new and in every embed. The decoded arrays are kept as an
uncompressed .npz (no pickle) under ``$COMPATCTL_CACHE_DIR`` (default
``~/.cache/compatctl/data``); set ``COMPATCTL_CACHE_DIR=off`` to disable. The key covers the
source's absolute path, size and modification time (for a directory: of every file in it),
and the split, so a changed dataset is decoded again. Writes are atomic; an unreadable cache
entry is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

CACHE_VERSION = 1


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is off."""
    setting = os.environ.get("COMPATCTL_CACHE_DIR", "")
    if setting.lower() in ("off", "0", "none", "false"):
        return None
    return Path(setting) if setting else Path.home() / ".cache" / "compatctl" / "data"


def source_signature(path: Path) -> list:
    """Absolute path, sizes and mtimes of a file or of every file under a directory."""
    path = path.resolve()
    if path.is_file():
        stat = path.stat()
        return [str(path), stat.st_size, stat.st_mtime_ns]
    files = sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return [str(path), len(files), digest.hexdigest()]


def cached_split(path: Path, split: str, decode: Callable, progress=None):
    """``decode()`` (an ImageData of ``split`` of ``path``), from the cache when it holds it.

    The returned data's ``source`` is ``str(path)`` as given, whichever spelling filled the cache.
    """
    from compatctl.data import ImageData

    folder = cache_dir()
    if folder is None:
        return decode()
    key = json.dumps([CACHE_VERSION, source_signature(path), split])
    file = folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
    if file.is_file():
        try:
            with np.load(file, allow_pickle=False) as arrays:
                data = ImageData(arrays["images"], arrays["labels"], arrays["ids"],
                                 json.loads(str(arrays["class_names"])), str(path))
            if progress is not None:
                progress(len(data), len(data))
            return data
        except (OSError, ValueError, KeyError):
            pass  # unreadable entry: decode again and rewrite it
    data = decode()
    _write(file, data)
    return data


def _write(file: Path, data) -> None:
    """Store ``data`` atomically, mode 0666 minus the umask like every file compatctl writes (so a
    cache shared by a CI user and a serving user is readable by both); a full or read-only disk
    only costs the cache."""
    import tempfile

    from compatctl.store.artifacts import honour_umask

    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{file.stem}.", suffix=".npz", dir=file.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as handle:
            honour_umask(handle.fileno())  # mkstemp made it 0600
            np.savez(handle, images=data.images, labels=data.labels, ids=data.ids,
                     class_names=np.array(json.dumps(data.class_names)))
        os.replace(tmp, file)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
