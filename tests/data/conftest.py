"""Tiny image datasets written to disk in every DATA form."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

CLASSES = ("cat", "dog", "emu")


def write_image_folder(root: Path, per_class: int = 3, size: int = 8, mode: str = "RGB") -> Path:
    """ROOT/{train,test}/<class>/<i>.png with random pixels; returns ROOT."""
    from PIL import Image

    rng = np.random.default_rng(0)
    channels = 3 if mode == "RGB" else 1
    for split in ("train", "test"):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
                Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(folder / f"{i}.png")
    return root


def write_tarball(folder: Path, archive: Path, top: str | None = None) -> Path:
    """The image folder as a .tar.gz, at the top level or under one ``top`` folder."""
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("test", "train"):  # reversed order: loading must not depend on member order
            tar.add(folder / split, arcname=f"{top}/{split}" if top else split)
    return archive


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "imgs")


@pytest.fixture(autouse=True)
def decoded_cache(tmp_path: Path, monkeypatch) -> Path:
    """Keep the decoded-image cache of every test in its own temp folder."""
    folder = tmp_path / "decoded-cache"
    monkeypatch.setenv("COMPATCTL_CACHE_DIR", str(folder))
    return folder
