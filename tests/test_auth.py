"""Authenticated ingest over real sockets and real TLS on 127.0.0.1 (a throwaway CA made
with trustme).

Covers: TLS on the listener; client certificates required and verified (a valid one is
served; an expired one, one from another CA and none are refused at the handshake and
counted); allowed_client_names; certificate rotation (a new connection gets the new
certificate, an open keep-alive connection keeps working; a broken pair keeps the old
one); tokens as Bearer and as a Basic password with any user name, wrong and missing
ones refused with 401 + WWW-Authenticate, counted, nothing queued; the tokens file
re-read on change and kept when it becomes unreadable; signed requests: valid, stale,
future, replayed, wrong secret; /healthz open, /metrics protected unless open_metrics;
client certificates and tokens together; start-up errors naming the file.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import io
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from talon import auth, log, tls
from talon.config import AuthSettings, TlsSettings
from talon.errors import ConfigError
from talon.metrics import Metrics
from talon.models import Event
from talon.server import IngestServer
from tests.support import wait_until

EVENT = {"rule": "Terminal shell in container", "priority": "Warning", "output": "shell",
         "output_fields": {"k8s.pod.name": "web", "k8s.ns.name": "prod"}}
BODY = json.dumps(EVENT).encode()
TOKEN = "4c1b0e6f2d9a8b7c6e5f4a3b2c1d0e9f"
OTHER_TOKEN = "0123456789abcdef0123456789abcdef"
SECRET = b"s3cret-signing-key-of-talon-0001"


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event, size: int = 0) -> bool:
        self.events.append(event)
        return True


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", {})
        self.lines.append(f"{record.levelname} {record.getMessage()} {fields}")


@pytest.fixture
def logs() -> Iterator[Records]:
    logger = logging.getLogger("talon.server")
    handler, old_level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


class Pki:
    """A CA, the server's certificate files and helpers for client contexts."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.ca = folder, trustme.CA()
        self.cert_file, self.key_file = folder / "tls.crt", folder / "tls.key"
        self.ca_file = folder / "ca.crt"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.server = self.install(self.ca.issue_cert("127.0.0.1", "talon.falco"))

    def install(self, cert: trustme.LeafCert) -> trustme.LeafCert:
        """Write `cert` as the server's certificate, each file replaced by a rename."""
        for path, pem in ((self.key_file, cert.private_key_pem),
                          (self.cert_file, cert.cert_chain_pems[0])):
            tmp = path.with_suffix(".tmp")
            pem.write_to_path(str(tmp))
            tmp.replace(path)
        return cert

    def client(self, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if cert is not None:
            cert.configure_cert(context)
        return context

    def tls(self, *, mutual: bool = False, names: tuple[str, ...] = ()) -> TlsSettings:
        return TlsSettings(cert_file=str(self.cert_file), key_file=str(self.key_file),
                           client_ca_file=str(self.ca_file) if mutual else "",
                           allowed_client_names=names)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


Started = tuple[IngestServer, Recorder, Metrics]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Started]]:
    servers: list[IngestServer] = []

    def make(tls_settings: TlsSettings | None = None, auth_settings: AuthSettings | None = None,
             clock: Callable[[], float] = time.time) -> Started:
        guard = None
        if auth_settings is not None and auth.configured(auth_settings):
            guard = auth.Authenticator(auth_settings, interval=0.0, clock=clock)
        server_tls = None
        if tls_settings is not None:
            server_tls = tls.ServerTLS(tls_settings, optional_client_cert=guard is not None,
                                       interval=0.0)
        recorder, metrics = Recorder(), Metrics()
        server = IngestServer(address="127.0.0.1", port=0, accept=recorder, metrics=metrics,
                              read_timeout=5, tls=server_tls, auth=guard)
        server.start()
        servers.append(server)
        return server, recorder, metrics

    yield make
    for server in servers:
        server.stop(timeout=2)


_OPEN: list[http.client.HTTPConnection] = []


@pytest.fixture(autouse=True)
def _close_connections() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def connect(server: IngestServer, context: ssl.SSLContext | None = None) \
        -> http.client.HTTPConnection:
    """A client connection (HTTPS with `context`), closed after the test."""
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=5) if context is None else \
        http.client.HTTPSConnection(host, port, timeout=5, context=context)
    _OPEN.append(conn)
    return conn


def request(conn: http.client.HTTPConnection, method: str = "POST", path: str = "/",
            body: bytes | None = BODY, headers: dict[str, str] | None = None) \
        -> tuple[int, http.client.HTTPResponse]:
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    resp.read()
    return resp.status, resp


