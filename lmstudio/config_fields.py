"""How a setting is declared, read from text and checked, for every section of ``config.RunConfig``.

Each field is a dataclass field made by ``setting``, whose metadata (help text, bounds, choices, the
architectures it applies to) drives both the checks here and the UI's generated form. ``parse_value`` reads
what a person typed (a CLI override, a form's text box); ``field_error`` and ``section_errors`` say, in words
naming the field, why a value is not acceptable. No torch, no Qt (the shared layer).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import MISSING, field, fields
from typing import Any

from lmstudio.errors import ConfigError


def setting(
    default: Any,
    help: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    only: tuple[str, ...] | None = None,
    lo_open: bool = False,
) -> Any:
    """A dataclass field whose metadata drives validation and the UI's generated form.

    ``lo``/``hi`` bound numbers (``lo_open`` makes the lower bound exclusive), ``choices`` lists
    allowed strings, ``only`` names the architectures the field applies to (the form hides it
    for the others).
    """
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "only": only, "lo_open": lo_open}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def split_assignment(text: str) -> tuple[str, str]:
    """A dotted override ``section.field=value`` as (key, value); ConfigError when it has no ``=``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError({text: "expected key=value, e.g. train.lr=3e-4"})
    return key.strip(), value.strip()


def field_type(spec: dataclasses.Field) -> type:
    """The Python type of a field's default (annotations are strings under __future__)."""
    if spec.default is not MISSING:
        return type(spec.default)
    factory = spec.default_factory
    assert factory is not MISSING, f"field {spec.name} has no default"
    return type(factory())


def parse_value(spec: dataclasses.Field, raw: str) -> Any:
    """Parse text typed by a user (CLI or form) into the field's type; ValueError says why."""
    kind = field_type(spec)
    raw = raw.strip()
    if kind is bool:
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if kind is int:
        try:
            as_float = float(raw)
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
        if not math.isfinite(as_float) or as_float != int(as_float):
            raise ValueError(f"expected a whole number, got {raw!r}")
        return int(as_float)
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    if kind is list:
        return [s for s in raw.split(",") if s] if raw else []
    return raw


def field_error(spec: dataclasses.Field, value: Any) -> str | None:
    """Why ``value`` is not acceptable for this field, or None."""
    kind = field_type(spec)
    meta = spec.metadata
    if kind is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        if kind is int and not isinstance(value, int):
            return "must be a whole number"
        if not math.isfinite(value):
            return "must be a finite number"
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is not None and (value <= lo if meta.get("lo_open") else value < lo):
            return f"must be {'above' if meta.get('lo_open') else 'at least'} {lo:g}"
        if hi is not None and value > hi:
            return f"must be at most {hi:g}"
        return None
    if kind is str:
        if not isinstance(value, str):
            return "must be text"
        choices = meta.get("choices")
        if choices and value not in choices:
            return f"must be one of {', '.join(choices)}"
        if not choices and not value.strip():
            return "must not be empty"
        return not_utf8(value)
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return "must be a list of strings"
        return next((e for e in map(not_utf8, value) if e), None)
    return None


def not_utf8(text: str) -> str | None:
    # a file name with bytes that are not UTF-8 reaches Python as lone surrogates; config.json cannot hold it
    if any("\ud800" <= c <= "\udfff" for c in text):
        return (
            "contains bytes that are not UTF-8 (a file name from another system?); rename the file or folder"
        )
    return None


def section_errors(section: str, obj: Any) -> dict[str, str]:
    errs = {}
    for spec in fields(obj):
        msg = field_error(spec, getattr(obj, spec.name))
        if msg:
            errs[f"{section}.{spec.name}"] = msg
    return errs


def is_type_ok(kind: type, value: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, float)
    if kind is str:
        return isinstance(value, str)
    if kind is list:
        return isinstance(value, list)
    return True
