"""Coerce a rule's `parameters:` mapping into a plug-in's frozen params dataclass.

Layer L0: stdlib only. The dataclass fields are the schema: a field without a default is
required; the annotation gives the type (str, int, float, bool, list[str], Mapping[str, str],
Mapping[str, Any], Literal[...], optional `| None`); `field(metadata=...)` may add
`min`, `max` and `help`. A params class may define `advice()`, returning (field, text)
pairs reported as warnings (valid, but worth changing). Cross-field rules live in
`__post_init__` and raise `ParamValueError` (or ValueError). Every problem is returned, none raised.
Typing follows the Go decoder: a string field takes only strings, an int field takes
integers (a float is truncated), a bool field takes booleans (and the strings true/false).
A map field marked `metadata={"text_values": True}` (label and annotation values) also takes
YAML booleans and numbers, as their source text (a mapping's `value_texts`, which
talon.yamlio records, else `str()` with lower-case booleans), with a warning each.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from talon import models

MISSING = dataclasses.MISSING


class ParamValueError(ValueError):
    """Raised by a params dataclass's `__post_init__`; names the offending parameter."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


@dataclasses.dataclass(frozen=True, slots=True)
class ParamProblem:
    """One problem with one parameter: `field` is the dotted key inside `parameters`."""

    field: str
    message: str
    severity: Literal["error", "warning"] = "error"


@dataclasses.dataclass(frozen=True, slots=True)
class FieldSpec:
    """A rendered schema entry, for the `list` commands and the docs."""

    name: str
    type: str
    required: bool
    default: Any
    help: str


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args if a is not type(None)) + " (optional)"
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin in (dict, Mapping) or tp is Mapping:
        return f"map of {_type_name(args[1])}" if args else "map"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _hint(value: Any, want: str) -> str:
    if want == "string" and isinstance(value, bool | int | float):
        text = str(value).lower() if isinstance(value, bool) else str(value)
        return f' (quote it: "{text}")'
    return ""


def _coerce(tp: Any, value: Any, name: str, out: list[ParamProblem]) -> Any:
    """Return the coerced value, or MISSING after recording a problem."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for candidate in inner[:-1]:  # `str | int`: the first type that takes the value
            tried: list[ParamProblem] = []
            found = _coerce(candidate, value, name, tried)
            if not tried:
                return found
        return _coerce(inner[-1], value, name, out)
    if tp is Any:
        return value
    if origin is Literal:
        if value in args and type(value) is type(args[0]):
            return value
        allowed = ", ".join(str(a) for a in args)
        out.append(ParamProblem(name, f"must be one of {allowed}, got {value!r}"))
        return MISSING
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value in ("true", "false"):
            return value == "true"
        out.append(ParamProblem(
            name, f"expected a boolean (true or false), got {_kind(value)} {value!r}"))
        return MISSING
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        out.append(ParamProblem(name, f"expected an integer, got {_kind(value)} {value!r}"))
        return MISSING
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        out.append(ParamProblem(name, f"expected a number, got {_kind(value)} {value!r}"))
        return MISSING
    if tp is str:
        if isinstance(value, str):
            return value
        out.append(ParamProblem(
            name, f"expected a string, got {_kind(value)} {value!r}{_hint(value, 'string')}"))
        return MISSING
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            out.append(ParamProblem(name, f"expected a list, got {_kind(value)} {value!r}"))
            return MISSING
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, v, f"{name}[{i}]", out) for i, v in enumerate(value)]
        return MISSING if any(i is MISSING for i in items) else tuple(items)
    if origin in (dict, Mapping) or tp is Mapping:
        if not isinstance(value, Mapping):
            out.append(ParamProblem(name, f"expected a map, got {_kind(value)} {value!r}"))
            return MISSING
        val_tp = args[1] if args else Any
        result: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                out.append(ParamProblem(name, f"map keys must be strings, got {k!r}"))
                return MISSING
            result[k] = _coerce(val_tp, v, f"{name}.{k}", out)
        return MISSING if MISSING in result.values() else types.MappingProxyType(result)
    raise TypeError(f"unsupported parameter type {tp!r} for {name}")


def _as_text(value: bool | int | float, source: str | None) -> str:
    if source:
        return source
    return str(value).lower() if isinstance(value, bool) else str(value)


def _texts_of(name: str, values: Mapping[Any, Any]) -> tuple[dict[Any, Any],
                                                             list[ParamProblem]]:
    """`values` with booleans and numbers as their text, and one warning for each."""
    sources = getattr(values, "value_texts", None) or {}
    converted = dict(values)
    problems = []
    for key, value in values.items():
        if isinstance(value, bool | int | float):
            text = converted[key] = _as_text(value, sources.get(key))
            kind = "boolean" if isinstance(value, bool) else "number"
            problems.append(ParamProblem(
                f"{name}.{key}", f'a YAML {kind}, taken as the string "{text}": quote it '
                f'({key}: "{text}")', "warning"))
    return converted, problems


def text_values(cls: type, raw: Mapping[str, Any]) -> tuple[Mapping[str, Any],
                                                            list[ParamProblem]]:
    """`raw` with YAML booleans and numbers in `text_values` maps turned into strings."""
    problems: list[ParamProblem] = []
    result = raw
    for name, f in _schema(cls)[1].items():
        values = raw.get(name)
        if f.metadata.get("text_values") and isinstance(values, Mapping):
            converted, found = _texts_of(name, values)
            if found:
                result = {**result, name: converted}
                problems += found
    return result, problems


def _check_range(f: dataclasses.Field[Any], value: Any, out: list[ParamProblem]) -> None:
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    if lo is not None and value < lo:
        out.append(ParamProblem(f.name, f"must be >= {lo}, got {value}"))
    if hi is not None and value > hi:
        out.append(ParamProblem(f.name, f"must be <= {hi}, got {value}"))


@functools.cache
def _schema(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """Type hints and fields of a params class, computed once per class."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}


