"""The shared HTTP helper against a real local server.

Covers: 2xx success and the returned body; retries on 5xx (then success), on 429 with
Retry-After honoured and capped, on connection refused; no retry on 400; upstream status
wording; `accept` statuses; timeouts bounded; redirects not followed; credentials in the
URL moved to a Basic header and never shown; URL checks and redaction; backoff schedule.
"""

from __future__ import annotations

import time

import pytest

from talon.errors import NotifyError
from talon.models import Delivery
from talon.notifiers import _http
from tests.notifiers.sinks import SECRET, HttpSink, Reply, SleepRecorder, free_port


def test_json_body_is_json_plus_newline() -> None:
    assert _http.json_body({"a": "é", "b": [1, None]}) == b'{"a": "\\u00e9", "b": [1, null]}\n'


def test_success_returns_status_and_body(sink: HttpSink, delivery: Delivery) -> None:
    sink.script("/hook", Reply(201, b"created"))
    status, body = _http.post(sink.url + "/hook", b"{}\n", {"X-A": "1"}, delivery)
    assert (status, body) == (201, b"created")
    [req] = sink.requests
    assert (req.method, req.path, req.body, req.header("X-A")) == ("POST", "/hook", b"{}\n", "1")


def test_5xx_is_retried_then_succeeds(
        sink: HttpSink, delivery: Delivery, sleeps: SleepRecorder) -> None:
    sink.script("/hook", Reply(500, b"boom"), Reply(200))
    _http.post(sink.url + "/hook", b"x", {}, delivery)
    assert len(sink.requests) == 2
    assert sleeps.waits == [0.5]


def test_retries_are_bounded_and_back_off_exponentially(
        sink: HttpSink, sleeps: SleepRecorder) -> None:
    d = Delivery(timeout=2, retries=4, backoff=1.0, max_backoff=3.0, sleep=sleeps)
    sink.script("/hook", then=Reply(503, b"unavailable"))
    with pytest.raises(NotifyError, match=r"503 Service Unavailable: unavailable"):
        _http.post(sink.url + "/hook", b"x", {}, d)
    assert len(sink.requests) == 5
    assert sleeps.waits == [1.0, 2.0, 3.0, 3.0]


def test_429_honours_retry_after(sink: HttpSink, delivery: Delivery,
                                 sleeps: SleepRecorder) -> None:
    sink.script("/hook", Reply(429, b"slow down", {"Retry-After": "3"}), Reply(200))
    _http.post(sink.url + "/hook", b"x", {}, delivery)
    assert len(sink.requests) == 2
    assert sleeps.waits == [3.0]


def test_retry_after_is_capped_by_max_backoff(sink: HttpSink, delivery: Delivery,
                                              sleeps: SleepRecorder) -> None:
    sink.script("/hook", Reply(503, b"", {"Retry-After": "3600"}), Reply(200))
    _http.post(sink.url + "/hook", b"x", {}, delivery)
    assert sleeps.waits == [delivery.max_backoff]


def test_final_429_is_worded_as_upstream(sink: HttpSink, sleeps: SleepRecorder) -> None:
    sink.script("/hook", then=Reply(429, b"", {"Retry-After": "1"}))
    d = Delivery(retries=1, sleep=sleeps)
    with pytest.raises(NotifyError, match="429 exceeding post rate limit"):
        _http.post(sink.url + "/hook", b"x", {}, d)
    assert len(sink.requests) == 2


@pytest.mark.parametrize(("status", "text"), [
    (400, "header missing"), (401, "authentication error"), (403, "access denied"),
    (404, "resource not found"), (422, "wrong request"), (418, "418 I'm a Teapot"),
])
def test_4xx_is_not_retried(sink: HttpSink, delivery: Delivery, sleeps: SleepRecorder,
                            status: int, text: str) -> None:
    sink.script("/hook", Reply(status, b"bad things\nhappened"))
    with pytest.raises(NotifyError) as info:
        _http.post(sink.url + "/hook", b"x", {}, delivery)
    assert len(sink.requests) == 1
    assert sleeps.waits == []
    assert text in str(info.value)
    assert "bad things happened" in str(info.value)


