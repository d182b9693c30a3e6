"""Text helpers shared by the notifiers: settings normalisation, key casing, plaintext block.

Layer L2 (notifiers package, stdlib only). `normalise` turns a raw `notifiers.<name>`
mapping (YAML values, or strings from the environment) into what `talon.params.coerce`
expects for a settings dataclass; `plaintext` renders the multi-line summary that smtp
and loki show (k8sevents orders its head differently and reuses `details`); `title_key`
is the upstream display casing of object keys; `STATUS_COLORS` the status palette.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from talon.plugin import Notification

STATUS_COLORS = {"success": "#23ba47", "failure": "#e20b0b", "ignored": "#a4a8b1"}
"""The upstream colour of each status (Slack attachments, the HTML mail's status bar)."""

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_INT = re.compile(r"^\s*[+-]?\d+\s*$")


def title_key(key: str) -> str:
    """Upstream display casing: first letter upper, rest lower (`NetworkPolicy`→`Networkpolicy`)."""
    return key[:1].upper() + key[1:].lower()


def sorted_objects(n: Notification) -> list[tuple[str, str]]:
    """The notification's objects as (display key, value), sorted by display key."""
    return sorted((title_key(k), str(v)) for k, v in n.objects.items())


def _base(tp: Any) -> Any:
    """`X | None` → X; anything else unchanged."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner[0] if len(inner) == 1 else tp
    return tp


def _scalar_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _convert(tp: Any, value: Any) -> Any:
    """Best-effort conversion of one raw value towards the field type; never raises."""
    tp = _base(tp)
    origin = typing.get_origin(tp)
    if tp is bool and isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    elif tp is int and isinstance(value, str) and _INT.match(value):
        return int(value)
    elif tp is str:
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return ", ".join(value)
        return _scalar_text(value)
    elif origin is Literal and isinstance(value, str):
        return value.strip().lower()
    elif origin in (dict, Mapping) or tp is Mapping:
        args = typing.get_args(tp)
        if isinstance(value, Mapping) and args and args[1] is str:
            return {k: _scalar_text(v) for k, v in value.items()}
    return value


def normalise(settings_cls: type, raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Prepare a raw `notifiers.<name>` mapping for `talon.params.coerce(settings_cls, ...)`.

    - top-level keys are lower-cased (the Go configuration loader does this too);
    - aliases declared in `settings_cls.ALIASES` are renamed (`from` → `from_`), unless the
      target key is present as well;
    - bool fields take `true/false/yes/no/on/off/1/0` in any case; int fields take digit
      strings; str fields take numbers and booleans as their text (`user: 99999`) and a
      list of strings as a comma list (`to: [a@x, b@x]`);
      Literal fields are lower-cased; string maps get their scalar values as text.
    Anything that still does not fit is left as is, so `coerce` reports it.
    """
    aliases: Mapping[str, str] = getattr(settings_cls, "ALIASES", {})
    hints = typing.get_type_hints(settings_cls)
    names = {f.name for f in dataclasses.fields(settings_cls)}
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        name = key.lower() if isinstance(key, str) else key
        target = aliases.get(name, name)
        if target != name and (target in out or (raw or {}).get(target) is not None):
            target = name
        if target in names and value is not None:
            value = _convert(hints[target], value)
        out[target] = value
    return out


def labelled(*pairs: tuple[str, str]) -> list[str]:
    """`Label: value` lines for the pairs whose value is set."""
    return [f"{label}: {value}" for label, value in pairs if value]


def details(n: Notification) -> list[str]:
    """The lines after the summary's head: objects, error, result, output, output target."""
    lines = [f"{key}: {value}" for key, value in sorted_objects(n)]
    lines += labelled(("Error", n.error), ("Result", n.result))
    if n.output:
        lines += ["Output: ", n.output.replace("\r\n", "\n")]
    lines += labelled(("OutputTarget", n.output_target))
    return lines


def plaintext(n: Notification, *, trace_label: str = "Trace ID") -> str:
    """The multi-line summary block: status, action, rule, objects, error, output, trace id."""
    lines = [f"Status: {n.status}",
             *labelled(("Action", n.action), ("Actionner", n.actionner), ("Rule", n.rule),
                       ("Event", n.event)),
             f"Message: {n.message}", *details(n), f"{trace_label}: {n.trace_id}"]
    return "\n".join(lines) + "\n"
