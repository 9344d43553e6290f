"""Typed configs: YAML files and dotted ``key=value`` overrides into dataclasses.

A config class is a plain dataclass whose fields may be nested dataclasses. Range and choice
constraints live in field metadata (see :func:`option`). Loading collects *every* problem
(unknown key, wrong type, out-of-range value) and raises one :class:`ConfigError` before any
expensive work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from compatctl.errors import ConfigError

T = TypeVar("T")
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def option(default: Any = dataclasses.MISSING, *, min: float | None = None, max: float | None = None,
           choices: tuple | None = None, help: str = "", default_factory: Any = dataclasses.MISSING):
    """A dataclass field with validation metadata (inclusive ``min``/``max``, ``choices``)."""
    meta = {"min": min, "max": max, "choices": choices, "help": help}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def parse_overrides(overrides: list[str]) -> dict:
    """``["a.b=3", "kind=mlp"]`` -> ``{"a": {"b": 3}, "kind": "mlp"}``; values parsed as YAML."""
    nested: dict = {}
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r} is not of the form key=value")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"override {item!r} sets a key below a non-mapping value")
                break
        else:
            node[parts[-1]] = value
    if problems:
        raise ConfigError(problems, "overrides")
    return nested


def deep_merge(base: dict, update: dict) -> dict:
    """Return ``base`` updated recursively by ``update`` (update wins)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict:
    """Read a YAML mapping with ``yaml.safe_load``; an empty file is an empty mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"file not found; pass an existing YAML file"], str(path))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError([f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"], str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a mapping of key: value"], str(path))
    return data


def load_config(cls: type[T], path: Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> T:
    """Build ``cls`` from ``base`` (defaults), then the YAML file, then overrides (which win)."""
    data = dict(base or {})
    source = str(path) if path else "config"
    if path is not None:
        data = deep_merge(data, read_yaml(path))
    if overrides:
        data = deep_merge(data, parse_overrides(overrides))
    return from_dict(cls, data, source)


def from_dict(cls: type[T], data: dict, source: str = "config") -> T:
    """Convert a mapping into the dataclass ``cls``, raising one ConfigError with all problems."""
    problems: list[str] = []
    result = _build(cls, data, "", problems)
    if problems:
        raise ConfigError(problems, source)
    return result


def to_dict(config: Any) -> dict:
    """A plain, JSON/YAML-serializable dict of a config dataclass."""
    return dataclasses.asdict(config)


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    if not isinstance(data, dict):
        problems.append(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            guess = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            problems.append(f"unknown key {prefix}{key!r}{hint}; valid keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, field in fields.items():
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                problems.append(f"missing required key '{prefix}{name}'")
            continue
        value = _coerce(hints[name], data[name], f"{prefix}{name}", problems)
        _check_range(field, value, f"{prefix}{name}", problems)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError:
        return None


def _coerce(tp: Any, value: Any, key: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, key + ".", problems)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option_tp in options:
            if option_tp is type(None):
                continue
            trial: list[str] = []
            coerced = _coerce(option_tp, value, key, trial)
            if not trial:
                return coerced
        names = " or ".join(_type_name(t) for t in options)
        problems.append(f"'{key}' must be {names}, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list):
            problems.append(f"'{key}' must be a list, got {value!r}")
            return value
        return [_coerce(item_tp, item, f"{key}[{i}]", problems) for i, item in enumerate(value)]
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            problems.append(f"'{key}' must be one of {', '.join(map(str, typing.get_args(tp)))}; got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads "4e-3" (no dot) as a string
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        problems.append(f"'{key}' must be {_type_name(tp)}, got {value!r}")
    return value


def _check_range(field: dataclasses.Field, value: Any, key: str, problems: list[str]) -> None:
    meta = field.metadata
    if not meta or isinstance(value, bool):
        return
    if meta.get("choices") is not None and value not in meta["choices"]:
        problems.append(f"'{key}' must be one of {', '.join(map(str, meta['choices']))}; got {value!r}")
    if isinstance(value, (int, float)):
        if meta.get("min") is not None and value < meta["min"]:
            problems.append(f"'{key}' must be >= {meta['min']}, got {value}")
        if meta.get("max") is not None and value > meta["max"]:
            problems.append(f"'{key}' must be <= {meta['max']}, got {value}")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))