def served_cert(conn: http.client.HTTPConnection) -> bytes | None:
    """The certificate the server presented on `conn` (DER)."""
    assert isinstance(conn.sock, ssl.SSLSocket)
    return conn.sock.getpeercert(binary_form=True)


def der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def rejected(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("talon_events_rejected_total", {"reason": reason})
    return value or 0.0


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def tokens_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "tokens"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- TLS and client certificates -----------------------------------------------------------


def test_tls_listener_serves_events(start: Callable[..., Started], pki: Pki) -> None:
    server, recorder, _ = start(pki.tls())
    conn = connect(server, pki.client())
    assert request(conn)[0] == 200
    assert request(conn)[0] == 200  # keep-alive over TLS
    assert [e.rule for e in recorder.events] == [EVENT["rule"]] * 2
    assert conn.sock is not None
    assert conn.sock.getpeercert()["subjectAltName"] == (  # type: ignore[union-attr]
        ("IP Address", "127.0.0.1"), ("DNS", "talon.falco"))


def test_plain_http_to_the_tls_port_is_refused(start: Callable[..., Started], pki: Pki) -> None:
    server, recorder, metrics = start(pki.tls())
    with pytest.raises((http.client.HTTPException, OSError)):
        request(connect(server))
    wait_until(lambda: rejected(metrics, "tls_handshake") == 1, timeout=5, interval=0.01)
    assert recorder.events == []


def test_valid_client_certificate_is_served(start: Callable[..., Started], pki: Pki) -> None:
    server, recorder, _ = start(pki.tls(mutual=True))
    falco = pki.ca.issue_cert("falco.falco.svc")
    assert request(connect(server, pki.client(falco)))[0] == 200
    assert len(recorder.events) == 1


def _expired(ca: trustme.CA) -> trustme.LeafCert:
    now = datetime.datetime.now(datetime.UTC)
    return ca.issue_cert("falco.falco.svc", not_before=now - datetime.timedelta(days=2),
                         not_after=now - datetime.timedelta(days=1))


@pytest.mark.parametrize("which", ["expired", "other CA", "missing"])
def test_bad_client_certificate_is_refused_at_the_handshake(
        start: Callable[..., Started], pki: Pki, logs: Records, which: str) -> None:
    server, recorder, metrics = start(pki.tls(mutual=True))
    cert = {"expired": lambda: _expired(pki.ca),
            "other CA": lambda: trustme.CA().issue_cert("falco.falco.svc"),
            "missing": lambda: None}[which]()
    with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
        request(connect(server, pki.client(cert)))
    wait_until(lambda: rejected(metrics, "unauthenticated") == 1, timeout=5, interval=0.01)
    assert recorder.events == []
    assert any("TLS handshake failed" in line for line in logs.lines), logs.lines


def test_allowed_client_names_are_enforced(start: Callable[..., Started], pki: Pki) -> None:
    server, recorder, metrics = start(pki.tls(mutual=True, names=("falco.falco.svc",)))
    by_san = pki.ca.issue_cert("falco.falco.svc")
    by_cn = pki.ca.issue_cert("other.example", common_name="Falco.Falco.Svc")
    intruder = pki.ca.issue_cert("intruder.falco.svc")
    assert request(connect(server, pki.client(by_san)))[0] == 200
    assert request(connect(server, pki.client(by_cn)))[0] == 200
    with pytest.raises((http.client.HTTPException, OSError)):
        request(connect(server, pki.client(intruder)))
    assert rejected(metrics, "unauthenticated") == 1
    assert len(recorder.events) == 2


def test_rotated_certificate_reaches_new_connections_only(start: Callable[..., Started],
                                                          pki: Pki, logs: Records) -> None:
    server, recorder, _ = start(pki.tls())
    old = connect(server, pki.client())
    assert request(old)[0] == 200
    new_cert = pki.install(pki.ca.issue_cert("127.0.0.1", "talon-rotated.falco"))
    new_der = der(new_cert)
    old_der = served_cert(old)
    assert old_der != new_der

    def new_connection_gets_new_cert() -> bool:
        conn = connect(server, pki.client())
        try:
            return request(conn, "GET", "/healthz", None)[0] == 200 and \
                served_cert(conn) == new_der
        finally:
            conn.close()

    wait_until(new_connection_gets_new_cert, timeout=5, interval=0.01)
    assert request(old)[0] == 200  # the open connection keeps working, on its old cert
    assert served_cert(old) == old_der
    assert len(recorder.events) == 2
    assert any("certificate loaded" in line for line in logs.lines)


def test_broken_rotation_keeps_the_previous_certificate(start: Callable[..., Started],
                                                        pki: Pki, logs: Records) -> None:
    server, _, _ = start(pki.tls())
    pki.cert_file.write_text("not a certificate\n")
    wait_until(lambda: any("cannot be loaded" in line for line in logs.lines)
               or request(connect(server, pki.client()), "GET", "/healthz", None)[0] != 200,
               timeout=5, interval=0.01)
    conn = connect(server, pki.client())
    assert request(conn)[0] == 200
    assert served_cert(conn) == der(pki.server)
    assert any("keeping the previous ones" in line and "WARNING" in line for line in logs.lines)


def test_client_certificate_or_token_when_both_are_configured(
        start: Callable[..., Started], pki: Pki, tmp_path: Path) -> None:
    settings = AuthSettings(bearer_tokens_file=str(tokens_file(tmp_path, TOKEN)))
    server, recorder, _ = start(pki.tls(mutual=True), settings)
    falco = pki.ca.issue_cert("falco.falco.svc")
    assert request(connect(server, pki.client(falco)))[0] == 200  # certificate alone
    assert request(connect(server, pki.client()), headers=bearer(TOKEN))[0] == 200  # token
    assert request(connect(server, pki.client()))[0] == 401  # neither
    with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
        request(connect(server, pki.client(_expired(pki.ca))), headers=bearer(TOKEN))
    assert len(recorder.events) == 2


# --- tokens --------------------------------------------------------------------------------


@pytest.fixture
def token_server(start: Callable[..., Started], tmp_path: Path) -> Started:
    path = tokens_file(tmp_path, f"  {TOKEN}  ", "", OTHER_TOKEN)
    return start(None, AuthSettings(bearer_tokens_file=str(path)))


@pytest.mark.parametrize("headers", [bearer(TOKEN), bearer(OTHER_TOKEN), basic("talon", TOKEN),
                                     basic("", TOKEN), basic("anyone", OTHER_TOKEN),
                                     {"Authorization": f"bearer  {TOKEN}"}])
def test_valid_token_is_admitted(token_server: Started, headers: dict[str, str]) -> None:
    server, recorder, _ = token_server
    conn = connect(server)
    assert request(conn, headers=headers)[0] == 200
    assert request(conn, headers=headers)[0] == 200
    assert len(recorder.events) == 2


@pytest.mark.parametrize("headers", [{}, bearer(TOKEN[:-1]), bearer(TOKEN + "x"),
                                     basic(TOKEN, "wrong"), basic("talon", ""),
                                     {"Authorization": "Basic !!notbase64"},
                                     {"Authorization": f"Token {TOKEN}"},
                                     {"Authorization": TOKEN}])
def test_missing_or_wrong_token_is_401(token_server: Started, logs: Records,
                                       headers: dict[str, str]) -> None:
    server, recorder, metrics = token_server
    status, resp = request(connect(server), headers=headers)
    assert status == 401
    assert resp.headers.get_all("WWW-Authenticate") == [
        'Bearer realm="talon"', 'Basic realm="talon", charset="UTF-8"']
    assert recorder.events == []
    assert rejected(metrics, "unauthenticated") == 1
    assert not any(TOKEN in line or TOKEN[:-1] in line for line in logs.lines)
    assert any("401" in line and "unauthenticated" in line for line in logs.lines)


def test_refusal_before_the_body_lets_the_next_connection_work(token_server: Started) -> None:
    server, recorder, _ = token_server
    conn = connect(server)
    assert request(conn, body=b"x" * 500_000)[0] == 401
    assert request(connect(server), headers=bearer(TOKEN))[0] == 200
    assert len(recorder.events) == 1


def test_expect_100_continue_without_credentials_gets_401_not_100(token_server: Started) -> None:
    server, _, _ = token_server
    # A raw socket: http.client would skip an interim "100 Continue" and show only the 401.
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                     b"Expect: 100-continue\r\n\r\n" % len(BODY))
        answer = b""
        while b"\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401 ")


