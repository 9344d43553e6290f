"""load_data for every DATA form, stable ids, class subsets and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from compatctl.data import ImageData, item_id, load_data, select_classes
from compatctl.errors import BadInputError
from tests.data.conftest import CLASSES, write_image_folder, write_tarball


def check_split(data: ImageData, rows: int, shape: tuple) -> None:
    assert data.images.dtype == np.uint8 and data.images.shape == (rows, *shape)
    assert data.labels.dtype == np.int64 and data.ids.dtype == np.int64
    assert len(np.unique(data.ids)) == rows


def test_image_folder_rgb(image_folder):
    train = load_data(str(image_folder), "train")
    check_split(train, 9, (8, 8, 3))
    assert train.class_names == list(CLASSES)
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert train.ids[0] == item_id("train", "cat/0.png")


def test_image_folder_grayscale(tmp_path):
    data = load_data(str(write_image_folder(tmp_path / "g", mode="L")), "test")
    check_split(data, 9, (8, 8, 1))


def test_mixed_grayscale_and_rgb_become_rgb(image_folder):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(image_folder / "train" / "cat" / "0.png")
    data = load_data(str(image_folder), "train")
    assert data.images.shape[-1] == 3 and (data.images[0] == 0).all()


@pytest.mark.parametrize("top", [None, "cifar"])
def test_tarball_matches_folder(image_folder, tmp_path, top):
    archive = write_tarball(image_folder, tmp_path / "d.tar.gz", top)
    for split in ("train", "test", "all"):
        from_dir, from_tar = load_data(str(image_folder), split), load_data(str(archive), split)
        assert np.array_equal(from_dir.images, from_tar.images)
        assert np.array_equal(from_dir.ids, from_tar.ids)
        assert np.array_equal(from_dir.labels, from_tar.labels)
        assert from_tar.class_names == list(CLASSES)


def test_npz_three_and_four_dims(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 255, (6, 5, 5), dtype=np.uint8), y_train=np.arange(6) % 3,
             x_test=rng.integers(0, 255, (4, 5, 5), dtype=np.uint8), y_test=np.array([0, 1, 2, 3]))
    train = load_data(str(path), "train")
    check_split(train, 6, (5, 5, 1))
    assert train.class_names == ["0", "1", "2", "3"]
    assert len(load_data(str(path), "all")) == 10


def test_progress_reports_decoding(image_folder):
    seen = []
    load_data(str(image_folder), "train", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (9, 9)


def test_ids_stable_across_splits_and_runs(image_folder):
    train, test, both = (load_data(str(image_folder), s) for s in ("train", "test", "all"))
    assert np.array_equal(both.ids, np.concatenate([train.ids, test.ids]))
    assert np.array_equal(load_data(str(image_folder), "train").ids, train.ids)
    assert not set(train.ids.tolist()) & set(test.ids.tolist())


def test_builtin_deterministic_and_shaped():
    a = load_data("builtin:classes=4,train=40,test=20,size=16,channels=1,seed=3", "all")
    b = load_data("builtin:classes=4,train=40,test=20,size=16,channels=1,seed=3", "all")
    check_split(a, 60, (16, 16, 1))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.ids, b.ids)
    train = load_data("builtin:classes=4,train=40,test=20,size=16,channels=1,seed=3", "train")
    assert np.array_equal(a.images[:40], train.images)
    assert a.class_names == ["class_00", "class_01", "class_02", "class_03"]
    other = load_data("builtin:classes=4,train=40,test=20,size=16,channels=1,seed=4", "train")
    assert not np.array_equal(other.images, train.images)


def test_builtin_classes_are_separable_but_not_trivially():
    """Nearest class mean on raw pixels: well above chance, well below perfect."""
    data = load_data("builtin:train=2000,test=500", "all")
    train, test = data.take(slice(0, 2000)), data.take(slice(2000, None))
    flat = lambda d: d.images.reshape(len(d), -1).astype(np.float32)  # noqa: E731
    means = np.stack([flat(train)[train.labels == c].mean(0) for c in range(10)])
    pred = np.argmin(((flat(test)[:, None] - means[None]) ** 2).sum(-1), axis=1)
    accuracy = (pred == test.labels).mean()
    assert 0.25 < accuracy < 0.95


def test_select_classes_keeps_label_numbering():
    data = load_data("builtin:classes=6,train=120,test=10")
    half = select_classes(data, "first_half")
    assert set(half.labels.tolist()) == {0, 1, 2}
    picked = select_classes(data, [1, 4])
    assert set(picked.labels.tolist()) == {1, 4} and picked.class_names == data.class_names
    assert len(select_classes(data, "all")) == len(select_classes(data, None)) == 120


@pytest.mark.parametrize("classes, message", [([0, 9], "valid class indices are 0..5"),
                                              ("some", "'first_half' or 'all'"), ([], "empty")])
def test_select_classes_bad(classes, message):
    with pytest.raises(BadInputError, match=message):
        select_classes(load_data("builtin:classes=6,train=12,test=2"), classes)


def test_bad_inputs(tmp_path, image_folder):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (image_folder / "train" / "dog" / "broken.png").write_bytes(b"not an image")
    cases = [(str(tmp_path / "nope"), "not found"), (str(tmp_path / "empty"), "no class folders"),
             (str(image_folder), "broken.png: image fails to decode"),
             ("builtin:colour=3", "unknown key 'colour'"), ("builtin:size=x", "size='x'")]
    for spec, message in cases:
        with pytest.raises(BadInputError, match=message):
            load_data(spec, "train")
    with pytest.raises(BadInputError, match="split 'dev'"):
        load_data("builtin", "dev")


def test_npz_missing_keys(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(BadInputError, match="missing arrays y_train, x_test, y_test"):
        load_data(str(tmp_path / "d.npz"))
