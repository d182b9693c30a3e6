"""What the network can hold of Talon's memory and connections, over real sockets.

Covers: the backlog behind a busy pod counts against `queue_size` (503 + Retry-After,
`talon_queue_depth` shows it) and whatever is still waiting at the shutdown deadline is
logged one line each (trace id, rule, pod) and counted; the queue's byte bound; event
label values capped in length and in number on /metrics; the 64 KiB request-head cap
(431); at `max_connections`, the oldest idle keep-alive connection makes room for a new
one while a connection in the middle of a request is left alone; `/healthz` answers
while every slot is held by busy connections, and nothing else gets through that way.
"""

from __future__ import annotations

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

from talon.metrics import Metrics
from talon.pool import Item, MemoryQueue, WorkerPool
from talon.server import IngestServer
from tests.support import wait_until

RULE = "Terminal shell in container"
_OPEN: list[Any] = []


def event(pod: str = "busy", rule: str = RULE, **extra: Any) -> dict[str, Any]:
    return {"rule": rule, "priority": "Warning", "output": "shell", "source": "syscall",
            "output_fields": {"k8s.pod.name": pod, "k8s.ns.name": "shop"}, **extra}


def trace(n: int) -> str:
    return f"{n + 1:032x}"


class Stack:
    """An ingest server in front of a real queue and pool; pod `busy` blocks until `gate`."""

    def __init__(self, *, queue_size: int = 1000, queue_max_bytes: int = 256 << 20,
                 workers: int = 2, **options: Any) -> None:
        self.metrics = Metrics()
        self.gate, self.running = threading.Event(), threading.Event()
        self.handled: list[str] = []
        self.queue = MemoryQueue(queue_size, max_bytes=queue_max_bytes)
        self.metrics.queue_depth.set_function(self.queue.depth)
        self.pool = WorkerPool(self.queue, self.handle, workers=workers, metrics=self.metrics)
        self.server = IngestServer(address="127.0.0.1", port=0, accept=self.queue.put,
                                   metrics=self.metrics, **options)
        self.pool.start()
        self.server.start()

    def handle(self, item: Item) -> None:
        if item.event.pod_name() == "busy":
            self.running.set()
            self.gate.wait(10)
        self.handled.append(item.event.trace_id)

    def close(self) -> None:
        self.gate.set()
        self.server.stop(timeout=2)
        self.pool.stop()


@pytest.fixture
def stack() -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def make(**options: Any) -> Stack:
        made.append(Stack(**options))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def connect(address: tuple[str, int]) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection(*address, timeout=5)
    _OPEN.append(conn)
    return conn


def opened(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=5)
    _OPEN.append(sock)
    return sock


def post(conn: http.client.HTTPConnection, body: dict[str, Any],
         trace_id: str | None = None) -> http.client.HTTPResponse:
    headers = {"Content-Type": "application/json"}
    if trace_id:
        headers["traceparent"] = f"00-{trace_id}-00f067aa0ba902b7-01"
    conn.request("POST", "/", body=json.dumps(body), headers=headers)
    response = conn.getresponse()
    response.read()
    return response


def scrape(address: tuple[str, int]) -> str:
    conn = connect(address)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    assert response.status == 200
    return response.read().decode()


def value(text: str, sample: str) -> float:
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def pool_logs() -> Iterator[Records]:
    logger = logging.getLogger("talon.pool")
    handler = Records()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


# -- the queue: count and bytes ---------------------------------------------------------


def test_backlog_behind_a_busy_pod_is_bounded_by_queue_size(stack: Callable[..., Stack],
                                                            pool_logs: Records) -> None:
    s = stack(queue_size=5, retry_after_seconds=3)
    conn = connect(s.server.address)
    assert post(conn, event(), trace(0)).status == 200
    # the first event holds a worker; the rest wait behind it
    wait_until(s.running.is_set, timeout=5, interval=0.01)
    statuses = []
    for n in range(1, 200):
        response = post(conn, event(), trace(n))
        statuses.append(response.status)
        if response.status == 503:
            assert response.getheader("Retry-After") == "3"
    assert statuses.count(200) == 5 and statuses.count(503) == 194
    text = scrape(s.server.address)
    assert value(text, "talon_queue_depth") == 5
    assert value(text, 'talon_events_rejected_total{reason="queue_full"}') == 194

    assert s.pool.drain(0.3) is False  # the shutdown deadline passes with 5 still waiting
    dropped = [r for r in pool_logs.records if getattr(r, "fields", {}).get("status")
               == "dropped"]
    assert all(r.levelno == logging.WARNING for r in dropped)
    fields = [r.fields for r in dropped]  # type: ignore[attr-defined]
    assert sorted(f["trace_id"] for f in fields) == [trace(n) for n in range(1, 6)]
    assert {(f["rule"], f["pod"]) for f in fields} == {(RULE, "shop/busy")}
    running = [r.fields for r in pool_logs.records  # type: ignore[attr-defined]
               if getattr(r, "fields", {}).get("status") == "unfinished"]
    assert [f["trace_id"] for f in running] == [trace(0)]
    assert s.metrics.registry.get_sample_value("talon_events_dropped_total",
                                               {"reason": "shutdown"}) == 5


