"""Slack notifier against the HTTP sink.

Covers: long format (headline text, colour, footer, every field in upstream order, objects
title-cased and sorted, Event/Output code blocks, CRLF cleaned), short format (headline in
the attachment, no fields, no footer), empty footer/username/icon, colours per status,
headers, failures that never reveal the webhook token; event values escaped for Slack
(`&`, `<`, `>` as entities, backticks neutralised) so that a command line in an event can
neither leave its code span nor post a mention or a disguised link.
"""

from __future__ import annotations

import pytest

from talon.errors import NotifyError
from talon.models import Delivery, Notification
from talon.notifiers import slack
from talon.params import coerce
from tests.notifiers.sinks import HttpSink, Reply, SleepRecorder, free_port

TOKEN = "T000/B000/XXXXSECRETTOKEN"


def make(sink_url: str, delivery: Delivery, **raw: object) -> slack.SlackNotifier:
    settings, problems = coerce(slack.SlackSettings,
                                {"webhook_url": f"{sink_url}/services/{TOKEN}", **raw})
    assert settings is not None, problems
    return slack.SlackNotifier(settings, delivery)


def test_long_format(sink: HttpSink, delivery: Delivery, action_note: Notification) -> None:
    make(sink.url, delivery).send(action_note)
    [req] = sink.requests
    assert req.path == f"/services/{TOKEN}"
    assert req.header("Content-Type") == "application/json; charset=utf-8"
    assert req.header("User-Agent") == "falco-talon"
    body = req.json()
    assert body["text"] == ("[*SUCCESS*][*ACTION*] Rule: `Terminal shell in container` "
                            "Action: `Label Pod as Suspicious`")
    assert body["username"] == "Falco Talon"
    assert body["icon_url"] == slack.DEFAULT_ICON
    [att] = body["attachments"]
    assert att["color"] == "#23ba47"
    assert att["fallback"] == ""
    assert att["footer"] == "http://github.com/falcosecurity/falco-talon"
    assert "text" not in att
    titles = [(f["title"], f["short"]) for f in att["fields"]]
    assert titles == [
        ("Rule", False), ("Action", False), ("Actionner", True), ("Status", True),
        ("Namespace", True), ("Networkpolicy", True), ("Pod", True),
        ("Event", False), ("Message", False), ("Trace ID", False), ("Output", False),
    ]
    values = {f["title"]: f["value"] for f in att["fields"]}
    assert values["Rule"] == "`Terminal shell in container`"
    assert values["Pod"] == "`cncf-1`"
    assert values["Event"] == f"```{action_note.event}```"
    assert values["Message"] == "`action`"
    assert values["Output"] == f"```\n{action_note.output}```"


def test_long_format_failure_fields(sink: HttpSink, delivery: Delivery,
                                    failure_note: Notification) -> None:
    make(sink.url, delivery).send(failure_note)
    body = sink.requests[0].json()
    assert body["text"] == "[*FAILURE*][*OUTPUT*] OutputTarget: `aws:s3`"
    [att] = body["attachments"]
    assert att["color"] == "#e20b0b"
    assert [f["title"] for f in att["fields"]] == [
        "Status", "File", "Message", "Error", "OutputTarget", "Trace ID"]


def test_short_format(sink: HttpSink, delivery: Delivery, action_note: Notification) -> None:
    make(sink.url, delivery, format="short").send(action_note)
    body = sink.requests[0].json()
    assert "text" not in body
    [att] = body["attachments"]
    assert att["text"].startswith("[*SUCCESS*][*ACTION*] Rule: `Terminal shell in container`")
    assert "fields" not in att
    assert "footer" not in att


def test_empty_footer_username_icon(sink: HttpSink, delivery: Delivery,
                                    action_note: Notification) -> None:
    make(sink.url, delivery, footer="", username="", icon="").send(action_note)
    body = sink.requests[0].json()
    assert "footer" not in body["attachments"][0]
    assert "username" not in body
    assert "icon_url" not in body


