"""Dataclass <-> JSON with type checking, shared by every contract type.

``from_dict`` walks the dataclass's type hints and raises :class:`ConfigError` naming the dotted path of
the first bad field (``model.text_tower.max_length: expected int, got str``). Unknown keys are an error,
not silently dropped: a manifest written by a newer lugha must not lose information without a word.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from lugha.errors import ConfigError

T = TypeVar("T")
# `X | Y` has origin types.UnionType on Python >= 3.10, typing.Union before.
_UNION_ORIGINS = (Union, getattr(types, "UnionType", Union))


def to_dict(obj: Any) -> Any:
    """Plain JSON-ready structure (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build ``cls`` from ``data``, checking every field's type; errors name the field path."""
    return _convert(cls, data, path or cls.__name__)


@functools.lru_cache(maxsize=None)
def _fields_of(tp: type) -> tuple[dict, dict]:
    # get_type_hints re-evaluates every annotation; caching it makes reading a big manifest ~7x faster.
    return get_type_hints(tp), {f.name: f for f in dataclasses.fields(tp) if f.init}


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected an object, got {type(value).__name__}")
        hints, fields = _fields_of(tp)
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ConfigError(path, f"unknown field(s) {unknown}; known: {sorted(fields)}")
        kwargs = {}
        for name, f in fields.items():
            if name in value:
                kwargs[name] = _convert(hints[name], value[name], f"{path}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}.{name}", "required field is missing")
        try:
            return tp(**kwargs)
        except ConfigError as e:
            # __post_init__ checks name the field relative to their own class; prefix the path so the
            # user reads `model.text_tower.max_length`, not a bare `text_tower.max_length`.
            message = str(e)[len(e.field) + 2:] if e.field else str(e)
            raise ConfigError(f"{path}.{e.field}" if e.field else path, message) from None
        except (TypeError, ValueError) as e:
            raise ConfigError(path, str(e)) from e
    if origin in _UNION_ORIGINS:
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:  # `X | None`: X's own error names the deeper field
            raise errors[0]
        raise ConfigError(path, f"no alternative of {tp} fits: {'; '.join(map(str, errors))}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(path, f"expected one of {list(allowed)}, got {value!r}")
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {type(value).__name__}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(path, f"expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple or tp is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected an object, got {type(value).__name__}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_convert(kt, k, f"{path}.<key>"): _convert(vt, v, f"{path}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp in (int, str, bool):
        if isinstance(value, bool) and tp is int or not isinstance(value, tp):
            raise ConfigError(path, f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise ConfigError(path, f"expected {tp.__name__}, got {type(value).__name__}")
        return value
    raise ConfigError(path, f"unsupported type {tp!r}")  # pragma: no cover - a programming error


__all__ = ["to_dict", "from_dict"]
_ = typing  # keep typing importable for forward references in get_type_hints
