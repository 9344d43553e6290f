"""Image datasets: the DATA forms of the SPEC loaded into one in-memory ``ImageData``.

Forms (see :func:`load_data`): an image-folder directory with ``train/`` and ``test/``, the
same as a ``.tar.gz``, an ``.npz`` with ``x_train, y_train, x_test, y_test``, and the built-in
generated dataset (``builtin`` or ``builtin:classes=10,train=5000,...``).

Every item carries a stable id: a 63-bit hash of ``"<split>/<relative path or index>"``, so
the same image has the same id in every run and whether it was loaded as ``train``, ``test``
or ``all``. This package imports numpy and Pillow only (no torch).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError

SPLITS = ("train", "test", "all")
Progress = Callable[[int, int], None]  # progress(done, total); total may be 0 when unknown


@dataclasses.dataclass
class ImageData:
    """Images of one split (or all), with labels, stable ids and the dataset's class names.

    ``images`` is uint8 [N, H, W, C] with C in {1, 3}; ``labels`` and ``ids`` are int64 [N];
    ``class_names[i]`` names label ``i`` (the whole dataset's classes, also after a subset).
    """

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    class_names: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(int(s) for s in self.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def take(self, index: np.ndarray | slice) -> "ImageData":
        """Items selected by ``index`` (a slice, integer or boolean array)."""
        return ImageData(self.images[index], self.labels[index], self.ids[index], self.class_names, self.source)

    @staticmethod
    def concat(parts: list["ImageData"]) -> "ImageData":
        """Items of several parts of one dataset, in order (e.g. train then test)."""
        first = parts[0]
        shapes = {p.image_shape for p in parts}
        if len(shapes) > 1:
            raise BadInputError(f"{first.source}: splits hold images of different shapes {sorted(shapes)}; "
                                "resize them to one shape")
        return ImageData(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                         np.concatenate([p.ids for p in parts]), first.class_names, first.source)


def item_id(split: str, key: str | int) -> int:
    """The stable 63-bit id of item ``key`` (relative path or index) of ``split``."""
    digest = hashlib.blake2b(f"{split}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def item_ids(split: str, keys) -> np.ndarray:
    """Stable ids of many items, int64."""
    return np.fromiter((item_id(split, key) for key in keys), dtype=np.int64)


def as_nhwc(images: np.ndarray, where: str) -> np.ndarray:
    """uint8 N×H×W or N×H×W×C (C in 1, 3) -> uint8 N×H×W×C."""
    if images.dtype != np.uint8:
        raise BadInputError(f"{where}: images must be uint8, got {images.dtype}; store 0..255 pixel values")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise BadInputError(f"{where}: images must be N×H×W or N×H×W×C with C 1 or 3, got shape {images.shape}")
    return images


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise BadInputError(f"split {split!r} is not valid; use one of {', '.join(SPLITS)}")


def is_builtin(spec: str) -> bool:
    """True for the built-in generated dataset's spec (``builtin`` or ``builtin:k=v,...``)."""
    return spec == "builtin" or spec.startswith("builtin:")


def _loader_for(spec: str) -> Callable:
    from compatctl.data import builtin, files

    if is_builtin(spec):
        return builtin.load_split
    path = Path(spec)
    if not path.exists():
        raise BadInputError(f"DATA {spec!r}: not found; pass an image-folder directory, a .tar.gz, "
                            "an .npz or 'builtin'")
    if path.is_dir() and not files.is_embedding_set(path):
        return files.load_folder
    for suffixes, loader in files.FILE_LOADERS.items():
        if path.is_file() and path.name.endswith(suffixes):
            return loader
    raise BadInputError(files.not_data_message(path))


def load_data(spec: str, split: str = "train", *, progress: Progress | None = None) -> ImageData:
    """Load one split (``train``, ``test`` or ``all`` = train then test) of a DATA spec.

    Args:
        spec: an image-folder directory, a ``.tar.gz``/``.tgz``, an ``.npz``, or
            ``builtin[:key=value,...]`` (keys: classes, train, test, size, channels, seed).
        split: which split to load.
        progress: called as ``progress(done, total)`` while images are decoded.
    Returns: the images with labels, stable ids and class names.
    Raises: BadInputError for a missing path, a layout without class folders, an image that
        fails to decode (its path named), or inconsistent shapes.
    """
    _check_split(split)
    spec = str(spec)
    loader = _loader_for(spec)
    if split == "all":
        return ImageData.concat([loader(spec, "train", progress), loader(spec, "test", progress)])
    return loader(spec, split, progress)


def resolve_classes(classes, num_classes: int) -> list[int]:
    """``None``/``"all"`` -> every class; ``"first_half"`` -> the first ``num_classes // 2``; a list as is.

    Raises BadInputError for an unknown shorthand or a class index out of range.
    """
    if classes is None or classes == "all":
        return list(range(num_classes))
    if classes == "first_half":
        return list(range(num_classes // 2))
    if isinstance(classes, str):
        raise BadInputError(f"classes {classes!r}: use a list of class indices, 'first_half' or 'all'")
    chosen = [int(c) for c in classes]
    bad = [c for c in chosen if not 0 <= c < num_classes]
    if bad:
        raise BadInputError(f"classes {bad}: out of range; valid class indices are 0..{num_classes - 1}")
    if not chosen:
        raise BadInputError("classes: the list is empty; name at least one class index")
    return sorted(set(chosen))


def select_classes(data: ImageData, classes) -> ImageData:
    """The items whose label is in ``classes`` (see :func:`resolve_classes`); labels keep their numbering."""
    chosen = resolve_classes(classes, data.num_classes)
    if len(chosen) == data.num_classes:
        return data
    return data.take(np.isin(data.labels, chosen))


__all__ = ["SPLITS", "ImageData", "as_nhwc", "item_id", "item_ids", "load_data", "resolve_classes",
           "select_classes"]
