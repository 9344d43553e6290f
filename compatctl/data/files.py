"""DATA on disk: image-folder directories, the same as a tarball, and .npz arrays.

Image-folder layout: ``ROOT/{train,test}/<class>/<image>``; sorted class-folder names (the
union over both splits) give the label order. A tarball may hold that layout at its top level
or under one top folder. Items are sorted by (class, file name), so a load is deterministic
whatever order the file system or the tarball lists them in.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from compatctl.data import ImageData, as_nhwc, item_ids
from compatctl.data.cache import cached_split
from compatctl.errors import BadInputError

SPLIT_DIRS = ("train", "test")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
LAYOUT_HINT = "expected DATA/train/<class>/<image> and DATA/test/<class>/<image>"


MAX_IMAGE_PIXELS = 1 << 26  # 64 Mpixel (8192 x 8192): far above any embedding input, far below a bomb


def decode_image(raw: bytes, where: str) -> np.ndarray:
    """Decode one image file to uint8 H×W×C (C = 1 for grayscale, 3 otherwise).

    An image larger than MAX_IMAGE_PIXELS (a decompression bomb) is refused before it is
    decoded; every decoder failure raises BadInputError naming ``where``.
    """
    import warnings

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as image:
                image.load()
                gray = image.mode in GRAY_MODES
                pixels = np.asarray(image.convert("L" if gray else "RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInputError(f"{where}: image claims more than {MAX_IMAGE_PIXELS} pixels (a decompression bomb?); "
                            "remove the file or resize it") from None
    except Exception as exc:  # decoders raise many types (OSError, SyntaxError, struct.error, EOFError, ...)
        raise BadInputError(f"{where}: image fails to decode ({str(exc)[:120] or type(exc).__name__}); "
                            "remove or replace the file") from None
    return pixels[..., None] if gray else pixels


def stack_images(images: list[np.ndarray], names: list[str]) -> np.ndarray:
    """Stack decoded images into N×H×W×C; grayscale ones are promoted to RGB when the split mixes both."""
    if any(im.shape[-1] == 3 for im in images):
        images = [np.repeat(im, 3, axis=-1) if im.shape[-1] == 1 else im for im in images]
    shape = images[0].shape if images else (0, 0, 1)
    for image, name in zip(images, names):
        if image.shape != shape:
            raise BadInputError(f"{name}: image of shape {image.shape} differs from {shape}; "
                                "every image of a dataset must have the same size")
    return np.stack(images) if images else np.zeros((0, *shape), np.uint8)


def decode_split(items: list[tuple[str, int, str, bytes | Path]], source: str, split: str,
                 class_names: list[str], progress=None) -> ImageData:
    """Decode ``(key, label, where, bytes_or_path)`` items of one split into ImageData."""
    images = []
    total = len(items)
    for done, (_, _, where, raw) in enumerate(items, 1):
        images.append(decode_image(raw.read_bytes() if isinstance(raw, Path) else raw, where))
        if progress is not None and (done % 1024 == 0 or done == total):
            progress(done, total)
    if not items:
        raise BadInputError(f"{source}: split '{split}' holds no images; {LAYOUT_HINT}")
    labels = np.array([label for _, label, _, _ in items], dtype=np.int64)
    return ImageData(stack_images(images, [where for _, _, where, _ in items]), labels,
                     item_ids(split, [key for key, _, _, _ in items]), class_names, source)


# ---------------------------------------------------------------- image-folder directory

def _class_dirs(root: Path) -> dict[str, list[Path]]:
    return {split: sorted(p for p in (root / split).iterdir() if p.is_dir() and not p.name.startswith("."))
            for split in SPLIT_DIRS if (root / split).is_dir()}


def load_folder(spec: str, split: str, progress=None) -> ImageData:
    """One split of an image-folder directory (decoded once, then read from the cache)."""
    return cached_split(Path(spec), split, lambda: _decode_folder(spec, split, progress), progress)


def _decode_folder(spec: str, split: str, progress=None) -> ImageData:
    root = Path(spec)
    dirs = _class_dirs(root)
    if split not in dirs or not dirs[split]:
        raise BadInputError(f"{root}: no class folders under {root / split}; {LAYOUT_HINT}")
    class_names = sorted({d.name for folders in dirs.values() for d in folders})
    items = []
    for folder in dirs[split]:
        for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            items.append((f"{folder.name}/{file.name}", class_names.index(folder.name), str(file), file))
    return decode_split(items, spec, split, class_names, progress)


# ---------------------------------------------------------------- tarball

_TAR_CACHE: dict[tuple, dict] = {}


def _member_parts(name: str) -> tuple[str, str, str] | None:
    """``[top/]split/class/file`` -> (split, class, file); None for other members."""
    parts = [p for p in PurePosixPath(name).parts if p not in (".", "")]
    for start in (0, 1):
        rest = parts[start:]
        if len(rest) >= 3 and rest[0] in SPLIT_DIRS and not any(p.startswith(".") for p in rest):
            return rest[0], rest[1], "/".join(rest[2:])
    return None


def read_tar(path: Path) -> dict:
    """Raw bytes of every image member in one pass: ``{split: [(class, file, bytes)]}``; cached per file."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _TAR_CACHE:
        members: dict[str, list] = {split: [] for split in SPLIT_DIRS}
        try:
            with tarfile.open(path, "r|*") as tar:
                for member in tar:
                    parts = _member_parts(member.name) if member.isfile() else None
                    if parts:
                        members[parts[0]].append((parts[1], parts[2], tar.extractfile(member).read()))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BadInputError(f"{path}: cannot read as a tarball ({exc}); re-create the archive") from None
        _TAR_CACHE.clear()  # keep one archive: its compressed image bytes are small
        _TAR_CACHE[key] = members
    return _TAR_CACHE[key]


