"""Loki notifier against the HTTP sink.

Covers: push path (also when the URL has a trailing slash or already ends with it), one
stream with the upstream labels (rule/action lower-cased with underscores, objects with
lower-cased sanitised keys, empties left out) but not the trace id, which would make one
stream per event: it is in the line, a JSON object `{"trace_id", "text"}` (the same result
notified twice lands in one stream), nanosecond timestamp strings, the text choice
(error > result > output), basic auth, X-Scope-OrgID, custom headers, User-Agent,
the host_port alias, settings validation and errors that never show the API key.
"""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from talon.errors import NotifyError
from talon.models import Delivery, Notification
from talon.notifiers import loki, normalise
from talon.params import coerce
from tests.notifiers.sinks import SECRET, HttpSink, Reply

PUSH = "/loki/api/v1/push"


def make(delivery: Delivery, **raw: object) -> loki.LokiNotifier:
    settings, problems = coerce(loki.LokiSettings, normalise(loki.LokiSettings, raw))
    assert settings is not None, problems
    return loki.LokiNotifier(settings, delivery)


def test_push(sink: HttpSink, delivery: Delivery, action_note: Notification) -> None:
    before = time.time_ns()
    make(delivery, url=sink.url).send(action_note)
    after = time.time_ns()
    [req] = sink.requests
    assert (req.method, req.path) == ("POST", PUSH)
    assert req.header("Content-Type") == "application/json"
    assert req.header("User-Agent") == "falco-talon"
    assert req.header("Authorization") is None
    assert req.header("X-Scope-OrgID") is None
    [stream] = req.json()["streams"]
    assert stream["stream"] == {
        "status": "success", "rule": "terminal_shell_in_container",
        "action": "label_pod_as_suspicious", "actionner": "kubernetes:label",
        "message": "action",
        "pod": "cncf-1", "namespace": "default", "networkpolicy": "np-1",
    }
    [[stamp, line]] = stream["values"]
    assert isinstance(stamp, str)
    assert stamp.isdigit()
    assert before <= int(stamp) <= after
    assert "\n" not in line
    assert json.loads(line) == {"trace_id": "7f3c0d2e-trace", "text": action_note.output}
    assert line.startswith('{"trace_id": "7f3c0d2e-trace", "text": ')


def test_auth_tenant_and_headers(sink: HttpSink, delivery: Delivery,
                                 failure_note: Notification) -> None:
    make(delivery, host_port=sink.url + "/", user=99999, api_key=SECRET, tenant="team-a",
         custom_headers={"X-Extra": "1"}).send(failure_note)
    [req] = sink.requests
    assert req.path == PUSH
    assert req.basic_auth() == ("99999", SECRET)
    assert req.header("X-Scope-OrgID") == "team-a"
    assert req.header("X-Extra") == "1"
    [stream] = req.json()["streams"]
    assert stream["stream"] == {"status": "failure", "outputtarget": "aws:s3",
                                "message": "output", "file": "/tmp/x.log"}
    assert json.loads(stream["values"][0][1]) == {"trace_id": "0a1b-trace",
                                                  "text": failure_note.error}


def test_every_send_carries_the_same_headers(sink: HttpSink, delivery: Delivery,
                                            action_note: Notification) -> None:
    notifier = make(delivery, url=sink.url, user="u", api_key=SECRET, tenant="team-a")
    notifier.send(action_note)
    notifier.send(action_note)
    first, second = sink.requests
    assert first.headers == second.headers
    assert second.basic_auth() == ("u", SECRET)
    assert second.header("X-Scope-OrgID") == "team-a"
    assert json.loads(second.json()["streams"][0]["values"][0][1])["text"] == action_note.output


def test_events_differing_only_by_trace_id_share_one_stream(
        sink: HttpSink, delivery: Delivery, action_note: Notification) -> None:
    notifier = make(delivery, url=sink.url)
    notifier.send(action_note)
    notifier.send(dataclasses.replace(action_note, trace_id="another-trace"))
    first, second = (r.json()["streams"][0] for r in sink.requests)
    assert first["stream"] == second["stream"]
    assert "another-trace" not in json.dumps(second["stream"])
    assert json.loads(second["values"][0][1])["trace_id"] == "another-trace"


def test_url_with_push_path_is_kept(sink: HttpSink, delivery: Delivery,
                                    action_note: Notification) -> None:
    make(delivery, url=sink.url + PUSH).send(action_note)
    assert sink.paths() == [PUSH]


def test_text_choice_and_fallback() -> None:
    base = {"message": "action", "status": "success", "trace_id": "t"}
    assert loki.text(Notification(**base, output="o", result="r", error="e")) == "e"
    assert loki.text(Notification(**base, output="o", result="r")) == "r"
    assert loki.text(Notification(**base, output="o")) == "o"
    assert loki.text(Notification(**base)).startswith("Status: success\n")


@pytest.mark.parametrize(("key", "name"), [
    ("Pod", "pod"), ("k8s.ns.name", "k8s_ns_name"), ("9lives", "_9lives"),
    ("__name__", "_name__"), ("", "_"), ("NetworkPolicy", "networkpolicy"),
])
def test_label_names(key: str, name: str) -> None:
    assert loki.label_name(key) == name


def test_label_values_are_cut_to_loki_limit() -> None:
    note = Notification(message="action", status="success", trace_id="t",
                        objects={"big": "é" * 3000})
    value = loki.labels(note)["big"]
    assert len(value.encode()) <= loki.MAX_LABEL_VALUE
    assert value == "é" * (loki.MAX_LABEL_VALUE // 2)


def test_objects_do_not_override_builtin_labels() -> None:
    note = Notification(message="action", status="success", trace_id="t",
                        objects={"Status": "hijack"})
    assert loki.labels(note)["status"] == "success"


def test_failure_never_shows_the_api_key(sink: HttpSink, delivery: Delivery,
                                         action_note: Notification) -> None:
    sink.script(PUSH, Reply(401, b"invalid credentials"))
    with pytest.raises(NotifyError, match="401 authentication error") as info:
        make(delivery, url=sink.url, user="u", api_key=SECRET).send(action_note)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(("raw", "field"), [
    ({}, "url"),
    ({"url": "http://a", "host_port": "http://b"}, "host_port"),
    ({"url": "localhost:3100"}, "url"),
    ({"host_port": "localhost:3100"}, "host_port"),
    ({"url": "http://a", "user": "u"}, "api_key"),
    ({"url": "http://a", "api_key": "k"}, "user"),
    ({"url": "http://a", "tenant": "a\nb"}, "tenant"),
])
def test_settings_validation(raw: dict[str, object], field: str) -> None:
    settings, problems = coerce(loki.LokiSettings, raw)
    assert settings is None
    assert problems[0].field == field


def test_host_port_alias_is_stored_as_url() -> None:
    settings, _ = coerce(loki.LokiSettings, {"host_port": "https://logs.example"})
    assert settings.url == "https://logs.example"
