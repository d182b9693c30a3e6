"""local:file: where artifacts land, whatever the event says.

Behaviours covered:
- the file name: UTC time `YYYY-MM-DDTHH-MM-SSZ`, then namespace and pod, else hostname,
  else the other object values sorted by key (without `file`), then the artifact name, every
  `/` turned into `_`;
- through the engine's output stage: content, mode 0600, no temporary file left, the output
  text and the objects (file, destination);
- hostile artifact names (`../../etc/passwd`, absolute paths, `..`, control characters, very
  long names) and hostile pod/namespace values all give one file directly inside the folder;
  a NUL is refused; a symlink planted under the file's name is replaced, never followed;
- the folder must exist and is never created (`folder '<d>' does not exist`); a relative
  destination is refused when the rules load; a failed write leaves nothing behind;
- end to end through the server with a test actionner loaded as a plug-in.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from talon import catalog, rules
from talon.engine import Engine
from talon.errors import RulesError
from talon.metrics import Metrics
from talon.models import Notification
from talon.outputs import local
from talon.plugin import Artifact, Result, actionner
from talon.registry import REGISTRY, Registry
from talon.reloader import RuleStore
from tests.actionners.conftest import event
from tests.support import ROOT, Server

FIXED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TS = "2026-01-02T03-04-05Z"


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactParams:
    name: str
    data: str = "payload"
    pod: str = ""
    namespace: str = ""


def _artifact(ctx: Any) -> Result:
    p = ctx.params
    objects = {"pod": p.pod, "namespace": p.namespace} if p.pod or p.namespace else {}
    return Result(output="made", objects=objects,
                  artifact=Artifact(name=p.name, data=p.data.encode()))


@dataclass
class Stored:
    status: str
    note: Notification
    files: list[Path]


@pytest.fixture
def registry() -> Registry:
    """A fresh registry: the real local:file output and a test actionner that needs one."""
    catalog.load_builtins()
    fresh = Registry()
    fresh.add(REGISTRY.get("output", "local:file"))
    actionner("t", "artifact", registry=fresh, params=ArtifactParams, require_output=True,
              description="make an artifact")(_artifact)
    return fresh


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return FIXED

    monkeypatch.setattr(local, "datetime", Clock)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "artifacts"
    out.mkdir()
    return out


@pytest.fixture
def store(registry: Registry, folder: Path, tmp_path: Path) -> Callable[..., Stored]:
    def run(name: str, *, pod: str = "web-1", namespace: str = "shop",
            destination: str | None = None) -> Stored:
        path = tmp_path / "rules.yaml"
        path.write_text(textwrap.dedent(f"""
            - rule: R
              actions:
                - action: A
                  actionner: t:artifact
                  parameters: {{name: {_yaml(name)}, pod: {_yaml(pod)},
                                namespace: {_yaml(namespace)}}}
                  output:
                    target: local:file
                    parameters: {{destination: {_yaml(destination or str(folder))}}}
            """))
        notes: list[Notification] = []
        engine = Engine(registry=registry, rules=RuleStore(rules.load([str(path)], registry)),
                        metrics=Metrics(), notify=lambda _n, note: notes.append(note),
                        default_notifiers=("webhook",))
        engine.handle(event())
        (note,) = [n for n in notes if n.message == "output"]
        return Stored(note.status, note, sorted(folder.iterdir()))

    return run


def _yaml(text: str) -> str:
    import json

    return json.dumps(text)  # a JSON string is a YAML flow scalar


# --- the file name ----------------------------------------------------------------------


@pytest.mark.parametrize(("objects", "expected"), [
    ({"pod": "web-1", "namespace": "shop", "file": "/x"}, f"{TS}_shop_web-1_log"),
    ({"hostname": "node-1", "pod": "web-1"}, f"{TS}_node-1_log"),
    ({"node": "n1", "bucket": "b", "file": "/x"}, f"{TS}_b_n1_log"),
    ({}, f"{TS}_log"),
])
def test_file_name_rules(objects: dict[str, str], expected: str) -> None:
    assert local.file_name("log", objects, FIXED) == expected


def test_file_name_is_in_utc_and_flattens_slashes() -> None:
    paris = FIXED.astimezone(timezone(timedelta(hours=1)))
    assert local.file_name("/etc/passwd", {"pod": "p", "namespace": "n"}, paris) == (
        f"{TS}_n_p__etc_passwd")


# --- through the engine -----------------------------------------------------------------


@pytest.mark.usefixtures("frozen")
def test_writes_the_artifact(store: Callable[..., Stored], folder: Path) -> None:
    stored = store("tcpdump.pcap")
    assert stored.status == "success"
    target = folder / f"{TS}_shop_web-1_tcpdump.pcap"
    assert stored.files == [target]
    assert target.read_bytes() == b"payload"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stored.note.result == f"the file 'tcpdump.pcap' has been copied to '{target}'"
    assert dict(stored.note.objects) == {"file": "tcpdump.pcap", "destination": str(target)}


@pytest.mark.usefixtures("frozen")
@pytest.mark.parametrize(("name", "expected"), [
    ("../../etc/passwd", f"{TS}_shop_web-1_.._.._etc_passwd"),
    ("/etc/shadow", f"{TS}_shop_web-1__etc_shadow"),
    ("..", f"{TS}_shop_web-1_.."),
    ("a\nb\rc\x1b[31m", f"{TS}_shop_web-1_a_b_c_[31m"),
])
def test_hostile_artifact_names_stay_in_the_folder(store: Callable[..., Stored], folder: Path,
                                                   name: str, expected: str) -> None:
    stored = store(name)
    assert stored.status == "success"
    assert stored.files == [folder / expected]


@pytest.mark.usefixtures("frozen")
@pytest.mark.parametrize(("pod", "namespace"), [
    ("../../..", "shop"), ("web-1", "/etc"), ("a/../../b", "../x"),
])
def test_hostile_pod_and_namespace_stay_in_the_folder(store: Callable[..., Stored],
                                                      folder: Path, pod: str,
                                                      namespace: str) -> None:
    stored = store("log", pod=pod, namespace=namespace)
    assert stored.status == "success"
    (written,) = stored.files
    assert written.parent == folder
    assert written.name == f"{TS}_{namespace}_{pod}_log".replace("/", "_")


@pytest.mark.usefixtures("frozen")
def test_very_long_names_are_shortened_with_a_hash(store: Callable[..., Stored],
                                                   folder: Path) -> None:
    first, second = store("é" * 400), store("é" * 399 + "x")
    assert first.status == second.status == "success"
    assert len(second.files) == 2
    for path in second.files:
        assert path.parent == folder
        assert len(path.name.encode()) <= 255
        assert path.name.startswith(f"{TS}_shop_web-1_éé")


@pytest.mark.parametrize(("name", "pod"), [("a\x00b", "web-1"), ("log", "we\x00b")])
def test_nul_is_refused(store: Callable[..., Stored], name: str, pod: str) -> None:
    stored = store(name, pod=pod)
    assert stored.status == "failure"
    assert stored.note.error == "the artifact name or an object value contains a NUL character"
    assert stored.files == []


@pytest.mark.usefixtures("frozen")
def test_a_planted_symlink_is_replaced_not_followed(store: Callable[..., Stored], folder: Path,
                                                   tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (folder / f"{TS}_shop_web-1_log").symlink_to(victim)
    assert store("log").status == "success"
    assert victim.read_text() == "precious"
    written = folder / f"{TS}_shop_web-1_log"
    assert not written.is_symlink() and written.read_bytes() == b"payload"


def test_missing_folder_is_not_created(store: Callable[..., Stored], tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    stored = store("log", destination=str(missing))
    assert stored.status == "failure"
    assert stored.note.error == f"folder '{missing}' does not exist"
    assert not missing.exists()


def test_a_file_is_not_a_folder(store: Callable[..., Stored], tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("")
    assert store("log", destination=str(plain)).note.error == (
        f"folder '{plain}' does not exist")


def test_relative_destination_is_refused_at_load(store: Callable[..., Stored]) -> None:
    with pytest.raises(RulesError, match="must be an absolute path, got 'out/'"):
        store("log", destination="out/")


def test_failed_write_leaves_nothing(store: Callable[..., Stored], folder: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def full(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local.os, "fsync", full)
    stored = store("log")
    assert stored.status == "failure"
    assert stored.note.error.endswith(f"could not be written to '{folder}': "
                                      f"No space left on device")
    assert stored.files == []


# --- end to end -------------------------------------------------------------------------

PLUGIN = '''
from dataclasses import dataclass
from talon.plugin import Artifact, Result, actionner

@dataclass(frozen=True, slots=True, kw_only=True)
class GrabParams:
    file: str = "${FD_NAME}"

@actionner("e2e", "grab", params=GrabParams, require_output=True, description="grab",
           required_fields=("fd.name",))
def grab(ctx):
    return Result(output="grabbed", objects={"pod": ctx.event.pod_name(),
                                             "namespace": ctx.event.namespace()},
                  artifact=Artifact(name=ctx.event.output_fields["fd.name"], data=b"secret"))
'''


@pytest.fixture
def server(tmp_path: Path, folder: Path) -> Iterator[Server]:
    plugin = tmp_path / "grab_plugin.py"
    plugin.write_text(PLUGIN)
    (tmp_path / "config.yaml").write_text(textwrap.dedent(f"""
        listen_address: 127.0.0.1
        listen_port: 0
        log_format: json
        plugins: ["{plugin}"]
        """))
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(f"""
        - rule: Grab
          actions:
            - action: Grab the file
              actionner: e2e:grab
              output: {{target: local:file, parameters: {{destination: "{folder}"}}}}
        """))
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "KUBECONFIG")}
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "talon", "server", "-c", str(tmp_path / "config.yaml"),
             "-r", str(tmp_path / "rules.yaml")],
            cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        yield Server(proc, log)
    finally:
        proc.kill()
        proc.wait(5)


def test_end_to_end_hostile_event(server: Server, folder: Path) -> None:
    assert server.post({"rule": "Any", "priority": "Warning", "output": "read",
                        "output_fields": {"k8s.pod.name": "../../pod", "k8s.ns.name": "/ns",
                                          "fd.name": "../../../etc/passwd"}}) == 200
    server.wait_log(r"has been copied to")
    (written,) = folder.iterdir()
    assert written.name.endswith("__ns_.._.._pod_.._.._.._etc_passwd")
    assert written.read_bytes() == b"secret"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
