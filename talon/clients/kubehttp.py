"""A lean HTTP/1.1 transport for the Kubernetes API: the `rest_client` of Talon's ApiClient.

Layer L1: stdlib only at import; `kubernetes` (for its exception types) inside functions.
The official client sends every request through urllib3 and http.client, whose header
parsing (the `email` package) and pool bookkeeping cost several times the CPU of the
request itself; in an incident storm that is what limits how many pods a second Talon can
act on. `Transport` keeps the client's interface (the `rest_client` methods the ApiClient
calls, the response it reads, the ApiException tree it raises), so typed, raw-JSON and
custom-object calls all use it unchanged, and does the HTTP itself:

- keep-alive connections to the one API server, at most `maxsize` kept idle (more callers
  at once get a connection of their own, closed after use); an idle connection the server
  has closed is seen before it is used and replaced; timeouts and that check cost as few
  interpreter-lock hand-offs as possible (talon.sockets);
- TLS from the client's configuration: CA file, client certificate and key,
  `tls_server_name`, `verify_ssl` (kubeconfig `insecure-skip-tls-verify`);
- `_request_timeout` as the client takes it: one number bounds the whole request, a
  (connect, read) pair bounds the connection and each read; a request is never retried;
- bodies framed by Content-Length or chunked encoding; the whole body is read before the
  call returns (Talon never streams through this path: exec and attach use WebSockets).

What it does not do is left to the client's own urllib3 path, used instead when the
configuration names a proxy (not bypassed by `no_proxy`) or a custom `assert_hostname`,
and for any request it cannot make (a multipart body, another host). Errors: the API
server's statuses raise the client's ApiException subclasses with its Status body, as
before; a refused or broken connection raises `KubeConnectionError` (a ConnectionError),
an expired timeout `KubeTimeoutError` (a TimeoutError), a TLS failure `KubeTLSError` with
the SSL error (the client's own path raises an ApiException without a body there, which
its ApiClient then fails to decode).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from talon import sockets
from talon.httphead import MAX_HEADERS, MAX_LINE

_UNSAFE = re.compile(r"[\x00-\x20\x7f]")  # no CR, LF, space or control in a request target
_UNSAFE_HEADER = re.compile(r"[\r\n\x00]")
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH", "OPTIONS", "DELETE"))
_JSON_TYPE = re.compile("json", re.IGNORECASE)


class KubeConnectionError(ConnectionError):
    """The API server could not be reached, or closed the connection mid-request."""


class KubeTimeoutError(TimeoutError):
    """A request's connect or read timeout expired."""


class KubeTLSError(KubeConnectionError):
    """The TLS handshake failed (an unknown certificate authority, a name mismatch, a
    refused client certificate): another attempt would fail the same way."""

    transient = False  # read by talon.retry


