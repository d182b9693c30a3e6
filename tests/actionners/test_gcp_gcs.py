"""gcp:gcs against gcp-storage-emulator on 127.0.0.1 (the client honours STORAGE_EMULATOR_HOST).

Behaviours covered:
- the object name: `<prefix>/<UTC time>_<namespace>_<pod>_<artifact name>`, the prefix
  trimmed of `/` at both ends and no `/` at all when it is empty, `/` in the artifact name
  turned into `_`; the object holds exactly the artifact's bytes (read back), its content
  type is the artifact's; the output text and objects carry the key and `gs://` location;
- a large artifact (resumable upload) arrives intact;
- anonymous access to the emulator without a credentials file; with one, the token
  endpoint in the credentials is used;
- a missing bucket and an unreachable endpoint (retried for the client's timeout only) are
  failures naming the bucket and the key; the next event is stored normally.
"""

from __future__ import annotations

import os
import socket
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from talon import catalog, config, rules
from talon.clients import Clients
from talon.engine import Engine
from talon.metrics import Metrics
from talon.models import Notification
from talon.outputs import gcp as gcs_output
from talon.plugin import Artifact, Result, actionner
from talon.registry import REGISTRY, Registry
from talon.reloader import RuleStore
from tests.actionners.conftest import event
from tests.fakes.gcp_api import EMAIL, FakeGcp, gcp_api
from tests.notifiers.sinks import free_port

__all__ = ["gcp_api"]

FIXED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TS = "2026-01-02T03-04-05Z"
BUCKET = "falco-talon"


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobParams:
    name: str = "log"
    size: int = 0


def _blob(ctx: Any) -> Result:
    p = ctx.params
    data = bytes(range(256)) * 4 if not p.size else os.urandom(p.size)
    return Result(output="made", objects={"pod": "web-1", "namespace": "shop"},
                  artifact=Artifact(name=p.name, data=data, content_type="text/plain"))


@dataclass
class Stored:
    note: Notification
    data: bytes


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """gcp-storage-emulator in this process, with the bucket `falco-talon`."""
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", 0, in_memory=True, default_bucket=BUCKET)
    server.start()
    host = f"http://127.0.0.1:{server._api._httpd.server_address[1]}"
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
    try:
        yield host
    finally:
        server.stop()


