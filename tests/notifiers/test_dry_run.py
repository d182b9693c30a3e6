"""Dry-run notifications (`notify_dry_run`) as each notifier shows them.

The engine, in audit mode, builds the notification; webhook, slack and smtp deliver it to
real sinks, and the dry-run marker is visible in the webhook JSON, the Slack text and the
mail's subject and body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from talon import models, rules
from talon.engine import Engine
from talon.metrics import Metrics
from talon.models import Delivery, Notification, Result
from talon.notifiers import normalise, slack, smtp, webhook
from talon.params import coerce
from talon.registry import Registry, actionner
from talon.reloader import RuleStore
from tests.notifiers.sinks import HttpSink, SmtpFactory


def dry_run_note(write_rules: Callable[..., str]) -> Notification:
    reg = Registry()
    calls: list[Any] = []
    actionner("t", "label", registry=reg, description="label")(
        lambda ctx: calls.append(ctx) or Result())
    path = write_rules("""
        - rule: Shell in pod
          actions: [{action: Label the pod, actionner: "t:label"}]
        """)
    notes: list[Notification] = []
    engine = Engine(registry=reg, rules=RuleStore(rules.load([path], reg)), metrics=Metrics(),
                    notify=lambda names, n: notes.append(n), default_notifiers=("webhook",),
                    dry_run=True, notify_dry_run=True)
    engine.handle(models.from_mapping({
        "rule": "Terminal shell in container", "priority": "Warning", "output": "a shell",
        "output_fields": {"k8s.pod.name": "web", "k8s.ns.name": "shop"}}))
    assert calls == []
    [note] = notes
    return note


def settings(cls: type, raw: dict[str, Any]) -> Any:
    value, problems = coerce(cls, normalise(cls, raw))
    assert value is not None, problems
    return value


def test_webhook_json_says_dry_run(sink: HttpSink, delivery: Delivery,
                                   write_rules: Callable[..., str]) -> None:
    note = dry_run_note(write_rules)
    webhook.WebhookNotifier(settings(webhook.WebhookSettings, {"url": sink.url}),
                            delivery).send(note)
    body = sink.requests[0].json()
    assert body["status"] == "dry_run"
    assert body["output"] == "no action, dry-run is enabled"
    assert (body["rule"], body["action"], body["message"]) == (
        "Shell in pod", "Label the pod", "action")


def test_slack_text_says_dry_run(sink: HttpSink, delivery: Delivery,
                                 write_rules: Callable[..., str]) -> None:
    note = dry_run_note(write_rules)
    slack.SlackNotifier(settings(slack.SlackSettings, {"webhook_url": f"{sink.url}/s"}),
                        delivery).send(note)
    body = sink.requests[0].json()
    assert body["text"].startswith("[*DRY_RUN*][*ACTION*] Rule: `Shell in pod`")
    fields = {f["title"]: f["value"] for f in body["attachments"][0]["fields"]}
    assert fields["Status"] == "`dry_run`"
    assert "no action, dry-run is enabled" in fields["Output"]


def test_smtp_subject_and_body_say_dry_run(smtp_server: SmtpFactory, delivery: Delivery,
                                           write_rules: Callable[..., str]) -> None:
    note = dry_run_note(write_rules)
    sink, port = smtp_server()
    smtp.SmtpNotifier(settings(smtp.SmtpSettings, {
        "host_port": f"127.0.0.1:{port}", "from": "talon@example.org",
        "to": "ops@example.org", "format": "text"}), delivery).send(note)
    msg = sink.mails[0].message()
    assert str(msg["Subject"]).strip().startswith("[falco-talon][dry_run][action]")
    body = msg.get_content()
    assert "Status: dry_run\n" in body and "no action, dry-run is enabled" in body
