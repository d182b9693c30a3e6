"""Socket timeouts and the idle-connection check of talon.sockets, over real TCP sockets.

Covers: a read and a write that wait too long raise TimeoutError, on plain TCP (kernel
timeouts) and on TLS (Python's timeouts: the ssl module would retry a kernel timeout for
ever, so a TLS read must still end); data that arrives in time is read whole; a peer that
closed, reset or wrote to an idle connection is seen, whether the connection was used a
moment ago (TCP state) or long ago (select).
"""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import trustme

from talon import sockets
from tests.support import wait_until


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected (client, server) pair of TCP sockets on 127.0.0.1."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
    with client, server:
        yield client, server


def timed(call: object) -> float:
    """Seconds until `call()` raised TimeoutError (it must, within 5 s)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "the call did not time out"
    assert errors and isinstance(errors[0], TimeoutError), errors
    return time.monotonic() - started


@pytest.mark.skipif(sys.platform != "linux", reason="Linux takes kernel socket timeouts")
def test_kernel_timeouts_are_taken_on_linux() -> None:
    assert sockets.kernel_timeouts_work()


def times_out_then_reads(timeout: sockets.Timeout, peer: socket.socket) -> None:
    """A read under `timeout` (0.2 s) with nothing to read times out; what `peer` sends
    next is read whole."""
    assert 0.15 <= timed(lambda: timeout.recv_into(bytearray(10))) < 2
    peer.sendall(b"late but there")
    buffer = bytearray(64)
    assert buffer[:timeout.recv_into(buffer)] == b"late but there"


def test_a_read_with_nothing_to_read_times_out(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    times_out_then_reads(sockets.Timeout(client, 0.2), server)


def test_a_write_the_peer_does_not_read_times_out(
        pair: tuple[socket.socket, socket.socket]) -> None:
    client, _server = pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    timeout = sockets.Timeout(client, 0.2)
    assert timed(lambda: timeout.sendall(b"x" * 50_000_000)) < 4


def test_a_peer_reading_a_little_at_a_time_cannot_stretch_a_send(
        pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    stop = threading.Event()

    def trickle() -> None:  # 1 KiB every 50 ms: progress, but 20 KiB/s
        while not stop.wait(0.05):
            try:
                server.recv(1024)
            except OSError:
                return

    reader = threading.Thread(target=trickle, daemon=True)
    reader.start()
    try:
        timeout = sockets.Timeout(client, 0.5)
        assert timed(lambda: timeout.sendall(b"x" * 5_000_000)) < 1.5  # not 250 s
    finally:
        stop.set()
        reader.join(5)


def test_a_shorter_timeout_is_set_a_longer_one_within_slack_is_kept(
        pair: tuple[socket.socket, socket.socket]) -> None:
    client, _server = pair
    timeout = sockets.Timeout(client, 30.0)
    timeout.set(30.1)  # fits: the socket keeps 30 s and a bit
    timeout.set(0.2)  # does not fit: set
    assert timed(lambda: timeout.recv_into(bytearray(10))) < 2


def test_a_timeout_of_none_waits_for_data(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    timeout = sockets.Timeout(client, None)
    threading.Timer(0.3, server.sendall, (b"done",)).start()
    buffer = bytearray(10)
    assert buffer[:timeout.recv_into(buffer)] == b"done"


def test_a_tls_read_times_out_too(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    accepted: list[ssl.SSLSocket] = []
    handshake = threading.Thread(target=lambda: accepted.append(
        server_context.wrap_socket(server, server_side=True)))
    handshake.start()
    with client_context.wrap_socket(client, server_hostname="127.0.0.1") as tls:
        handshake.join(5)
        with accepted[0] as peer:
            times_out_then_reads(sockets.Timeout(tls, 0.2), peer)


def test_an_open_idle_connection_is_not_closed(
        pair: tuple[socket.socket, socket.socket]) -> None:
    client, _server = pair
    assert not sockets.peer_closed(client, time.monotonic())  # TCP state
    assert not sockets.peer_closed(client, time.monotonic() - 60)  # select


@pytest.mark.parametrize("idle", [0.0, 60.0], ids=["used a moment ago", "idle long"])
def test_a_peer_that_closed_is_seen(pair: tuple[socket.socket, socket.socket],
                                    idle: float) -> None:
    client, server = pair
    server.close()
    wait_until(lambda: sockets.peer_closed(client, time.monotonic() - idle), timeout=5,
               interval=0.01)


@pytest.mark.parametrize("idle", [0.0, 60.0], ids=["used a moment ago", "idle long"])
def test_a_peer_that_reset_is_seen(pair: tuple[socket.socket, socket.socket],
                                   idle: float) -> None:
    client, server = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()  # linger 0: a reset
    wait_until(lambda: sockets.peer_closed(client, time.monotonic() - idle), timeout=5,
               interval=0.01)


def test_data_nobody_asked_for_is_seen_on_a_long_idle_connection(
        pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    server.sendall(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    wait_until(lambda: sockets.peer_closed(client, time.monotonic() - 60), timeout=5,
               interval=0.01)
