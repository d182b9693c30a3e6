"""Least privilege: each Kubernetes plug-in declares exactly the API verbs it calls.

Every plug-in that declares Kubernetes permissions has scenarios here, run against the
fake API server through the real engine and client, that together take each of its code
paths (success paths, owner kinds, create and update, node level). What the requests
needed (tests/fakes/kube_rbac.py maps a request to group, resource and verb as the API
server authorizes it) must equal what the plug-in declares: nothing missing (the `act`
fixture also checks that for every actionner test) and nothing unused. The ClusterRole of
`talon rbac` is built from these declarations, so it grants what the rules use and no more.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from talon import catalog, notify
from talon.clients import Clients
from talon.config import load as load_settings
from talon.models import Delivery, Notification
from talon.registry import REGISTRY, Plugin
from tests.actionners import test_capture, test_pods
from tests.actionners.conftest import Acted, event, pod
from tests.actionners.test_execs import answer, rules
from tests.actionners.test_networkpolicy import workload
from tests.actionners.test_nodes import node
from tests.fakes import kube_rbac
from tests.fakes.kube_api import FakeKubeAPI

Act = Callable[..., Acted]
Scenario = Callable[[Act, FakeKubeAPI, Path], None]


def ok(acted: Acted) -> None:
    assert [status for _rule, _action, status in acted.done] == ["success"], acted.notes


def terminate(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
    kube_api.add(pod())
    kube_api.add(test_pods.replicaset(3))
    ok(act(rules("kubernetes:terminate", {"min_healthy_replicas": "1"}), event()))


def _metadata(actionner: str, key: str) -> Scenario:
    def run(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
        kube_api.add(pod())
        kube_api.add(node())
        ok(act(rules(actionner, {key: {"a": "1"}}), event()))
        ok(act(rules(actionner, {key: {"b": "2"}, "level": "node", "ttl": "1m"}), event()))
    return run


def _policy(actionner: str) -> Scenario:
    def run(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
        owners = {"web-1": ("ReplicaSet", "web-5d9c"), "agent-1": ("DaemonSet", "agent"),
                  "db-0": ("StatefulSet", "db")}
        for name, owner in owners.items():
            kube_api.add(pod(name, owner=owner))
        kube_api.add(workload("ReplicaSet", "web-5d9c", {"app": "web"},
                              owner=("Deployment", "web")))
        kube_api.add(workload("DaemonSet", "agent", {"app": "agent"}))
        kube_api.add(workload("StatefulSet", "db", {"app": "db"}))
        for name in owners:
            ok(act(rules(actionner), event(name, **{"fd.rip": "203.0.113.9"})))
        ok(act(rules(actionner, {"allow_cidr": ["10.0.0.0/8"], "ttl": "1h"}),
               event(**{"fd.rip": "203.0.113.10"})))
    return run


def _exec_like(actionner: str, parameters: dict[str, Any]) -> Scenario:
    def run(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
        kube_api.add(pod())
        kube_api.on_exec(answer(0, "ok"))
        script = out.parent / "script.sh"
        script.write_text("id\n")
        params = {k: str(script) if v == "SCRIPT" else v for k, v in parameters.items()}
        folder = out if actionner == "kubernetes:download" else None
        ok(act(rules(actionner, params, folder=folder), event()))
    return run


def log(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
    kube_api.add(pod())
    kube_api.set_pod_logs("shop", "web-1", "app", "line\n")
    ok(act(rules("kubernetes:log"), event()))


def cordon(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
    kube_api.add(pod())
    kube_api.add(node())
    ok(act(rules("kubernetes:cordon"), event()))
    ok(act(rules("kubernetes:cordon", {"ttl": "10m"}), event()))


def drain(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
    kube_api.add(node())
    kube_api.add(pod())
    kube_api.add(pod("web-2"))
    kube_api.add(test_pods.replicaset(3))
    ok(act(rules("kubernetes:drain", {"min_healthy_replicas": "1", "max_wait_period": 1}),
           event()))


def tcpdump(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
    kube_api.add(pod())
    test_capture.tcpdump_answers(kube_api)
    ok(act(rules("kubernetes:tcpdump", {"duration": 1}, folder=out), event()))


def sysdig(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
    kube_api.add(test_capture.target_pod())
    test_capture.run_jobs(kube_api)
    test_capture.sysdig_answers(kube_api)
    ok(act(rules("kubernetes:sysdig", folder=out), event()))


def delete(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
    for resource, kind, api_version, namespaced, _noun in test_pods.TARGETS:
        name = "web-1" if kind == "Pod" else "evil"
        kube_api.add(test_pods.manifest(kind, api_version, namespaced, name))
        namespace = "shop" if namespaced else ("evil" if resource == "namespaces" else "-")
        ok(act(rules("kubernetes:delete"), test_pods.audit(resource, name, namespace)))


SCENARIOS: dict[str, Scenario] = {
    "kubernetes:terminate": terminate,
    "kubernetes:label": _metadata("kubernetes:label", "labels"),
    "kubernetes:annotation": _metadata("kubernetes:annotation", "annotations"),
    "kubernetes:networkpolicy": _policy("kubernetes:networkpolicy"),
    "calico:networkpolicy": _policy("calico:networkpolicy"),
    "cilium:networkpolicy": _policy("cilium:networkpolicy"),
    "kubernetes:exec": _exec_like("kubernetes:exec", {"command": "id"}),
    "kubernetes:script": _exec_like("kubernetes:script", {"file": "SCRIPT"}),
    "kubernetes:download": _exec_like("kubernetes:download", {"file": "/etc/passwd"}),
    "kubernetes:log": log,
    "kubernetes:cordon": cordon,
    "kubernetes:drain": drain,
    "kubernetes:tcpdump": tcpdump,
    "kubernetes:sysdig": sysdig,
    "kubernetes:delete": delete,
}


def kube_actionners() -> list[Plugin]:
    catalog.load_builtins()
    return [p for p in REGISTRY.all("actionner") if p.info.permissions]


def test_every_kubernetes_actionner_has_scenarios() -> None:
    assert {p.fullname for p in kube_actionners()} == set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_declared_permissions_are_exactly_those_used(
        name: str, act: Act, kube_api: FakeKubeAPI, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    SCENARIOS[name](act, kube_api, out)
    used = kube_rbac.needed(kube_api.requests)
    declared = kube_rbac.granted(REGISTRY.get("actionner", name).info.permissions)
    assert used == declared, (f"{name}: declared but never used {sorted(declared - used)}; "
                              f"used but not declared {sorted(used - declared)}")


def test_k8snode_context(act: Act, kube_api: FakeKubeAPI, tmp_path: Path) -> None:
    kube_api.add(pod())
    kube_api.add(node())
    kube_api.on_exec(answer(0, "ok"))
    ok(act("""
- rule: R
  match: {rules: [F]}
  actions:
    - {action: A, actionner: kubernetes:exec, parameters: {command: id},
       additional_contexts: [k8snode]}
""", event()))
    used = kube_rbac.needed(kube_api.requests)
    exec_ = kube_rbac.granted(REGISTRY.get("actionner", "kubernetes:exec").info.permissions)
    context = kube_rbac.granted(REGISTRY.get("context", "k8snode").info.permissions)
    assert used - exec_ == context - exec_
    assert context <= used


def test_k8sevents_notifier(kube_api: FakeKubeAPI, kube_config: Path) -> None:
    catalog.load_builtins()
    kube_api.add(pod())
    settings = load_settings(None, env={}, overrides={"kubeconfig": str(kube_config)})
    built = notify.build(["k8sevents"], {}, REGISTRY, Delivery(timeout=5, retries=0),
                         clients=Clients(settings, timeout=5))
    built["k8sevents"].send(Notification(
        message="action", status="success", trace_id="t", rule="R", action="A",
        actionner="kubernetes:label", objects={"pod": "web-1", "namespace": "shop"}))
    used = kube_rbac.needed(kube_api.requests)
    assert used == kube_rbac.granted(REGISTRY.get("notifier", "k8sevents").info.permissions)
