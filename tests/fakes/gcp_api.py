"""A fake of the Google endpoints gcp:function talks to, on 127.0.0.1 (one HTTP server).

- `POST /token`: the OAuth 2.0 token endpoint of a service account. It verifies the JWT
  assertion's RS256 signature against the service account's public key and its audience (this
  endpoint or Google's, which google-auth always names),
  then issues an access token (for the APIs) or, when the assertion carries
  `target_audience`, a JWT ID token for that audience. `refuse = True` makes it answer
  `400 invalid_grant` as Google does for revoked keys.
- `GET /v2/projects/P/locations/L/functions/N`: the Cloud Functions v2 API; needs an access
  token it issued; answers the Function resource (`serviceConfig.uri`) or 404.
- `POST /run/N`: the function itself; needs an ID token issued for its URL; records the
  payload, may hang (until `hang` seconds pass or the fake stops) and answers `status`/`body`.
`credentials_file(path)` writes a service-account JSON whose `token_uri` is this server,
signed by a throwaway RSA key made here.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

PROJECT = "talon-test"
EMAIL = f"talon@{PROJECT}.iam.gserviceaccount.com"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as received (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Function:
    """A deployed function: how it answers."""

    uri: str
    status: int = 200
    body: bytes = b'{"handled": true}'
    hang: float = 0.0


@dataclass
class FakeGcp:
    """The fake's state; `base` is its URL once started."""

    key: rsa.RSAPrivateKey = field(default_factory=new_key)
    base: str = ""
    refuse: bool = False
    functions: dict[tuple[str, str, str], Function] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    grants: list[dict[str, Any]] = field(default_factory=list)
    access_tokens: set[str] = field(default_factory=set)
    id_tokens: dict[str, str] = field(default_factory=dict)
    """ID token → audience."""
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def credentials_file(self, path: Path, key: rsa.RSAPrivateKey | None = None,
                         project: str = PROJECT) -> Path:
        pem = (key or self.key).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()
        path.write_text(json.dumps({
            "type": "service_account", "project_id": project, "private_key_id": "k1",
            "private_key": pem, "client_email": EMAIL, "client_id": "1",
            "token_uri": f"{self.base}/token"}))
        return path

    def add(self, location: str, name: str, **how: Any) -> Function:
        fn = Function(uri=f"{self.base}/run/{name}", **how)
        self.functions[(PROJECT, location, name)] = fn
        return fn

    def calls(self, name: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == f"/run/{name}"]

    def api_calls(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith("/v2/")]

    # -- handlers -------------------------------------------------------------------

    def handle(self, req: Recorded) -> tuple[int, bytes]:
        with self.lock:
            self.requests.append(req)
        if req.method == "POST" and req.path == "/token":
            return self._token(req)
        parts = req.path.strip("/").split("/")
        if req.method == "GET" and len(parts) == 7 and parts[0] == "v2":
            return self._function(req, parts[2], parts[4], parts[6])
        if req.method == "POST" and len(parts) == 2 and parts[0] == "run":
            return self._run(req, parts[1])
        return 404, b"no such endpoint"

    def _verify(self, assertion: str) -> dict[str, Any] | None:
        try:
            header, payload, signature = assertion.split(".")
            self.key.public_key().verify(_unb64(signature), f"{header}.{payload}".encode(),
                                         padding.PKCS1v15(), hashes.SHA256())
            claims: dict[str, Any] = json.loads(_unb64(payload))
        except (ValueError, InvalidSignature):
            return None
        audiences = (f"{self.base}/token", GOOGLE_TOKEN_URI)  # google-auth signs for Google's
        ok = claims.get("aud") in audiences and claims.get("iss") == EMAIL
        return claims if ok else None

    def _token(self, req: Recorded) -> tuple[int, bytes]:
        form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
        claims = self._verify(form.get("assertion", ""))
        if self.refuse or form.get("grant_type") != JWT_BEARER or claims is None:
            return 400, json.dumps({"error": "invalid_grant",
                                    "error_description": "Invalid JWT Signature."}).encode()
        with self.lock:
            self.grants.append(claims)
        if "target_audience" in claims:
            return 200, json.dumps({"id_token": self._id_token(claims)}).encode()
        token = "ya29." + secrets.token_urlsafe(16)
        with self.lock:
            self.access_tokens.add(token)
        return 200, json.dumps({"access_token": token, "expires_in": 3600,
                                "token_type": "Bearer"}).encode()

    def _id_token(self, claims: dict[str, Any]) -> str:
        now = int(time.time())
        body = {"aud": claims["target_audience"], "iss": "https://accounts.google.com",
                "email": EMAIL, "iat": now, "exp": now + 3600}
        signing = (_b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()) + "."
                   + _b64(json.dumps(body).encode()))
        signature = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = f"{signing}.{_b64(signature)}"
        with self.lock:
            self.id_tokens[token] = claims["target_audience"]
        return token

    def _function(self, req: Recorded, project: str, location: str,
                  name: str) -> tuple[int, bytes]:
        if _bearer(req) not in self.access_tokens:
            return 401, _api_error(401, "Request had invalid authentication credentials.",
                                   "UNAUTHENTICATED")
        resource = f"projects/{project}/locations/{location}/functions/{name}"
        fn = self.functions.get((project, location, name))
        if fn is None:
            return 404, _api_error(404, f"Resource '{resource}' was not found", "NOT_FOUND")
        return 200, json.dumps({"name": resource, "state": "ACTIVE", "environment": "GEN_2",
                                "serviceConfig": {"uri": fn.uri}, "url": fn.uri}).encode()

    def _run(self, req: Recorded, name: str) -> tuple[int, bytes]:
        fn = next((f for f in self.functions.values() if f.uri.endswith(f"/run/{name}")), None)
        if fn is None:
            return 404, b"not found"
        if self.id_tokens.get(_bearer(req)) != fn.uri:
            return 401, b"Your client does not have permission to the requested URL."
        if fn.hang:
            self.stop.wait(fn.hang)
        return fn.status, fn.body


def _bearer(req: Recorded) -> str:
    auth = req.headers.get("authorization", "")
    return auth[len("Bearer "):] if auth.startswith("Bearer ") else ""


def _api_error(code: int, message: str, status: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "status": status}}).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Recorded(self.command, unquote(self.path.split("?")[0]),
                       {k.lower(): v for k, v in self.headers.items()}, body)
        status, answer = self.server.fake.handle(req)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = _any

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, fake: FakeGcp) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


@pytest.fixture
def gcp_api() -> Iterator[FakeGcp]:
    """The fake, serving on 127.0.0.1 until the test ends (hanging calls are released)."""
    fake = FakeGcp()
    server = _Server(fake)
    fake.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-gcp",
                              daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