def test_rotated_tokens_file_is_read_again(start: Callable[..., Started], tmp_path: Path) -> None:
    path = tokens_file(tmp_path, TOKEN)
    server, recorder, _ = start(None, AuthSettings(bearer_tokens_file=str(path)))
    conn = connect(server)
    assert request(conn, headers=bearer(TOKEN))[0] == 200
    tmp = tmp_path / "tokens.new"
    tmp.write_text(OTHER_TOKEN + "\n")
    tmp.replace(path)
    wait_until(lambda: request(connect(server), headers=bearer(OTHER_TOKEN))[0] == 200,
               timeout=5, interval=0.01)
    assert request(conn, headers=bearer(TOKEN))[0] == 401  # also on an open connection
    assert len(recorder.events) == 2


def test_unreadable_tokens_file_keeps_the_last_tokens(start: Callable[..., Started],
                                                      tmp_path: Path, logs: Records) -> None:
    path = tokens_file(tmp_path, TOKEN)
    server, _, _ = start(None, AuthSettings(bearer_tokens_file=str(path)))
    path.unlink()
    wait_until(lambda: any("keeping the previous bearer tokens" in line for line in logs.lines)
               or request(connect(server), headers=bearer(TOKEN))[0] != 200,
               timeout=5, interval=0.01)
    assert request(connect(server), headers=bearer(TOKEN))[0] == 200
    assert any("WARNING auth" in line and str(path) in line for line in logs.lines)