class Response:
    """An API server's answer, read whole: what the ApiClient and Talon's raw-JSON helpers
    read of a urllib3 response (`status`, `reason`, `data`, headers, `release_conn`)."""

    __slots__ = ("data", "headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: dict[str, str], data: bytes) -> None:
        self.status, self.reason, self.headers, self.data = status, reason, headers, data

    def getheaders(self) -> dict[str, str]:
        return self.headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def release_conn(self) -> None:
        """Nothing to release: the connection went back to the pool with the body read."""

    def drain_conn(self) -> None:
        """Nothing to drain: the body is already read."""


class _Conn:
    """One keep-alive connection, its timeout and its buffered reader."""

    __slots__ = ("idle_since", "reader", "sock", "timeout")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.timeout = sockets.Timeout(sock, sock.gettimeout())
        self.reader = io.BufferedReader(sockets.Reads(self.timeout))
        self.idle_since = time.monotonic()

    def close(self) -> None:
        for part in (self.reader, self.sock):
            with contextlib.suppress(OSError):
                part.close()


class _Deadline:
    """The timeouts of one request: (connect, read) seconds, or one total bound."""

    __slots__ = ("connect", "end", "read")

    def __init__(self, timeout: Any) -> None:
        self.end: float | None = None
        self.connect: float | None = None
        self.read: float | None = None
        if isinstance(timeout, tuple) and len(timeout) == 2:
            self.connect, self.read = timeout
        elif isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout:
            self.end = time.monotonic() + float(timeout)

    def next(self, connecting: bool = False) -> float | None:
        """The socket timeout for the next step; KubeTimeoutError when none is left."""
        if self.end is None:
            return self.connect if connecting else self.read
        left = self.end - time.monotonic()
        if left <= 0:
            raise KubeTimeoutError("the request timed out")
        return left


def usable(configuration: Any) -> bool:
    """Whether `Transport` can carry this configuration's requests (else keep urllib3)."""
    scheme = urlsplit(str(configuration.host or "")).scheme
    if scheme not in ("http", "https"):
        return False
    if configuration.assert_hostname not in (None, True, False):
        return False
    if configuration.proxy:
        from requests.utils import should_bypass_proxies

        return bool(should_bypass_proxies(configuration.host,
                                          no_proxy=configuration.no_proxy or ""))
    return True


class Transport:
    """Drop-in `rest_client` for a kubernetes ApiClient (see the module doc)."""

    def __init__(self, configuration: Any, maxsize: int = 4) -> None:
        base = urlsplit(str(configuration.host).rstrip("/"))
        self._base = f"{base.scheme}://{base.netloc}"
        self._prefix = base.path
        self._host = base.hostname or "localhost"
        self._port = base.port or (443 if base.scheme == "https" else 80)
        self._host_header = base.netloc.rpartition("@")[2]
        self._tls = _tls_context(configuration) if base.scheme == "https" else None
        self._server_name = configuration.tls_server_name or self._host
        self._socket_options = list(configuration.socket_options or ())
        self._configuration = configuration
        self.maxsize = max(1, maxsize)
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()
        self._fallback: Any = None
        weakref.finalize(self, _close_all, self._idle)  # a client dropped without close()

    # --- the RESTClientObject interface -----------------------------------------------------

    def request(self, method: str, url: str, query_params: Any = None,
                headers: Mapping[str, str] | None = None, body: Any = None,
                post_params: Any = None, _preload_content: bool = True,
                _request_timeout: Any = None) -> Response:
        """Send one request; a Response for 2xx, the client's ApiException otherwise."""
        method = method.upper()
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        payload = self._payload(method, headers, body, post_params)
        target = self._target(url, query_params)
        if payload is None or target is None:
            slow: Response = self._slow(method, url, query_params, headers, body,
                                        post_params, _preload_content, _request_timeout)
            return slow  # the client's own response, read the same way
        response = self._exchange(method, target, headers, payload, _Deadline(_request_timeout))
        if not 200 <= response.status <= 299:
            raise _api_exception(response)
        return response

    # the client's method names: GET(url, headers=..., _request_timeout=...) and so on
    GET = functools.partialmethod(request, "GET")
    HEAD = functools.partialmethod(request, "HEAD")
    OPTIONS = functools.partialmethod(request, "OPTIONS")
    DELETE = functools.partialmethod(request, "DELETE")
    POST = functools.partialmethod(request, "POST")
    PUT = functools.partialmethod(request, "PUT")
    PATCH = functools.partialmethod(request, "PATCH")

    def close(self) -> None:
        """Close the idle connections (those in use are closed when given back)."""
        with self._lock:
            self.maxsize = 0
            _close_all(self._idle)

    # --- building the request ---------------------------------------------------------------

    @staticmethod
    def _payload(method: str, headers: dict[str, str], body: Any,
                 post_params: Any) -> bytes | None:
        """The request body as the client would send it; None when only urllib3 can."""
        if method not in _BODY_METHODS:
            return b""
        ctype = headers["Content-Type"]
        if _JSON_TYPE.search(ctype) or ctype == "application/apply-patch+yaml":
            if ctype == "application/json-patch+json" and not isinstance(body, list):
                headers["Content-Type"] = "application/strategic-merge-patch+json"
            return b"" if body is None else json.dumps(body).encode()
        if ctype == "application/x-www-form-urlencoded":
            return urlencode(post_params or {}).encode()
        if isinstance(body, str):
            return body.encode()
        if isinstance(body, bytes):
            return body
        return None

    def _target(self, url: str, query_params: Any) -> str | None:
        """The request target (path and query) of `url`; None for another server."""
        if not url.startswith(self._base):
            return None
        path = url[len(self._base):]
        if not path.startswith(self._prefix):
            return None
        target = path or "/"
        if query_params:
            target += ("&" if "?" in target else "?") + urlencode(query_params)
        if _UNSAFE.search(target):
            from kubernetes.client.exceptions import ApiValueError

            raise ApiValueError(f"unsafe characters in the request path {target[:200]!r}")
        return target

    def _head(self, method: str, target: str, headers: Mapping[str, str],
              length: int) -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}",
                 "Accept-Encoding: identity"]
        for name, value in headers.items():
            value = str(value)
            if _UNSAFE_HEADER.search(name) or _UNSAFE_HEADER.search(value):
                from kubernetes.client.exceptions import ApiValueError

                raise ApiValueError(f"invalid character in the request header {name!r}")
            lines.append(f"{name}: {value}")
        if length or method in _BODY_METHODS:
            lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    # --- the exchange -----------------------------------------------------------------------

    def _exchange(self, method: str, target: str, headers: Mapping[str, str], payload: bytes,
                  deadline: _Deadline) -> Response:
        data = self._head(method, target, headers, len(payload)) + payload
        conn = self._take(deadline)
        reusable = False
        try:
            conn.timeout.set(deadline.next())
            conn.timeout.sendall(data)
            response, reusable = _read_response(conn, method, deadline)
            return response
        except KubeConnectionError as exc:
            raise KubeConnectionError(f"{method} {_short(target)}: {exc}") from exc
        except TimeoutError as exc:
            raise KubeTimeoutError(f"{method} {_short(target)}: the API server did not "
                                   f"answer in time ({exc or 'timed out'})") from exc
        except ssl.SSLError as exc:
            raise KubeTLSError(f"{method} {_short(target)}: TLS with {self._host_header} "
                               f"failed: {exc}") from exc
        except OSError as exc:
            raise KubeConnectionError(f"{method} {_short(target)}: the connection to "
                                      f"{self._host_header} failed: {exc}") from exc
        finally:
            self._give(conn, reusable)

    def _take(self, deadline: _Deadline) -> _Conn:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect(deadline)
            if not sockets.peer_closed(conn.sock, conn.idle_since):
                return conn
            conn.close()

    def _give(self, conn: _Conn, reusable: bool) -> None:
        if reusable:
            with self._lock:
                if len(self._idle) < self.maxsize:
                    conn.idle_since = time.monotonic()
                    self._idle.append(conn)
                    return
        conn.close()

    def _connect(self, deadline: _Deadline) -> _Conn:
        where = f"{self._host}:{self._port}"
        try:
            sock = socket.create_connection((self._host, self._port),
                                            timeout=deadline.next(connecting=True))
        except TimeoutError as exc:
            raise KubeTimeoutError(f"connecting to {where} timed out") from exc
        except OSError as exc:
            raise KubeConnectionError(f"cannot connect to {where}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in self._socket_options:
                sock.setsockopt(*option)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._server_name)
        except ssl.SSLError as exc:
            sock.close()
            raise KubeTLSError(f"TLS with {where} failed: {exc}") from exc
        except TimeoutError as exc:
            sock.close()
            raise KubeTimeoutError(f"the TLS handshake with {where} timed out") from exc
        except OSError as exc:
            sock.close()
            raise KubeConnectionError(f"cannot connect to {where}: {exc}") from exc
        return _Conn(sock)

    def _slow(self, *args: Any) -> Any:
        """The client's own urllib3 path, for what this transport does not do."""
        with self._lock:
            if self._fallback is None:
                from kubernetes.client.rest import RESTClientObject

                self._fallback = RESTClientObject(self._configuration, maxsize=self.maxsize)
            fallback = self._fallback
        return fallback.request(*args)


