"""The `loki` notifier: one log entry per notification, pushed to Grafana Loki.

Layer L2. POST `<url>/loki/api/v1/push` with one stream whose labels describe the result
(status, rule, action, actionner, output target, message, objects) and one value: a
nanosecond timestamp and a one-line JSON object `{"trace_id": …, "text": …}`, the text
being the error, result or output (`| json` in LogQL extracts both). The trace id is not
a label, unlike in the Go version: a label value unique to each event makes a stream per
event, which Loki penalises (memory, index size, `max_streams_per_user`). Label names are
made valid Loki names; label values are cut to Loki's default length limit.
"""

from __future__ import annotations

import json
import re
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from talon.notifiers import _http, _text
from talon.plugin import Delivery, Notification, ParamValueError, notifier

PUSH_PATH = "/loki/api/v1/push"
MAX_LABEL_VALUE = 2048
"""Loki's default `max_label_value_length`."""
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_]")

EXAMPLE = """\
notifiers:
  loki:
    url: "https://logs-prod-eu-west-0.grafana.net"
    user: "99999"
    api_key: "xxxxx"
    tenant: ""
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class LokiSettings:
    """Settings of `notifiers.loki`; `url` or its alias `host_port` is required."""

    url: str = ""
    """Base URL of Loki, e.g. http://loki:3100 (the push path is appended)."""
    host_port: str = ""
    """Alias of `url`, as the seed documentation spells it; set only one of them."""
    user: str = ""
    """User for basic auth (Grafana Cloud: the instance id); needs `api_key`."""
    api_key: str = ""
    """Password or API key for basic auth (secret)."""
    tenant: str = ""
    """Sent as X-Scope-OrgID when set."""
    custom_headers: Mapping[str, str] = field(
        default_factory=lambda: types.MappingProxyType({}))
    """Extra headers sent with every request."""

    def __post_init__(self) -> None:
        _http.resolve_url_alias(self)
        if bool(self.user) != bool(self.api_key):
            raise ParamValueError("api_key" if self.user else "user",
                                  "user and api_key must be set together")
        _http.validate_headers("tenant", {"X-Scope-OrgID": self.tenant})
        _http.validate_headers("custom_headers", self.custom_headers)


def label_name(key: str) -> str:
    """A valid Loki label name: `[a-zA-Z_][a-zA-Z0-9_]*`, lower-cased as upstream.

    A leading `__` (reserved for Loki's internal labels) is reduced to one underscore.
    """
    name = _INVALID_NAME_CHARS.sub("_", key.lower())
    if not name or name[0].isdigit():
        name = "_" + name
    if name.startswith("__"):
        name = "_" + name.lstrip("_")
    return name


def label_value(value: str) -> str:
    """`value` cut to Loki's default limit (in UTF-8 bytes) without splitting a character."""
    raw = value.encode()
    if len(raw) <= MAX_LABEL_VALUE:
        return value
    return raw[:MAX_LABEL_VALUE].decode("utf-8", "ignore")


def labels(n: Notification) -> dict[str, str]:
    """The stream labels; empty values are left out (Loki ignores them anyway)."""
    out = {
        "status": n.status,
        "rule": n.rule.lower().replace(" ", "_"),
        "action": n.action.lower().replace(" ", "_"),
        "actionner": n.actionner,
        "outputtarget": n.output_target,
        "message": n.message,
    }
    for key, value in sorted(n.objects.items()):
        out.setdefault(label_name(key), str(value))
    return {k: label_value(v) for k, v in out.items() if v}


def text(n: Notification) -> str:
    """The error, else the result, else the output, else the summary block."""
    return n.error or n.result or n.output or _text.plaintext(n)


def line(n: Notification) -> str:
    """The log line: `{"trace_id": …, "text": …}` on one line (newlines JSON-escaped)."""
    return json.dumps({"trace_id": n.trace_id, "text": text(n)}, ensure_ascii=False)


def payload(n: Notification, now_ns: int) -> dict[str, Any]:
    return {"streams": [{"stream": labels(n), "values": [[str(now_ns), line(n)]]}]}


def push_url(base: str) -> str:
    """`<base>/loki/api/v1/push`, unless the base already ends with the push path."""
    base = base.rstrip("/")
    return base if base.endswith(PUSH_PATH) else base + PUSH_PATH


@notifier(
    "loki", params=LokiSettings, secrets=("api_key", "custom_headers"), example=EXAMPLE,
    description="Push the result of each action and output as a log entry to Grafana Loki",
)
class LokiNotifier:
    """Pushes one Loki entry per notification."""

    def __init__(self, settings: LokiSettings, delivery: Delivery,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.settings = settings
        self.delivery = delivery
        self.clock_ns = clock_ns
        self.url = push_url(settings.url)
        self.headers = {"Content-Type": "application/json", "User-Agent": "falco-talon"}
        if settings.user:  # __post_init__: user and api_key are set together
            self.headers["Authorization"] = _http.basic_auth(settings.user, settings.api_key)
        if settings.tenant:
            self.headers["X-Scope-OrgID"] = settings.tenant
        self.headers.update(settings.custom_headers)

    def send(self, n: Notification) -> None:
        _http.post(self.url, _http.json_body(payload(n, self.clock_ns())), self.headers,
                   self.delivery)
