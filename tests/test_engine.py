"""Engine semantics, in-process, with test plug-ins that record what they were asked.

Covers: actions run in order; an action's continue (explicit or the actionner default)
ends the rule; a failure ends the rule unless ignore_errors, which never overrides a
false continue; a rule's continue: false stops later rules; rule and global dry_run call
nothing and log the final parameters; duplicates (output key and field key); missing
required fields, exceptions and timeouts are failures that are counted and notified;
`ignored` stays ignored; substitution of marked parameters only; contexts; the output
stage (artifact stored, empty artifact, output failure, ignore_errors).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from talon import log, models, rules
from talon.dedup import Deduplicator
from talon.engine import Engine
from talon.errors import ActionError, CheckFailedError
from talon.metrics import Metrics
from talon.models import Artifact, Notification, Result, Status
from talon.registry import Registry, actionner, context, output
from talon.reloader import RuleStore


@dataclass(frozen=True, slots=True, kw_only=True)
class StepParams:
    name: str = "x"
    mode: str = "ok"
    path: str = field(default="", metadata={"substitute": True})
    sleep: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkParams:
    folder: str


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("str() of this exception fails")


class NotAnException(BaseException):
    """A BaseException subclass a careless plug-in or library might raise."""


def _recurse(depth: int = 0) -> int:
    return _recurse(depth + 1) + 1


def _raise(exc: BaseException) -> Callable[[], None]:
    def go() -> None:
        raise exc
    return go


HOSTILE: dict[str, Callable[[], object]] = {
    "unprintable": _raise(Unprintable()), "base": _raise(NotAnException("odd")),
    "exit": _raise(SystemExit(3)), "recurse": _recurse, "memory": _raise(MemoryError()),
}
"""Plug-in failures that must end as an ordinary failed action, never a dead worker."""


class World:
    """A registry whose plug-ins record calls, plus the engine's sinks."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.notes: list[tuple[tuple[str, ...], Notification]] = []
        self.registry = Registry()
        self.metrics = Metrics()
        reg = self.registry

        def run(ctx: Any) -> Result:
            p = ctx.params
            self.calls.append((p.name, {"path": p.path, "context": dict(ctx.context),
                                        "env": ctx.env}))
            if p.sleep:
                time.sleep(p.sleep)
            if p.mode == "fail":
                raise ActionError(f"{p.name} failed")
            if p.mode == "gone":
                raise CheckFailedError("the pod 'web' in the namespace 'shop' doesn't exist")
            if p.mode == "crash":
                raise RuntimeError("boom")
            if p.mode in HOSTILE:
                HOSTILE[p.mode]()
            if p.mode == "ignored":
                return Result(status=Status.IGNORED, output="skipped")
            if p.mode == "artifact":
                return Result(output="made", objects={"pod": "p", "namespace": "n"},
                              artifact=Artifact(name="a.txt", data=b"bytes"))
            if p.mode == "empty":
                return Result(artifact=Artifact(name="a.txt", data=b""))
            return Result(output=f"{p.name} done", objects={"pod": ctx.event.pod_name()})

        actionner("t", "step", registry=reg, params=StepParams, description="step",
                  use_context=True)(run)
        actionner("t", "final", registry=reg, params=StepParams, description="final",
                  default_continue=False)(run)
        actionner("t", "pod", registry=reg, params=StepParams, description="needs a pod",
                  required_fields=("k8s.pod.name", "fd.rip|fd.sip"))(run)
        actionner("t", "capture", registry=reg, params=StepParams, description="capture",
                  require_output=True)(run)
        actionner("t", "patch", registry=reg, params=StepParams, description="one request",
                  checked_by_run=True)(run)

        def check(ctx: Any) -> None:
            if ctx.params.mode == "gone":
                raise CheckFailedError("the pod 'web' in the namespace 'shop' doesn't exist")

        actionner("t", "checked", registry=reg, params=StepParams, description="checked",
                  checks=(check,))(run)

        def store(ctx: Any, artifact: Artifact) -> Result:
            if ctx.params.folder == "/fail":
                raise OSError("disk full")
            self.calls.append(("store", (ctx.params.folder, artifact.name, artifact.data)))
            return Result(output="stored", objects={"file": artifact.name})

        output("t", "sink", registry=reg, params=SinkParams, description="sink")(store)

        def node(ctx: Any) -> dict[str, str]:
            if ctx.event.output == "ctx-fail":
                raise RuntimeError("node lookup failed")
            return {"node.hostname": "worker-9"}

        context("k8snode", registry=reg, description="node")(node)

    def engine(self, path: str, **kw: Any) -> Engine:
        ruleset = rules.load([path], self.registry)
        return Engine(registry=self.registry, rules=RuleStore(ruleset), metrics=self.metrics,
                      notify=lambda names, n: self.notes.append((names, n)),
                      default_notifiers=("webhook",), **kw)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def count(self, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value("action_total", labels)
        return value or 0.0


@pytest.fixture
def world() -> World:
    return World()


def event(**kw: Any) -> models.Event:
    base: dict[str, Any] = {"rule": "F", "priority": "Warning", "output": "out",
                            "output_fields": {"k8s.pod.name": "web", "k8s.ns.name": "shop",
                                              "fd.name": "/etc/shadow"}}
    base.update(kw)
    return models.from_mapping(base)


def test_actions_run_in_order_and_default_continue_stops(world: World,
                                                         write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R
          match: {rules: [F]}
          actions:
            - {action: a, actionner: t:step, parameters: {name: a}}
            - {action: b, actionner: t:final, parameters: {name: b}}
            - {action: c, actionner: t:step, parameters: {name: c}}
        """)
    done = world.engine(path).handle(event())
    assert world.names() == ["a", "b"]
    assert done == [("R", "a", "success"), ("R", "b", "success")]
    assert world.count(rule="R", action="a", actionner="t:step", status="success",
                       event="F", namespace="", pod="web") == 1


@pytest.mark.parametrize(("flags", "expected"), [
    ("", ["a"]),                                   # failure stops the rule
    ("ignore_errors: true", ["a", "b"]),           # unless ignore_errors
    ("ignore_errors: true, continue: false", ["a"]),  # which never overrides continue false
    ("continue: false", ["a"]),
])
def test_failure_and_ignore_errors(world: World, write_rules: Callable[..., str], flags: str,
                                   expected: list[str]) -> None:
    extra = f", {flags}" if flags else ""
    path = write_rules(f"""
        - rule: R
          actions:
            - {{action: a, actionner: t:step, parameters: {{name: a, mode: fail}}{extra}}}
            - {{action: b, actionner: t:step, parameters: {{name: b}}}}
        """)
    world.engine(path).handle(event())
    assert world.names() == expected


def test_explicit_continue_true_overrides_default(world: World,
                                                  write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R
          actions:
            - {action: a, actionner: t:final, continue: true, parameters: {name: a}}
            - {action: b, actionner: t:step, parameters: {name: b}}
        """)
    world.engine(path).handle(event())
    assert world.names() == ["a", "b"]


def test_rule_continue_false_stops_later_rules(world: World,
                                               write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R1
          actions: [{action: a, actionner: t:step, parameters: {name: a}}]
        - rule: R2
          continue: false
          actions: [{action: b, actionner: t:step, parameters: {name: b}}]
        - rule: R3
          actions: [{action: c, actionner: t:step, parameters: {name: c}}]
        """)
    world.engine(path).handle(event())
    assert world.names() == ["a", "b"]


def test_a_failed_rule_does_not_stop_the_next_rule(world: World,
                                                   write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R1
          actions: [{action: a, actionner: t:step, parameters: {name: a, mode: fail}}]
        - rule: R2
          actions: [{action: b, actionner: t:step, parameters: {name: b}}]
        """)
    world.engine(path).handle(event())
    assert world.names() == ["a", "b"]


@pytest.mark.parametrize("where", ["rule", "global"])
def test_dry_run_calls_nothing_and_logs_final_parameters(
        world: World, write_rules: Callable[..., str], caplog: pytest.LogCaptureFixture,
        where: str) -> None:
    flag = "dry_run: true" if where == "rule" else ""
    path = write_rules(f"""
        - rule: R
          {flag}
          actions:
            - {{action: a, actionner: t:final, parameters: {{name: a, path: "${{FD_NAME}}"}}}}
            - {{action: b, actionner: t:step, parameters: {{name: b}}}}
        """)
    caplog.set_level(logging.INFO, "talon")
    done = world.engine(path, dry_run=where == "global").handle(event())
    assert world.calls == []
    assert world.notes == []
    assert done == [("R", "a", "dry_run")]  # a dry-run terminate still ends the rule
    lines = [r for r in caplog.records if r.getMessage() == "action"]
    assert lines[0].fields["parameters"]["path"] == "/etc/shadow"  # type: ignore[attr-defined]
    assert lines[0].fields["dry_run"] is True  # type: ignore[attr-defined]


def test_dry_run_logs_unmarked_parameters_as_written(
        world: World, write_rules: Callable[..., str], caplog: pytest.LogCaptureFixture) -> None:
    path = write_rules("""
        - rule: R
          dry_run: true
          actions:
            - {action: a, actionner: t:step, parameters: {name: "${FD_NAME}", path: /x}}
        """)
    caplog.set_level(logging.INFO, "talon")
    assert world.engine(path).handle(event()) == [("R", "a", "dry_run")]
    [line] = [r for r in caplog.records if r.getMessage() == "action"]
    assert line.fields["parameters"] == {"name": "${FD_NAME}", "path": "/x"}  # type: ignore[attr-defined]


def test_duplicates_run_once(world: World, write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R
          actions: [{action: a, actionner: t:step, parameters: {name: a}}]
        """)
    engine = world.engine(path, dedup=Deduplicator(5))
    engine.handle(event())
    engine.handle(event())
    engine.handle(event(output="different"))
    assert world.names() == ["a", "a"]
    assert world.metrics.registry.get_sample_value("talon_events_duplicate_total") == 1


def test_dedup_by_pod_fields(world: World, write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R
          actions: [{action: a, actionner: t:step, parameters: {name: a}}]
        """)
    engine = world.engine(path, dedup=Deduplicator(
        5, ("rule", "output_fields.k8s.ns.name", "output_fields.k8s.pod.name")))
    engine.handle(event(output="one"))
    engine.handle(event(output="two"))  # same pod, other text: still a duplicate
    engine.handle(event(output_fields={"k8s.pod.name": "other", "k8s.ns.name": "shop"}))
    assert world.names() == ["a", "a"]


def test_unmatched_events_are_not_deduplicated_or_acted_on(
        world: World, write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R
          match: {rules: [Other]}
          actions: [{action: a, actionner: t:step, parameters: {name: a}}]
        """)
    assert world.engine(path, dedup=Deduplicator(5)).handle(event()) == []
    assert world.calls == []


@pytest.mark.parametrize(("mode", "error"), [
    ("fail", "a failed"), ("crash", "RuntimeError: boom")])
def test_failures_are_counted_and_notified(world: World, write_rules: Callable[..., str],
                                           mode: str, error: str) -> None:
    path = write_rules(f"""
        - rule: R
          notifiers: [slack]
          actions: [{{action: a, actionner: t:step, parameters: {{name: a, mode: {mode}}}}}]
        """.replace("notifiers: [slack]", ""))
    world.engine(path).handle(event())
    ((names, note),) = world.notes
    assert names == ("webhook",)
    assert note.status == "failure" and note.error == error and note.message == "action"
    assert note.rule == "R" and note.action == "a" and note.trace_id == ""
    assert world.count(rule="R", action="a", actionner="t:step", status="failure",
                       event="F", namespace="", pod="") == 1


@pytest.mark.parametrize(("mode", "statuses"), [
    ("ok", ["in_progress", "success"]),
    ("gone", ["failure"]),  # as when a check fails before the run: no in_progress line
    ("fail", ["in_progress", "failure"]),
])
@pytest.mark.parametrize("plugin", ["t:patch", "t:checked"])
def test_a_run_that_makes_its_own_check_logs_as_a_check_before_it(
        world: World, write_rules: Callable[..., str], caplog: pytest.LogCaptureFixture,
        plugin: str, mode: str, statuses: list[str]) -> None:
    path = write_rules(f"""
        - rule: R
          actions: [{{action: a, actionner: {plugin}, parameters: {{name: a, mode: {mode}}}}}]
        """)
    caplog.set_level(logging.INFO, "talon")
    world.engine(path).handle(event())
    lines = [r.fields for r in caplog.records if r.getMessage() == "action"]
    assert [line["status"] for line in lines] == statuses
    ((_, note),) = world.notes
    assert note.status == statuses[-1]
    if mode == "gone":
        assert note.error == "the pod 'web' in the namespace 'shop' doesn't exist"


def test_missing_required_field_fails_before_running(world: World,
                                                     write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R
          actions: [{action: a, actionner: t:pod, parameters: {name: a}}]
        """)
    world.engine(path).handle(event())
    assert world.calls == []
    ((_, note),) = world.notes
    assert "missing required field(s) in the event: fd.rip or fd.sip" in note.error


def test_timeout_is_a_failure(world: World, write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R
          actions:
            - {action: a, actionner: t:step, parameters: {name: a, sleep: 0.5}}
            - {action: b, actionner: t:step, parameters: {name: b}}
        """)
    engine = world.engine(path, action_timeout=0.2)
    seen: list[list[int]] = []
    watcher = threading.Thread(target=lambda: (time.sleep(0.35), seen.append(engine.overdue())))
    watcher.start()
    done = engine.handle(event())
    watcher.join()
    assert done == [("R", "a", "failure")]
    assert "did not finish within 0.2s" in world.notes[0][1].error
    assert len(seen[0]) == 1  # reported while stuck, so the pool could replace the worker
    assert engine.retire(seen[0][0]) is True
    assert world.metrics.registry.get_sample_value("talon_actions_overdue_total") == 1


def test_a_stuck_action_does_not_stall_the_pool(world: World,
                                                write_rules: Callable[..., str]) -> None:
    from talon.pool import MemoryQueue, WorkerPool

    path = write_rules("""
        - rule: R
          match: {rules: [F]}
          actions: [{action: a, actionner: t:step, parameters: {name: a, sleep: 1.5}}]
        - rule: Fast
          match: {rules: [G]}
          actions: [{action: f, actionner: t:step, parameters: {name: f}}]
        """)
    engine = world.engine(path, action_timeout=0.3)
    q = MemoryQueue(10)
    pool = WorkerPool(q, lambda item: engine.handle(item.event), workers=1,
                      overdue=engine.overdue, retire=engine.retire)
    pool.start()
    q.put(event())  # stuck for 1.5 s on the only worker
    time.sleep(0.1)
    started = time.monotonic()
    q.put(event(rule="G", output_fields={"k8s.pod.name": "other", "k8s.ns.name": "shop"}))
    while "f" not in world.names() and time.monotonic() - started < 3:
        time.sleep(0.02)
    assert "f" in world.names()
    assert time.monotonic() - started < 1.2  # a replacement worker took it
    assert pool.drain(5)


@pytest.mark.parametrize(("mode", "error"), [
    ("unprintable", "Unprintable"), ("base", "NotAnException: odd"), ("exit", "SystemExit: 3"),
    ("recurse", "RecursionError: maximum recursion depth exceeded"), ("memory", "MemoryError"),
])
def test_any_plugin_exception_is_a_failed_action(world: World, write_rules: Callable[..., str],
                                                 mode: str, error: str) -> None:
    path = write_rules(f"""
        - rule: R
          actions:
            - {{action: a, actionner: t:step, ignore_errors: true,
                parameters: {{name: a, mode: {mode}}}}}
            - {{action: b, actionner: t:step, parameters: {{name: b}}}}
        """)
    done = world.engine(path).handle(event())
    assert done == [("R", "a", "failure"), ("R", "b", "success")]
    note = world.notes[0][1]
    assert note.status == "failure" and note.error.startswith(error), note.error


def test_ignored_stays_ignored(world: World, write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R
          actions: [{action: a, actionner: t:step, parameters: {name: a, mode: ignored}}]
        """)
    assert world.engine(path).handle(event()) == [("R", "a", "ignored")]
    assert world.notes[0][1].status == "ignored"
    assert world.notes[0][1].output == "skipped"


def test_substitution_only_for_marked_parameters(world: World,
                                                 write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R
          actions:
            - action: a
              actionner: t:step
              parameters: {name: "${FD_NAME}", path: "${FD_NAME}-${PRIORITY}-$RULE"}
        """)
    world.engine(path).handle(event())
    ((name, seen),) = world.calls
    assert name == "${FD_NAME}"
    assert seen["path"] == "/etc/shadow-Warning-F"
    assert seen["context"]["falco-talon.rule"] == "R"
    assert seen["env"]["K8S_POD_NAME"] == "web"


def test_contexts_are_fetched_and_exposed(world: World,
                                          write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R
          actions:
            - action: a
              actionner: t:step
              additional_contexts: [k8snode]
              parameters: {name: a, path: "${NODE_HOSTNAME}"}
        """)
    world.engine(path).handle(event())
    ((_, seen),) = world.calls
    assert seen["path"] == "worker-9"
    assert seen["context"]["node.hostname"] == "worker-9"


def test_context_failure_fails_the_action_unless_ignored(
        world: World, write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R
          actions:
            - {action: a, actionner: t:step, additional_contexts: [k8snode],
               parameters: {name: a}}
            - {action: b, actionner: t:step, additional_contexts: [k8snode],
               ignore_errors: true, parameters: {name: b}}
        """)
    engine = world.engine(path)
    assert engine.handle(event(output="ctx-fail")) == [("R", "a", "failure")]
    assert "node lookup failed" in world.notes[0][1].error


def test_output_stage_stores_the_artifact(world: World,
                                          write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R
          actions:
            - action: a
              actionner: t:capture
              parameters: {name: a, mode: artifact}
              output: {target: t:sink, parameters: {folder: /evidence}}
        """)
    world.engine(path).handle(event())
    assert world.calls[1] == ("store", ("/evidence", "a.txt", b"bytes"))
    stages = [(n.message, n.status) for _, n in world.notes]
    assert stages == [("action", "success"), ("output", "success")]
    assert world.notes[1][1].output_target == "t:sink"


@pytest.mark.parametrize(("mode", "folder", "error"), [
    ("empty", "/evidence", "empty output"), ("artifact", "/fail", "disk full")])
def test_output_failures(world: World, write_rules: Callable[..., str], mode: str,
                         folder: str, error: str) -> None:
    path = write_rules(f"""
        - rule: R
          actions:
            - action: a
              actionner: t:capture
              parameters: {{name: a, mode: {mode}}}
              output: {{target: t:sink, parameters: {{folder: {folder}}}}}
            - {{action: b, actionner: t:step, parameters: {{name: b}}}}
        """)
    world.engine(path).handle(event())
    assert "b" not in world.names()
    out = [n for _, n in world.notes if n.message == "output"]
    assert out[0].status == "failure" and error in out[0].error
    assert world.metrics.registry.get_sample_value(
        "output_total", {"rule": "R", "action": "a", "target": "t:sink",
                         "status": "failure"}) == 1


def test_engine_is_safe_from_many_threads(world: World,
                                          write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R
          actions: [{action: a, actionner: t:step, parameters: {name: a}}]
        """)
    engine = world.engine(path)
    threads = [threading.Thread(target=lambda: [engine.handle(event()) for _ in range(50)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(world.calls) == 200
    assert world.count(rule="R", action="a", actionner="t:step", status="success",
                       event="F", namespace="", pod="web") == 200


def test_dry_run_metrics_carry_the_namespace_and_pod_of_the_log_line(
        world: World, write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R
          actions: [{action: a, actionner: t:step, parameters: {name: a}}]
        """)
    world.engine(path, dry_run=True).handle(event())
    assert world.count(rule="R", action="a", actionner="t:step", status="dry_run",
                       event="F", namespace="shop", pod="web") == 1


def test_notify_dry_run_sends_a_dry_run_notification(
        world: World, write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: R
          dry_run: true
          actions: [{action: a, actionner: t:step, parameters: {name: a}}]
        """)
    world.engine(path, notify_dry_run=True).handle(event())
    assert world.calls == []
    ((names, note),) = world.notes
    assert names == ("webhook",)
    assert (note.message, note.status, note.rule, note.action) == (
        "action", "dry_run", "R", "a")
    assert note.output == "no action, dry-run is enabled"
    assert dict(note.objects) == {"namespace": "shop", "pod": "web"}


@pytest.mark.parametrize(("payload", "reason"), [
    ({}, "no_rule"),
    ({"priority": "Warning", "output": "x"}, "no_rule"),
    ({"rule": "F", "priority": "Loud\nINF forged=line"}, "unknown_priority"),
    ({"rule": "F"}, "unknown_priority"),
])
def test_unusable_events_are_counted_and_logged_once_a_minute(
        world: World, write_rules: Callable[..., str], caplog: pytest.LogCaptureFixture,
        payload: dict[str, Any], reason: str) -> None:
    path = write_rules("""
        - rule: R
          match: {rules: [F], priority: ">=Warning"}
          actions: [{action: a, actionner: t:step, parameters: {name: a}}]
        """)
    now = [1000.0]
    engine = world.engine(path, clock=lambda: now[0])
    caplog.set_level(logging.INFO, "talon")
    bad = models.from_mapping({**payload, "output_fields": {"k8s.pod.name": "a\nb=\"c\""}})
    for _ in range(3):
        assert engine.handle(bad) == []
    now[0] += 59.0
    engine.handle(bad)
    now[0] += 2.0
    engine.handle(bad)
    engine.handle(event())  # a usable event is neither counted nor logged
    value = world.metrics.registry.get_sample_value("talon_events_unusable_total",
                                                    {"reason": reason})
    assert value == 5
    lines = [r for r in caplog.records if r.getMessage() == "event"
             and r.levelno == logging.WARNING]
    assert len(lines) == 2
    fields = lines[1].fields  # type: ignore[attr-defined]
    assert fields["reason"] == reason and fields["status"] == "unusable"
    assert fields["suppressed"] == 3  # events with this reason not logged since the first
    text = log.TextFormatter().format(lines[0])
    assert "\n" not in text and f"reason={reason}" in text
    assert world.calls == [("a", world.calls[0][1])]


def test_match_labels_from_events_are_capped(world: World,
                                             write_rules: Callable[..., str]) -> None:
    path = write_rules("""
        - rule: Any
          actions:
            - {action: a, actionner: t:step, parameters: {name: a}}
        """)
    engine = world.engine(path)
    engine.handle(event(rule="R" * 5000, source="S" * 300))
    for n in range(1100):  # a client sending events with made-up rule names
        engine.handle(event(rule=f"made up {n}", source=f"src{n}"))
    text = world.metrics.exposition().decode()
    matches = [line for line in text.splitlines() if line.startswith("match_total{")]
    events = {line.split('event="')[1].split('"')[0] for line in matches}
    sources = {line.split('source="')[1].split('"')[0] for line in matches}
    assert len(events) == 1001 and "other" in events and "R" * 256 in events
    assert len(sources) == 1001 and "other" in sources and "S" * 256 in sources
    assert "R" * 257 not in text and "S" * 257 not in text
    assert sum(float(line.rsplit(" ", 1)[1]) for line in matches) == 1101
    actions = {line.split('event="')[1].split('"')[0] for line in text.splitlines()
               if line.startswith("action_total{")}
    assert actions == events  # action_total's event label maps the same way
