"""OpenTelemetry export, against real OTLP receivers (gRPC and HTTP) on 127.0.0.1.

Covers: one trace per event, `event` → `match` → `action` → `output`, `notification` under
the action or output it reports, with Falco Talon's names and attributes (rule, action,
actionner, status, namespace, pod, error); a caller's `traceparent` is continued (trace id
and parent span id); the counters of /metrics arrive as `falcosecurity_falco_talon_*`
(gRPC and OTLP/HTTP); a dead collector leaves actions and notifications running and
counts the spans it drops instead of holding them; the SDK is optional (talon and
`rules check` run without it, enabling it without the SDK is a start-up error naming the
install command); the settings (`otel.protocol`, the OTLP/HTTP port).
The end-to-end run through the real server is in test_otel_e2e.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs requirements-otel.txt")
pytest.importorskip("grpc", reason="needs grpcio (tests/requirements.txt)")

from talon import config, models, notify, otel, report, rules
from talon.engine import Engine
from talon.errors import ActionError, ConfigError
from talon.metrics import Metrics
from talon.models import Artifact, Notification, Result
from talon.registry import Registry, actionner, output
from talon.reloader import RuleStore
from tests.fakes.otlp import Collected, GrpcReceiver, HttpReceiver
from tests.notifiers.sinks import free_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
RULES = """
- rule: Contain
  description: contain the pod
  match: {rules: [Terminal shell in container]}
  actions:
    - {action: Label the pod, actionner: t:step, parameters: {name: a}}
    - {action: Capture, actionner: t:capture, parameters: {name: b},
       output: {target: "t:sink", parameters: {folder: /cases}}}
    - {action: Broken, actionner: t:step, parameters: {name: c, fail: true}}
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepParams:
    name: str
    fail: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkParams:
    folder: str


class Hook:
    """A notifier that keeps what it is sent."""

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def send(self, n: Notification) -> None:
        self.sent.append(n)


def _registry() -> Registry:
    reg = Registry()

    def step(ctx: Any) -> Result:
        if ctx.params.fail:
            raise ActionError("the API said no")
        return Result(output=f"{ctx.params.name} done",
                      objects={"pod": ctx.event.pod_name(), "namespace": ctx.event.namespace()})

    def capture(ctx: Any) -> Result:
        return Result(output="captured", objects={"pod": ctx.event.pod_name()},
                      artifact=Artifact(name="cap.txt", data=b"bytes"))

    def store(ctx: Any, artifact: Artifact) -> Result:
        return Result(output=f"stored {artifact.name}", objects={"file": artifact.name})

    actionner("t", "step", registry=reg, params=StepParams, description="step")(step)
    actionner("t", "capture", registry=reg, params=StepParams, description="capture",
              require_output=True)(capture)
    output("t", "sink", registry=reg, params=SinkParams, description="sink")(store)
    return reg


@dataclass
class Pipeline:
    engine: Engine
    dispatcher: notify.Dispatcher
    telemetry: otel.Telemetry
    metrics: Metrics
    hook: Hook

    def stop(self) -> None:
        self.dispatcher.drain(5)
        self.telemetry.shutdown()


def pipeline(tmp_path: Any, settings: config.OtelSettings, **kw: Any) -> Pipeline:
    """Engine, notification dispatcher and OTel export wired as talon.app wires them."""
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    registry, metrics, hook = _registry(), Metrics(), Hook()
    reporter = report.Reporter.standard(metrics)
    dispatcher = notify.Dispatcher({"webhook": hook}, metrics=metrics, workers=1,
                                   reporter=reporter)
    reporter.add(report.NotifySink(dispatcher.submit, ("webhook",)))
    telemetry = otel.Telemetry(settings, metrics, **kw)
    if telemetry.spans is not None:
        reporter.add(telemetry.spans, tracing=True)
    engine = Engine(registry=registry, rules=RuleStore(rules.load([str(path)], registry)),
                    metrics=metrics, notify=dispatcher.submit, reporter=reporter)
    dispatcher.start()
    return Pipeline(engine, dispatcher, telemetry, metrics, hook)


def falco_event(trace_id: str = TRACE_ID, parent: str = CALLER_SPAN) -> models.Event:
    return models.from_mapping(
        {"rule": "Terminal shell in container", "priority": "Warning", "source": "syscalls",
         "output": "A shell was spawned", "tags": ["container", "shell"],
         "output_fields": {"k8s.pod.name": "web-1", "k8s.ns.name": "shop", "proc.pid": 42}},
        trace_id=trace_id, parent_span_id=parent)


