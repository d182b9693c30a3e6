"""The HTTP ingest server over real sockets on 127.0.0.1.

Covers: POST / hands a decoded, traced Event to `accept` and answers 200 (case-insensitive
keys, traceparent honoured, chunked bodies); keep-alive; 400 naming the field; 405 with
Allow; 404; 411; 413 without reading the body (and serving on after); 503 + Retry-After
when the queue is full; /healthz exact body; /metrics counters; read deadline against
stalled and trickling clients; idle keep-alive timeout; the connection cap; stop();
rejection logs escaped and counted by reason; print_all_events.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from talon import log
from talon.metrics import Metrics
from talon.models import Event
from talon.server import IngestServer, trace_id_from

EVENT: dict[str, Any] = {
    "output": "18:20:05.123456789: Warning shell in pod", "priority": "Warning",
    "rule": "Terminal shell in container", "time": "2024-05-01T18:20:05.123456789Z",
    "output_fields": {"k8s.pod.name": "web", "k8s.ns.name": "prod", "proc.pid": 42},
    "source": "syscall", "tags": ["shell", "mitre"], "hostname": "node-1"}
HEX32 = re.compile(r"[0-9a-f]{32}")


class Recorder:
    """The `accept` callable: keeps what it is given, answers `result`."""

    def __init__(self, result: bool = True) -> None:
        self.result = result
        self.events: list[Event] = []
        self.sizes: list[int] = []

    def __call__(self, event: Event, size: int) -> bool:
        self.events.append(event)
        self.sizes.append(size)
        return self.result


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def http(self, level: int = logging.WARNING) -> list[logging.LogRecord]:
        return [r for r in self.records if r.getMessage() == "http" and r.levelno == level]


@pytest.fixture
def logs() -> Iterator[Records]:
    logger = logging.getLogger("talon.server")
    handler, old_level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture
def start() -> Iterator[Callable[..., tuple[IngestServer, Recorder, Metrics]]]:
    servers: list[IngestServer] = []

    def make(result: bool = True, **options: Any) -> tuple[IngestServer, Recorder, Metrics]:
        recorder, metrics = Recorder(result), Metrics()
        server = IngestServer(address="127.0.0.1", port=0, accept=recorder, metrics=metrics,
                              **options)
        server.start()
        servers.append(server)
        return server, recorder, metrics

    yield make
    for server in servers:
        server.stop(timeout=2)


_OPEN: list[http.client.HTTPConnection] = []


@pytest.fixture(autouse=True)
def _close_connections() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def connect(server: IngestServer) -> http.client.HTTPConnection:
    """A client connection, closed after the test."""
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=5)
    _OPEN.append(conn)
    return conn


def post(conn: http.client.HTTPConnection, body: Any, path: str = "/",
         headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json",
                                                   **(headers or {})})
    return conn.getresponse()


def get(conn: http.client.HTTPConnection, path: str, method: str = "GET") \
        -> http.client.HTTPResponse:
    conn.request(method, path)
    return conn.getresponse()


def raw(server: IngestServer, data: bytes, timeout: float = 3.0) -> bytes:
    """Send `data` on a fresh socket and read until the server closes."""
    with socket.create_connection(server.address, timeout=timeout) as sock:
        sock.sendall(data)
        return read_to_eof(sock)


def read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# -- POST / -----------------------------------------------------------------------------


def test_accepted_event_is_handed_over_with_a_trace_id(start: Callable[..., Any]) -> None:
    server, recorder, metrics = start()
    body = dict(EVENT)
    body["Rule"] = body.pop("rule")
    response = post(connect(server), body)
    assert (response.status, response.read()) == (200, b"")
    assert response.getheader("Content-Length") == "0"
    [event] = recorder.events
    assert event.rule == "Terminal shell in container"
    assert event.output == "shell in pod"
    assert event.priority == "Warning" and event.source == "syscall"
    assert event.output_fields["k8s.pod.name"] == "web"
    assert event.tags == ("shell", "mitre")
    assert HEX32.fullmatch(event.trace_id)
    assert recorder.sizes == [len(json.dumps(body))]  # the queue bounds bytes with it
    assert sample(metrics, "event_total", event=event.rule, priority="Warning",
                  source="syscall") == 1


def test_each_event_gets_its_own_trace_id(start: Callable[..., Any]) -> None:
    server, recorder, _ = start()
    conn = connect(server)
    for _ in range(2):
        post(conn, {**EVENT, "trace_id": "from-the-payload"}).read()
    ids = [e.trace_id for e in recorder.events]
    assert len(set(ids)) == 2 and all(HEX32.fullmatch(i) for i in ids)


def test_traceparent_trace_id_is_used(start: Callable[..., Any]) -> None:
    server, recorder, _ = start()
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert post(connect(server), EVENT, headers={"traceparent": parent}).status == 200
    assert recorder.events[0].trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize("value", [
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  # v00 has 4 fields
    "garbage",
])
def test_invalid_traceparent_is_ignored(value: str) -> None:
    assert trace_id_from([value]) is None


def test_traceparent_of_a_later_version_may_carry_more_fields() -> None:
    value = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
    assert trace_id_from([value]) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_from([value, value]) is None


def test_post_on_another_path_is_an_event_too(start: Callable[..., Any]) -> None:
    server, recorder, _ = start()
    assert post(connect(server), EVENT, path="/events?x=1").status == 200
    assert len(recorder.events) == 1


def test_keep_alive_serves_several_requests_on_one_connection(
        start: Callable[..., Any]) -> None:
    server, recorder, _ = start()
    conn = connect(server)
    assert post(conn, EVENT).read() == b""
    sock = conn.sock
    for _ in range(4):
        response = post(conn, EVENT)
        response.read()
        assert response.status == 200 and not response.will_close
    assert get(conn, "/healthz").read() == b'{"status": "ok"}'
    assert conn.sock is sock
    assert len(recorder.events) == 5


def test_chunked_body_is_accepted(start: Callable[..., Any]) -> None:
    server, recorder, _ = start()
    conn = connect(server)
    data = json.dumps(EVENT).encode()
    conn.request("POST", "/", body=iter([data[:10], data[10:]]), encode_chunked=True)
    assert conn.getresponse().status == 200
    assert recorder.events[0].rule == EVENT["rule"]


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "problem"), [
    ('{"rule": "r", "output_fields": {"n": ' + "9" * 5000 + "}}", "integer"),
    ('{"rule": "r", "output_fields": {"n": ' + '{"a":' * 900 + "1" + "}" * 902, "nested"),
    ('{"rule": "r", "output_fields": {"n": ' + "[" * 900 + "]" * 900 + "}}", "nested"),
    ('{"rule": "r", "output_fields": {"n": ' + "[" * 5000 + "]" * 5000 + "}}", "nested"),
])
def test_hostile_json_is_400_naming_the_problem(start: Callable[..., Any], body: str,
                                                problem: str) -> None:
    server, recorder, _metrics = start(max_body_bytes=1 << 20)
    conn = connect(server)
    response = post(conn, body)
    assert response.status == 400
    answer = json.loads(response.read())
    assert problem in answer["error"], answer
    assert recorder.events == []
    assert post(conn, EVENT).status == 200  # the connection stays usable


@pytest.mark.parametrize(("body", "field"), [
    ("{not json", ""),
    ('{"rule": 5}', "rule"),
    ('{"rule": "r", "time": "yesterday"}', "time"),
    ('{"rule": "r", "output_fields": ["a"]}', "output_fields"),
    ('["an", "array"]', ""),
])
def test_bad_payload_is_400_naming_the_field(start: Callable[..., Any], body: str,
                                             field: str) -> None:
    server, recorder, metrics = start()
    conn = connect(server)
    response = post(conn, body)
    assert response.status == 400
    assert response.getheader("Content-Type") == "application/json"
    answer = json.loads(response.read())
    assert answer["field"] == field
    if field:
        assert field in answer["error"]
    assert recorder.events == []
    assert sample(metrics, "talon_events_rejected_total", reason="bad_request") == 1
    assert post(conn, EVENT).status == 200  # the connection stays usable


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/", "POST"), ("PUT", "/", "POST"), ("DELETE", "/x", "POST"),
    ("POST", "/healthz", "GET, HEAD"), ("POST", "/metrics", "GET, HEAD"),
])
def test_wrong_method_is_405_with_allow(start: Callable[..., Any], method: str, path: str,
                                        allow: str) -> None:
    server, recorder, metrics = start()
    conn = connect(server)
    conn.request(method, path, body=b"{}" if method == "POST" else None)
    response = conn.getresponse()
    assert response.status == 405
    assert response.getheader("Allow") == allow
    assert "error" in json.loads(response.read())
    assert recorder.events == []
    assert sample(metrics, "talon_events_rejected_total", reason="method") == 1


def test_unknown_get_path_is_404(start: Callable[..., Any]) -> None:
    server, _, _ = start()
    response = get(connect(server), "/nope")
    assert response.status == 404
    assert response.getheader("Content-Type") == "application/json"
    assert "/nope" in json.loads(response.read())["error"]


def test_missing_content_length_is_411(start: Callable[..., Any]) -> None:
    server, _, metrics = start()
    answer = raw(server, b"POST / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411 ")
    assert b"Content-Length: " in answer
    assert sample(metrics, "talon_events_rejected_total", reason="length_required") == 1


@pytest.mark.parametrize("headers", [
    b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
    b"Content-Length: 2\r\nContent-Length: 3\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: \xb2\r\n",  # a digit to str.isdigit(), not to HTTP
    b"Transfer-Encoding: gzip, chunked\r\n",
])
def test_ambiguous_framing_is_refused_and_closed(start: Callable[..., Any],
                                                 headers: bytes) -> None:
    server, recorder, _ = start()
    answer = raw(server, b"POST / HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n{}")
    assert re.match(rb"HTTP/1.1 (400|501) ", answer)
    assert b"Connection: close" in answer
    assert recorder.events == []


def test_body_over_the_limit_is_413_without_reading_it(start: Callable[..., Any]) -> None:
    server, recorder, metrics = start(max_body_bytes=4096)
    began = time.monotonic()
    # Announce 1 GB and send none of it: the answer must not wait for the body.
    answer = raw(server, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000\r\n\r\n")
    assert time.monotonic() - began < 1.0
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in answer
    assert sample(metrics, "talon_events_rejected_total", reason="too_large") == 1
    conn = connect(server)
    response = post(conn, {**EVENT, "output": "x" * 8000})
    assert response.status == 413 and response.will_close
    assert "4096" in json.loads(response.read())["error"]
    assert post(connect(server), EVENT).status == 200
    assert len(recorder.events) == 1


def test_chunked_body_over_the_limit_is_413(start: Callable[..., Any]) -> None:
    server, recorder, _ = start(max_body_bytes=1024)
    conn = connect(server)
    conn.request("POST", "/", body=iter([b"x" * 700, b"x" * 700]), encode_chunked=True)
    assert conn.getresponse().status == 413
    assert recorder.events == []


def test_expect_100_continue_over_the_limit_gets_413_not_100(
        start: Callable[..., Any]) -> None:
    server, _, _ = start(max_body_bytes=1024)
    answer = raw(server, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
                         b"Expect: 100-continue\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_full_queue_is_503_with_retry_after(start: Callable[..., Any]) -> None:
    server, recorder, metrics = start(result=False, retry_after_seconds=2)
    conn = connect(server)
    response = post(conn, EVENT)
    assert response.status == 503
    assert response.getheader("Retry-After") == "2"
    assert "queue" in json.loads(response.read())["error"]
    assert len(recorder.events) == 1  # it was offered, and refused
    assert sample(metrics, "talon_events_rejected_total", reason="queue_full") == 1
    assert sample(metrics, "event_total", event=EVENT["rule"], priority="Warning",
                  source="syscall") == 0
    assert post(conn, EVENT).status == 503  # the connection stays usable


# -- probes -----------------------------------------------------------------------------


def test_healthz_exact_body(start: Callable[..., Any]) -> None:
    server, _, _ = start()
    conn = connect(server)
    response = get(conn, "/healthz")
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert response.read() == b'{"status": "ok"}'
    head = get(conn, "/healthz", method="HEAD")
    assert head.getheader("Content-Length") == "16" and head.read() == b""


def test_metrics_count_events_and_rejections(start: Callable[..., Any]) -> None:
    server, _, _ = start()
    conn = connect(server)
    post(conn, EVENT).read()
    post(conn, "{").read()
    response = get(conn, "/metrics")
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/plain")
    text = response.read().decode()
    assert re.search(r'^event_total\{.*event="Terminal shell in container".*\} 1\.0$', text,
                     re.MULTILINE)
    assert 'talon_events_rejected_total{reason="bad_request"} 1.0' in text


# -- slow, idle and too many clients --------------------------------------------------


def test_stalled_headers_are_dropped_after_read_timeout_while_others_are_served(
        start: Callable[..., Any]) -> None:
    server, _, metrics = start(read_timeout=0.5)
    with socket.create_connection(server.address, timeout=5) as stalled:
        began = time.monotonic()
        stalled.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Le")
        conn = connect(server)
        for _ in range(3):
            response = post(conn, EVENT)
            assert (response.status, response.read()) == (200, b"")
        assert time.monotonic() - began < 0.4  # served while the other one stalls
        answer = read_to_eof(stalled)
        elapsed = time.monotonic() - began
    assert 0.4 < elapsed < 2.0
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert sample(metrics, "talon_events_rejected_total", reason="timeout") == 1


def test_stalled_body_is_dropped_after_read_timeout(start: Callable[..., Any]) -> None:
    server, recorder, _ = start(read_timeout=0.5)
    with socket.create_connection(server.address, timeout=5) as sock:
        began = time.monotonic()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"ru")
        answer = read_to_eof(sock)
        assert 0.4 < time.monotonic() - began < 2.0
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert recorder.events == []


def test_trickling_client_cannot_stretch_the_deadline(start: Callable[..., Any]) -> None:
    server, _, _ = start(read_timeout=0.6)
    with socket.create_connection(server.address, timeout=5) as sock:
        began = time.monotonic()
        closed = threading.Event()

        def trickle() -> None:
            for byte in b"POST / HTTP/1.1\r\nHost: t\r\n":
                if closed.wait(0.1):
                    return
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    return

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        answer = read_to_eof(sock)
        closed.set()
        sender.join(2)
        assert time.monotonic() - began < 1.5  # each byte came in time, the whole did not
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_idle_keep_alive_connection_is_closed(start: Callable[..., Any]) -> None:
    server, _, metrics = start(idle_timeout=0.5, read_timeout=3)
    conn = connect(server)
    assert post(conn, EVENT).read() == b""
    assert conn.sock is not None
    began = time.monotonic()
    assert conn.sock.recv(1) == b""  # the server closed it
    assert 0.4 < time.monotonic() - began < 2.0
    assert sample(metrics, "talon_events_rejected_total", reason="timeout") == 0


def test_connection_cap_refuses_the_extra_connection(start: Callable[..., Any]) -> None:
    server, _, metrics = start(max_connections=2, read_timeout=5)
    idle = [socket.create_connection(server.address, timeout=5) for _ in range(2)]
    try:
        with socket.create_connection(server.address, timeout=5) as third:
            answer = read_to_eof(third)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"Connection: close" in answer and b"Retry-After: 1" in answer
        assert sample(metrics, "talon_events_rejected_total",
                      reason="too_many_connections") == 1
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 3
    while True:  # the slots come back once the server sees the two closes
        try:
            if get(connect(server), "/healthz").status == 200:
                break
        except (ConnectionError, http.client.HTTPException):
            pass
        assert time.monotonic() < deadline, "slots never came back"
        time.sleep(0.05)


def test_stop_closes_idle_connections_and_the_listener(start: Callable[..., Any]) -> None:
    server, _, _ = start(idle_timeout=30)
    conn = connect(server)
    assert post(conn, EVENT).status == 200
    began = time.monotonic()
    server.stop(timeout=2)
    assert time.monotonic() - began < 1.5
    assert conn.sock is not None
    conn.sock.settimeout(2)
    assert conn.sock.recv(1) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.address, timeout=1).close()
    server.stop()  # a second stop is harmless


# -- logs -------------------------------------------------------------------------------


def test_rejections_are_logged_escaped_one_line_each(start: Callable[..., Any],
                                                     logs: Records) -> None:
    server, _, _ = start()
    payload = json.dumps({"rule": "r", "time": "2024\nFORGED LINE level=error"})
    post(connect(server), payload).read()
    raw(server, b"GET /\x1b[31m\r HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    warnings = logs.http()
    assert [r.fields["status"] for r in warnings] == [400, 404]  # type: ignore[attr-defined]
    assert warnings[0].fields["reason"] == "bad_request"  # type: ignore[attr-defined]
    assert warnings[0].fields["field"] == "time"  # type: ignore[attr-defined]
    assert "remote" in warnings[0].fields  # type: ignore[attr-defined]
    for record in warnings:
        assert payload not in str(record.fields)  # type: ignore[attr-defined]
        for formatter in (log.TextFormatter(), log.JsonFormatter()):
            line = formatter.format(record)
            assert "\n" not in line and "\r" not in line and "\x1b" not in line


def test_print_all_events_logs_each_event(start: Callable[..., Any], logs: Records) -> None:
    server, recorder, _ = start(print_all_events=True)
    post(connect(server), EVENT).read()
    [record] = [r for r in logs.records if r.getMessage() == "event"]
    assert record.levelno == logging.INFO
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["rule"] == EVENT["rule"] and fields["priority"] == "Warning"
    assert fields["source"] == "syscall" and fields["output"] == "shell in pod"
    assert fields["trace_id"] == recorder.events[0].trace_id


def test_no_access_log_on_stderr(start: Callable[..., Any],
                                 capfd: pytest.CaptureFixture[str]) -> None:
    server, _, _ = start()
    get(connect(server), "/healthz").read()
    assert capfd.readouterr().err == ""


# -- the request head ------------------------------------------------------------------

@pytest.mark.parametrize(("head", "status"), [
    (b"POST / HTTP/1.1\r\nHost: t\r\nX-Bad header: 1\r\n", b"400"),      # space in a name
    (b"POST / HTTP/1.1\r\nHost: t\r\nX-Bad : 1\r\n", b"400"),            # space before ':'
    (b"POST / HTTP/1.1\r\nHost: t\r\nno colon here\r\n", b"400"),
    (b"POST / HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n folded\r\n", b"400"),    # obsolete folding
    (b"POST / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n", b"400"),            # bare CR in a value
    (b"POST / HTTP/1.1\r\nHost: t\r\n" + b"X-A: 1\r\n" * 101, b"431"),
    (b"POST / HTTP/1.1\r\nHost: t\r\nX-A: " + b"a" * 70000 + b"\r\n", b"431"),
    (b"POST / HTTP/2.0\r\nHost: t\r\n", b"505"),
    (b"POST / HTTP/1.x\r\nHost: t\r\n", b"400"),
    (b"POST /a b HTTP/1.1\r\nHost: t\r\n", b"400"),
    (b"GET /\r\n", b"400"),                                               # HTTP/0.9
])
def test_malformed_request_head_is_refused_and_closed(
        start: Callable[..., Any], head: bytes, status: bytes) -> None:
    server, recorder, metrics = start()
    answer = raw(server, head + b"Content-Length: 2\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer[:80]
    assert b"Connection: close" in answer
    assert "error" in json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert recorder.events == []
    assert sum(s.value for m in metrics.rejected.collect() for s in m.samples
               if s.name.endswith("_total")) == 1
    assert post(connect(server), EVENT).status == 200  # and the server serves on


def test_header_names_are_case_insensitive_and_values_trimmed(
        start: Callable[..., Any]) -> None:
    server, recorder, _ = start()
    body = json.dumps(EVENT).encode()
    answer = raw(server, b"POST / HTTP/1.1\r\nHOST: t\r\ncontent-LENGTH: \t%d \r\n"
                         b"TraceParent:  00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                         b"\r\nconnection: Close\r\n\r\n%s" % (len(body), body))
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert recorder.events[0].trace_id == "0af7651916cd43dd8448eb211c80319c"


def test_http_1_0_closes_unless_keep_alive_is_asked(start: Callable[..., Any]) -> None:
    server, recorder, _ = start()
    body = json.dumps(EVENT).encode()
    request = b"POST / HTTP/1.0\r\nContent-Length: %d\r\n%s\r\n%s"
    assert raw(server, request % (len(body), b"", body)).startswith(b"HTTP/1.1 200 ")
    with socket.create_connection(server.address, timeout=3) as sock:
        sock.sendall(request % (len(body), b"Connection: keep-alive\r\n", body))
        first = sock.recv(65536)
        sock.sendall(request % (len(body), b"", body))  # the connection is still open
        rest = read_to_eof(sock)
    assert first.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in first
    assert rest.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in rest
    assert len(recorder.events) == 3


def test_every_response_carries_a_current_date(start: Callable[..., Any]) -> None:
    server, _, _ = start()
    conn = connect(server)
    for _ in range(3):
        response = post(conn, EVENT)
        response.read()
        sent = email.utils.parsedate_to_datetime(response.getheader("Date"))
        assert abs(sent.timestamp() - time.time()) < 5
