"""Id and label columns: integers or strings, checked on the way in, stored without pickle.

Ids and labels are either int64 or text. In memory text is a numpy unicode array (``<U``),
which sorts, searches and compares like integers do, so id lookups, orders and pairing work
unchanged. On disk (embedding-set shards, and also single ``.safetensors`` files, which have
no string dtype) text is a ``uint8 [n, W]`` matrix named ``<column>_utf8``: row i holds the
UTF-8 bytes of value i, padded with zero bytes to the longest value of that shard. A
``.npz`` may hold ids/labels directly as a unicode or bytes (UTF-8) array.

Anything else is refused with the reason: float ids (truncating them silently merged rows),
float or NaN labels, booleans, complex numbers, object arrays.
"""

from __future__ import annotations

import numpy as np

from compatctl.errors import BadInputError

MAX_TEXT_BYTES = 1024  # longest id or label, in UTF-8 bytes
INT64, UTF8 = "int64", "utf8"


def column_type(values: np.ndarray) -> str:
    """``"utf8"`` for a text column, ``"int64"`` otherwise."""
    return UTF8 if np.asarray(values).dtype.kind in "US" else INT64


def encode_text(values: np.ndarray) -> np.ndarray:
    """Unicode values [n] -> uint8 [n, W] of UTF-8 bytes, zero-padded (W >= 1)."""
    encoded = np.char.encode(np.asarray(values, dtype=str), "utf-8")
    width = max(1, encoded.dtype.itemsize)
    return np.ascontiguousarray(encoded.astype(f"S{width}")).view(np.uint8).reshape(len(encoded), width)


def decode_text(matrix: np.ndarray, where: str = "column") -> np.ndarray:
    """uint8 [n, W] written by :func:`encode_text` -> unicode [n]; BadInputError on bad bytes."""
    matrix = np.ascontiguousarray(matrix)
    if matrix.ndim != 2 or matrix.dtype != np.uint8 or matrix.shape[1] < 1:
        raise BadInputError(f"{where}: a text column must be uint8 [rows, width], got {matrix.dtype} {matrix.shape}")
    try:
        return np.char.decode(matrix.view(f"S{matrix.shape[1]}").reshape(len(matrix)), "utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"{where}: text column is not valid UTF-8; re-create the file") from None


def _text(path: str, name: str, values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "S":
        try:
            values = np.char.decode(values, "utf-8")
        except UnicodeDecodeError:
            raise BadInputError(f"{path}: '{name}' holds bytes that are not UTF-8; store them as UTF-8 "
                                "text or as integers") from None
    values = values.astype(str)
    if len(values) and (np.char.str_len(values) == 0).any():
        raise BadInputError(f"{path}: '{name}' holds empty strings (first at row "
                            f"{int(np.flatnonzero(np.char.str_len(values) == 0)[0])}); give every row a value")
    if any("\0" in value for value in values.tolist()):
        raise BadInputError(f"{path}: '{name}' holds a NUL character; remove it from the values")
    longest = int(np.char.str_len(np.char.encode(values, "utf-8")).max(initial=0))
    if longest > MAX_TEXT_BYTES:
        raise BadInputError(f"{path}: '{name}' holds a value of {longest} UTF-8 bytes; at most {MAX_TEXT_BYTES} "
                            "are supported — use shorter ids/labels (e.g. a hash)")
    return values


def checked_column(path: str, name: str, values: np.ndarray) -> np.ndarray:
    """An id or label column as int64 or unicode, or BadInputError saying why it cannot be.

    Integers become int64 (uint64 values beyond int64 are refused); unicode/UTF-8 bytes stay
    text. Floats are refused even when integral, because a float id or label is almost always a
    column mix-up and truncating it merges distinct rows.
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise BadInputError(f"{path}: '{name}' must be 1-D (one value per row), got shape {values.shape}; "
                            f"save {name} as a flat array")
    kind = values.dtype.kind
    if kind in "US":
        return _text(path, name, values)
    if kind == "u" and values.dtype.itemsize == 8 and len(values) and values.max() > np.iinfo(np.int64).max:
        raise BadInputError(f"{path}: '{name}' holds uint64 values above 2^63-1; store them as int64 or strings")
    if kind in "iu":
        return values.astype(np.int64)
    reason = {"f": "floating-point", "c": "complex", "b": "boolean", "O": "object (pickled)",
              "M": "datetime", "m": "timedelta", "V": "structured"}.get(kind, str(values.dtype))
    extra = ""
    if kind == "f" and len(values):
        bad = ~np.isfinite(values)
        extra = (f" with {int(bad.sum())} NaN/Inf" if bad.any()
                 else " (integral values)" if np.all(values == np.round(values)) else " (fractional values)")
    raise BadInputError(f"{path}: '{name}' is {reason} ({values.dtype}){extra}; {name} must be integers or "
                        f"strings — convert them before saving (e.g. {name}.astype('int64') if they are "
                        "whole numbers, or str)")


def read_text_or_int(arrays: dict, name: str) -> np.ndarray | None:
    """``arrays[name]``, or the decoded ``arrays[name + '_utf8']``; None when neither is present."""
    if name in arrays:
        return np.asarray(arrays[name])
    if f"{name}_utf8" in arrays:
        return decode_text(np.asarray(arrays[f"{name}_utf8"]), f"'{name}_utf8'")
    return None


def same_column_types(what: str, named: dict[str, np.ndarray]) -> None:
    """Refuse to match ids (or labels) of one source that are text against another's integers."""
    kinds = {name: column_type(values) for name, values in named.items() if values is not None}
    if len(set(kinds.values())) > 1:
        shown = ", ".join(f"{name} has {'string' if kind == UTF8 else 'integer'} {what}" for name, kind in kinds.items())
        raise BadInputError(f"{shown}; {what} of different types never match — store them the same way "
                            "(all strings or all integers)")