def load_tar(spec: str, split: str, progress=None) -> ImageData:
    """One split of an image-folder tarball (read with tarfile, nothing extracted; cached once decoded)."""
    return cached_split(Path(spec), split, lambda: _decode_tar(spec, split, progress), progress)


def _decode_tar(spec: str, split: str, progress=None) -> ImageData:
    members = read_tar(Path(spec))
    if not members[split]:
        raise BadInputError(f"{spec}: no class folders for split '{split}' in the archive; {LAYOUT_HINT}")
    class_names = sorted({cls for entries in members.values() for cls, _, _ in entries})
    items = [(f"{cls}/{file}", class_names.index(cls), f"{spec}:{split}/{cls}/{file}", raw)
             for cls, file, raw in sorted(members[split], key=lambda m: (m[0], m[1]))]
    return decode_split(items, spec, split, class_names, progress)


# ---------------------------------------------------------------- .npz arrays

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(spec: str, split: str, progress=None) -> ImageData:
    """One split of an .npz holding x_train, y_train, x_test, y_test (optional class_names)."""
    try:
        with np.load(spec, allow_pickle=False) as arrays:
            missing = [k for k in NPZ_KEYS if k not in arrays.files]
            if missing:
                raise BadInputError(f"{spec}: missing arrays {', '.join(missing)} (found: "
                                    f"{', '.join(arrays.files) or 'none'}); save x_train, y_train, x_test, y_test")
            images = as_nhwc(arrays[f"x_{split}"], f"{spec}: x_{split}")
            labels = arrays[f"y_{split}"].astype(np.int64).reshape(-1)
            top = max(int(arrays["y_train"].max(initial=-1)), int(arrays["y_test"].max(initial=-1)))
            names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays.files else None
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{spec}: cannot read as .npz ({exc})") from None
    if len(labels) != len(images):
        raise BadInputError(f"{spec}: y_{split} has {len(labels)} labels for {len(images)} images; "
                            "give one label per image")
    if len(labels) and labels.min() < 0:
        raise BadInputError(f"{spec}: y_{split} holds negative labels; labels must be 0..classes-1")
    class_names = names or [str(i) for i in range(top + 1)]
    if top >= len(class_names):
        raise BadInputError(f"{spec}: label {top} has no entry in class_names ({len(class_names)} names)")
    if progress is not None:
        progress(len(labels), len(labels))
    return ImageData(images, labels, item_ids(split, range(len(labels))), class_names, spec)


# ---------------------------------------------------------------- dispatch helpers

FILE_LOADERS = {(".tar.gz", ".tgz", ".tar"): load_tar, (".npz",): load_npz}
DATA_SUFFIXES = tuple(suffix for suffixes in FILE_LOADERS for suffix in suffixes)


def is_embedding_set(path: Path) -> bool:
    return (path / "manifest.json").is_file() or any(path.glob("progress.part-*.json"))


def not_data_message(path: Path) -> str:
    """Why ``path`` is not DATA, naming what it is when compatctl wrote it."""
    hint = "pass an image-folder directory, a .tar.gz, an .npz or 'builtin'"
    if path.is_dir():
        return f"{path}: is an embedding set, not DATA; {hint}"
    if path.suffix == ".safetensors":
        from compatctl.store import read_header

        kind = read_header(path).get("kind") or "safetensors file"
        return f"{path}: is a {kind}, not DATA; {hint}"
    return f"{path}: unsupported DATA file; {hint}"