def test_long_body_is_cut_in_the_message(sink: HttpSink, delivery: Delivery) -> None:
    sink.script("/hook", Reply(400, b"x" * 5000))
    with pytest.raises(NotifyError) as info:
        _http.post(sink.url + "/hook", b"x", {}, delivery)
    assert len(str(info.value)) < 400


def test_accepted_status_is_returned(sink: HttpSink, delivery: Delivery) -> None:
    sink.script("/t", Reply(404, b"missing"))
    assert _http.post(sink.url + "/t", None, {}, delivery, method="GET", accept=(404,)) \
        == (404, b"missing")
    assert sink.requests[0].method == "GET"


def test_connection_refused_is_retried_then_fails(
        delivery: Delivery, sleeps: SleepRecorder) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(NotifyError, match="connection failed") as info:
        _http.post(url, b"x", {}, delivery)
    assert sleeps.waits == [0.5, 1.0]
    assert "/hook" not in str(info.value)


def test_slow_server_times_out_in_bounded_time(sink: HttpSink, sleeps: SleepRecorder) -> None:
    sink.script("/slow", then=Reply(200, delay=5))
    d = Delivery(timeout=0.2, retries=1, sleep=sleeps)
    started = time.monotonic()
    with pytest.raises(NotifyError, match="timed out"):
        _http.post(sink.url + "/slow", b"x", {}, d)
    assert time.monotonic() - started < 2
    assert len(sink.requests) == 2


def test_redirect_is_not_followed(sink: HttpSink, delivery: Delivery) -> None:
    sink.script("/old", Reply(302, b"", {"Location": sink.url + "/new"}))
    with pytest.raises(NotifyError, match="redirects are not followed"):
        _http.post(sink.url + "/old", b"x", {"Authorization": "Bearer t"}, delivery)
    assert sink.paths() == ["/old"]


def test_userinfo_becomes_basic_auth_and_is_never_shown(sink: HttpSink,
                                                        delivery: Delivery) -> None:
    sink.script("/hook", Reply(401, b"no"))
    url = sink.url.replace("http://", f"http://bob:{SECRET}@") + "/hook?token=" + SECRET
    with pytest.raises(NotifyError) as info:
        _http.post(url, b"x", {}, delivery)
    assert sink.requests[0].basic_auth() == ("bob", SECRET)
    assert SECRET not in str(info.value)
    assert "bob" not in str(info.value)


def test_non_http_url_is_refused_without_a_request(delivery: Delivery) -> None:
    with pytest.raises(NotifyError, match="invalid url"):
        _http.post("file:///etc/passwd", b"x", {}, delivery)


@pytest.mark.parametrize("url", [
    "", "ftp://x", "http://", "hooks.slack.com/x", "http://x y", "http://h:99999", "https:/x",
])
def test_check_url_rejects(url: str) -> None:
    assert _http.check_url(url) is not None


@pytest.mark.parametrize("url", ["http://a", "https://a.b:8443/p?q=1", "http://[::1]:80/"])
def test_check_url_accepts(url: str) -> None:
    assert _http.check_url(url) is None


@pytest.mark.parametrize(("url", "shown"), [
    ("https://hooks.slack.com/services/T0/B0/XYZ", "https://hooks.slack.com/…"),
    ("http://u:p@es.local:9200", "http://es.local:9200"),
    ("http://[::1]:3100/?k=v", "http://[::1]:3100/…"),
])
def test_redact(url: str, shown: str) -> None:
    assert _http.redact(url) == shown


def test_http_date_retry_after(sink: HttpSink, delivery: Delivery,
                               sleeps: SleepRecorder) -> None:
    sink.script("/hook", Reply(503, b"", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
                Reply(200))
    _http.post(sink.url + "/hook", b"x", {}, delivery)
    assert sleeps.waits == [0.0]
