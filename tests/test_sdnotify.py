"""systemd notify protocol against a real AF_UNIX datagram socket.

Covers: no NOTIFY_SOCKET → False; path and abstract (@name) sockets receive the message;
a missing socket is not an error; WATCHDOG_USEC/WATCHDOG_PID parsing; the watchdog thread
pings at half the interval, stops on stop(), skips pings while unhealthy, and does not
start when systemd asked for no watchdog.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from talon import sdnotify


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """A datagram socket standing in for systemd, and the env pointing at it."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        yield sock, {"NOTIFY_SOCKET": str(path)}


def received(sock: socket.socket, wait: float = 2.0) -> list[str]:
    """Every datagram that arrives within `wait` seconds of the previous one."""
    messages = []
    sock.settimeout(wait)
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except TimeoutError:
        return messages


def test_notify_without_socket_is_a_noop() -> None:
    assert sdnotify.notify("READY=1", {}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": ""}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}) is False


def test_notify_sends_to_a_path_socket(systemd: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = systemd
    assert sdnotify.notify(sdnotify.READY, env) is True
    assert sock.recv(4096) == b"READY=1"


def test_notify_sends_to_an_abstract_socket() -> None:
    name = f"talon-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert sdnotify.notify("STATUS=draining", {"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(4096) == b"STATUS=draining"


def test_notify_to_a_missing_socket_returns_false(tmp_path: Path) -> None:
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_reloading_carries_a_monotonic_timestamp() -> None:
    assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", sdnotify.reloading())


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
])
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert sdnotify.watchdog_interval(env) == expected


def test_watchdog_pings_at_half_the_interval(
        systemd: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = systemd
    dog = sdnotify.Watchdog({**env, "WATCHDOG_USEC": "200000"})  # ping every 0.1 s
    assert dog.interval == pytest.approx(0.1)
    dog.start()
    try:
        assert "talon-watchdog" in {t.name for t in threading.enumerate()}
        pings = [sock.recv(4096) for _ in range(3)]
    finally:
        dog.stop()
    assert pings == [b"WATCHDOG=1"] * 3
    assert "talon-watchdog" not in {t.name for t in threading.enumerate()}
    leftovers = received(sock, wait=0.3)  # at most one ping raced the stop
    assert len(leftovers) <= 1


def test_watchdog_skips_pings_while_unhealthy(
        systemd: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = systemd
    healthy = threading.Event()
    dog = sdnotify.Watchdog({**env, "WATCHDOG_USEC": "100000"}, healthy=healthy.is_set)
    dog.start()
    try:
        assert received(sock, wait=0.3) == []
        healthy.set()
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        dog.stop()


def test_watchdog_does_nothing_when_not_asked(
        systemd: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = systemd
    dog = sdnotify.Watchdog(env)
    assert dog.interval is None
    dog.start()
    dog.stop()
    assert "talon-watchdog" not in {t.name for t in threading.enumerate()}
    assert received(sock, wait=0.2) == []
