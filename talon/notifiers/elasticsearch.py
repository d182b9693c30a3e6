"""The `elasticsearch` notifier: one document per notification, in a date-suffixed index.

Layer L2. `start()` creates the index template `<index>` (patterns `<index>*`) when it is
missing; `send()` POSTs the log line plus `@timestamp`/`time` to `<index>-<date>/_doc`.
Both use basic auth and the custom headers. The date suffix and the timestamps are UTC,
so every Talon replica writes a given moment to the same index whatever its time zone.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from talon.notifiers import _http
from talon.plugin import Delivery, Notification, ParamValueError, notifier

SUFFIX_FORMATS = {"daily": "%Y.%m.%d", "monthly": "%Y.%m", "annually": "%Y", "none": ""}
_BAD_INDEX = re.compile(r'[\\/*?"<>| ,#:A-Z]')

KEYWORD_LIMITS = {
    "action": 128, "actionner": 128, "error": 256, "event": 1024, "message": 128,
    "output": 2048, "result": 2048, "rule": 128, "status": 128, "trace_id": 256,
}
"""Text fields of the template with a `keyword` sub-field, and its `ignore_above`."""

EXAMPLE = """\
notifiers:
  elasticsearch:
    url: "http://localhost:9200"
    index: "falco-talon"
    suffix: daily
    create_index_template: true
    number_of_shards: 1
    number_of_replicas: 1
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ElasticsearchSettings:
    """Settings of `notifiers.elasticsearch`; `url` or its alias `host_port` is required."""

    url: str = ""
    """Base URL of Elasticsearch, e.g. http://localhost:9200."""
    host_port: str = ""
    """Alias of `url`, as the seed documentation spells it; set only one of them."""
    user: str = ""
    """User for basic auth; needs `password`."""
    password: str = ""
    """Password for basic auth (secret)."""
    index: str = "falco-talon"
    """Index name (and index template name); lower case."""
    suffix: Literal["daily", "monthly", "annually", "none"] = "daily"
    """Date suffix of the index (UTC): -YYYY.MM.DD, -YYYY.MM, -YYYY or none."""
    create_index_template: bool = True
    """Create the index template at start when it does not exist yet."""
    number_of_shards: int = field(default=3, metadata={"min": 1})
    """Shards of the indices created from the template."""
    number_of_replicas: int = field(default=3, metadata={"min": 0})
    """Replicas of the indices created from the template (0 for a single node)."""
    custom_headers: Mapping[str, str] = field(
        default_factory=lambda: types.MappingProxyType({}))
    """Extra headers sent with every request."""

    def __post_init__(self) -> None:
        _http.resolve_url_alias(self)
        if bool(self.user) != bool(self.password):
            raise ParamValueError("password" if self.user else "user",
                                  "user and password must be set together")
        if not self.index or _BAD_INDEX.search(self.index) or self.index[0] in "-_+.":
            raise ParamValueError(
                "index", f"invalid index name {self.index!r}: lower case, no spaces, "
                "none of \\ / * ? \" < > | , # :, not starting with - _ + .")
        if self.number_of_shards < 1:
            raise ParamValueError("number_of_shards", "must be >= 1")
        if self.number_of_replicas < 0:
            raise ParamValueError("number_of_replicas", "must be >= 0")
        _http.validate_headers("custom_headers", self.custom_headers)


def index_name(settings: ElasticsearchSettings, now: datetime) -> str:
    """`<index>-<date>` for the suffix setting, or `<index>` for `none`."""
    fmt = SUFFIX_FORMATS[settings.suffix]
    return f"{settings.index}-{now.strftime(fmt)}" if fmt else settings.index


def _text_field(limit: int) -> dict[str, Any]:
    return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": limit}}}


def template(settings: ElasticsearchSettings) -> dict[str, Any]:
    """The index template: patterns, shards, replicas and the keyword mappings."""
    properties: dict[str, Any] = {"@timestamp": {"type": "date"}, "time": {"type": "date"}}
    properties.update({name: _text_field(limit) for name, limit in KEYWORD_LIMITS.items()})
    properties["objects"] = {"properties": {
        "namespace": _text_field(128), "pod": _text_field(128)}}
    return {
        "index_patterns": [f"{settings.index}*"],
        "template": {
            "settings": {"number_of_shards": settings.number_of_shards,
                         "number_of_replicas": settings.number_of_replicas},
            "mappings": {"_source": {"enabled": True}, "properties": properties},
        },
        "_meta": {"description": "index template for falco talon logs"},
    }


def document(n: Notification, now: datetime) -> dict[str, Any]:
    """The log line with `@timestamp` and `time` (RFC 3339, UTC)."""
    stamp = now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"@timestamp": stamp, "time": stamp, **n.as_log_line()}


@notifier(
    "elasticsearch", params=ElasticsearchSettings, secrets=("password", "custom_headers"),
    example=EXAMPLE,
    description="Index the result of each action and output as a document in Elasticsearch",
)
class ElasticsearchNotifier:
    """Creates the index template once, then indexes one document per notification."""

    def __init__(self, settings: ElasticsearchSettings, delivery: Delivery,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.delivery = delivery
        self.clock = clock
        self.get_headers = self._headers(json_body=False)
        """Headers of the body-less template GET."""
        self.json_headers = self._headers(json_body=True)
        """Headers of the requests with a JSON body (template PUT, document POST)."""

    def _headers(self, *, json_body: bool) -> dict[str, str]:
        s = self.settings
        headers = {"User-Agent": "falco-talon"}
        if json_body:
            headers["Content-Type"] = "application/json"
        if s.user:  # __post_init__: user and password are set together
            headers["Authorization"] = _http.basic_auth(s.user, s.password)
        headers.update(s.custom_headers)
        return headers

    def start(self) -> None:
        """Create the index template `<index>` when it does not exist (GET 404 → PUT)."""
        s = self.settings
        if not s.create_index_template:
            return
        url = _http.join(s.url, f"/_index_template/{s.index}")
        status, _ = _http.post(url, None, self.get_headers, self.delivery, method="GET",
                               accept=(404,))
        if status != 404:
            return
        _http.post(url, _http.json_body(template(s)), self.json_headers, self.delivery,
                   method="PUT")

    def send(self, n: Notification) -> None:
        now = self.clock().astimezone(UTC)
        url = _http.join(self.settings.url, f"/{index_name(self.settings, now)}/_doc")
        _http.post(url, _http.json_body(document(n, now)), self.json_headers, self.delivery)
