"""Falco events as Talon sees them, and the records actions and notifiers exchange.

Layer L0: stdlib only. `decode(body)` turns the JSON that Falco's http output or
Falcosidekick's talon output POSTs into a frozen `Event`, or raises `EventError` naming
the field. Top-level keys match case-insensitively (as the Go decoder does); numbers in
`output_fields` keep their exact JSON text for matching and substitution.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time as _time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from talon.errors import EventError

DEFAULT_SOURCE = "syscall"
"""What the Go version assigns to an event without `source` (singular, sic)."""

_PREFIX = re.compile(
    r"^\d{2}:\d{2}:\d{2}\.\d{9}: "
    r"(Debug|Informational|Info|Notice|Warning|Error|Critical|Alert|Emergency)",
    re.IGNORECASE,
)
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")

_KNOWN = frozenset(("output", "priority", "rule", "time", "output_fields", "hostname",
                    "source", "tags", "context", "trace_id"))


def trim_output(output: str) -> str:
    """Drop the leading `HH:MM:SS.nnnnnnnnn: Priority` and one space, as upstream does.

    Unlike upstream, `Informational` is tried before `Info` (no `rmational …` outputs).
    """
    trimmed = _PREFIX.sub("", output, count=1)
    if trimmed is not output and trimmed.startswith(" "):
        trimmed = trimmed[1:]
    return trimmed


def value_text(value: Any) -> str:
    """The text an output-field value compares and substitutes as.

    Strings as-is; numbers as their exact JSON literal; booleans `true`/`false`;
    null `<nil>` (as the Go version prints it); lists and maps as compact JSON.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    if isinstance(value, int | Decimal | float):
        return str(value)
    return json.dumps(plain(value), separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def plain(value: Any) -> Any:
    """Frozen data (mapping proxies, tuples, dataclasses) as plain JSON/YAML-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


_SCALARS = (str, int, float, bool, type(None), Decimal)
_SCALAR_TYPES = frozenset(_SCALARS)


def _flat(values: Any) -> bool:
    """Whether `values` holds scalars only (exact JSON types are checked at C speed)."""
    return _SCALAR_TYPES.issuperset(map(type, values)) or all(
        isinstance(v, _SCALARS) for v in values)


def freeze(value: Any) -> Any:
    """A deep read-only copy of plain data (maps → mapping proxies, lists → tuples); flat
    containers (the usual output_fields and tags) are copied in one step."""
    if isinstance(value, Mapping):
        if _flat(value.values()):
            return types.MappingProxyType(dict(value))
        return types.MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        if _flat(value):
            return tuple(value)
        return tuple(freeze(v) for v in value)
    return value


def _string_like(value: Any) -> str:
    """Upstream getter rule: strings and numbers count, anything else is absent."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | Decimal | float) and not isinstance(value, bool):
        return str(value)
    return ""


POD_KEYS = ("k8s.pod.name", "ka.target.pod.name", "ka.target.name")
"""Where an event names its pod, first present wins."""
NAMESPACE_KEYS = ("k8s.ns.name", "ka.target.namespace")
"""Where an event names its namespace, first present wins."""


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    return "an array" if isinstance(value, list | tuple) else type(value).__name__


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """A decoded Falco event. `output` is already trimmed; `extra` keeps unknown keys."""

    output: str = ""
    priority: str = ""
    rule: str = ""
    time: str = ""
    output_fields: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    hostname: str = ""
    source: str = DEFAULT_SOURCE
    tags: tuple[Any, ...] = ()
    context: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    trace_id: str = ""
    extra: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    parent_span_id: str = ""
    """The caller's span id (16 hex digits) when the POST carried a W3C `traceparent`:
    the event's root span continues that span."""
    raw: str = field(default="", repr=False, compare=False)
    """The JSON text the event was decoded from (`decode`), kept so that a journal can
    store it as received without encoding the event again."""

    def field_text(self, key: str) -> str | None:
        """The text of output field `key` for matching, or None when the event lacks it."""
        if key not in self.output_fields:
            return None
        return value_text(self.output_fields[key])

    def _first(self, *keys: str) -> str:
        for key in keys:
            text = _string_like(self.output_fields.get(key))
            if text:
                return text
        return ""

    def pick(self, *keys: str) -> tuple[str, str]:
        """(key, text) of the first of `keys` the event has; ("", "") when it has none.

        A later key is used only when the earlier ones are absent: a present key that is
        null or "" gives "" (no fallback), so a rule's `k8s.ns.name!=kube-system` and the
        actionner see the same value. Raises EventError when the value is not a string.
        """
        for key in keys:
            if key in self.output_fields:
                value = self.output_fields[key]
                if value is None or isinstance(value, str):
                    return key, value or ""
                raise EventError(key, f"expected a string, got {_json_kind(value)}")
        return "", ""

    def pod_name(self) -> str:
        """The pod the event is about; EventError when that field is not a string."""
        return self.pick(*POD_KEYS)[1]

    def namespace(self) -> str:
        """The namespace the event is about; EventError when that field is not a string."""
        return self.pick(*NAMESPACE_KEYS)[1]

    def target_name(self) -> str:
        return self.pick("ka.target.name")[1]

    def target_namespace(self) -> str:
        return self.pick("ka.target.namespace")[1]

    def target_resource(self) -> str:
        return self.pick("ka.target.resource")[1]

    def remote_ip(self) -> str:
        return self._first("fd.rip", "fd.sip")

    def remote_port(self) -> str:
        return self._first("fd.rport", "fd.sport")

    def remote_protocol(self) -> str:
        return self._first("fd.rproto", "fd.sproto")

    def string_tags(self) -> frozenset[str]:
        """The event's tags that are strings (only those can match a rule's tags)."""
        return frozenset(t for t in self.tags if isinstance(t, str))

    def to_dict(self, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The event as plain data with the Go serialisation's keys (plus `context`)."""
        ctx = dict(self.context)
        if context:
            ctx.update(context)
        return {
            "trace_id": self.trace_id, "output": self.output, "priority": self.priority,
            "rule": self.rule, "hostname": self.hostname,
            "time": self.time or "0001-01-01T00:00:00Z", "source": self.source,
            "output_fields": plain(self.output_fields), "context": ctx or None,
            "tags": list(plain(self.tags)),
        }

    def to_json(self, context: Mapping[str, Any] | None = None) -> str:
        return json.dumps(self.to_dict(context), default=_json_default)


_STR = frozenset((str,))
_STRING_KEYS = ("output", "priority", "rule", "hostname", "source", "trace_id", "time")


def _expect(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, kind):
        raise EventError(key, f"expected {what}, got {type(value).__name__}")
    return value


MAX_DEPTH = 100
"""How deeply a payload may nest objects and arrays (Falco's are 2 or 3 levels deep)."""
_TOO_DEEP = f"invalid JSON: nested too deeply (more than {MAX_DEPTH} levels)"


def _too_deep(data: Any) -> bool:
    """Whether `data` nests deeper than MAX_DEPTH (walked without recursion)."""
    level: list[Any] = [data] if isinstance(data, dict | list) else []
    for _ in range(MAX_DEPTH):
        level = [child for node in level
                 for child in (node.values() if isinstance(node, dict) else node)
                 if isinstance(child, dict | list)]
        if not level:
            return False
    return True


def decode(body: bytes | str, *, trace_id: str = "", parent_span_id: str = "") -> Event:
    """Parse and validate one Falco event; raises EventError naming the bad field.

    A non-empty `trace_id` replaces the payload's (the server assigns its own);
    `parent_span_id` is the caller's span, from its `traceparent`.
    """
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventError("", f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    if not body.strip():
        raise EventError("", "empty body: expected one JSON object")
    try:
        data = json.loads(body, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise EventError("", f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")\
            from None
    except RecursionError:
        raise EventError("", _TOO_DEEP) from None
    except ValueError as exc:  # an integer past sys.get_int_max_str_digits()
        raise EventError("", f"invalid JSON: an integer has more than "
                             f"{sys.get_int_max_str_digits()} digits") from exc
    # A payload cannot nest deeper than its count of opening brackets: the usual event has
    # a handful, so the walk only runs for bodies that could be too deep.
    if body.count("{") + body.count("[") > MAX_DEPTH and _too_deep(data):
        raise EventError("", _TOO_DEEP)
    if not isinstance(data, dict):
        raise EventError("", f"expected a JSON object, got {type(data).__name__}")
    return from_mapping(data, trace_id=trace_id, parent_span_id=parent_span_id, raw=body)


def from_mapping(data: Mapping[str, Any], *, trace_id: str = "",
                 parent_span_id: str = "", raw: str = "") -> Event:
    """Build an Event from decoded JSON (keys matched case-insensitively, later wins)."""
    known: Mapping[str, Any] = data
    extra: dict[str, Any] = {}
    if not _KNOWN.issuperset(data):  # the usual payload has only known lower-case keys
        known = {}
        for key, value in data.items():
            low = key.lower() if isinstance(key, str) else key
            if low in _KNOWN:
                known[low] = value
            else:
                extra[key] = value
    strings = {k: known.get(k) for k in _STRING_KEYS}
    for key, value in strings.items():
        if value is not None and not isinstance(value, str):
            _expect(known, key, str, "a string")  # raises, naming the field
    time = strings["time"] or ""
    if time and not _RFC3339.match(time):
        raise EventError("time", f"expected an RFC 3339 timestamp, got {time!r}")
    if time:
        try:
            datetime.fromisoformat(time.replace("z", "Z").replace("t", "T"))
        except ValueError:
            raise EventError("time", f"not a valid date/time: {time!r}") from None
    fields = _expect(known, "output_fields", dict, "an object")
    if fields is not None and not _STR.issuperset(map(type, fields)) and not all(
            isinstance(k, str) for k in fields):
        raise EventError("output_fields", "keys must be strings")
    tags = _expect(known, "tags", list, "an array")
    context = _expect(known, "context", dict, "an object")
    return Event(
        output=trim_output(strings["output"] or ""),
        priority=strings["priority"] or "",
        rule=strings["rule"] or "",
        time=time,
        output_fields=freeze(fields or {}),
        hostname=strings["hostname"] or "",
        source=strings["source"] or DEFAULT_SOURCE,
        tags=freeze(tags or []),
        context=freeze(context or {}),
        trace_id=trace_id or strings["trace_id"] or "",
        extra=freeze(extra),
        parent_span_id=parent_span_id if trace_id else "",
        raw=raw,
    )


class Status(StrEnum):
    """Outcome of an action, output or notification step."""

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"
    IN_PROGRESS = "in_progress"
    THROTTLED = "throttled"
    """A disruptive action over a governor budget: not run."""
    PROTECTED = "protected"
    """A disruptive action on a protected workload: not run."""
    REVERTED = "reverted"
    """A change made with a `ttl` was undone."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a disruptive action does not run as asked: `throttled`, `protected` or `dry_run`
    (the governor's decision, taken just before the action's checks)."""

    status: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Artifact:
    """Bytes an actionner produced (logs, a file, a capture) for an output to store."""

    name: str
    data: bytes
    content_type: str = "application/octet-stream"


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """What an actionner or output returns: status, text output, objects, artifact."""

    status: Status = Status.SUCCESS
    output: str = ""
    error: str = ""
    objects: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))
    artifact: Artifact | None = None
    cause: BaseException | None = field(default=None, repr=False, compare=False)
    """The exception behind a failure, when there is one: it says whether the action's
    `retries` may try again (talon.retry.is_transient)."""


LOG_KEYS = ("time", "objects", "trace_id", "rule", "event", "message", "priority", "source",
            "result", "notifier", "context", "output", "category", "output_name",
            "output_target", "actionner", "action", "error", "status", "stage")
"""Keys of the upstream log line, which is also the notification (webhook/ES) body."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """One action or output result, as every notifier receives it.

    `message` is `action` or `output`; `objects` keys are title-cased as upstream does
    (`pod` → `Pod`) when rendered by notifiers that show them as fields.
    """

    message: str
    status: str
    trace_id: str
    rule: str = ""
    action: str = ""
    actionner: str = ""
    event: str = ""
    priority: str = ""
    source: str = ""
    output: str = ""
    error: str = ""
    result: str = ""
    output_target: str = ""
    category: str = ""
    objects: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))
    context: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    span_id: str = ""
    """The span of the action or output reported (the parent of the notification's span);
    "" when traces are off. Not part of the log line."""

    def as_log_line(self) -> dict[str, Any]:
        """The upstream log-line JSON: LOG_KEYS order, empty values omitted."""
        values = {
            "objects": dict(self.objects), "trace_id": self.trace_id, "rule": self.rule,
            "event": self.event, "message": self.message, "priority": self.priority,
            "source": self.source, "result": self.result, "context": dict(self.context),
            "output": self.output, "category": self.category,
            "output_target": self.output_target, "actionner": self.actionner,
            "action": self.action, "error": self.error, "status": self.status,
            "stage": self.message,
        }
        return {k: values[k] for k in LOG_KEYS if values.get(k)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """How hard a notifier tries: per-attempt timeout, retries and backoff.

    Built by the notification dispatcher from the settings and handed to each notifier;
    `sleep` is injectable so tests do not wait.
    """

    timeout: float = 10.0
    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 10.0
    sleep: Callable[[float], None] = _time.sleep