def objects_in(bucket: str = BUCKET) -> dict[str, tuple[bytes, str]]:
    """Every object of `bucket` in the emulator: name → (bytes, content type)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test", credentials=AnonymousCredentials())
    return {b.name: (b.download_as_bytes(), b.content_type)
            for b in client.list_blobs(bucket)}


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return FIXED

    monkeypatch.setattr(gcs_output, "datetime", Clock)


@pytest.fixture
def registry() -> Registry:
    catalog.load_builtins()
    fresh = Registry()
    fresh.add(REGISTRY.get("output", "gcp:gcs"))
    actionner("t", "blob", registry=fresh, params=BlobParams, require_output=True,
              description="make an artifact")(_blob)
    return fresh


@pytest.fixture
def store(registry: Registry, tmp_path: Path, frozen: None) -> Callable[..., Notification]:
    cache: dict[str, Clients] = {}

    def run(*, bucket: str = BUCKET, prefix: str | None = None, name: str = "log",
            size: int = 0, credentials: str = "", retry_for: float = 5) -> Notification:
        if credentials not in cache:
            settings = config.load(None, env={},
                                   overrides={"gcp.credentials_path": credentials})
            cache[credentials] = Clients(settings, timeout=retry_for)
        out = {"bucket": bucket} | ({} if prefix is None else {"prefix": prefix})
        path = tmp_path / "rules.yaml"
        path.write_text(textwrap.dedent(f"""
            - rule: R
              actions:
                - action: A
                  actionner: t:blob
                  parameters: {{name: "{name}", size: {size}}}
                  output: {{target: gcp:gcs, parameters: {_flow(out)}}}
            """))
        notes: list[Notification] = []
        Engine(registry=registry, rules=RuleStore(rules.load([str(path)], registry)),
               metrics=Metrics(), notify=lambda _n, note: notes.append(note),
               default_notifiers=("webhook",), clients=cache[credentials]).handle(event())
        (note,) = [n for n in notes if n.message == "output"]
        return note

    return run


def _flow(values: dict[str, str]) -> str:
    import json

    return "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in values.items()) + "}"


@pytest.mark.parametrize(("prefix", "key"), [
    (None, f"{TS}_shop_web-1_log"),
    ("", f"{TS}_shop_web-1_log"),
    ("/", f"{TS}_shop_web-1_log"),
    ("files", f"files/{TS}_shop_web-1_log"),
    ("/files/", f"files/{TS}_shop_web-1_log"),
    ("a/b/", f"a/b/{TS}_shop_web-1_log"),
])
def test_object_name_and_exact_bytes(emulator: str, store: Callable[..., Notification],
                                     prefix: str | None, key: str) -> None:
    note = store(prefix=prefix)
    assert note.status == "success", note.error
    assert objects_in() == {key: (bytes(range(256)) * 4, "text/plain")}
    assert note.result == (f"the file 'log' has been uploaded as the key '{key}' "
                           f"to the bucket '{BUCKET}' (gs://{BUCKET}/{key})")
    assert dict(note.objects) == {"file": "log", "bucket": BUCKET, "key": key,
                                  "prefix": prefix or "",
                                  "location": f"gs://{BUCKET}/{key}"}


def test_artifact_path_becomes_one_name(emulator: str,
                                        store: Callable[..., Notification]) -> None:
    note = store(prefix="dl", name="/etc/passwd")
    assert note.status == "success", note.error
    assert list(objects_in()) == [f"dl/{TS}_shop_web-1__etc_passwd"]


def test_large_artifact_arrives_intact(emulator: str,
                                       store: Callable[..., Notification]) -> None:
    note = store(size=9 * 1024 * 1024 + 7)
    assert note.status == "success", note.error
    ((key, (data, _type)),) = objects_in().items()
    assert len(data) == 9 * 1024 * 1024 + 7
    assert key == f"{TS}_shop_web-1_log"


def test_credentials_file_is_used_with_the_emulator(emulator: str, gcp_api: FakeGcp,
                                                    tmp_path: Path,
                                                    store: Callable[..., Notification]) -> None:
    creds = gcp_api.credentials_file(tmp_path / "sa.json")
    note = store(credentials=str(creds))
    assert note.status == "success", note.error
    assert list(objects_in()) == [f"{TS}_shop_web-1_log"]
    assert gcp_api.grants, "no token was asked for"
    assert {(g["iss"], g.get("scope")) for g in gcp_api.grants} == {
        (EMAIL, "https://www.googleapis.com/auth/cloud-platform")}


def test_missing_bucket_then_next_event(emulator: str,
                                        store: Callable[..., Notification]) -> None:
    note = store(bucket="no-such-bucket", prefix="x")
    key = f"x/{TS}_shop_web-1_log"
    assert note.status == "failure"
    assert note.error.startswith(
        f"the key '{key}' could not be uploaded to the bucket 'no-such-bucket': ")
    assert "404" in note.error
    assert store(prefix="x").status == "success"
    assert list(objects_in()) == [key]


def test_unreachable_endpoint(store: Callable[..., Notification],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    note = store(retry_for=1)
    assert time.monotonic() - started < 5  # retried for about the client's timeout
    assert note.status == "failure"
    assert note.error.startswith(
        f"the key '{TS}_shop_web-1_log' could not be uploaded to the bucket '{BUCKET}': ")
    assert f"port={port}" in note.error
    with socket.socket() as probe:  # nothing was listening: the failure is the connection
        assert probe.connect_ex(("127.0.0.1", port)) != 0