def _close_all(conns: list[_Conn]) -> None:
    while conns:
        conns.pop().close()


# --- reading a response ---------------------------------------------------------------------

def _read_response(conn: _Conn, method: str, deadline: _Deadline) -> tuple[Response, bool]:
    """(the response, whether the connection may be used again)."""
    while True:
        conn.timeout.set(deadline.next())
        lines = _buffered_head(conn.reader)
        if lines is None:  # a head longer than the buffer, or one arriving in pieces
            version, status, reason = _status_line(_line(conn.reader))
            headers = _headers(iter(functools.partial(_line, conn.reader), None))
        else:
            version, status, reason = _status_line(lines[0])
            headers = _headers(iter(lines[1:]))
        if status >= 200 or status == 101:
            break  # 1xx interim answers (100 Continue) are skipped
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if method == "HEAD" or status in (204, 304) or status < 200:
        return Response(status, reason, headers, b""), keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return Response(status, reason, headers, _chunked(conn.reader)), keep
    length = headers.get("content-length")
    if length is None:
        return Response(status, reason, headers, conn.reader.read()), False
    try:
        size = int(length)
    except ValueError:
        raise KubeConnectionError(f"invalid Content-Length {length[:40]!r}") from None
    body = conn.reader.read(size) if size > 0 else b""
    if len(body) != size:
        raise KubeConnectionError(f"the API server closed the connection after "
                                  f"{len(body)} of {size} bytes")
    return Response(status, reason, headers, body), keep


