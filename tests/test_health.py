"""The watchdog's health check against a real, in-process Talon (no systemd needed).

Covers: with a fake NOTIFY_SOCKET (a real unix datagram socket) and WATCHDOG_USEC set, a
running server gets WATCHDOG=1 pings; they stop arriving once the HTTP accept loop is
stopped, and once the worker threads are gone; every worker stuck past its action
timeout is unhealthy too, one free worker is enough. The listener check reads the accept
loop's heartbeat rather than connecting to Talon: healthy over a TLS listener without a
handshake failure, takes no connection slot at max_connections, unhealthy when the loop
is blocked, never started or stopped.
"""

from __future__ import annotations

import http.client
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from talon import app, catalog, config, health, sdnotify, tls
from talon.metrics import Metrics
from talon.server import IngestServer
from tests.support import RECORDER
from tests.test_auth import Pki, rejected
from tests.test_sdnotify import received


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield sock, {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "100000"}


@pytest.fixture
def talon(tmp_path: Path) -> Iterator[app.App]:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(textwrap.dedent(f"""
        listen_address: 127.0.0.1
        listen_port: 0
        workers: 2
        watch_rules: false
        plugins: ["{RECORDER}"]
        deduplication: {{leader_election: false}}
        """))
    rules = tmp_path / "rules.yaml"
    rules.write_text(textwrap.dedent(f"""
        - rule: React
          match: {{rules: [Terminal shell in container]}}
          actions:
            - {{action: record, actionner: test:record,
               parameters: {{file: "{tmp_path / 'calls.jsonl'}"}}}}
        """))
    settings = config.load(str(cfg), env={})
    global OTHERS
    OTHERS = set(threading.enumerate())
    talon = app.build(settings, catalog.registry(settings.plugins), [str(rules)])
    talon.start()
    yield talon
    talon.shutdown()


OTHERS: set[threading.Thread] = set()
"""Threads alive before the fixture's Talon started (other tests' leftovers)."""


def own_workers() -> int:
    """This Talon's live worker threads, whatever other tests left running."""
    return sum(1 for t in threading.enumerate()
               if t.name.startswith(health.WORKER_PREFIX) and t not in OTHERS)


def pings(sock: socket.socket) -> list[str]:
    return received(sock, wait=0.5)


def test_pings_stop_when_the_accept_loop_stops(
        systemd: tuple[socket.socket, dict[str, str]], talon: app.App) -> None:
    sock, env = systemd
    dog = sdnotify.Watchdog(env, healthy=health.Liveness(talon.server, talon.engine.stuck))
    dog.start()
    try:
        sock.settimeout(2)
        assert sock.recv(4096) == b"WATCHDOG=1"
        talon.server.stop()
        pings(sock)  # at most the ping that raced the stop
        assert pings(sock) == []
    finally:
        dog.stop()


def test_pings_stop_when_the_workers_are_gone(
        systemd: tuple[socket.socket, dict[str, str]], talon: app.App) -> None:
    sock, env = systemd
    dog = sdnotify.Watchdog(env, healthy=health.Liveness(
        talon.server, talon.engine.stuck, workers=own_workers))
    dog.start()
    try:
        sock.settimeout(2)
        assert sock.recv(4096) == b"WATCHDOG=1"
        talon.pool.stop()
        pings(sock)
        assert pings(sock) == []
    finally:
        dog.stop()


def test_every_worker_stuck_is_unhealthy(talon: app.App) -> None:
    server = talon.server
    assert health.live_workers() >= 2
    two = lambda: 2  # noqa: E731 - the pool's two threads, counted apart from other tests'
    assert health.Liveness(server, lambda: 0, workers=two)() is True
    assert health.Liveness(server, lambda: 1, workers=two)() is True  # one still works
    assert health.Liveness(server, lambda: 2, workers=two)() is False


def serving(**kwargs: Any) -> tuple[IngestServer, Metrics]:
    metrics = Metrics()
    server = IngestServer(address="127.0.0.1", port=0, accept=lambda event, size: True,
                          metrics=metrics, read_timeout=5, **kwargs)
    return server, metrics


def test_healthy_over_tls_without_a_failed_handshake(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    server, metrics = serving(tls=tls.ServerTLS(pki.tls(), optional_client_cert=False,
                                                interval=0.0))
    server.start()
    try:
        assert health.Liveness(server, lambda: 0, workers=lambda: 1)() is True
        assert rejected(metrics, "tls_handshake") == 0
    finally:
        server.stop(timeout=2)


def test_check_takes_no_connection_slot(tmp_path: Path) -> None:
    server, _ = serving(max_connections=1)
    server.start()
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    try:
        conn.request("GET", "/healthz")
        conn.getresponse().read()  # the only slot, now idle on a keep-alive connection
        assert health.Liveness(server, lambda: 0, workers=lambda: 1)() is True
        conn.request("GET", "/healthz")  # not evicted to make room for a probe
        assert conn.getresponse().status == 200
    finally:
        conn.close()
        server.stop(timeout=2)


def test_unhealthy_while_the_accept_loop_is_blocked() -> None:
    server, _ = serving()
    release = threading.Event()
    handle = server._httpd.process_request  # wedge the accept loop itself

    def blocked(request: Any, client_address: Any) -> None:
        release.wait(10)
        handle(request, client_address)

    server._httpd.process_request = blocked  # type: ignore[method-assign]
    server.start()
    check = health.Liveness(server, lambda: 0, workers=lambda: 1, max_age=0.3)
    try:
        assert check() is True
        with socket.create_connection(server.address, timeout=5):
            time.sleep(0.6)
            assert check() is False
            release.set()
            time.sleep(0.3)
            assert check() is True
    finally:
        release.set()
        server.stop(timeout=2)


def test_unhealthy_before_start_and_after_stop() -> None:
    server, _ = serving()
    check = health.Liveness(server, lambda: 0, workers=lambda: 1)
    assert check() is False
    server.start()
    assert check() is True
    server.stop(timeout=2)
    assert check() is False
