"""The watchdog's health check against a real, in-process Talon (no systemd needed).

Covers: with a fake NOTIFY_SOCKET (a real unix datagram socket) and WATCHDOG_USEC set, a
running server gets WATCHDOG=1 pings; they stop arriving once the HTTP accept loop is
stopped, and once the worker threads are gone; every worker stuck past its action
timeout is unhealthy too, one free worker is enough; the probe works on a wildcard bind
address.
"""

from __future__ import annotations

import socket
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from talon import app, catalog, config, health, sdnotify
from tests.notifiers.sinks import free_port
from tests.support import RECORDER
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
    dog = sdnotify.Watchdog(env, healthy=health.Liveness(talon.server.address,
                                                         talon.engine.stuck))
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
        talon.server.address, talon.engine.stuck, workers=own_workers))
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
    address = talon.server.address
    assert health.live_workers() >= 2
    two = lambda: 2  # noqa: E731 - the pool's two threads, counted apart from other tests'
    assert health.Liveness(address, lambda: 0, workers=two)() is True
    assert health.Liveness(address, lambda: 1, workers=two)() is True  # one still works
    assert health.Liveness(address, lambda: 2, workers=two)() is False


def test_probe_on_a_wildcard_address(talon: app.App) -> None:
    _, port = talon.server.address
    assert health.Liveness(("0.0.0.0", port), lambda: 0)() is True
    assert health.Liveness(("127.0.0.1", free_port()), lambda: 0, timeout=0.5)() is False
