"""Real AWS-protocol servers on 127.0.0.1 for the aws:* and minio:s3 tests.

- `moto` (session): moto's ThreadedMotoServer (S3, STS, IAM, Lambda) on a free port, with
  Lambda configured without Docker: an invocation then answers with the payload it was
  sent (moto's "simple" Lambda echoes its input), which is how the tests see what the
  function received. `Moto.auth()` turns moto's credential checking on for one test.
- `aws_env`: the SDK's standard environment pointed at moto (AWS_ENDPOINT_URL, keys that
  moto accepts, region, no shared files, no instance metadata).
- `FakeImds`: an IMDSv2 server: PUT /latest/api/token gives a token; every GET without that
  token gets 401; it records the paths asked for.
- `FakeLambda`: answers GetFunction and Invoke like the Lambda REST API, with a chosen
  status, X-Amz-Function-Error and body (moto cannot make a function fail).
"""

from __future__ import annotations

import io
import json
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

REGION = "us-east-1"
ACCOUNT = "123456789012"


@dataclass
class Moto:
    """The running moto server."""

    url: str
    host_port: str
    clients: dict[str, Any] = field(default_factory=dict)

    def api(self, path: str, body: bytes) -> None:
        req = urllib.request.Request(f"{self.url}/moto-api/{path}", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status in (200, 201)

    @contextmanager
    def auth(self) -> Iterator[None]:
        """Moto checks credentials (unknown keys are refused) inside the block."""
        self.api("reset-auth", b"0")
        try:
            yield
        finally:
            self.api("reset-auth", b"inf")

    def client(self, service: str) -> Any:
        """A boto3 client for setting up and reading back (not the code under test)."""
        import boto3

        if service not in self.clients:
            self.clients[service] = boto3.client(
                service, endpoint_url=self.url, region_name=REGION,
                aws_access_key_id="setup", aws_secret_access_key="setup")
        return self.clients[service]

    def assumed_roles(self) -> list[tuple[str, str, str]]:
        """(role ARN, session name, external id) of every AssumeRole moto served."""
        from moto.sts.models import sts_backends

        return [(r.role_arn, r.session_name, r.external_id or "")
                for r in sts_backends[ACCOUNT]["global"].assumed_roles]

    def function(self, name: str) -> str:
        """Create (once) a Lambda function `name` with a `live` alias; returns its ARN."""
        lam = self.client("lambda")
        try:
            return str(lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"])
        except lam.exceptions.ResourceNotFoundException:
            pass
        role = self.role("lambda-role")
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as zf:
            zf.writestr("handler.py", "def handler(event, context):\n    return event\n")
        arn = lam.create_function(FunctionName=name, Runtime="python3.11", Role=role,
                                  Handler="handler.handler",
                                  Code={"ZipFile": code.getvalue()},
                                  Publish=True)["FunctionArn"]
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
        return str(arn)

    def role(self, name: str) -> str:
        iam = self.client("iam")
        try:
            return str(iam.get_role(RoleName=name)["Role"]["Arn"])
        except iam.exceptions.NoSuchEntityException:
            return str(iam.create_role(RoleName=name,
                                       AssumeRolePolicyDocument="{}")["Role"]["Arn"])

    def bucket(self, name: str) -> str:
        s3 = self.client("s3")
        s3.create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str) -> dict[str, bytes]:
        """Every object of `bucket`, downloaded back."""
        s3 = self.client("s3")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    found = Moto(f"http://{host}:{port}", f"{host}:{port}")
    found.api("config", json.dumps({"lambda": {"use_docker": False}}).encode())
    try:
        yield found
    finally:
        for client in found.clients.values():
            client.close()
        server.stop()


def sdk_env(moto: Moto) -> dict[str, str]:
    """The SDK's environment pointed at moto, for this process or a server subprocess."""
    return {"AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


@pytest.fixture
def aws_env(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> Moto:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in sdk_env(moto).items():
        monkeypatch.setenv(name, value)
    return moto


# --- small fakes on http.server -------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    owner: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_PUT(self) -> None:
        self.owner.put(self)

    def do_GET(self) -> None:
        self.owner.get(self)

    def do_POST(self) -> None:
        self.owner.post(self)


@dataclass
class _Served:
    server: ThreadingHTTPServer | None = None
    url: str = ""

    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"owner": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True,
                         name="fake-aws").start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def put(self, h: _Handler) -> None:
        h._answer(405, b"")

    def get(self, h: _Handler) -> None:
        h._answer(405, b"")

    def post(self, h: _Handler) -> None:
        h._answer(405, b"")


@dataclass
class FakeImds(_Served):
    """IMDSv2: token required; `profile=False` answers 404 for iam/info."""

    token: str = "tok-123"
    profile: bool = True
    tokens_issued: int = 0
    gets: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    token_ttls: list[str] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=lambda: {
        "/latest/meta-data/instance-id": "i-0abc123",
        "/latest/meta-data/placement/region": "eu-west-3",
        "/latest/meta-data/placement/availability-zone": "eu-west-3b",
        "/latest/meta-data/iam/info": json.dumps({
            "Code": "Success", "LastUpdated": "2026-01-01T00:00:00Z",
            "InstanceProfileArn": "arn:aws:iam::123456789012:instance-profile/talon-node",
            "InstanceProfileId": "AIPAEXAMPLE"}),
    })

    def put(self, h: _Handler) -> None:
        if h.path != "/latest/api/token":
            h._answer(404, b"")
            return
        self.tokens_issued += 1
        self.token_ttls.append(h.headers.get("X-aws-ec2-metadata-token-ttl-seconds", ""))
        h._answer(200, self.token.encode())

    def get(self, h: _Handler) -> None:
        if h.headers.get("X-aws-ec2-metadata-token") != self.token:
            self.refused.append(h.path)
            h._answer(401, b"")
            return
        self.gets.append(h.path)
        if h.path.endswith("/iam/info") and not self.profile:
            h._answer(404, b"")
            return
        value = self.values.get(h.path)
        h._answer(200 if value is not None else 404, (value or "").encode())


@dataclass
class FakeLambda(_Served):
    """GetFunction answers 200; Invoke answers `status`, `function_error` and `body`."""

    status: int = 200
    function_error: str = ""
    body: bytes = b""
    invocations: list[bytes] = field(default_factory=list)

    def get(self, h: _Handler) -> None:
        name = h.path.split("?")[0].rsplit("/", 1)[-1]
        h._answer(200, json.dumps({"Configuration": {"FunctionName": name}}).encode(),
                  {"Content-Type": "application/json"})

    def post(self, h: _Handler) -> None:
        self.invocations.append(h._body())
        headers = {"Content-Type": "application/json"}
        if self.function_error:
            headers["X-Amz-Function-Error"] = self.function_error
        h._answer(self.status, self.body, headers)


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    fake = FakeImds()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_lambda() -> Iterator[FakeLambda]:
    fake = FakeLambda()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