def coerce(cls: type, raw: Mapping[str, Any] | None) -> tuple[Any, list[ParamProblem]]:
    """Build `cls` from `raw`; returns (instance or None, problems).

    Unknown keys are warnings naming the nearest known key; a null value counts as absent.
    """
    raw, problems = text_values(cls, raw or {})
    hints, fields = _schema(cls)
    for key in raw:
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            tip = f" (did you mean '{near[0]}'?)" if near else ""
            known = ", ".join(fields) or "none"
            problems.append(ParamProblem(
                str(key), f"unknown parameter{tip}; known parameters: {known}", "warning"))
    values: dict[str, Any] = {}
    for name, f in fields.items():
        value = raw.get(name)
        if value is None:
            if f.default is MISSING and f.default_factory is MISSING:
                problems.append(ParamProblem(name, "required parameter is missing"))
            continue
        coerced = _coerce(hints[name], value, name, problems)
        if coerced is not MISSING:
            _check_range(f, coerced, problems)
            values[name] = coerced
    if any(p.severity == "error" for p in problems):
        return None, problems
    try:
        value = cls(**values)
    except ParamValueError as exc:
        problems.append(ParamProblem(exc.field, str(exc)))
    except (ValueError, TypeError) as exc:
        problems.append(ParamProblem("", str(exc)))
    else:
        advice = getattr(value, "advice", None)
        problems += [ParamProblem(name, text, "warning") for name, text in
                     (advice() if callable(advice) else ())]
        return value, problems
    return None, problems


def describe(cls: type | None) -> list[FieldSpec]:
    """The schema of `cls`, field by field, for display."""
    if cls is None:
        return []
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        required = f.default is MISSING and f.default_factory is MISSING
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = None
        specs.append(FieldSpec(f.name, _type_name(hints[f.name]), required, default,
                               str(f.metadata.get("help", ""))))
    return specs


def to_plain(value: Any) -> Any:
    """A params instance (or any coerced value) as plain JSON-ready data."""
    return models.plain(value)


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(value: str | int | float) -> float:
    """Seconds in `value` ("90s", "30m", "2h", "1d" or a number); ValueError when invalid."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    found = _DURATION.fullmatch(str(value))
    if found is None:
        raise ValueError(f"'{value}' is not a duration: write 90s, 30m, 2h, 1d or seconds")
    return float(found.group(1)) * _UNITS[found.group(2)]
