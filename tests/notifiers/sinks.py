"""Real servers on 127.0.0.1 that capture what the notifiers send.

`HttpSink`: a ThreadingHTTPServer on a free port recording the method, path, headers and
body of every request, answering from per-path scripts (query ignored; status, headers such as
Retry-After, body, delay). `SmtpSink`: an aiosmtpd handler recording every envelope,
with the session's TLS and AUTH state. `free_port()` finds a port nobody listens on.
"""

from __future__ import annotations

import base64
import collections
import email
import email.policy
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SECRET = "s3cr3t-Pa55"
"""Password/API key used by the tests; it must never appear in an error message."""


class SleepRecorder:
    """An injected `sleep` that records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    body: bytes = b'{"ok":true}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Captured:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)

    def basic_auth(self) -> tuple[str, str] | None:
        value = self.header("Authorization")
        if not value or not value.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        return user, password


class HttpSink:
    """A capturing HTTP server; use as a context manager or call start()/stop()."""

    def __init__(self) -> None:
        self.requests: list[Captured] = []
        self._scripts: dict[tuple[str, str], collections.deque[Reply]] = {}
        self._defaults: dict[tuple[str, str], Reply] = {}
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        name="test-http-sink", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, path: str, *replies: Reply, method: str = "*",
               then: Reply | None = None) -> None:
        """Answer the next requests to `path` with `replies`, then with `then` (or 200)."""
        with self._lock:
            self._scripts[(method, path)] = collections.deque(replies)
            if then is not None:
                self._defaults[(method, path)] = then

    def _reply_for(self, method: str, path: str) -> Reply:
        path = path.partition("?")[0]
        with self._lock:
            for key in ((method, path), ("*", path)):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
                if key in self._defaults:
                    return self._defaults[key]
            return Reply()

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                captured = Captured(self.command, self.path, dict(self.headers.items()), body)
                with sink._lock:
                    sink.requests.append(captured)
                reply = sink._reply_for(self.command, self.path)
                if reply.delay and sink._release.wait(reply.delay):
                    self.close_connection = True
                    return
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> HttpSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> HttpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Mail:
    """One accepted message with the session state it arrived in."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: str | None

    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.data.replace(b"\r\n", b"\n"),
                                        policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


class SmtpSink:
    """aiosmtpd handler + authenticator recording mails; `users` maps login → password."""

    def __init__(self, users: dict[str, str] | None = None) -> None:
        self.users = users or {}
        self.mails: list[Mail] = []
        self.auth_attempts: list[tuple[str, str]] = []
        self.data_replies: collections.deque[str] = collections.deque()
        """Scripted answers to DATA (e.g. "451 …") used before accepting normally."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_replies:
            return self.data_replies.popleft()
        login = session.auth_data.login.decode() if session.authenticated else None
        tls = server.transport.get_extra_info("ssl_object") is not None
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
                               tls, login))
        return "250 Message accepted for delivery"

    def authenticator(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult

        login = auth_data.login.decode()
        password = auth_data.password.decode()
        self.auth_attempts.append((mechanism, login))
        ok = self.users.get(login) == password
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def __iter__(self) -> Iterator[Mail]:
        return iter(self.mails)


SmtpFactory = Callable[..., tuple[SmtpSink, int]]
"""The `smtp_server` fixture: `smtp_server(users=None, **controller_kwargs)` → (sink, port)."""