@pytest.mark.parametrize(("status", "color"), [
    ("success", "#23ba47"), ("failure", "#e20b0b"), ("ignored", "#a4a8b1"), ("other", ""),
])
def test_colours(status: str, color: str) -> None:
    settings = slack.SlackSettings(webhook_url="https://hooks.slack.com/services/x")
    note = Notification(message="action", status=status, trace_id="t")
    assert slack.payload(settings, note)["attachments"][0]["color"] == color


def test_output_crlf_is_normalised() -> None:
    note = Notification(message="action", status="success", trace_id="t", output="a\r\nb")
    [out] = [f for f in slack.fields(note) if f["title"] == "Output"]
    assert out["value"] == "```\na\nb```"


def test_failure_hides_the_token(sink: HttpSink, delivery: Delivery,
                                 action_note: Notification) -> None:
    sink.script(f"/services/{TOKEN}", Reply(403, b"invalid_token"))
    with pytest.raises(NotifyError, match="403 access denied") as info:
        make(sink.url, delivery).send(action_note)
    assert "SECRETTOKEN" not in str(info.value)
    assert "/services" not in str(info.value)


def test_server_down_hides_the_token(delivery: Delivery, sleeps: SleepRecorder,
                                     action_note: Notification) -> None:
    port = free_port()
    with pytest.raises(NotifyError) as info:
        make(f"http://127.0.0.1:{port}", delivery).send(action_note)
    assert "SECRETTOKEN" not in str(info.value)
    assert f"POST http://127.0.0.1:{port}/… failed: connection failed" in str(info.value)
    assert sleeps.waits == [0.5, 1.0]


def test_settings_validation() -> None:
    _, problems = coerce(slack.SlackSettings, {})
    assert [p.field for p in problems] == ["webhook_url"]
    _, problems = coerce(slack.SlackSettings, {"webhook_url": "hooks.slack.com/services/x"})
    assert problems[0].field == "webhook_url"
    assert "invalid url" in problems[0].message
    assert "hooks.slack.com" not in problems[0].message
    _, problems = coerce(slack.SlackSettings, {"webhook_url": "https://h/x", "format": "tiny"})
    assert problems[0].field == "format"


HOSTILE = "sh -c '```\n<!channel> <https://evil.example|click here> & `id`'"


def hostile_note() -> Notification:
    return Notification(
        message="action", status="failure", trace_id="t-1", rule="Shell `x` <!here>",
        action="Label", actionner="kubernetes:label", event=HOSTILE, output=HOSTILE,
        error=f"exec failed: {HOSTILE}", result="<@U123>", objects={"pod": "p`<!everyone>"})


def _no_control(text: str) -> None:
    for raw in ("<!channel>", "<!here>", "<!everyone>", "<https://", "<@U123>"):
        assert raw not in text, (raw, text)


@pytest.mark.parametrize("fmt", ["long", "short"])
def test_event_values_cannot_break_out_or_mention(sink: HttpSink, delivery: Delivery,
                                                  fmt: str) -> None:
    make(sink.url, delivery, format=fmt).send(hostile_note())
    body = sink.requests[0].json()
    [att] = body["attachments"]
    headline = body.get("text") or att["text"]
    assert headline == "[*FAILURE*][*ACTION*] Rule: `Shell ˋxˋ &lt;!here&gt;` Action: `Label`"
    _no_control(sink.requests[0].body.decode())
    for f in att.get("fields", []):
        value = f["value"]
        fence = "```" if value.startswith("```") else "`"
        inner = value[len(fence):-len(fence)]
        assert value.endswith(fence) and "`" not in inner, value
        _no_control(value)


def test_escaped_event_still_reads_the_same(sink: HttpSink, delivery: Delivery) -> None:
    make(sink.url, delivery).send(hostile_note())
    values = {f["title"]: f["value"] for f in sink.requests[0].json()["attachments"][0]["fields"]}
    assert values["Event"] == ("```sh -c 'ˋˋˋ\n&lt;!channel&gt; &lt;https://evil.example|click "
                               "here&gt; &amp; ˋidˋ'```")
    assert values["Pod"] == "`pˋ&lt;!everyone&gt;`"
    assert values["Result"] == "`&lt;@U123&gt;`"