def _line(reader: Any) -> bytes:
    line: bytes = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise KubeConnectionError("a response line is longer than 64 KiB")
    return line


def _buffered_head(reader: Any) -> list[bytes] | None:
    """The status and header lines, consumed, when the whole head is in the reader's
    buffer after at most one read (the usual case); None otherwise (nothing consumed)."""
    data: bytes = reader.peek(MAX_LINE)
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    reader.read(end + 4)
    return data[:end].split(b"\r\n")


def _status_line(line: bytes) -> tuple[str, int, str]:
    if not line:
        raise KubeConnectionError("the API server closed the connection without answering")
    version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
        raise KubeConnectionError(f"not an HTTP status line: {line[:80]!r}")
    return version, int(code), reason


def _headers(lines: Any) -> dict[str, str]:
    """Header lines (an iterator, ended by a blank line or its own end) as a dict."""
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = next(lines, b"")
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise KubeConnectionError(f"invalid response header line {line[:80]!r}")
        key, value = name.strip().lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    raise KubeConnectionError(f"more than {MAX_HEADERS} response headers")


def _chunked(reader: Any) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = _line(reader).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise KubeConnectionError(f"invalid chunk size {size_line[:40]!r}") from None
        if size == 0:
            _headers(iter(functools.partial(_line, reader), None))  # trailers, then a blank line
            return b"".join(parts)
        chunk = reader.read(size)
        if len(chunk) != size or reader.read(2) != b"\r\n":
            raise KubeConnectionError("the API server closed the connection mid-chunk")
        parts.append(chunk)


# --- errors and TLS -------------------------------------------------------------------------

def _api_exception(response: Response) -> Exception:
    """The client's exception for a non-2xx answer, as its own REST client raises it."""
    from kubernetes.client import exceptions as e

    kind: Any = {401: e.UnauthorizedException, 403: e.ForbiddenException,
                 404: e.NotFoundException}.get(response.status, e.ApiException)
    if 500 <= response.status <= 599:
        kind = e.ServiceException
    exc: Exception = kind(http_resp=response)
    return exc


def _tls_context(configuration: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if not configuration.verify_ssl or configuration.assert_hostname is False:
        context.check_hostname = False
    if not configuration.verify_ssl:
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context


def _short(target: str) -> str:
    return target.split("?", 1)[0][:200]
