"""The notification dispatcher and `notify.build`, with real webhook deliveries.

Covers: every notifier configured in `notifiers.<name>` is built at start, even when no
rule names it yet (so a reload that adds it delivers); a notification for a name with no
built notifier is counted as a failure and logged at WARNING at most once a minute per
notifier, never dropped silently.
"""

from __future__ import annotations

import logging

import pytest

from talon import notify
from talon.metrics import Metrics
from talon.models import Delivery, Notification
from talon.notifiers import webhook
from talon.registry import Registry, notifier
from tests.notifiers.sinks import HttpSink


def registry_with_webhook() -> Registry:
    reg = Registry()
    notifier("webhook", registry=reg, params=webhook.WebhookSettings,
             description="webhook")(webhook.WebhookNotifier)
    return reg


def test_configured_notifiers_are_built_even_when_no_rule_names_them(
        sink: HttpSink, delivery: Delivery, action_note: Notification) -> None:
    built = notify.build([], {"webhook": {"url": f"{sink.url}/hook"}},
                         registry_with_webhook(), delivery)
    assert set(built) == {"webhook"}
    dispatcher = notify.Dispatcher(built, metrics=Metrics(), workers=1)
    dispatcher.start()
    dispatcher.submit(("webhook",), action_note)
    dispatcher.drain(5)
    assert [r.json()["rule"] for r in sink.requests] == [action_note.rule]


def test_unknown_configured_section_is_a_warning_not_a_start_error(
        delivery: Delivery, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "talon")
    built = notify.build([], {"slak": {"webhook_url": "http://x"}}, registry_with_webhook(),
                         delivery)
    assert built == {}
    assert any(getattr(r, "fields", {}).get("notifier") == "slak" for r in caplog.records)


def test_a_notification_for_a_notifier_not_built_is_a_counted_failure(
        action_note: Notification, caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    metrics = Metrics()
    dispatcher = notify.Dispatcher({}, metrics=metrics, workers=1, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, "talon")
    for _ in range(3):
        dispatcher.submit(("webhook",), action_note)
    now[0] += 61
    dispatcher.submit(("webhook",), action_note)
    value = metrics.registry.get_sample_value(
        "notification_total", {"notifier": "webhook", "status": "failure"})
    assert value == 4
    lines = [r for r in caplog.records if r.getMessage() == "notification"]
    assert len(lines) == 2 and all(r.levelno == logging.WARNING for r in lines)
    fields = lines[0].fields  # type: ignore[attr-defined]
    assert fields["notifier"] == "webhook" and fields["status"] == "failure"
    assert "not configured" in fields["error"]
    assert lines[1].fields["suppressed"] == 2  # type: ignore[attr-defined]