def test_queue_is_bounded_in_bytes(stack: Callable[..., Stack]) -> None:
    s = stack(queue_size=1000, queue_max_bytes=8192)
    conn = connect(s.server.address)
    assert post(conn, event()).status == 200
    wait_until(s.running.is_set, timeout=5, interval=0.01)
    big = event(output="x" * 1500)  # about 1.7 KB: four fit in 8 KiB, the fifth does not
    statuses = [post(conn, big).status for _ in range(10)]
    assert statuses == [200] * 4 + [503] * 6
    text = scrape(s.server.address)
    assert value(text, "talon_queue_depth") == 4
    assert value(text, 'talon_events_rejected_total{reason="queue_full"}') == 6
    s.gate.set()
    wait_until(lambda: len(s.handled) == 5, timeout=5, interval=0.01)
    assert post(conn, big).status == 200  # the bytes come back as events are handled


# -- metrics labels ---------------------------------------------------------------------


def test_event_label_values_are_capped_in_length_and_number(stack: Callable[..., Stack]) -> None:
    s = stack()
    conn = connect(s.server.address)
    long_rule = "R" * 5000
    assert post(conn, event(pod="p", rule=long_rule, priority="P" * 300)).status == 200
    for n in range(1100):
        assert post(conn, event(pod="p", rule=f"random rule {n}", source=f"s{n}")).status == 200
    text = scrape(s.server.address)
    samples = [line for line in text.splitlines() if line.startswith("event_total{")]
    rules = {re.search(r'event="([^"]*)"', line).group(1) for line in samples}  # type: ignore[union-attr]
    sources = {re.search(r'source="([^"]*)"', line).group(1) for line in samples}  # type: ignore[union-attr]
    assert len(rules) <= 1001 and "other" in rules
    assert len(sources) <= 1001 and "other" in sources
    assert "R" * 256 in rules and "R" * 257 not in text
    assert 'priority="' + "P" * 256 + '"' in text
    total = sum(float(line.rsplit(" ", 1)[1]) for line in samples)
    assert total == 1101  # every event is still counted, the extra ones as "other"
    assert len(text) < 1_000_000


# -- the request head -------------------------------------------------------------------


def test_request_head_over_64_kib_in_total_is_431(stack: Callable[..., Stack]) -> None:
    s = stack()
    body = json.dumps(event(pod="p")).encode()
    filler = b"".join(b"X-Fill-%d: %s\r\n" % (n, b"a" * 1000) for n in range(90))  # ~90 KB
    with opened(s.server.address) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\n" + filler
                     + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        answer = _read_to_eof(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert b"Connection: close" in answer
    assert s.handled == [] and s.queue.depth() == 0
    text = scrape(s.server.address)
    assert value(text, 'talon_events_rejected_total{reason="too_large"}') == 1


def _read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# -- connections ------------------------------------------------------------------------


def test_idle_keep_alive_connections_make_room_oldest_first(
        stack: Callable[..., Stack]) -> None:
    s = stack(max_connections=3, idle_timeout=30)
    busy = opened(s.server.address)  # in the middle of a request: never closed
    body = json.dumps(event(pod="p")).encode()
    busy.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
    older, newer = connect(s.server.address), connect(s.server.address)
    assert post(older, event(pod="p")).status == 200
    time.sleep(0.05)  # so that "older" has been idle longer
    assert post(newer, event(pod="p")).status == 200

    third = connect(s.server.address)
    assert post(third, event(pod="p")).status == 200  # admitted: "older" made room
    assert older.sock is not None
    older.sock.settimeout(3)
    assert older.sock.recv(1) == b""  # the oldest idle connection was closed
    assert post(newer, event(pod="p")).status == 200  # the newer idle one is still open
    busy.sendall(body)
    assert busy.recv(65536).startswith(b"HTTP/1.1 200 ")  # the busy one finishes


def test_many_idle_connections_do_not_block_healthz(stack: Callable[..., Stack]) -> None:
    s = stack(max_connections=50, idle_timeout=30)
    idle = [connect(s.server.address) for _ in range(50)]
    for conn in idle:
        assert post(conn, event(pod="p")).status == 200
    probe = connect(s.server.address)
    probe.request("GET", "/healthz")
    response = probe.getresponse()
    assert (response.status, response.read()) == (200, b'{"status": "ok"}')


def test_healthz_answers_while_every_slot_is_busy(stack: Callable[..., Stack]) -> None:
    s = stack(max_connections=3, read_timeout=5)
    for _ in range(3):  # three slow clients, each in the middle of a request head
        opened(s.server.address).sendall(b"POST / HTTP/1.1\r\nHost: t\r\n")
    time.sleep(0.1)
    for _ in range(3):  # a probe is answered, again and again
        probe = connect(s.server.address)
        probe.request("GET", "/healthz")
        response = probe.getresponse()
        assert (response.status, response.read()) == (200, b'{"status": "ok"}')
        probe.close()
    refused = connect(s.server.address)  # an event over the cap is still refused
    response = post(refused, event(pod="p"))
    assert response.status == 503 and response.getheader("Retry-After") == "1"
    assert s.handled == [] and s.queue.depth() == 0
    assert s.metrics.registry.get_sample_value("talon_events_rejected_total",
                                               {"reason": "too_many_connections"}) == 1
