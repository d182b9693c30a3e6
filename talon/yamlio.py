"""YAML reading with line numbers and YAML 1.2 scalars, shared by rules and config.

Layer L1: stdlib + pyyaml. Mappings load as `LineDict` (a dict that remembers the line of
the mapping and of each key, and the source text of values read as booleans or numbers,
so that `ratio: 1.50` can be taken as the string "1.50" where a string is meant).
Booleans follow YAML 1.2 and the Go decoder: only true/false (any case); `yes`, `no`,
`on`, `off` stay strings; `1:20` is not a number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LineDict(dict[Any, Any]):
    """A mapping from YAML that knows its line (1-based) and the line of each key."""

    line: int | None = None
    key_lines: dict[Any, int]
    value_texts: dict[Any, str]
    """The YAML source text of each value read as a boolean or a number."""

    def line_of(self, key: Any) -> int | None:
        return getattr(self, "key_lines", {}).get(key, self.line)


def copy_marks(source: Mapping[Any, Any], copied: dict[Any, Any]) -> dict[Any, Any]:
    """`copied` (a copy of `source`'s items), with `source`'s lines and source texts."""
    if not isinstance(source, LineDict):
        return copied
    out = LineDict(copied)
    out.line = source.line
    out.key_lines = dict(getattr(source, "key_lines", {}))
    out.value_texts = dict(getattr(source, "value_texts", {}))
    return out


def update(target: dict[Any, Any], source: Mapping[Any, Any]) -> None:
    """`target.update(source)`, keeping the source texts of the values it takes."""
    target.update(source)
    if isinstance(target, LineDict):
        texts = {k: v for k, v in getattr(target, "value_texts", {}).items() if k not in source}
        texts.update(getattr(source, "value_texts", {}))
        target.value_texts = texts


class _Loader(_BASE):  # type: ignore[misc]
    pass


def _resolvers() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    dropped = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int")
    table = {ch: [(tag, rx) for tag, rx in lst if tag not in dropped]
             for ch, lst in _BASE.yaml_implicit_resolvers.items()}
    bool_rx = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
    int_rx = re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0o[0-7]+|0x[0-9a-fA-F]+)$")
    for ch in "tTfF":
        table.setdefault(ch, []).insert(0, ("tag:yaml.org,2002:bool", bool_rx))
    for ch in "-+0123456789":
        table.setdefault(ch, []).insert(0, ("tag:yaml.org,2002:int", int_rx))
    return table


_Loader.yaml_implicit_resolvers = _resolvers()


def _bool(loader: Any, node: yaml.ScalarNode) -> bool:
    return str(loader.construct_scalar(node)).lower() == "true"


def _mapping(loader: Any, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    result.value_texts = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable key", key_node.start_mark) from None
        value = result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
        if isinstance(value, bool | int | float) and isinstance(value_node, yaml.ScalarNode):
            result.value_texts[key] = value_node.value
    return result


_Loader.add_constructor("tag:yaml.org,2002:bool", _bool)
_Loader.add_constructor("tag:yaml.org,2002:map", _mapping)


class YamlError(Exception):
    """A YAML syntax error, with the file and line."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path, self.line = path, line
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: wrong syntax: {message}")


def loads(text: str, path: str = "<string>") -> Any:
    """Parse one YAML document; raises YamlError naming `path` and the line."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader derives from SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise YamlError(path, line, str(exc.problem or exc.context or exc)) from None
    except yaml.YAMLError as exc:
        raise YamlError(path, None, str(exc)) from None


def load_file(path: str | Path) -> Any:
    """Read and parse a YAML file (UTF-8); OSError propagates to the caller."""
    text = Path(path).read_text(encoding="utf-8")
    return loads(text, str(path))
