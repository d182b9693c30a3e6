"""The HTTP ingest endpoint: Falco events in, a queued event or a clear refusal out.

Layer L4: stdlib plus talon.httpconn (one connection's requests), talon.metrics and
talon.log. A ThreadingHTTPServer runs each connection on its own thread, up to a cap on
open connections. At the cap, the keep-alive connection idle the longest is closed to
admit the new one (a connection in the middle of a request never is); with none idle,
the new connection gets one of PROBE_SLOTS reserved slots, where only `GET /healthz` is
served (anything else is 503), so a liveness probe never restarts a pod whose slots are
all busy; with those taken too, 503 and close at once. `stop()` refuses new requests,
closes idle keep-alive connections and lets requests in flight finish. The accept loop
records a heartbeat on every poll (`IngestServer.last_loop`), which the watchdog reads
instead of connecting to Talon. Plug-ins never run here.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from talon import log, models
from talon.auth import Authenticator
from talon.httpconn import (
    HEALTH_BODY,
    JSON,
    Config,
    Handler,
    ProbeHandler,
    error_body,
    trace_id_from,
)
from talon.metrics import Metrics
from talon.tls import ServerTLS

__all__ = ["HEALTH_BODY", "IngestServer", "trace_id_from"]

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.1  # how soon serve_forever() notices stop(); the heartbeat's period
PROBE_SLOTS = 8
"""Connections admitted over the cap to answer `GET /healthz` (each for ≤1 s)."""


def _refusal(retry_after: int) -> bytes:
    """The canned 503 sent to connections over the cap."""
    body = error_body("too many open connections, retry later", None)
    return (f"HTTP/1.1 503 Service Unavailable\r\nServer: talon\r\n"
            f"Content-Type: {JSON}\r\nContent-Length: {len(body)}\r\n"
            f"Retry-After: {retry_after}\r\nConnection: close\r\n\r\n").encode() + body



class _HTTPServer(ThreadingHTTPServer):
    """Accept loop with a connection cap; one named daemon thread per connection."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], config: Config, max_connections: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.config = config
        self._max = max_connections
        self._open = 0  # connections counted against max_connections
        self._probes = 0  # connections on a reserved slot
        self._lock = threading.Condition()
        self._idle: dict[socket.socket, None] = {}  # waiting for a request, oldest first
        self._evicted: set[socket.socket] = set()  # closed to make room, no longer counted
        self._busy = 0
        self._stopping = False
        self._counter = 0
        self._refusal = _refusal(config.retry_after_seconds)
        self._date: tuple[int, str] = (0, "")
        self.heartbeat = 0.0  # time.monotonic() when the accept loop last polled
        self._random = random.Random()  # noqa: S311 - trace ids correlate logs, not secrets
        super().__init__(address, Handler)

    def new_trace_id(self) -> str:
        """32 lowercase hex digits, never all zero (W3C); no system call per request."""
        return f"{self._random.getrandbits(128) | 1:032x}"

    def date(self) -> str:
        """The Date header value, formatted once per second rather than per response."""
        now = int(time.time())
        second, text = self._date
        if second != now:
            text = email.utils.formatdate(now, usegmt=True)
            self._date = (now, text)
        return text

    def service_actions(self) -> None:
        """Called by serve_forever() after every poll (each _POLL_SECONDS, or sooner after
        a connection): the heartbeat, stale once the loop stops or hangs."""
        super().service_actions()
        self.heartbeat = time.monotonic()

    def server_bind(self) -> None:
        """Bind without the reverse DNS lookup HTTPServer does for `server_name`."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        """The accepted socket, wrapped for TLS when configured (the handshake is done on
        the connection's thread: a slow client never holds up the accept loop)."""
        sock, client_address = super().get_request()
        if self.config.tls is not None:
            try:
                sock = self.config.tls.wrap(sock)
            except (OSError, ValueError) as exc:  # the accept loop skips an OSError
                sock.close()
                raise OSError(f"cannot set up TLS: {exc}") from exc
        return sock, client_address

    def process_request(self, request: Any, client_address: Any) -> None:
        handler = self._admit()
        if handler is None:
            self._refuse(request, client_address)
            return
        self._counter += 1
        thread = threading.Thread(target=self._serve, args=(request, client_address, handler),
                                  name=f"talon-http-conn-{self._counter}", daemon=True)
        try:
            thread.start()
        except BaseException:
            self._leave(request, handler)
            raise

    def _admit(self) -> type[Handler] | None:
        """The handler for a new connection, making room if need be; None to refuse."""
        with self._lock:
            if self._open < self._max:
                self._open += 1
                return Handler
            if self._idle:  # the oldest idle connection hands its place to the new one
                victim = next(iter(self._idle))
                del self._idle[victim]
                self._evicted.add(victim)
                with contextlib.suppress(OSError):
                    victim.shutdown(socket.SHUT_RDWR)
                return Handler
            if self._probes < PROBE_SLOTS:
                self._probes += 1
                return ProbeHandler
            return None

    def _leave(self, request: Any, handler: type[Handler]) -> None:
        with self._lock:
            if handler is ProbeHandler:
                self._probes -= 1
            elif request in self._evicted:
                self._evicted.discard(request)
            else:
                self._open -= 1

    def _serve(self, request: Any, client_address: Any, handler: type[Handler]) -> None:
        try:
            handler(request, client_address, self)
        except Exception:  # noqa: BLE001 - boundary: one connection's failure stays its own
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._leave(request, handler)

    def _refuse(self, sock: socket.socket, client_address: Any) -> None:
        """Over the cap: answer 503 from the accept loop without blocking, then close."""
        self.config.metrics.rejected.labels("too_many_connections").inc()
        log.emit(logger, logging.WARNING, "http", status=503, reason="too_many_connections",
                 remote=f"{client_address[0]}:{client_address[1]}",
                 error="too many open connections")
        try:
            sock.setblocking(False)
            sock.send(self._refusal)
            sock.shutdown(socket.SHUT_WR)
            for _ in range(4):  # drop a request already received, so close() sends no RST
                if not sock.recv(65536):
                    break
        except OSError:
            pass
        finally:
            sock.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        kind, exc, _tb = sys.exc_info()
        log.emit(logger, logging.ERROR, "http", result="unexpected error, connection dropped",
                 remote=f"{client_address[0]}:{client_address[1]}",
                 error=f"{kind.__name__ if kind else 'error'}: {exc}")

    def track_idle(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._stopping:
                return False
            self._idle[sock] = None
            return True

    def untrack_idle(self, sock: socket.socket) -> bool:
        """False when the connection was closed meanwhile to make room for another."""
        with self._lock:
            return self._idle.pop(sock, False) is None

    def begin_request(self) -> bool:
        with self._lock:
            if self._stopping:
                return False
            self._busy += 1
            return True

    def end_request(self) -> None:
        with self._lock:
            self._busy -= 1
            self._lock.notify_all()

    def quiesce(self, timeout: float) -> bool:
        """Refuse new requests, wake idle connections, wait for requests in flight."""
        with self._lock:
            self._stopping = True
            for sock in self._idle:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            return self._lock.wait_for(lambda: self._busy == 0, timeout)


class IngestServer:
    """Talon's HTTP listener; bound on construction, served by `start()`."""

    def __init__(self, *, address: str, port: int,
                 accept: Callable[[models.Event, int], bool | str],
                 metrics: Metrics, max_body_bytes: int = 1 << 20, max_connections: int = 256,
                 read_timeout: float = 10.0, idle_timeout: float = 60.0,
                 print_all_events: bool = False, retry_after_seconds: int = 1,
                 tls: ServerTLS | None = None, auth: Authenticator | None = None) -> None:
        if max_body_bytes < 1 or max_connections < 1 or retry_after_seconds < 0:
            raise ValueError("max_body_bytes and max_connections must be positive")
        if read_timeout <= 0 or idle_timeout <= 0:
            raise ValueError("read_timeout and idle_timeout must be positive")
        config = Config(accept=accept, metrics=metrics, max_body_bytes=max_body_bytes,
                         read_timeout=read_timeout, idle_timeout=idle_timeout,
                         print_all_events=print_all_events,
                         retry_after_seconds=retry_after_seconds, tls=tls, auth=auth)
        self._httpd = _HTTPServer((address, port), config, max_connections)
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound address; with port 0, the port the system picked."""
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def last_loop(self) -> float | None:
        """time.monotonic() when the accept loop last polled; None when it is not serving
        (not started, stopped, or its thread ended)."""
        thread = self._thread
        if thread is None or self._stopped or not thread.is_alive():
            return None
        return self._httpd.heartbeat

    def start(self) -> None:
        """Serve in the daemon thread `talon-http`."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("IngestServer can be started once")
        self._httpd.heartbeat = time.monotonic()  # the loop is starting: its first beat
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={
            "poll_interval": _POLL_SECONDS}, name="talon-http", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close the listener, let requests in flight finish (≤ timeout).

        Idle keep-alive connections are closed; a request arriving later on an open
        connection gets 503. Call from any thread but `talon-http`; safe to repeat.
        """
        if self._thread is threading.current_thread():
            raise RuntimeError("stop() must not be called from the server thread")
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout)
        self._httpd.server_close()
        if not self._httpd.quiesce(timeout):
            log.emit(logger, logging.WARNING, "http",
                     result="requests still in flight after the stop timeout")
