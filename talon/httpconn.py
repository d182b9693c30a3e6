"""One ingest connection: a keep-alive loop of requests, each read under a deadline.

Layer L1: stdlib plus talon.httphead, talon.models, talon.metrics and talon.log; driven by
talon.server, which accepts connections. `POST /` (and POST on any path but /healthz and
/metrics, as the Go version does) decodes one event, gives it a trace id and hands it to
`Config.accept` with its body's size; 200 when accepted, 503 when the queue is full.
`GET /healthz` and `GET /metrics` serve probes and Prometheus. Every refusal is a JSON
error, logged and counted by reason. `ProbeHandler` serves a connection admitted over
the connection cap: one `GET /healthz`, anything else is 503.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import urlsplit

from talon import httphead, log, models, sockets
from talon.auth import Authenticator
from talon.errors import EventError
from talon.metrics import CONTENT_TYPE, Metrics
from talon.tls import Peer, Refused, ServerTLS

logger = logging.getLogger("talon.server")
"""Named after the server: these are its log lines."""

HEALTH_BODY = b'{"status": "ok"}'
"""The exact /healthz body of the Go version (space after the colon, no newline)."""

JSON = "application/json"
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_LINGER_SECONDS = 0.5
_LINGER_BYTES = 256 * 1024
_MAX_LINE = 65536
_MAX_TRAILERS = 100
_PROBE_PATHS = ("/healthz", "/metrics")
_REFUSALS = {"queue_full": "event queue is full, retry later",
             "journal_full": "event journal is full, retry later",
             "disk_full": "event journal cannot be written (disk full), retry later"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """What every connection handler needs, shared read-only."""

    accept: Callable[[models.Event, int], bool | str]
    """Queue an event of the given body size: True, else False (the queue is full) or
    the reason it was refused (`journal_full`, `disk_full`, `journal_error`)."""
    metrics: Metrics
    max_body_bytes: int
    read_timeout: float
    idle_timeout: float
    print_all_events: bool
    retry_after_seconds: int
    tls: ServerTLS | None = None
    """TLS on the connections (wrapped by the server, handshake done here)."""
    auth: Authenticator | None = None
    """Credentials required for events and /metrics; None = none (client certificates
    alone, if any, are checked at the handshake)."""


class _Rejection(Exception):
    """Answer the current request with an error and stop handling it."""

    def __init__(self, status: HTTPStatus, reason: str, error: str, *, field: str | None = None,
                 close: bool = False, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(error)
        self.status, self.reason, self.error = status, reason, error
        self.field, self.close, self.headers = field, close, tuple(headers)


class _DeadlineReader(sockets.Reads):
    """Socket reads bounded by one deadline for the whole request, not per recv().

    A client trickling one byte at a time cannot stretch a request past the deadline.
    The socket keeps one timeout, `step`, and a recv() that times out before the
    deadline is simply tried again: the timeout is only set again when the deadline is
    closer than `step` (see talon.sockets for why that matters).
    """

    def __init__(self, timeout: sockets.Timeout, step: float) -> None:
        super().__init__(timeout)
        self._step = step
        self._deadline = time.monotonic()

    def arm(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def readinto(self, buffer: Any) -> int:
        while True:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("read deadline passed")
            self._timeout.set(min(remaining, self._step))
            try:
                return self._timeout.recv_into(buffer)
            except TimeoutError:
                continue


def traceparent_from(traceparent: list[str] | None) -> tuple[str, str] | None:
    """(trace id, parent span id) of one valid W3C `traceparent` header value, else None."""
    if not traceparent or len(traceparent) != 1:
        return None
    match = _TRACEPARENT.fullmatch(traceparent[0].strip())
    if not match:
        return None
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id, parent_id


def trace_id_from(traceparent: list[str] | None) -> str | None:
    """The trace id of one valid W3C `traceparent` header value, else None."""
    found = traceparent_from(traceparent)
    return found[0] if found else None


def error_body(error: str, field: str | None) -> bytes:
    data = {"error": error} if field is None else {"error": error, "field": field}
    return json.dumps(data).encode()


class Server(Protocol):
    """What a connection needs from the server that accepted it."""

    config: Config

    def date(self) -> str: ...
    def new_trace_id(self) -> str: ...
    def track_idle(self, sock: socket.socket) -> bool: ...
    def untrack_idle(self, sock: socket.socket) -> bool: ...
    def begin_request(self) -> bool: ...
    def end_request(self) -> None: ...


class Handler(BaseHTTPRequestHandler):
    """One connection: keep-alive loop of requests, each under a read deadline."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Server  # type: ignore[assignment]  # narrower than BaseServer

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced below; an open makefile() would keep the fd alive
        config = self.server.config
        self._served = 0
        self._linger = False
        self._peer = self._start_tls(config.tls) if config.tls is not None else None
        self._step = min(config.read_timeout, config.idle_timeout)
        self._timeout = sockets.Timeout(self.connection, self._step)
        self._reader = _DeadlineReader(self._timeout, self._step)
        self._buffer = io.BufferedReader(self._reader)
        self.rfile = self._buffer
        self._reader.arm(self.server.config.read_timeout)

    def _start_tls(self, guard: ServerTLS) -> Peer | None:
        """The TLS handshake (under the read timeout); None when the peer is refused."""
        try:
            return guard.handshake(self.connection, self.server.config.read_timeout)
        except Refused as exc:
            self.server.config.metrics.rejected.labels(exc.reason).inc()
            held_back = guard.should_log(exc.reason)
            if held_back is not None:
                log.emit(logger, logging.WARNING, "http", reason=exc.reason,
                         remote=self._remote(), error=str(exc), suppressed=held_back)
            return None

    def handle(self) -> None:
        if self.server.config.tls is not None and self._peer is None:
            return  # refused at the handshake
        self.close_connection = False
        while not self.close_connection:
            self._handle_one()
        if self._linger:
            self._drain_before_close()

    def _handle_one(self) -> None:
        self.command, self.path, self.request_version = "", "", self.default_request_version
        self._started = False
        self._body_done = True
        try:
            if self._served and not self._wait_for_request():
                self.close_connection = True
                return
            self._started = True
            if not self._read_request_head():
                return
            self._served += 1
            self._run_request()
        except _Rejection as rej:
            self._reject(rej)
        except TimeoutError:
            self._timed_out()
        except OSError as exc:
            log.emit(logger, logging.DEBUG, "http", result="connection error",
                     remote=self._remote(), error=str(exc))
            self.close_connection = True

    def _wait_for_request(self) -> bool:
        """Wait up to idle_timeout for the next request's first byte; False to close."""
        self._reader.arm(self.server.config.idle_timeout)
        if not self.server.track_idle(self.connection):
            return False
        try:
            first = self._buffer.peek(1)
        except TimeoutError:
            log.emit(logger, logging.DEBUG, "http", result="idle connection closed",
                     remote=self._remote())
            return False
        finally:
            kept = self.server.untrack_idle(self.connection)
        self._reader.arm(self.server.config.read_timeout)
        return bool(first) and kept  # not kept: closed to make room for a new connection

    def _read_request_head(self) -> bool:
        """Read and parse the request line and headers; False when nothing is to be done."""
        self.raw_requestline = self.rfile.readline(_MAX_LINE + 1)
        if not self.raw_requestline:
            self.close_connection = True
            return False
        if len(self.raw_requestline) > _MAX_LINE:
            self._body_done = False  # the rest of the request is still unread
            raise _Rejection(HTTPStatus.REQUEST_URI_TOO_LONG, "too_large",
                             "request line too long", close=True)
        if not self.parse_request():
            return False
        self._body_done = not (self.headers.get_all("Transfer-Encoding")
                               or self.headers.get("Content-Length", "0").strip() != "0")
        return True

    def _run_request(self) -> None:
        if not self.server.begin_request():
            raise _Rejection(HTTPStatus.SERVICE_UNAVAILABLE, "shutting_down",
                             "server is shutting down", close=True)
        try:
            self._route()
        finally:
            self.server.end_request()

    def _route(self) -> None:
        path = self.path if self.path == "/" else (urlsplit(self.path).path or "/")
        method = self.command
        if path in _PROBE_PATHS:
            if method not in ("GET", "HEAD"):
                raise _Rejection(HTTPStatus.METHOD_NOT_ALLOWED, "method",
                                 f"method {method} not allowed on {path}",
                                 headers=[("Allow", "GET, HEAD")])
            if path == "/healthz":
                self._send(HTTPStatus.OK, HEALTH_BODY, content_type=JSON)
            else:
                self._authorize_metrics()
                self._send(HTTPStatus.OK, self.server.config.metrics.exposition(),
                           content_type=CONTENT_TYPE)
        elif method == "POST":
            self._ingest()
        elif path != "/" and method in ("GET", "HEAD"):
            raise _Rejection(HTTPStatus.NOT_FOUND, "not_found", f"no such path: {path}")
        else:
            raise _Rejection(HTTPStatus.METHOD_NOT_ALLOWED, "method",
                             f"method {method} not allowed: send events with POST",
                             headers=[("Allow", "POST")])

    def _authenticated(self) -> bool:
        """Admitted without a signature: no credentials needed, a verified client
        certificate, or a token."""
        guard = self.server.config.auth
        return guard is None or (self._peer is not None and self._peer.authenticated) \
            or guard.by_header(self.headers)

    def _unauthenticated(self) -> _Rejection:
        guard = self.server.config.auth
        challenges = guard.challenges if guard is not None else ()
        return _Rejection(HTTPStatus.UNAUTHORIZED, "unauthenticated",
                          "missing or invalid credentials",
                          headers=[("WWW-Authenticate", c) for c in challenges])

    def _authorize_metrics(self) -> None:
        guard = self.server.config.auth
        if guard is None or guard.open_metrics or self._authenticated():
            return
        if not (guard.signed(self.headers) and guard.by_signature(self.headers, b"")):
            raise self._unauthenticated()

    def _ingest(self) -> None:
        config = self.server.config
        admitted = self._authenticated()
        if not admitted and not (config.auth is not None and config.auth.signed(self.headers)):
            raise self._unauthenticated()  # before the body is read: closes the connection
        body = self._read_body()
        if not admitted and config.auth is not None \
                and not config.auth.by_signature(self.headers, body):
            raise self._unauthenticated()
        caller = traceparent_from(self.headers.get_all("traceparent"))
        trace_id, parent_id = caller or (self.server.new_trace_id(), "")
        try:
            event = models.decode(body, trace_id=trace_id, parent_span_id=parent_id)
        except EventError as exc:
            raise _Rejection(HTTPStatus.BAD_REQUEST, "bad_request", str(exc),
                             field=exc.field) from None
        if config.print_all_events:
            log.emit(logger, logging.INFO, "event", rule=event.rule, priority=event.priority,
                     source=event.source, output=event.output, trace_id=trace_id)
        accepted = config.accept(event, len(body))
        if accepted is not True:
            reason = accepted or "queue_full"
            raise _Rejection(HTTPStatus.SERVICE_UNAVAILABLE, reason,
                             _REFUSALS.get(reason, "event not stored, retry later"),
                             headers=[("Retry-After", str(config.retry_after_seconds))])
        config.metrics.event(event.rule, event.priority, event.source)
        self._send(HTTPStatus.OK, b"")

    def _read_body(self) -> bytes:
        """The request body, read exactly; raises _Rejection for framing problems."""
        encodings = self.headers.get_all("Transfer-Encoding")
        lengths = self.headers.get_all("Content-Length")
        if encodings:
            if lengths:
                raise _Rejection(HTTPStatus.BAD_REQUEST, "bad_request",
                                 "both Transfer-Encoding and Content-Length", close=True)
            codings = [c.strip().lower() for value in encodings for c in value.split(",")]
            if codings != ["chunked"]:
                raise _Rejection(HTTPStatus.NOT_IMPLEMENTED, "bad_request",
                                 "only the chunked transfer-encoding is supported", close=True)
            return self._read_chunked()
        if not lengths:
            raise _Rejection(HTTPStatus.LENGTH_REQUIRED, "length_required",
                             "Content-Length header required", close=True)
        length = self._content_length(lengths)
        body = self.rfile.read(length)
        if len(body) < length:
            raise _Rejection(HTTPStatus.BAD_REQUEST, "bad_request",
                             f"body ended after {len(body)} of {length} bytes", close=True)
        self._body_done = True
        return body

    def _content_length(self, values: list[str]) -> int:
        lengths = {_length(v) for v in values}
        length = lengths.pop() if len(lengths) == 1 else None
        if length is None:
            raise _Rejection(HTTPStatus.BAD_REQUEST, "bad_request", "invalid Content-Length",
                             close=True)
        limit = self.server.config.max_body_bytes
        if length > limit:
            raise _Rejection(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                             f"body of {values[0].strip()} bytes is over the {limit}-byte limit",
                             close=True)
        return length

    def _read_chunked(self) -> bytes:
        limit = self.server.config.max_body_bytes
        parts: list[bytes] = []
        total = 0
        while size := self._chunk_size():
            total += size
            if total > limit:
                raise _Rejection(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                                 f"chunked body is over the {limit}-byte limit", close=True)
            data = self.rfile.read(size)
            if len(data) < size or self.rfile.read(2) != b"\r\n":
                raise self._bad_chunking("truncated chunk")
            parts.append(data)
        for _ in range(_MAX_TRAILERS):
            line = self.rfile.readline(_MAX_LINE + 1)
            if line == b"\r\n":
                self._body_done = True
                return b"".join(parts)
            if not line.endswith(b"\r\n"):
                break
        raise self._bad_chunking("bad trailer section")

    def _chunk_size(self) -> int:
        line = self.rfile.readline(_MAX_LINE + 1)
        if not line.endswith(b"\r\n"):
            raise self._bad_chunking("bad chunk-size line")
        text = line[:-2].split(b";", 1)[0].strip(b" \t")
        if not _CHUNK_SIZE.fullmatch(text):
            raise self._bad_chunking("bad chunk size")
        return int(text, 16)

    @staticmethod
    def _bad_chunking(what: str) -> _Rejection:
        return _Rejection(HTTPStatus.BAD_REQUEST, "bad_request", f"chunked body: {what}",
                          close=True)

    def _send(self, status: HTTPStatus, body: bytes, *, content_type: str | None = None,
              headers: Iterable[tuple[str, str]] = (), close: bool = False) -> None:
        """Write one whole response in a single send; always with Content-Length."""
        close = close or self.close_connection or not self._body_done
        lines = [f"{self.protocol_version} {status.value} {status.phrase}",
                 f"Server: {self.version_string()}", f"Date: {self.server.date()}",
                 f"Content-Length: {len(body)}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines += [f"{name}: {value}" for name, value in headers]
        if close:
            lines.append("Connection: close")
            self.close_connection = True
            self._linger = not self._body_done
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._timeout.set(self._step)
        self._timeout.sendall(head if self.command == "HEAD" else head + body)
        self.log_request(status.value, len(body))

    def _reject(self, rej: _Rejection) -> None:
        config = self.server.config
        config.metrics.rejected.labels(rej.reason).inc()
        log.emit(logger, logging.WARNING, "http", status=rej.status.value, reason=rej.reason,
                 remote=self._remote(), method=self.command, path=self.path,
                 error=rej.error, field=rej.field)
        try:
            self._send(rej.status, error_body(rej.error, rej.field), content_type=JSON,
                       headers=rej.headers, close=rej.close)
        except OSError:
            self.close_connection = True

    def _timed_out(self) -> None:
        """A request (or the first one) did not arrive whole within read_timeout."""
        self.close_connection = True
        if not self._started:
            return
        self._reject(_Rejection(HTTPStatus.REQUEST_TIMEOUT, "timeout",
                                "request not received within the read timeout", close=True))

    def _drain_before_close(self) -> None:
        """Half-close, then discard what the client still sends for a moment.

        Closing a socket with unread input makes the kernel send a reset, which can
        destroy the error response before the client reads it.
        """
        try:
            self.connection.shutdown(socket.SHUT_WR)
            _discard(self.connection, _LINGER_SECONDS, _LINGER_BYTES)
        except OSError:
            pass

    def parse_request(self) -> bool:
        """The request line and headers (see talon.httphead); False after an error reply."""
        self.command = ""  # no command yet: an error reply says so
        self.close_connection = True
        self.requestline = self.raw_requestline.decode("latin-1").rstrip("\r\n")
        if not self.requestline.strip():
            return False
        try:
            line = httphead.parse_request_line(self.raw_requestline)
            self.command, self.path, self.request_version = line.method, line.target, \
                line.version
            self.headers = httphead.parse_headers(self.rfile.readline)  # type: ignore[assignment]
        except httphead.HeadError as exc:
            self.send_error(exc.status, str(exc))
            return False
        tokens = {t.strip().lower() for t in (self.headers.get("Connection") or "").split(",")}
        self.close_connection = "close" in tokens or (
            self.request_version == "HTTP/1.0" and "keep-alive" not in tokens)
        expect = (self.headers.get("Expect") or "").strip().lower()
        if expect == "100-continue" and self.request_version == "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Errors found by the stdlib request parser, answered as JSON."""
        status = HTTPStatus(code)
        reason = "too_large" if status in (HTTPStatus.REQUEST_URI_TOO_LONG,
                                           HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) \
            else "bad_request"
        self._body_done = False  # the framing is unknown: never reuse this connection
        self._reject(_Rejection(status, reason, message or status.phrase, close=True))

    def handle_expect_100(self) -> bool:
        """Say 100 Continue only for a POST the server would read, so refusals stay cheap."""
        guard = self.server.config.auth
        if self.command == "POST" and urlsplit(self.path).path not in _PROBE_PATHS and (
                self._authenticated() or (guard is not None and guard.signed(self.headers))):
            lengths = self.headers.get_all("Content-Length") or []
            length = _length(lengths[0]) if len(lengths) == 1 else None
            chunked = bool(self.headers.get_all("Transfer-Encoding")) and not lengths
            if chunked or (length is not None and length <= self.server.config.max_body_bytes):
                self._timeout.sendall(f"{self.protocol_version} 100 Continue\r\n\r\n".encode())
        return True

    def version_string(self) -> str:
        return "talon"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.emit(logger, logging.DEBUG, "http", status=code, size=size, method=self.command,
                 path=self.path, remote=self._remote())

    def log_message(self, format: str, *args: Any) -> None:
        log.emit(logger, logging.DEBUG, "http", result=format % args, remote=self._remote())

    def _remote(self) -> str:
        host, port = self.client_address[:2]
        return f"{host}:{port}"


PROBE_READ_SECONDS = 1.0
"""Time a connection over the cap has to send its request (a probe sends it at once)."""


class ProbeHandler(Handler):
    """A connection admitted over the connection cap, on one of a few reserved slots, so
    that a liveness probe is answered even while every slot is busy: one `GET /healthz`
    (or HEAD) is served; anything else, or nothing within PROBE_READ_SECONDS, is the
    503 a connection over the cap gets. The slot is held only while the head is read."""

    def setup(self) -> None:
        super().setup()
        self._reader.arm(min(PROBE_READ_SECONDS, self.server.config.read_timeout))

    def _run_request(self) -> None:
        self.close_connection = True
        path = self.path if self.path == "/" else (urlsplit(self.path).path or "/")
        if path != "/healthz" or self.command not in ("GET", "HEAD"):
            raise self._over_cap()
        super()._run_request()

    def _timed_out(self) -> None:
        self.close_connection = True
        self._reject(self._over_cap())

    def _over_cap(self) -> _Rejection:
        return _Rejection(HTTPStatus.SERVICE_UNAVAILABLE, "too_many_connections",
                          "too many open connections, retry later", close=True,
                          headers=[("Retry-After", str(self.server.config.retry_after_seconds))])

    def handle_expect_100(self) -> bool:
        return True  # the body is never read here

    def _drain_before_close(self) -> None:
        """Drop what has already arrived, without waiting for more: the slot is scarce."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.setblocking(False)
            for _ in range(4):
                if not self.connection.recv(65536):
                    break
        except OSError:
            pass

def _discard(sock: socket.socket, seconds: float, max_bytes: int) -> None:
    """Read and drop input until EOF, `seconds` or `max_bytes`, whichever comes first."""
    deadline = time.monotonic() + seconds
    received = 0
    while received < max_bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            return
        received += len(chunk)


def _length(text: str) -> int | None:
    """A Content-Length value as an int (None when not plain ASCII digits)."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text) if len(text) <= 18 else 1 << 62
