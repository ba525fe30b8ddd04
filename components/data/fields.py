"""Typed, bounded config dataclasses: build them from strings (CLI ``--set key=value``, KFP parameters) and check them.

A config is a plain ``@dataclass`` whose fields carry ``metadata={"help": ..., "choices": ..., "min": ..., "max": ...}``
(the trl ``sft_config.py`` style). :func:`from_mapping` turns a mapping of raw values into the dataclass, converting
strings by the field's annotation; :func:`check_bounds` enforces ``choices``/``min``/``max``. Every problem raises
:class:`ConfigError` naming the field, so callers can show it to the user as is.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Any, Literal, Mapping, TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}
_NONE = {"none", "null", ""}


class ConfigError(ValueError):
    """An invalid configuration value; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return True, args[0] if len(args) == 1 else typing.Union[tuple(args)]
    return False, tp


def _coerce(name: str, tp: Any, value: Any) -> Any:
    optional, inner = _is_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE):
        if optional:
            return None
        raise ConfigError(name, "may not be empty")
    origin = typing.get_origin(inner)
    if origin is Literal:
        choices = typing.get_args(inner)
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if inner is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(name, f"must be true or false, got {value!r}")
    if inner is int:
        if isinstance(value, bool):
            raise ConfigError(name, f"must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise ConfigError(name, f"must be an integer, got {value!r}") from None
    if inner is float:
        if isinstance(value, bool):
            raise ConfigError(name, f"must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(name, f"must be a number, got {value!r}") from None
    if inner is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(name, f"must be a string, got {value!r}")
        return str(value)
    if origin in (list, tuple):
        item_tp = (typing.get_args(inner) or (str,))[0]
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError:
                    raise ConfigError(name, f"is not a valid JSON list: {value!r}") from None
            else:
                value = [part.strip() for part in text.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, f"must be a list, got {value!r}")
        return [_coerce(name, item_tp, item) for item in value]
    return value


def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass's fields."""
    return typing.get_type_hints(cls)


def from_mapping(cls: type[T], values: Mapping[str, Any]) -> T:
    """Build dataclass ``cls`` from ``values``, converting strings by annotation; unknown keys are errors."""
    names = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in names:
            close = difflib.get_close_matches(key, list(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(key, f"unknown field for {cls.__name__}{hint}")
        kwargs[key] = _coerce(key, hints[key], raw)
    return cls(**kwargs)


def check_bounds(obj: Any) -> None:
    """Enforce the ``choices``, ``min`` and ``max`` metadata of every field (and Literal/Optional annotations)."""
    hints = field_types(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        optional, inner = _is_optional(hints[f.name])
        if value is None:
            if not optional:
                raise ConfigError(f.name, "may not be empty")
            continue
        # Re-coerce: catches wrong types passed straight to the constructor.
        value = _coerce(f.name, inner, value)
        setattr(obj, f.name, value)
        meta = f.metadata
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(f.name, f"must be one of {', '.join(map(repr, meta['choices']))}, got {value!r}")
        if "min" in meta and value < meta["min"]:
            raise ConfigError(f.name, f"must be >= {meta['min']}, got {value!r}")
        if "max" in meta and value > meta["max"]:
            raise ConfigError(f.name, f"must be <= {meta['max']}, got {value!r}")


def parse_assignments(pairs: list[str] | None) -> dict[str, str]:
    """Turn ``["key=value", ...]`` (CLI ``--set``) into a dict; a pair without ``=`` is an error naming it."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(pair or "--set", "expected key=value")
        out[key.strip()] = value
    return out


def describe(cls: type) -> list[dict[str, Any]]:
    """One row per field: name, type, default and help text (for docs and ``--help``)."""
    rows = []
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        tp = hints[f.name]
        rows.append(
            {
                "name": f.name,
                "type": getattr(tp, "__name__", None) or str(tp).replace("typing.", ""),
                "default": default,
                "help": f.metadata.get("help", ""),
            }
        )
    return rows
