"""The schema of the configuration: leaf settings read off dataclass fields, and the
conversion of raw values (YAML, environment strings, flags) to their typed, checked form.

Layer L1: stdlib only. `talon.config` declares the settings with `meta(...)` on each
dataclass field and reads every source through `Field` and `convert`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any


def meta(help_: str, *, min_: float | None = None, max_: float | None = None,
          gt: float | None = None, env: tuple[str, ...] = (), aliases: tuple[str, ...] = (),
          check: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Field metadata: help text, bounds, extra env names, extra file keys, normaliser."""
    return {"help": help_, "min": min_, "max": max_, "gt": gt, "env": env,
            "aliases": aliases, "check": check}



@dataclass(frozen=True, slots=True, kw_only=True)
class Field:
    """One leaf setting: dotted key, value kind and the rules from its metadata."""

    key: str
    kind: str
    default: Any
    help: str
    env: tuple[str, ...]
    aliases: tuple[str, ...]
    min: float | None
    max: float | None
    gt: float | None
    check: Callable[[Any], Any] | None


_KINDS: dict[Any, str] = {str: "str", int: "int", float: "float", bool: "bool",
                          tuple[str, ...]: "list"}


def fields_of(cls: type, prefix: str = "", *, skip: tuple[str, ...] = ()) -> Iterator[Field]:
    """The leaf settings of dataclass `cls` (nested dataclasses are sections), but `skip`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            yield from fields_of(hints[f.name], key + ".", skip=skip)
        elif key not in skip:
            meta = f.metadata
            yield Field(key=key, kind=_KINDS[hints[f.name]], default=f.default,
                         help=meta["help"], env=(key.upper().replace(".", "_"), *meta["env"]),
                         aliases=meta["aliases"], min=meta["min"], max=meta["max"],
                         gt=meta["gt"], check=meta["check"])


_INT_RX = re.compile(r"[+-]?\d+")
_FLOAT_RX = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_BOOLS = {"true": True, "false": False}
_ENV_BOOLS = {**_BOOLS, "1": True, "0": False, "yes": True, "no": False}


def show(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a map"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(value)


def _to_str(value: Any, from_env: bool) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise ValueError(f"expected string, got {show(value)}")


def _to_int(value: Any, from_env: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_RX.fullmatch(value.strip()):
        return int(value.strip())
    raise ValueError(f"expected integer, got {show(value)}")


def _to_float(value: Any, from_env: bool) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and _FLOAT_RX.fullmatch(value.strip()):
        number = float(value.strip())
    if number is None or not math.isfinite(number):
        raise ValueError(f"expected number, got {show(value)}")
    return number


def _to_bool(value: Any, from_env: bool) -> bool:
    if isinstance(value, bool):
        return value
    table = _ENV_BOOLS if from_env else _BOOLS
    if isinstance(value, str) and value.strip().lower() in table:
        return table[value.strip().lower()]
    words = "/".join(table)
    raise ValueError(f"expected boolean ({words}), got {show(value)}")


def _to_list(value: Any, from_env: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list or a comma-separated string, got {show(value)}")
    items: list[Any] = []
    for index, item in enumerate(value):
        if isinstance(item, Mapping) and item and all(
                isinstance(v, str | int | float) for v in item.values()):
            items.append(dict(item))  # a list of small records; the field's check reads it
            continue
        if isinstance(item, Mapping | list | tuple) or item is None:
            raise ValueError(f"item {index}: expected string, got {show(item)}")
        items.append(_to_str(item, from_env))
    return tuple(items)


_CONVERT: dict[str, Callable[[Any, bool], Any]] = {
    "str": _to_str, "int": _to_int, "float": _to_float, "bool": _to_bool, "list": _to_list}


def _only_text(items: tuple[Any, ...], *, records: bool) -> None:
    """A list setting holds strings; maps only where a check turns them into strings."""
    for index, item in enumerate(items):
        if not isinstance(item, str) and not records:
            raise ValueError(f"item {index}: expected string, got {show(item)}")


def check_range(f: Field, value: Any) -> None:
    if f.kind not in ("int", "float"):
        return
    if f.gt is not None and not value > f.gt:
        raise ValueError(f"must be > {f.gt}, got {value}")
    low = f.min is not None and value < f.min
    high = f.max is not None and value > f.max
    if (low or high) and f.min is not None and f.max is not None:
        raise ValueError(f"must be between {f.min} and {f.max}, got {value}")
    if low:
        raise ValueError(f"must be >= {f.min}, got {value}")
    if high:
        raise ValueError(f"must be <= {f.max}, got {value}")


def convert(f: Field, value: Any, *, from_env: bool) -> Any:
    """The typed, checked value of `f`; raises ValueError with the reason."""
    result = _CONVERT[f.kind](value, from_env)
    if f.kind == "list":
        _only_text(result, records=f.check is not None)
    if f.check is not None:
        result = f.check(result)
    check_range(f, result)
    return result
