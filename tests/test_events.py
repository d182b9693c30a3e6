"""Event decoding: Falco and Falcosidekick payloads, validation errors, derived values.

Covers: both payload shapes from fixtures, case-insensitive top-level keys (later wins),
unknown fields kept, source default, output prefix trimming (including Informational,
which upstream mangles), exact number text, getters and their fallbacks, every error
naming its field, to_json round trip.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from talon import models
from talon.errors import EventError

FIXTURES = Path(__file__).parent / "fixtures" / "events"


def test_falco_payload() -> None:
    e = models.decode((FIXTURES / "falco_shell.json").read_bytes())
    assert e.rule == "Terminal shell in container"
    assert e.priority == "Notice"
    assert e.output.startswith("A shell was spawned")
    assert e.pod_name() == "web-7d9c" and e.namespace() == "shop"
    assert e.field_text("evt.time") == "1704248022750111000"
    assert e.field_text("proc.args[0]") == "-c"
    assert e.hostname == "worker-1" and e.source == "syscall"
    assert "T1059" in e.string_tags()


def test_falcosidekick_payload_keeps_unknown_fields() -> None:
    e = models.decode((FIXTURES / "falcosidekick_outbound.json").read_bytes())
    assert e.extra["uuid"] == "0c6e2a4a-7ad1-4c3c-9b6a-9b7d3f1d2c11"
    assert e.remote_ip() == "203.0.113.7"
    assert e.remote_port() == "4444"
    assert e.remote_protocol() == "tcp"
    assert e.source == "syscalls"


def test_keys_are_case_insensitive_later_wins() -> None:
    e = models.decode(b'{"Rule": "Test Terminate", "OUTPUT": "x", "priority": "Critical"}')
    assert e.rule == "Test Terminate" and e.output == "x"
    e = models.decode(b'{"rule": "a", "Rule": "b"}')
    assert e.rule == "b"
    e = models.decode(b'{"output_fields": {"K8s.Pod.Name": "x"}}')
    assert e.pod_name() == ""  # output field names stay case-sensitive


def test_upstream_example_events_decode() -> None:
    text = (Path(__file__).parent / "fixtures" / "upstream" / "examples.txt").read_text()
    bodies = [line.split("-d'", 1)[1].rsplit("'", 1)[0] for line in text.splitlines()
              if line.startswith("curl")]
    events = [models.decode(b) for b in bodies]
    assert [e.rule for e in events][:2] == ["Test Terminate", "Test Label"]
    assert events[2].remote_port() == "8888"


@pytest.mark.parametrize(("output", "trimmed"), [
    ("14:37:27.505989596: Warning Detected ptrace", "Detected ptrace"),
    ("14:37:27.505989596: Informational hello", "hello"),
    ("14:37:27.505989596: Info hello", "hello"),
    ("14:37:27.505989596: warningX foo", "X foo"),
    ("14:37:27.50598959: Warning kept", "14:37:27.50598959: Warning kept"),
    ("no timestamp", "no timestamp"),
])
def test_output_trimming(output: str, trimmed: str) -> None:
    assert models.decode(json.dumps({"output": output})).output == trimmed


def test_defaults() -> None:
    e = models.decode(b"{}")
    assert (e.source, e.rule, e.time, e.tags) == ("syscall", "", "", ())
    assert e.to_dict()["time"] == "0001-01-01T00:00:00Z"


@pytest.mark.parametrize(("body", "field"), [
    (b'{"priority": 3}', "priority"),
    (b'{"tags": "a"}', "tags"),
    (b'{"output_fields": []}', "output_fields"),
    (b'{"time": "yesterday"}', "time"),
    (b'{"time": "2024-13-45T00:00:00Z"}', "time"),
    (b'{"rule": true}', "rule"),
    (b'{"context": "x"}', "context"),
])
def test_bad_field_is_named(body: bytes, field: str) -> None:
    with pytest.raises(EventError) as info:
        models.decode(body)
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")


@pytest.mark.parametrize("body", [b"", b"   ", b"[1]", b"{bad", b"\xff\xfe", b'"x"'])
def test_bad_body(body: bytes) -> None:
    with pytest.raises(EventError):
        models.decode(body)


def test_target_getters_refuse_non_string_values_and_never_skip_them() -> None:
    e = models.from_mapping({"output_fields": {"k8s.pod.name": {"nested": 1},
                                               "ka.target.name": "fallback",
                                               "fd.rip": None, "fd.sip": "10.0.0.1"}})
    with pytest.raises(EventError, match=r"^k8s\.pod\.name: expected a string, got an object"):
        e.pod_name()
    assert e.remote_ip() == "10.0.0.1"  # addresses are not names: null still falls back
    null = models.from_mapping({"output_fields": {"k8s.ns.name": None,
                                                  "ka.target.namespace": "kube-system"}})
    assert null.pick(*models.NAMESPACE_KEYS) == ("k8s.ns.name", "")


def test_k8saudit_target() -> None:
    e = models.from_mapping({"output_fields": {"ka.target.resource": "configmaps",
                                               "ka.target.name": "cm",
                                               "ka.target.namespace": "ns"}})
    assert (e.target_resource(), e.target_name(), e.target_namespace()) == (
        "configmaps", "cm", "ns")
    assert e.namespace() == "ns" and e.pod_name() == "cm"


def test_to_json_keeps_numbers_exact() -> None:
    e = models.decode(b'{"output_fields": {"big": 12345678901234567890, "f": 1.5}}')
    back = json.loads(e.to_json({"falco-talon.rule": "r"}))
    assert back["output_fields"] == {"big": 12345678901234567890, "f": 1.5}
    assert back["context"] == {"falco-talon.rule": "r"}


def test_event_is_immutable() -> None:
    e = models.decode(b'{"output_fields": {"a": "b"}}')
    with pytest.raises(TypeError):
        e.output_fields["a"] = "c"  # type: ignore[index]