def settings(port: int, **kw: Any) -> config.OtelSettings:
    values: dict[str, Any] = {"traces_enabled": True, "metrics_enabled": True,
                              "collector_endpoint": "127.0.0.1", "collector_port": port,
                              "collector_use_insecure_grpc": True, "timeout": 2}
    return config.OtelSettings(**(values | kw))


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcReceiver]:
    with GrpcReceiver() as receiver:
        yield receiver


def _one(got: Collected, name: str) -> dict[str, Any]:
    (span,) = got.named(name)
    return span


def test_spans_follow_the_stages_with_falco_talons_names(tmp_path: Any,
                                                         grpc_receiver: GrpcReceiver) -> None:
    p = pipeline(tmp_path, settings(grpc_receiver.port))
    done = p.engine.handle(falco_event())
    p.stop()  # flushes the batch (5 s schedule) now
    assert [d[2] for d in done] == ["success", "success", "failure"]
    got = grpc_receiver
    got.wait(lambda g: len(g.named("notification")) == 4)
    assert {s["trace_id"] for s in got.spans} == {TRACE_ID}
    root = _one(got, "event")
    assert root["parent"] == CALLER_SPAN  # the caller's span, from its traceparent
    assert root["resource"]["service.name"] == "falco-talon"
    assert root["scope"] == "falco-talon"
    assert root["attributes"] | {"event.tags": None} == {
        "event.rule": "Terminal shell in container", "event.source": "syscalls",
        "event.priority": "Warning", "event.output": "A shell was spawned",
        "event.traceid": TRACE_ID, "event.tags": None,
        'event.output_fields["k8s.pod.name"]': "web-1",
        'event.output_fields["k8s.ns.name"]': "shop", 'event.output_fields["proc.pid"]': "42"}
    assert root["attributes"]["event.tags"] == ["container", "shell"]
    assert root["events"] == ["event"]
    match = _one(got, "match")
    assert match["parent"] == root["span_id"]
    assert match["attributes"]["rule.name"] == "Contain"
    assert match["attributes"]["rule.description"] == "contain the pod"
    actions = {s["attributes"]["action.name"]: s for s in got.named("action")}
    assert set(actions) == {"Label the pod", "Capture", "Broken"}
    assert {s["parent"] for s in actions.values()} == {match["span_id"]}
    label = actions["Label the pod"]["attributes"]
    assert {k: label[k] for k in ("rule.name", "action.actionner", "action.status",
                                  "object.namespace", "object.pod", "action.output")} == {
        "rule.name": "Contain", "action.actionner": "t:step", "action.status": "success",
        "object.namespace": "shop", "object.pod": "web-1", "action.output": "a done"}
    assert actions["Label the pod"]["status"] == 1  # STATUS_CODE_OK
    broken = actions["Broken"]
    assert broken["status"] == 2 and broken["message"] == "the API said no"  # ERROR
    assert broken["attributes"]["action.error"] == "the API said no"
    stored = _one(got, "output")
    assert stored["parent"] == actions["Capture"]["span_id"]
    assert {k: stored["attributes"][k] for k in ("output.target", "output.category",
                                                 "output.status", "output.message")} == {
        "output.target": "t:sink", "output.category": "t", "output.status": "success",
        "output.message": "stored cap.txt"}
    notes = got.named("notification")
    parents = {s["parent"] for s in notes}
    assert parents == {actions["Label the pod"]["span_id"], actions["Capture"]["span_id"],
                       actions["Broken"]["span_id"], stored["span_id"]}
    assert {s["attributes"]["notifier.name"] for s in notes} == {"webhook"}
    assert len(p.hook.sent) == 4
    spans = [root, match, *actions.values(), stored]
    assert all(root["start"] <= s["start"] <= s["end"] <= root["end"] for s in spans)


def test_metrics_arrive_under_falco_talons_names(tmp_path: Any,
                                                 grpc_receiver: GrpcReceiver) -> None:
    p = pipeline(tmp_path, settings(grpc_receiver.port, traces_enabled=False),
                 metrics_interval=0.1)
    p.metrics.event("Terminal shell in container", "Warning", "syscalls")  # as the server
    p.engine.handle(falco_event())
    p.dispatcher.drain(5)
    prefix = "falcosecurity_falco_talon_"
    grpc_receiver.wait(lambda g: sum(
        pt["value"] for pt in g.metric(prefix + "notifications")) == 4)
    (events,) = grpc_receiver.metric(prefix + "events")
    assert events["attributes"] == {"event": "Terminal shell in container",
                                    "priority": "Warning", "source": "syscalls"}
    assert events["value"] == 1 and events["monotonic"]
    assert events["scope"] == "github.com/falcosecurity/falco-talon"
    (matches,) = grpc_receiver.metric(prefix + "matches")
    assert matches["attributes"]["rule"] == "Contain"
    actions = {pt["attributes"]["action"]: pt for pt in grpc_receiver.metric(prefix + "actions")}
    assert actions["Broken"]["attributes"] == {  # no objects: empty labels left out
        "rule": "Contain", "event": "Terminal shell in container", "action": "Broken",
        "actionner": "t:step", "status": "failure"}
    assert actions["Label the pod"]["attributes"]["pod"] == "web-1"
    (outputs,) = grpc_receiver.metric(prefix + "outputs")
    assert outputs["attributes"] == {"rule": "Contain", "action": "Capture", "target": "t:sink",
                                     "status": "success"}
    assert grpc_receiver.named("event") == []  # traces off: no span sent
    p.telemetry.shutdown()