# --- signed requests -----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def signed_server(start: Callable[..., Started], tmp_path: Path) -> tuple[Started, Clock]:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET + b"\n")
    clock = Clock()
    return start(None, AuthSettings(hmac_secret_file=str(secret)), clock=clock), clock


def signature(body: bytes, t: float, secret: bytes = SECRET) -> dict[str, str]:
    return {auth.SIGNATURE_HEADER: auth.sign(secret, body, int(t))}


def test_signed_request_is_admitted_once(signed_server: tuple[Started, Clock]) -> None:
    (server, recorder, metrics), clock = signed_server
    conn = connect(server)
    headers = signature(BODY, clock.now - 299)
    assert request(conn, headers=headers)[0] == 200
    assert request(conn, headers=signature(BODY, clock.now + 299))[0] == 200
    status, resp = request(conn, headers=headers)  # the same signature again
    assert status == 401
    assert resp.headers.get_all("WWW-Authenticate") == [
        'Talon-Signature realm="talon", header="X-Talon-Signature"']
    assert len(recorder.events) == 2
    assert rejected(metrics, "unauthenticated") == 1


@pytest.mark.parametrize("case", ["stale", "future", "wrong secret", "other body", "garbled"])
def test_bad_signature_is_401(signed_server: tuple[Started, Clock], case: str) -> None:
    (server, recorder, metrics), clock = signed_server
    headers = {"stale": signature(BODY, clock.now - 301),
               "future": signature(BODY, clock.now + 301),
               "wrong secret": signature(BODY, clock.now, b"another-secret-of-16+"),
               "other body": signature(BODY + b" ", clock.now),
               "garbled": {auth.SIGNATURE_HEADER: "t=abc,v1=00"}}[case]
    assert request(connect(server), headers=headers)[0] == 401
    assert recorder.events == []
    assert rejected(metrics, "unauthenticated") == 1


def test_replay_cache_is_bounded_and_forgets_expired_signatures() -> None:
    cache = auth.ReplayCache(size=3)
    assert cache.first_use("a", expires=10, now=0)
    assert not cache.first_use("a", expires=10, now=5)
    for key in "bcd":
        assert cache.first_use(key, expires=10, now=5)
    assert cache.first_use("a", expires=10, now=6)  # forgotten: the oldest of 3
    assert cache.first_use("b", expires=30, now=11)  # expired


# --- probes and metrics --------------------------------------------------------------------


def test_healthz_is_open_and_metrics_need_credentials(token_server: Started) -> None:
    server, _, _ = token_server
    conn = connect(server)
    assert request(conn, "GET", "/healthz", None)[0] == 200
    assert request(conn, "GET", "/metrics", None)[0] == 401
    conn = connect(server)
    conn.request("GET", "/metrics", headers=bearer(TOKEN))
    resp = conn.getresponse()
    assert resp.status == 200
    assert b'talon_events_rejected_total{reason="unauthenticated"} 1.0' in resp.read()


def test_open_metrics(start: Callable[..., Started], tmp_path: Path) -> None:
    path = tokens_file(tmp_path, TOKEN)
    server, _, _ = start(None, AuthSettings(bearer_tokens_file=str(path), open_metrics=True))
    assert request(connect(server), "GET", "/metrics", None)[0] == 200
    assert request(connect(server))[0] == 401


