"""HTTP plumbing of the fake API server (tests/fakes/kube_api.py); stdlib only.

A `ThreadingHTTPServer` bound to 127.0.0.1:0 whose handler hands every request to one
callable, the request record the fake keeps, URL routing for `/api/v1/...` and
`/apis/<group>/<version>/...` (namespaced, cluster-scoped, all-namespaces, subresources), and
the small query-string helpers the verbs share.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes.kube_resources import JSON, ResourceDef, bad_request, unknown_path


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as received: path without query, JSON body parsed when it is JSON."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    content_type: str
    body: Any
    raw: bytes
    headers: Mapping[str, str]
    """Header names lower-cased."""
    received: float = 0.0
    """`time.monotonic()` when the request line and headers had been read."""

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass(frozen=True, slots=True)
class Route:
    """What a URL addresses."""

    rd: ResourceDef
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"


def json_response(status: int, body: Any) -> Response:
    return Response(status, json.dumps(body, separators=(",", ":")).encode())


_DATE: list[Any] = [0, ""]


class Handler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 handler; every verb goes to `server.serve(handler)`."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 60
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    plain_headers: dict[str, str] | None = None

    def parse_request(self) -> bool:
        """The stdlib's parse_request for plain HTTP/1.x requests, with a simple header
        reader: the stdlib's goes through the `email` package, which was a third of the
        fake's CPU per request. Anything unusual goes to the stdlib's own."""
        words = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n").split()
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            self.plain_headers = None
            return super().parse_request()
        self.requestline = " ".join(words)
        self.command, self.path, self.request_version = words
        headers = http.client.HTTPMessage()
        plain: dict[str, str] = {}
        for _ in range(http.client._MAXHEADERS + 1):  # type: ignore[attr-defined]
            raw = self.rfile.readline(65537)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, sep, value = raw.decode("iso-8859-1").partition(":")
            if not sep or len(raw) > 65536:
                self.send_error(400, "Bad header line")
                return False
            name, value = name.strip(), value.strip()
            headers[name] = value
            key = name.lower()
            plain[key] = f"{plain[key]}, {value}" if key in plain else value
        else:
            self.send_error(431, "Too many headers")
            return False
        self.headers = headers
        self.plain_headers = plain  # what read_request reads (the Message's accessors are slow)
        connection = headers.get("Connection", "").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive")
        if headers.get("Expect", "").lower() == "100-continue" \
                and self.request_version == "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header, formatted once a second rather than per answer."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        second = int(time.time())
        if _DATE[0] != second:
            _DATE[:] = [second, super().date_time_string(second)]
        return str(_DATE[1])

    def do_GET(self) -> None:
        self.server.serve(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET


class Server(ThreadingHTTPServer):
    """Tracks open connections so `close_connections()` can end idle keep-alives."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, serve: Callable[[Handler], None]) -> None:
        self.serve = serve
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def open_count(self) -> int:
        with self._open_lock:
            return len(self._open)

    def close_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def read_request(handler: Handler) -> RecordedRequest:
    received = time.monotonic()
    url = urlsplit(handler.path)
    headers = handler.plain_headers if handler.plain_headers is not None \
        else {k.lower(): v for k, v in handler.headers.items()}
    length = int(headers.get("content-length") or 0)
    raw = handler.rfile.read(length) if length else b""
    body: Any = None
    if raw:
        with contextlib.suppress(ValueError):
            body = json.loads(raw)
    return RecordedRequest(handler.command, url.path, parse_qs(url.query, keep_blank_values=True),
                           headers.get("content-type", ""), body, raw, headers, received)


def send(handler: Handler, response: Response) -> None:
    try:
        handler.send_response(response.status)
        handler.send_header("Content-Type", response.content_type)
        handler.send_header("Content-Length", str(len(response.body)))
        handler.end_headers()
        handler.wfile.write(response.body)
    except OSError:  # the client gave up (request timeouts in tests)
        handler.close_connection = True


def parse_route(path: str, resources: Mapping[tuple[str, str], ResourceDef]) -> Route:
    """Map a URL path onto a served resource, or raise the server's generic 404."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts[:2] == ["api", "v1"]:
        group_version, rest = "v1", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        raise unknown_path()
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    rd = resources.get((group_version, rest[0])) if 1 <= len(rest) <= 3 else None
    if rd is None or (namespace is not None and not rd.namespaced):
        raise unknown_path()
    if namespace is None and rd.namespaced and len(rest) > 1:
        raise unknown_path()
    subresource = rest[2] if len(rest) == 3 else None
    if subresource is not None and subresource not in rd.subresources:
        raise unknown_path()
    return Route(rd, namespace, rest[1] if len(rest) > 1 else None, subresource)


def verb_of(request: RecordedRequest, route: Route) -> str:
    """The RBAC verb of a request (for Forbidden messages)."""
    if route.subresource in ("exec", "attach", "eviction"):
        return "create"
    if request.method == "GET":
        if truthy(request.param("watch")):
            return "watch"
        return "get" if route.name else "list"
    if request.method == "DELETE":
        return "delete" if route.name else "deletecollection"
    verbs = {"POST": "create", "PUT": "update", "PATCH": "patch"}
    return verbs.get(request.method, request.method.lower())


def body_of(request: RecordedRequest) -> Any:
    if request.body is None:
        reason = "empty body" if not request.raw else "invalid JSON"
        raise bad_request(f"the request body could not be decoded: {reason}")
    return request.body


def truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "t", "true")


def is_dry_run(request: RecordedRequest) -> bool:
    return "All" in request.query.get("dryRun", [])


def int_param(request: RecordedRequest, name: str) -> int | None:
    value = request.param(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"invalid value for {name}: {value!r}") from None


def _key(item: JSON) -> str:
    meta = item.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def paginate(items: list[JSON], request: RecordedRequest, meta: JSON) -> list[JSON]:
    """Apply `limit`/`continue`, filling metadata.continue and remainingItemCount.

    As etcd does, items come in key order and a continue token resumes after the last key
    returned, so objects deleted between two pages do not shift the next page."""
    token = request.param("continue")
    items = sorted(items, key=_key)
    if token:
        after = base64.urlsafe_b64decode(token.encode()).decode()
        items = [item for item in items if _key(item) > after]
    limit = int_param(request, "limit") or 0
    if not limit or limit >= len(items):
        return items
    meta["continue"] = base64.urlsafe_b64encode(_key(items[limit - 1]).encode()).decode()
    meta["remainingItemCount"] = len(items) - limit
    return items[:limit]