def test_otlp_over_http(tmp_path: Any) -> None:
    with HttpReceiver() as receiver:
        p = pipeline(tmp_path, settings(receiver.port, protocol="http/protobuf"),
                     metrics_interval=0.1)
        p.engine.handle(falco_event())
        p.stop()
        receiver.wait(lambda g: len(g.named("notification")) == 4
                      and bool(g.metric("falcosecurity_falco_talon_actions")))
    assert {s["trace_id"] for s in receiver.spans} == {TRACE_ID}
    assert _one(receiver, "event")["parent"] == CALLER_SPAN
    assert len(receiver.named("action")) == 3
    assert sum(pt["value"] for pt in receiver.metric("falcosecurity_falco_talon_actions")) == 3


def test_a_dead_collector_fails_no_action_and_drops_spans_it_cannot_hold(
        tmp_path: Any) -> None:
    dead = settings(free_port(), timeout=1)
    p = pipeline(tmp_path, dead, max_queue_size=16, metrics_interval=0.1)
    for i in range(40):
        done = p.engine.handle(falco_event(trace_id=f"{i + 1:032x}"))
        assert [d[2] for d in done] == ["success", "success", "failure"]
    p.dispatcher.drain(5)
    assert len(p.hook.sent) == 160  # every notification went out
    dropped = p.metrics.registry.get_sample_value("talon_otel_spans_dropped_total")
    # 10 spans an event (event, match, 3 actions, output, 4 notifications): 400 for a
    # queue of 16 that only empties by batches of 16 into failing exports
    assert dropped is not None and 200 <= dropped <= 400 - 16
    began = time.monotonic()
    p.telemetry.shutdown()  # gives up within the export timeouts
    assert time.monotonic() - began < 15


def test_tracing_off_adds_no_span_ids(tmp_path: Any) -> None:
    seen: list[Any] = []
    reporter = report.Reporter.standard(Metrics())
    reporter.add(seen.append)
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    registry = _registry()
    engine = Engine(registry=registry, rules=RuleStore(rules.load([str(path)], registry)),
                    metrics=Metrics(), notify=lambda names, n: None, reporter=reporter)
    engine.handle(falco_event())
    stages = [(type(o).__name__, getattr(o, "status", "")) for o in seen]
    assert stages == [("EventOutcome", "received"), ("MatchOutcome", ""),
                      ("ActionStarted", ""), ("ActionOutcome", "success"),
                      ("ActionStarted", ""), ("ActionOutcome", "success"),
                      ("OutputOutcome", "success"), ("ActionStarted", ""),
                      ("ActionOutcome", "failure"), ("EventOutcome", "done")]
    assert {getattr(o, "span_id", "") for o in seen} == {""}


def test_talon_and_rules_check_run_without_the_sdk(tmp_path: Any) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("- rule: R\n  actions: [{action: a, actionner: kubernetes:terminate}]\n")
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # any import of it now fails\n"
        "import talon.app, talon.otel, talon.report\n"
        "from talon import cli\n"
        f"sys.exit(cli.main(['rules', 'check', '-r', {str(rules_file)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_enabling_without_the_sdk_names_the_install_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("opentelemetry", "opentelemetry.sdk"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError) as info:
        otel.Telemetry(settings(4317), Metrics())
    (problem,) = info.value.problems
    assert "pip install -r requirements-otel.txt" in problem
    assert "pip install '.[otel]'" in problem


@pytest.mark.parametrize(("values", "port"), [
    ({}, 4317), ({"collector_port": 9000}, 9000),
    ({"protocol": "http/protobuf"}, 4318),
    ({"protocol": "HTTP/protobuf", "collector_port": 9000}, 9000),
])
def test_protocol_and_port_settings(values: dict[str, Any], port: int) -> None:
    loaded = config.load(None, env={}, overrides={f"otel.{k}": v for k, v in values.items()})
    assert loaded.otel.port == port
    assert loaded.otel.protocol in ("grpc", "http/protobuf")


def test_an_unknown_protocol_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OTEL_PROTOCOL=http/json: expected one of grpc"):
        config.load(None, env={"OTEL_PROTOCOL": "http/json"})