def test_metrics_with_a_signature_of_the_empty_body(
        signed_server: tuple[Started, Clock]) -> None:
    (server, _, _), clock = signed_server
    headers = signature(b"", clock.now)
    assert request(connect(server), "GET", "/metrics", None, headers=headers)[0] == 200
    assert request(connect(server), "GET", "/metrics", None)[0] == 401
    other = signature(BODY, clock.now + 1)
    assert request(connect(server), "GET", "/metrics", None, headers=other)[0] == 401


# --- start-up errors -----------------------------------------------------------------------


def test_missing_or_bad_files_are_start_up_errors_naming_them(tmp_path: Path, pki: Pki) -> None:
    missing = str(tmp_path / "nope")
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: auth.Authenticator(AuthSettings(bearer_tokens_file=missing)),
         f"auth.bearer_tokens_file {missing}: cannot read"),
        (lambda: auth.Authenticator(AuthSettings(hmac_secret_file=missing)),
         f"auth.hmac_secret_file {missing}: cannot read"),
        (lambda: auth.Authenticator(AuthSettings(
            bearer_tokens_file=str(tokens_file(tmp_path, "short")))), "token 1 must be"),
        (lambda: tls.ServerTLS(TlsSettings(cert_file=missing, key_file=str(pki.key_file))),
         f"tls.cert_file {missing}: cannot read"),
        (lambda: tls.ServerTLS(TlsSettings(cert_file=str(pki.key_file),
                                           key_file=str(pki.key_file))), "not a PEM"),
        (lambda: tls.ServerTLS(pki.tls(mutual=True).__class__(
            cert_file=str(pki.cert_file), key_file=str(pki.key_file), client_ca_file=missing)),
         f"tls.client_ca_file {missing}: cannot read"),
        (lambda: tls.ServerTLS(TlsSettings(cert_file=str(pki.cert_file))),
         "must be set together"),
    ]
    for make, expected in cases:
        with pytest.raises(ConfigError) as info:
            make()
        assert expected in str(info.value)


def test_empty_tokens_file_is_a_start_up_error(tmp_path: Path) -> None:
    path = tokens_file(tmp_path, "", "   ")
    with pytest.raises(ConfigError, match="no token in the file"):
        auth.Authenticator(AuthSettings(bearer_tokens_file=str(path)))


# --- logs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_logs_mask_url_passwords_and_secrets_added_at_run_time(log_format: str) -> None:
    formatter = log.formatter(log_format, io.StringIO())
    logger = logging.getLogger("talon")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    try:
        log.add_secrets([TOKEN])
    finally:
        logger.removeHandler(handler)
    record = logging.LogRecord("talon.x", logging.INFO, "", 0, "notify", (), None)
    record.fields = {"url": "http://falcosidekick:pa55word@talon.falco:2803/",
                     "error": f"got {TOKEN} back"}
    line = formatter.format(record)
    assert "pa55word" not in line and TOKEN not in line
    assert "http://falcosidekick:***@talon.falco:2803/" in line


def test_settings_from_the_environment() -> None:
    from talon import config
    settings = config.load(None, env={
        "TLS_CERT_FILE": "/certs/tls.crt", "TLS_KEY_FILE": "/certs/tls.key",
        "TLS_CLIENT_CA_FILE": "/certs/ca.crt", "TLS_ALLOWED_CLIENT_NAMES": "Falco.falco.svc, b",
        "AUTH_BEARER_TOKENS_FILE": "/secrets/tokens", "AUTH_HMAC_SECRET_FILE": "/secrets/hmac",
        "AUTH_MAX_SKEW_SECONDS": "60", "AUTH_OPEN_METRICS": "true"})
    assert settings.tls == TlsSettings(cert_file="/certs/tls.crt", key_file="/certs/tls.key",
                                       client_ca_file="/certs/ca.crt",
                                       allowed_client_names=("falco.falco.svc", "b"))
    assert settings.auth == AuthSettings(bearer_tokens_file="/secrets/tokens",
                                         hmac_secret_file="/secrets/hmac", max_skew_seconds=60,
                                         open_metrics=True)
    with pytest.raises(ConfigError, match="AUTH_MAX_SKEW_SECONDS"):
        config.load(None, env={"AUTH_MAX_SKEW_SECONDS": "0"})
    assert tls.settings_problems(TlsSettings(allowed_client_names=("a",))) == [
        "tls.allowed_client_names needs tls.client_ca_file"]


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
    ("10.0.0.5", False), ("::", False), ("talon.example", False)])
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert auth.is_loopback(address) is loopback
