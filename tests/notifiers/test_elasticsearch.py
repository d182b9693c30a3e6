"""Elasticsearch notifier against the HTTP sink.

Covers: index names for each suffix (UTC dates), the document (log line + @timestamp and
time in RFC 3339 UTC), basic auth and custom headers on document POSTs and on template
calls, index template GET then PUT on 404 (valid JSON, configured index pattern, shards,
replicas 0 allowed, keyword mappings), no PUT on 200, no calls when disabled, start()
failures, settings validation and errors that never show the password.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from talon.errors import NotifyError
from talon.models import Delivery, Notification
from talon.notifiers import elasticsearch, normalise
from talon.params import coerce
from tests.notifiers.sinks import SECRET, HttpSink, Reply

NOW = datetime(2024, 2, 27, 23, 30, 5, 123456, tzinfo=UTC)


def make(delivery: Delivery, **raw: object) -> elasticsearch.ElasticsearchNotifier:
    cls = elasticsearch.ElasticsearchSettings
    settings, problems = coerce(cls, normalise(cls, raw))
    assert settings is not None, problems
    return elasticsearch.ElasticsearchNotifier(settings, delivery, clock=lambda: NOW)


@pytest.mark.parametrize(("suffix", "path"), [
    ("daily", "/falco-talon-2024.02.27/_doc"),
    ("monthly", "/falco-talon-2024.02/_doc"),
    ("annually", "/falco-talon-2024/_doc"),
    ("none", "/falco-talon/_doc"),
])
def test_index_suffix(sink: HttpSink, delivery: Delivery, action_note: Notification,
                      suffix: str, path: str) -> None:
    make(delivery, url=sink.url, suffix=suffix).send(action_note)
    assert sink.paths() == [path]


def test_date_suffix_is_utc(sink: HttpSink, delivery: Delivery,
                            action_note: Notification) -> None:
    local = NOW.astimezone(timezone(timedelta(hours=2)))
    settings, _ = coerce(elasticsearch.ElasticsearchSettings, {"url": sink.url})
    elasticsearch.ElasticsearchNotifier(settings, delivery, clock=lambda: local).send(action_note)
    assert sink.paths() == ["/falco-talon-2024.02.27/_doc"]


def test_document_with_auth_and_headers(sink: HttpSink, delivery: Delivery,
                                        action_note: Notification) -> None:
    sink.script("/talon-2024.02.27/_doc", Reply(201, b'{"result":"created"}'))
    make(delivery, host_port=sink.url + "/", index="talon", user="elastic", password=SECRET,
         custom_headers={"X-Tenant": "blue"}).send(action_note)
    [req] = sink.requests
    assert (req.method, req.path) == ("POST", "/talon-2024.02.27/_doc")
    assert req.basic_auth() == ("elastic", SECRET)
    assert req.header("X-Tenant") == "blue"
    assert req.header("Content-Type") == "application/json"
    doc = req.json()
    assert doc["@timestamp"] == doc["time"] == "2024-02-27T23:30:05.123Z"
    assert {k: v for k, v in doc.items() if k not in ("@timestamp", "time")} \
        == action_note.as_log_line()


def test_template_created_on_404(sink: HttpSink, delivery: Delivery) -> None:
    sink.script("/_index_template/talon", Reply(404, b'{"error":"missing"}'), method="GET")
    make(delivery, url=sink.url, index="talon", number_of_shards="1", number_of_replicas=0,
         user="elastic", password=SECRET, custom_headers={"X-Tenant": "blue"}).start()
    get, put = sink.requests
    assert (get.method, get.path, get.body) == ("GET", "/_index_template/talon", b"")
    assert (put.method, put.path) == ("PUT", "/_index_template/talon")
    for req in (get, put):
        assert req.basic_auth() == ("elastic", SECRET)
        assert req.header("X-Tenant") == "blue"
        assert req.header("User-Agent") == "falco-talon"
    assert get.header("Content-Type") is None
    assert put.header("Content-Type") == "application/json"
    assert put.body.endswith(b"}\n")
    body = put.json()
    assert body["index_patterns"] == ["talon*"]
    assert body["template"]["settings"] == {"number_of_shards": 1, "number_of_replicas": 0}
    props = body["template"]["mappings"]["properties"]
    assert props["@timestamp"] == {"type": "date"}
    assert props["error"]["fields"]["keyword"] == {"type": "keyword", "ignore_above": 256}
    assert props["objects"]["properties"]["pod"]["fields"]["keyword"]["type"] == "keyword"
    assert set(props) >= {"action", "actionner", "event", "message", "output", "result",
                          "rule", "status", "trace_id"}


def test_existing_template_is_left_alone(sink: HttpSink, delivery: Delivery) -> None:
    sink.script("/_index_template/falco-talon", Reply(200, b"{}"), method="GET")
    make(delivery, url=sink.url).start()
    assert [r.method for r in sink.requests] == ["GET"]


def test_template_disabled(sink: HttpSink, delivery: Delivery) -> None:
    make(delivery, url=sink.url, create_index_template="false").start()
    assert sink.requests == []


def test_template_failure_raises(sink: HttpSink, delivery: Delivery) -> None:
    sink.script("/_index_template/falco-talon", Reply(401, b"nope"), method="GET")
    with pytest.raises(NotifyError, match="401 authentication error") as info:
        make(delivery, url=sink.url, user="elastic", password=SECRET).start()
    assert SECRET not in str(info.value)
    assert [(r.method, r.path) for r in sink.requests] == [("GET", "/_index_template/falco-talon")]


def test_put_failure_raises(sink: HttpSink, delivery: Delivery) -> None:
    sink.script("/_index_template/falco-talon", Reply(404), method="GET")
    sink.script("/_index_template/falco-talon", Reply(400, b"mapper_parsing_exception"),
                method="PUT")
    with pytest.raises(NotifyError, match=r"PUT .* failed: 400 header missing"):
        make(delivery, url=sink.url).start()


@pytest.mark.parametrize(("raw", "field"), [
    ({}, "url"),
    ({"url": "http://a", "host_port": "http://b"}, "host_port"),
    ({"url": "localhost:9200"}, "url"),
    ({"url": "http://a", "suffix": "weekly"}, "suffix"),
    ({"url": "http://a", "number_of_shards": 0}, "number_of_shards"),
    ({"url": "http://a", "number_of_replicas": -1}, "number_of_replicas"),
    ({"url": "http://a", "index": "Falco"}, "index"),
    ({"url": "http://a", "index": "_x"}, "index"),
    ({"url": "http://a", "user": "elastic"}, "password"),
])
def test_settings_validation(raw: dict[str, object], field: str) -> None:
    settings, problems = coerce(elasticsearch.ElasticsearchSettings, raw)
    assert settings is None
    assert problems[0].field == field


def test_defaults() -> None:
    settings, _ = coerce(elasticsearch.ElasticsearchSettings, {"url": "http://es:9200"})
    assert (settings.index, settings.suffix, settings.create_index_template,
            settings.number_of_shards, settings.number_of_replicas) \
        == ("falco-talon", "daily", True, 3, 3)
