"""Webhook notifier against the HTTP sink.

Covers: body = log-line JSON + newline (keys in upstream order, empties left out), the
method, User-Agent, Content-Type and custom headers (overriding), 5xx retried, 400 not,
settings validation (URL, method, header values) and errors that hide URL tokens.
"""

from __future__ import annotations

import pytest

from talon.errors import NotifyError
from talon.models import Delivery, Notification
from talon.notifiers import normalise, webhook
from talon.params import coerce
from tests.notifiers.sinks import SECRET, HttpSink, Reply, SleepRecorder


def make(delivery: Delivery, **raw: object) -> webhook.WebhookNotifier:
    settings, problems = coerce(webhook.WebhookSettings, normalise(webhook.WebhookSettings, raw))
    assert settings is not None, problems
    return webhook.WebhookNotifier(settings, delivery)


def test_defaults(sink: HttpSink, delivery: Delivery, action_note: Notification) -> None:
    make(delivery, url=sink.url + "/events").send(action_note)
    [req] = sink.requests
    assert (req.method, req.path) == ("POST", "/events")
    assert req.header("User-Agent") == "falco-talon"
    assert req.header("Content-Type") == "application/json; charset=utf-8"
    assert req.body.endswith(b"}\n")
    body = req.json()
    assert body == action_note.as_log_line()
    assert list(body) == ["objects", "trace_id", "rule", "event", "message", "priority",
                          "source", "output", "actionner", "action", "status", "stage"]
    assert body["objects"] == {"pod": "cncf-1", "namespace": "default", "NetworkPolicy": "np-1"}


def test_method_agent_type_and_custom_headers(sink: HttpSink, delivery: Delivery,
                                              failure_note: Notification) -> None:
    make(delivery, url=sink.url + "/in", http_method="put", user_agent="Falco-Talon",
         content_type="application/json",
         custom_headers={"Authorization": f"Bearer {SECRET}", "X-Count": 3}).send(failure_note)
    [req] = sink.requests
    assert req.method == "PUT"
    assert req.header("User-Agent") == "Falco-Talon"
    assert req.header("Content-Type") == "application/json"
    assert req.header("Authorization") == f"Bearer {SECRET}"
    assert req.header("X-Count") == "3"
    assert req.json()["error"] == failure_note.error


def test_custom_header_overrides_defaults(sink: HttpSink, delivery: Delivery,
                                          action_note: Notification) -> None:
    notifier = make(delivery, url=sink.url, custom_headers={"user-agent": "mine"})
    notifier.send(action_note)
    notifier.send(action_note)  # the headers built once serve every notification
    assert sink.requests[0].header("User-Agent") == "mine"
    assert [r.header("User-Agent") for r in sink.requests] == ["mine", "mine"]
    assert sink.requests[1].json() == action_note.as_log_line()


def test_retry_then_success(sink: HttpSink, delivery: Delivery, sleeps: SleepRecorder,
                            action_note: Notification) -> None:
    sink.script("/in", Reply(502), Reply(204, b""))
    make(delivery, url=sink.url + "/in").send(action_note)
    assert len(sink.requests) == 2
    assert sleeps.waits == [0.5]
    for req in sink.requests:  # the retry sends the same request again
        assert (req.method, req.path) == ("POST", "/in")
        assert req.json() == action_note.as_log_line()
        assert req.header("User-Agent") == "falco-talon"


def test_bad_request_is_not_retried_and_hides_tokens(
        sink: HttpSink, delivery: Delivery, action_note: Notification) -> None:
    sink.script("/in", Reply(400, b"missing field"))
    with pytest.raises(NotifyError, match="400 header missing: missing field") as info:
        make(delivery, url=f"{sink.url}/in?key={SECRET}").send(action_note)
    assert len(sink.requests) == 1
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(("raw", "field"), [
    ({}, "url"),
    ({"url": "ftp://x"}, "url"),
    ({"url": "http://x", "http_method": "GET"}, "http_method"),
    ({"url": "http://x", "custom_headers": {"X-A": "a\r\nInjected: 1"}}, "custom_headers"),
    ({"url": "http://x", "custom_headers": {"Bad Name": "v"}}, "custom_headers"),
    ({"url": "http://x", "user_agent": "a\nb"}, "user_agent"),
    ({"url": "http://x", "custom_headers": {"X-A": "5 €"}}, "custom_headers"),
])
def test_settings_validation(raw: dict[str, object], field: str) -> None:
    settings, problems = coerce(webhook.WebhookSettings, raw)
    assert settings is None
    assert problems[0].field == field
