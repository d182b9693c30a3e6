"""Fixtures for the Kubernetes actionner tests.

- `kube_api` / `kube_config`: the fake API server (tests/fakes/kube_api.py) and a kubeconfig.
- `act(rules_yaml, event, **engine_kw)`: run the real engine in-process with the real
  catalog and a real Kubernetes client pointed at the fake; returns `Acted` with the
  (rule, action, status) list and the notifications sent.
- helpers shared by the test modules: `pod()`, `event()`, `no_pod_event()`,
  `assert_failed()` (action `A` of rule `R` failed), `writes()` (the mutating requests the
  fake received) and `wait_for()`.
- `start` (tests/support.py): the real server as a subprocess, for end-to-end tests; pass
  `f"kubeconfig: {kube_config}"` in its config.

Every `act()` call checks least privilege as it goes: each request the fake API server
received during the call must be granted by the declared `permissions` of the plug-ins
the rules use (actionners and contexts), so a plug-in cannot start calling the API without
declaring it.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from talon import catalog, config, models, rules
from talon.clients import Clients
from talon.engine import Engine
from talon.metrics import Metrics
from talon.models import Notification
from talon.registry import Registry
from talon.reloader import RuleStore
from talon.rules.model import RuleSet
from tests.fakes import kube_rbac
from tests.fakes.kube_api import FakeKubeAPI, RecordedRequest, kube_api, kube_config
from tests.support import start

__all__ = ["kube_api", "kube_config", "start"]

WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class Acted:
    """What one `act()` call did."""

    done: list[tuple[str, str, str]]
    notes: list[Notification] = field(default_factory=list)
    metrics: Metrics | None = None

    def note(self, action: str, message: str = "action") -> Notification:
        found = [n for n in self.notes if n.action == action and n.message == message]
        assert found, f"no {message} notification for {action}: {self.notes}"
        return found[-1]


def pod(name: str = "web-1", namespace: str = "shop", *, node: str = "node-1",
        owner: tuple[str, str] | None = ("ReplicaSet", "web-5d9c"),
        labels: dict[str, str] | None = None,
        containers: tuple[str, ...] = ("app",)) -> dict[str, Any]:
    """A Pod manifest for `kube_api.add()`."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace,
                            "labels": labels if labels is not None else {"app": "web"}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0],
                                    "name": owner[1], "uid": "u-" + owner[1],
                                    "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node,
                     "containers": [{"name": c, "image": "nginx"} for c in containers]},
            "status": {"phase": "Running"}}


def event(pod_name: str = "web-1", namespace: str = "shop", rule: str = "F",
          **fields: Any) -> models.Event:
    return models.from_mapping({
        "rule": rule, "priority": "Warning", "output": f"event for {pod_name}",
        "output_fields": {"k8s.pod.name": pod_name, "k8s.ns.name": namespace, **fields}})


def no_pod_event() -> models.Event:
    """An event without k8s.pod.name."""
    return models.from_mapping({"rule": "F", "output": "x",
                                "output_fields": {"k8s.ns.name": "shop"}})


def assert_failed(acted: Acted, error_part: str) -> Notification:
    """Action `A` of rule `R` failed, with `error_part` in its notified error."""
    note = acted.note("A")
    assert acted.done == [("R", "A", "failure")]
    assert note.status == "failure"
    assert error_part in note.error, note.error
    return note


def writes(kube_api: FakeKubeAPI) -> list[RecordedRequest]:
    """The mutating requests the fake API server received."""
    return [r for r in kube_api.requests if r.method in WRITES]


def wait_for(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _declared(registry: Registry, ruleset: RuleSet) -> tuple[set[str], set[kube_rbac.Need]]:
    """The actionners the rules use, and what they and their contexts declare."""
    names: set[str] = set()
    perms: set[kube_rbac.Need] = set()
    for action in (a for rule in ruleset.rules for a in rule.actions):
        names.add(action.actionner)
        perms |= kube_rbac.granted(registry.get("actionner", action.actionner).info.permissions)
        for ctx in action.additional_contexts:
            perms |= kube_rbac.granted(registry.get("context", ctx).info.permissions)
    return names, perms


def check_least_privilege(registry: Registry, ruleset: RuleSet,
                          received: list[RecordedRequest]) -> None:
    """Every request received is granted by what the rules' plug-ins declare."""
    names, declared = _declared(registry, ruleset)
    needed = kube_rbac.needed(received)
    assert needed <= declared, (f"{sorted(names)} made requests their permissions do not "
                                f"grant: {sorted(needed - declared)}")


@pytest.fixture
def act(kube_api: FakeKubeAPI, kube_config: Path, tmp_path: Path) -> Callable[..., Acted]:
    registry = catalog.registry()
    settings = config.load(None, env={}, overrides={"kubeconfig": str(kube_config)})
    clients = Clients(settings, timeout=5)

    def run(rules_yaml: str, ev: models.Event, **kw: Any) -> Acted:
        path = tmp_path / "rules.yaml"
        path.write_text(textwrap.dedent(rules_yaml))
        ruleset = rules.load([str(path)], registry)
        notes: list[Notification] = []
        metrics = Metrics()
        engine = Engine(registry=registry, rules=RuleStore(ruleset), metrics=metrics,
                        notify=lambda _names, n: notes.append(n),
                        default_notifiers=("webhook",), clients=clients, **kw)
        before = len(kube_api.requests)
        acted = Acted(engine.handle(ev), notes, metrics)
        check_least_privilege(registry, ruleset, kube_api.requests[before:])
        return acted

    return run
