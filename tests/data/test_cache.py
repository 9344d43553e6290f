"""The decoded-image cache: hits give the same data, changes invalidate, 'off' disables."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from compatctl.data import load_data
from tests.data.conftest import write_tarball


def test_cache_hit_is_identical_and_skips_decoding(image_folder, decoded_cache, monkeypatch):
    first = load_data(str(image_folder), "train")
    assert len(list(decoded_cache.glob("*.npz"))) == 1
    import compatctl.data.files as files

    monkeypatch.setattr(files, "decode_image", lambda *a: (_ for _ in ()).throw(AssertionError("decoded")))
    again = load_data(str(image_folder), "train")
    for name in ("images", "labels", "ids"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    assert again.class_names == first.class_names and again.source == str(image_folder)


def test_changed_folder_is_decoded_again(image_folder):
    from PIL import Image

    before = load_data(str(image_folder), "test")
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(image_folder / "test" / "dog" / "9.png")
    after = load_data(str(image_folder), "test")
    assert len(after) == len(before) + 1


def test_tarball_cached_per_split(image_folder, tmp_path, decoded_cache):
    archive = write_tarball(image_folder, tmp_path / "d.tgz")
    load_data(str(archive), "all")
    assert len(list(decoded_cache.glob("*.npz"))) == 2


def test_cache_off(image_folder, decoded_cache, monkeypatch):
    monkeypatch.setenv("COMPATCTL_CACHE_DIR", "off")
    load_data(str(image_folder), "train")
    assert not decoded_cache.exists()


def test_corrupt_cache_entry_is_rewritten(image_folder, decoded_cache):
    first = load_data(str(image_folder), "train")
    entry = next(decoded_cache.glob("*.npz"))
    entry.write_bytes(b"garbage")
    again = load_data(str(image_folder), "train")
    assert np.array_equal(first.images, again.images) and entry.stat().st_size > 100


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_cache_entries_honour_the_umask(image_folder, decoded_cache, mask, mode):
    saved = os.umask(mask)
    try:
        load_data(str(image_folder), "train")
    finally:
        os.umask(saved)
    assert [stat.S_IMODE(p.stat().st_mode) for p in decoded_cache.glob("*.npz")] == [mode]
