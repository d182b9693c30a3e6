"""The `slack` notifier: one incoming-webhook message per action or output result.

Layer L2. The payload keeps the Go version's shape: a headline, one attachment coloured
by status and, in the `long` format, one field per known value. Objects are listed in
key order (upstream iterates a Go map, so its order is random). The webhook URL holds
the token: it is a secret and error messages only show its host.

Every value shown is escaped for Slack (`escape`): `&`, `<` and `>` become entities, as
Slack's formatting rules ask, so an event cannot post a mention (`<!channel>`) or a
disguised link (`<https://evil|click>`); a backtick becomes `ˋ` (U+02CB, the modifier
letter grave accent, which looks the same), so a value cannot close its code span or
block and have the rest read as formatting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from talon.notifiers import _http, _text
from talon.plugin import Delivery, Notification, notifier

DEFAULT_ICON = "https://upload.wikimedia.org/wikipedia/commons/2/26/Circaetus_gallicus_claw.jpg"
DEFAULT_FOOTER = "http://github.com/falcosecurity/falco-talon"
HEADERS = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "falco-talon"}

EXAMPLE = """\
notifiers:
  slack:
    webhook_url: "https://hooks.slack.com/services/XXXX"
    icon: "https://upload.wikimedia.org/wikipedia/commons/2/26/Circaetus_gallicus_claw.jpg"
    username: "Falco Talon"
    footer: "http://github.com/falcosecurity/falco-talon"
    format: long
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class SlackSettings:
    """Settings of `notifiers.slack`."""

    webhook_url: str
    """Incoming webhook URL (secret: it embeds the token)."""
    icon: str = DEFAULT_ICON
    """Avatar URL of the messages; empty uses the webhook's own."""
    username: str = "Falco Talon"
    """Author name of the messages; empty uses the webhook's own."""
    footer: str = DEFAULT_FOOTER
    """Footer of `long` messages; an empty string removes it."""
    format: Literal["long", "short"] = "long"
    """`long`: headline and one field per value; `short`: the headline only."""

    def __post_init__(self) -> None:
        _http.validate_url("webhook_url", self.webhook_url)


_SLACK_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "`": "\u02cb"})


def escape(value: str) -> str:
    """`value` shown literally by Slack: entities for `&<>`, backticks neutralised."""
    return value.translate(_SLACK_ESCAPES)


def code(value: str) -> str:
    """An inline code span holding `value`, escaped."""
    return f"`{escape(value)}`"


def headline(n: Notification) -> str:
    """`[*STATUS*][*MESSAGE*] Rule: `r` Action: `a` OutputTarget: `t``."""
    parts = [f"[*{escape(n.status.upper())}*][*{escape(n.message.upper())}*]"]
    for label, value in (("Rule", n.rule), ("Action", n.action),
                         ("OutputTarget", n.output_target)):
        if value:
            parts.append(f"{label}: {code(value)}")
    return " ".join(parts)


def _field(title: str, value: str, short: bool = False) -> dict[str, Any]:
    return {"title": escape(title), "value": value, "short": short}


def fields(n: Notification) -> list[dict[str, Any]]:
    """The `long` format's fields, in the upstream order (objects sorted by key)."""
    out: list[dict[str, Any]] = []
    if n.rule:
        out.append(_field("Rule", code(n.rule)))
    if n.action:
        out.append(_field("Action", code(n.action)))
    if n.actionner:
        out.append(_field("Actionner", code(n.actionner), short=True))
    out.append(_field("Status", code(n.status), short=True))
    out.extend(_field(key, code(value), short=True) for key, value in _text.sorted_objects(n))
    if n.event:
        out.append(_field("Event", f"```{escape(n.event)}```"))
    out.append(_field("Message", code(n.message)))
    for title, value in (("Error", n.error), ("OutputTarget", n.output_target),
                         ("Trace ID", n.trace_id), ("Result", n.result)):
        if value:
            out.append(_field(title, code(value)))
    if n.output:
        output = escape(n.output.replace("\r\n", "\n"))
        out.append(_field("Output", f"```\n{output}```"))
    return out


def payload(settings: SlackSettings, n: Notification) -> dict[str, Any]:
    """The webhook JSON for one notification."""
    attachment: dict[str, Any] = {"fallback": "", "color": _text.STATUS_COLORS.get(n.status, "")}
    body: dict[str, Any] = {}
    text = headline(n)
    if settings.format == "short":
        attachment["text"] = text
    else:
        body["text"] = text
        if settings.footer:
            attachment["footer"] = settings.footer
        attachment["fields"] = fields(n)
    if settings.username:
        body["username"] = settings.username
    if settings.icon:
        body["icon_url"] = settings.icon
    body["attachments"] = [attachment]
    return body


@notifier(
    "slack", params=SlackSettings, secrets=("webhook_url",), example=EXAMPLE,
    description="Post the result of each action and output to a Slack incoming webhook",
)
class SlackNotifier:
    """Sends a Slack message per notification."""

    def __init__(self, settings: SlackSettings, delivery: Delivery) -> None:
        self.settings = settings
        self.delivery = delivery

    def send(self, n: Notification) -> None:
        _http.post(self.settings.webhook_url, _http.json_body(payload(self.settings, n)),
                   HEADERS, self.delivery)
