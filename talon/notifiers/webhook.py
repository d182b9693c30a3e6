"""The `webhook` notifier: the notification's log line as JSON to any HTTP endpoint.

Layer L2. The body is `Notification.as_log_line()` (upstream log-line keys, empty values
left out) followed by a newline, as the Go client sends it. Custom headers may carry
tokens and the URL may embed one, so both count as secrets.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field

from talon.notifiers import _http
from talon.plugin import Delivery, Notification, ParamValueError, notifier

METHODS = ("POST", "PUT", "PATCH")

EXAMPLE = """\
notifiers:
  webhook:
    url: "http://example.com:8080/falco-talon"
    http_method: "POST"
    user_agent: "falco-talon"
    content_type: "application/json; charset=utf-8"
    custom_headers:
      Authorization: "Bearer xxxxx"
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSettings:
    """Settings of `notifiers.webhook`."""

    url: str
    """Endpoint receiving the JSON (http or https)."""
    http_method: str = "POST"
    """POST, PUT or PATCH (case-insensitive)."""
    user_agent: str = "falco-talon"
    """User-Agent header."""
    content_type: str = "application/json; charset=utf-8"
    """Content-Type header."""
    custom_headers: Mapping[str, str] = field(
        default_factory=lambda: types.MappingProxyType({}))
    """Extra headers sent with every request; they override the two above."""

    def __post_init__(self) -> None:
        _http.validate_url("url", self.url)
        method = self.http_method.strip().upper()
        if method not in METHODS:
            raise ParamValueError(
                "http_method", f"must be one of {', '.join(METHODS)}, got {self.http_method!r}")
        object.__setattr__(self, "http_method", method)
        _http.validate_headers("user_agent", {"User-Agent": self.user_agent})
        _http.validate_headers("content_type", {"Content-Type": self.content_type})
        _http.validate_headers("custom_headers", self.custom_headers)


def body(n: Notification) -> bytes:
    """The request body: the log line as JSON plus a trailing newline."""
    return _http.json_body(n.as_log_line())


@notifier(
    "webhook", params=WebhookSettings, secrets=("url", "custom_headers"), example=EXAMPLE,
    description="Send the result of each action and output as JSON to an HTTP endpoint",
)
class WebhookNotifier:
    """Sends the log-line JSON of each notification."""

    def __init__(self, settings: WebhookSettings, delivery: Delivery) -> None:
        self.settings = settings
        self.delivery = delivery
        self.headers = {"Content-Type": settings.content_type, "User-Agent": settings.user_agent,
                        **settings.custom_headers}

    def send(self, n: Notification) -> None:
        s = self.settings
        _http.post(s.url, body(n), self.headers, self.delivery, method=s.http_method)
