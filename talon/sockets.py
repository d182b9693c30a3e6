"""Socket timeouts and liveness checks that cost as few interpreter-lock hand-offs as possible.

Layer L0 (stdlib only). Used by the ingest server (talon.httpconn) and the Kubernetes
transport (talon.clients.kubehttp), whose sockets carry every event and every action.

With a Python timeout on a socket, every recv() and send() is a poll() and then the call,
each releasing and retaking the interpreter lock, and every settimeout() one more (an
ioctl). With dozens of threads in one process, each release is a chance to wait for the
lock behind another thread; at hundreds of events a second those waits, more than the work,
make the latency tail. So:

- `Timeout` keeps a plain TCP socket blocking and lets the kernel time its reads and writes
  out (SO_RCVTIMEO, SO_SNDTIMEO, set with setsockopt, which keeps the lock): one system call
  per read or write. TLS sockets keep Python's timeouts, because the ssl module retries a
  kernel timeout for ever; their reads already try the socket before polling. Either way the
  timeout is only set again when the wanted one no longer fits the current one.
- `peer_closed` tells whether the other end closed an idle keep-alive connection from the
  kernel's TCP state (getsockopt, lock kept) when the connection was used a moment ago, and
  with select() (which also sees data nobody asked for) otherwise.
"""

from __future__ import annotations

import functools
import io
import select
import socket
import ssl
import struct
import time
from typing import Any

SLACK = 0.25
"""How far a timeout may exceed the wanted one before it is set again (seconds)."""

FRESH = 1.0
"""A connection idle for less than this (seconds) is checked by its TCP state alone."""

_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)  # Linux
_TCP_ESTABLISHED = 1  # tcp_info.tcpi_state
_TIMEVAL = struct.Struct("@ll")  # struct timeval where time_t and suseconds_t are longs


def _timeval(seconds: float | None) -> bytes:
    """`seconds` as a struct timeval; None (never time out) as zero."""
    if seconds is None:
        return _TIMEVAL.pack(0, 0)
    whole = int(seconds)
    micro = int((seconds - whole) * 1_000_000)
    return _TIMEVAL.pack(whole, max(micro, 1) if whole == 0 else micro)  # 0 would mean never


@functools.cache
def kernel_timeouts_work() -> bool:
    """Whether this platform takes SO_RCVTIMEO/SO_SNDTIMEO as a timeval (checked once)."""
    if not (hasattr(socket, "SO_RCVTIMEO") and hasattr(socket, "SO_SNDTIMEO")):
        return False
    left, right = socket.socketpair()
    try:
        wanted = _timeval(1.5)
        for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            left.setsockopt(socket.SOL_SOCKET, option, wanted)
            if left.getsockopt(socket.SOL_SOCKET, option, len(wanted)) != wanted:
                return False
        return True
    except OSError:
        return False
    finally:
        left.close()
        right.close()


class Timeout:
    """The read and write timeout of one connected socket, and its reads and writes.

    A read or write that times out raises TimeoutError, whichever way it is timed.
    """

    __slots__ = ("_kernel", "_sock", "current")

    def __init__(self, sock: socket.socket, seconds: float | None) -> None:
        self._sock = sock
        self._kernel = (kernel_timeouts_work() and not isinstance(sock, ssl.SSLSocket)
                        and sock.type == socket.SOCK_STREAM)
        self.current: float | None = -1.0  # unknown: the first set() applies
        if self._kernel:
            sock.settimeout(None)  # blocking: the kernel times reads and writes out
        self.set(seconds)

    def set(self, seconds: float | None) -> None:
        """Reads and writes give up after `seconds` (up to SLACK later); None: never."""
        current = self.current
        if seconds is None:
            if current is None:
                return
        elif current is not None and seconds <= current <= seconds + SLACK:
            return
        if seconds is not None:
            seconds += SLACK / 2  # so that the next few wanted ones fit it too
        if self._kernel:
            value = _timeval(seconds)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        else:
            self._sock.settimeout(seconds)
        self.current = seconds

    def recv_into(self, buffer: Any) -> int:
        try:
            return self._sock.recv_into(buffer)
        except BlockingIOError:  # a kernel timeout: EAGAIN on a blocking socket
            raise TimeoutError("timed out") from None

    def sendall(self, data: bytes) -> None:
        """Send all of `data` within the timeout, as a whole (as Python's own timeouts
        bound a sendall): a peer that reads a little at a time cannot stretch it."""
        if not self._kernel:
            self._sock.sendall(data)
            return
        budget = self.current
        deadline = None if budget is None else time.monotonic() + budget
        view, sent = memoryview(data), 0
        while True:
            try:
                sent += self._sock.send(view[sent:])
            except BlockingIOError:  # a kernel timeout: nothing sent for that long
                raise TimeoutError("timed out") from None
            if sent >= len(view):
                break
            if deadline is not None:  # slow path: the next send gets what is left
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                self.set(left)  # callers set their timeout again before their next use


class Reads(io.RawIOBase):
    """The reads of a socket under its `Timeout`, as a raw stream (for io.BufferedReader)."""

    def __init__(self, timeout: Timeout) -> None:
        super().__init__()
        self._timeout = timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._timeout.recv_into(buffer)


def peer_closed(sock: socket.socket, idle_since: float) -> bool:
    """Whether the other end closed or reset this idle connection (or, when it has been idle
    FRESH seconds or more, sent it anything): it must not carry another request.
    `idle_since` is the time.monotonic() of its last use."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    if time.monotonic() - idle_since < FRESH:
        state = _tcp_state(sock)
        if state is not None:
            return state != _TCP_ESTABLISHED
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _tcp_state(sock: socket.socket) -> int | None:
    """The kernel's TCP state of `sock` (Linux TCP_INFO), None where it cannot say."""
    if _TCP_INFO is None:
        return None
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 8)[0]
    except (OSError, ValueError):
        return None
