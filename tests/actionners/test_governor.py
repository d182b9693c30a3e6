"""The safety governor, through the real engine, client and fake API server.

Covers: with `namespace:2/600`, the third terminate in the window is `throttled`, is
counted and notified, and its pod survives, while another namespace still has budget;
an owner budget counts a Deployment's pods together (pod-template-hash naming); with
`trip_to_dry_run`, the trip is notified once to the default and the rule's notifiers, later
disruptive actions are dry-run (pods survive) and non-disruptive ones still run, until the
reset file is written; protected workloads: kube-system (and Talon's own namespace), a pod,
namespace or node labelled `talon.falco.org/protected=true` are not terminated (`protected`)
unless the rule sets `allow_protected: true`; non-disruptive actions are never held;
`rules check` warns about a rule pinned to a protected namespace; budgets in the YAML
configuration as maps or as `scope:max/per_seconds`, and a bad one is a config error.
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from talon import catalog, config, governor, rules
from talon.clients import Clients
from talon.engine import Engine
from talon.errors import ConfigError
from talon.metrics import Metrics
from talon.models import Notification
from talon.reloader import RuleStore
from tests.actionners.conftest import event, pod
from tests.fakes.kube_api import FakeKubeAPI

TERMINATE = """
- rule: R
  match: {rules: [F]}
  notifiers: [slack]
  actions:
    - {action: A, actionner: kubernetes:terminate}
"""


class Harness:
    """An engine with a governor over the fake cluster; records notifications."""

    def __init__(self, kube_config: Path, tmp_path: Path, cfg: str) -> None:
        self.tmp_path = tmp_path
        path = tmp_path / "config.yaml"
        path.write_text(textwrap.dedent(cfg) + f"\nkubeconfig: {kube_config}\n")
        self.settings = config.load(str(path), env={})
        self.clients = Clients(self.settings, timeout=5)
        self.notes: list[tuple[tuple[str, ...], Notification]] = []
        self.reset_file = tmp_path / "reset"
        self.gate = governor.Governor(
            self.settings.governor, self.settings.protected,
            notify=lambda names, n: self.notes.append((names, n)),
            default_notifiers=("webhook",), kube=self.clients.kube, own_namespace="talon",
            reset_file=self.reset_file)
        self.metrics = Metrics()

    def handle(self, rules_yaml: str, ev: Any) -> list[str]:
        path = self.tmp_path / "rules.yaml"
        path.write_text(textwrap.dedent(rules_yaml))
        ruleset = rules.load([str(path)], catalog.registry())
        engine = Engine(registry=catalog.registry(), rules=RuleStore(ruleset),
                        metrics=self.metrics,
                        notify=lambda names, n: self.notes.append((names, n)),
                        default_notifiers=("webhook",), clients=self.clients, gate=self.gate)
        return [status for _r, _a, status in engine.handle(ev)]

    def durations(self) -> float:
        """How many action durations were observed (one per action that ran)."""
        return sum(s.value for m in self.metrics.action_seconds.collect() for s in m.samples
                   if s.name.endswith("_count"))

    def count(self, status: str) -> float:
        return sum(s.value for m in self.metrics.actions.collect() for s in m.samples
                   if s.labels.get("status") == status and s.name.endswith("_total"))


@pytest.fixture
def harness(kube_config: Path, tmp_path: Path) -> Callable[[str], Harness]:
    return lambda cfg: Harness(kube_config, tmp_path, cfg)


def pods_named(kube_api: FakeKubeAPI, namespace: str = "shop") -> list[str]:
    return sorted(p["metadata"]["name"] for p in kube_api.list("pods", namespace))


def test_third_terminate_in_a_namespace_is_throttled(harness: Callable[[str], Harness],
                                                     kube_api: FakeKubeAPI) -> None:
    h = harness("governor: {budgets: [{scope: namespace, max: 2, per_seconds: 600}]}")
    for name in ("web-1", "web-2", "web-3"):
        kube_api.add(pod(name))
    kube_api.add(pod("api-1", "other"))
    assert h.handle(TERMINATE, event("web-1")) == ["success"]
    assert h.handle(TERMINATE, event("web-2")) == ["success"]
    assert h.handle(TERMINATE, event("web-3")) == ["throttled"]
    assert pods_named(kube_api) == ["web-3"]
    note = h.notes[-1][1]
    assert (note.status, note.objects["pod"]) == ("throttled", "web-3")
    assert "namespace:2/600s (namespace/shop)" in note.output
    assert h.count("throttled") == 1
    assert h.durations() == 2          # the throttled terminate never ran: no duration
    assert h.handle(TERMINATE, event("api-1", "other")) == ["success"]


def test_owner_budget_counts_a_deployments_pods_together(
        harness: Callable[[str], Harness], kube_api: FakeKubeAPI) -> None:
    h = harness("governor: {budgets: ['owner:1/600']}")
    for name, rs in (("web-1", "web-5d9c"), ("web-2", "web-77aa"), ("db-0", None)):
        labels = {"app": "x", "pod-template-hash": rs.split("-")[1]} if rs else {}
        kube_api.add(pod(name, owner=("ReplicaSet", rs) if rs else None, labels=labels))
    assert h.handle(TERMINATE, event("web-1")) == ["success"]
    assert h.handle(TERMINATE, event("web-2")) == ["throttled"]  # Deployment/web again
    assert h.handle(TERMINATE, event("db-0")) == ["success"]
    assert "owner/shop/Deployment/web" in h.notes[-2][1].output


def test_trip_to_dry_run_until_reset(harness: Callable[[str], Harness],
                                     kube_api: FakeKubeAPI) -> None:
    h = harness("""
        governor: {budgets: ['cluster:1/600'], trip_to_dry_run: true}
        """)
    for name in ("web-1", "web-2", "web-3", "web-4"):
        kube_api.add(pod(name))
    assert h.handle(TERMINATE, event("web-1")) == ["success"]
    assert h.handle(TERMINATE, event("web-2")) == ["throttled"]
    trips = [(names, n) for names, n in h.notes if n.status == "tripped"]
    assert [names for names, _n in trips] == [("webhook", "slack")]
    assert h.handle(TERMINATE, event("web-3")) == ["dry_run"]
    label = """
- rule: L
  match: {rules: [F]}
  actions:
    - {action: B, actionner: kubernetes:label, parameters: {labels: {seen: "yes"}}}
"""
    assert h.handle(label, event("web-3")) == ["success"]  # not disruptive: runs
    assert pods_named(kube_api) == ["web-2", "web-3", "web-4"]
    assert len([n for _names, n in h.notes if n.status == "tripped"]) == 1
    h.reset_file.write_text("now\n")
    later = time.time() + 1  # mtime granularity: make it surely later than the trip
    os.utime(h.reset_file, (later, later))
    assert not h.gate.tripped()
    assert h.handle(TERMINATE, event("web-4")) == ["throttled"]  # the window is still spent


@pytest.mark.parametrize("where", ["kube-system", "talon", "pod", "namespace", "node"])
def test_protected_targets_are_not_terminated(harness: Callable[[str], Harness],
                                              kube_api: FakeKubeAPI, where: str) -> None:
    h = harness("")
    namespace = where if where in ("kube-system", "talon") else "shop"
    mark = {"talon.falco.org/protected": "true"}
    kube_api.add(pod("web-1", namespace, labels=mark if where == "pod" else {"app": "web"}))
    kube_api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": namespace, "labels": mark if where == "namespace" else {}}})
    kube_api.add({"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": "node-1", "labels": mark if where == "node" else {}}})
    assert h.handle(TERMINATE, event("web-1", namespace)) == ["protected"]
    assert pods_named(kube_api, namespace) == ["web-1"]
    assert h.notes[-1][1].status == "protected"
    allowed = TERMINATE.replace("notifiers: [slack]", "allow_protected: true")
    assert h.handle(allowed, event("web-1", namespace)) == ["success"]
    assert pods_named(kube_api, namespace) == []


def test_non_disruptive_actions_are_never_held(harness: Callable[[str], Harness],
                                               kube_api: FakeKubeAPI) -> None:
    h = harness("governor: {budgets: ['cluster:0/600']}")
    kube_api.add(pod("web-1", "kube-system"))
    label = TERMINATE.replace("kubernetes:terminate",
                              "kubernetes:label, parameters: {labels: {a: b}}")
    assert h.handle(label, event("web-1", "kube-system")) == ["success"]


def test_rules_check_warns_about_rules_only_protected_targets_match(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent("""
        - rule: P
          match: {rules: [F], output_fields: ["k8s.ns.name=kube-system"]}
          actions: [{action: T, actionner: kubernetes:terminate}]
        - rule: Q
          match: {rules: [F], output_fields: ["k8s.ns.name=kube-system"]}
          allow_protected: true
          actions: [{action: T, actionner: kubernetes:terminate}]
        - rule: S
          match: {rules: [F], output_fields: ["k8s.ns.name=kube-system", "k8s.ns.name=shop"]}
          actions: [{action: T, actionner: kubernetes:terminate}]
        """))
    _ruleset, problems = rules.check([str(path)], catalog.registry())
    warned = [(p.rule, p.severity) for p in problems if "protected" in p.message]
    assert warned == [("P", "warning")]


def test_budgets_in_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("governor:\n  budgets:\n    - {scope: cluster, max: 20, per_seconds: 600}\n"
                    "    - namespace:5/600\n")
    assert config.load(str(path), env={}).governor.budgets == ("cluster:20/600",
                                                                "namespace:5/600")
    path.write_text("governor: {budgets: [{scope: galaxy, max: 1, per_seconds: 1}]}\n")
    with pytest.raises(ConfigError, match="galaxy"):
        config.load(str(path), env={})
    path.write_text("rules_files: [{a: b}]\n")
    with pytest.raises(ConfigError, match="expected string"):
        config.load(str(path), env={})


def _lease_counter(kube_config: Path) -> governor.LeaseCounter:
    settings = config.load(None, env={}, overrides={"kubeconfig": str(kube_config)})
    return governor.LeaseCounter(Clients(settings, timeout=5).kube().coordination,
                                 namespace="talon", prefix="falco-talon", identity="r1")


def test_replicas_share_the_budget_through_leases(kube_api: FakeKubeAPI,
                                                  kube_config: Path) -> None:
    first, second = _lease_counter(kube_config), _lease_counter(kube_config)
    budget = governor.Budget("cluster", 2, 600)
    assert first.take("cluster", 7, budget)
    assert second.take("cluster", 7, budget)
    assert not first.take("cluster", 7, budget)
    assert not second.take("cluster", 7, budget)
    assert second.take("cluster", 8, budget)  # a new window, a new Lease
    leases = kube_api.list("leases", "talon")
    assert sorted(x["metadata"]["annotations"]["talon.falco.org/count"] for x in leases) == [
        "1", "2"]
    assert all(x["spec"]["leaseDurationSeconds"] == 600 for x in leases)


def test_a_conflicting_write_is_retried(kube_api: FakeKubeAPI, kube_config: Path) -> None:
    counter = _lease_counter(kube_config)
    budget = governor.Budget("cluster", 2, 600)
    assert counter.take("cluster", 1, budget)
    kube_api.fail("PUT", r"/leases/", 409, times=1)
    assert counter.take("cluster", 1, budget)
    assert not counter.take("cluster", 1, budget)
    assert [r.method for r in kube_api.requests_for(path_prefix="/apis/coordination")
            ].count("PUT") == 2


def test_api_failure_falls_back_to_the_local_count(kube_api: FakeKubeAPI,
                                                   kube_config: Path) -> None:
    counter = _lease_counter(kube_config)
    kube_api.fail("GET", r"/leases/", 500, times=None)
    budget = governor.Budget("namespace", 1, 600)
    assert counter.take("namespace/shop", 3, budget)
    assert not counter.take("namespace/shop", 3, budget)
    assert kube_api.list("leases", "talon") == []


def test_protection_reads_the_pod_once_and_keeps_namespace_and_node_labels(
        harness: Callable[[str], Harness], kube_api: FakeKubeAPI) -> None:
    """The protection check's pod read serves the action's own checks; a namespace's and a
    node's labels are read once for many actions (they hold the protection label)."""
    from tests.actionners.test_nodes import node

    h = harness("")
    for name in ("web-1", "web-2"):
        kube_api.add(pod(name))
    kube_api.add(node())
    kube_api.clear_requests()
    assert h.handle(TERMINATE, event("web-1")) == ["success"]
    assert h.handle(TERMINATE, event("web-2")) == ["success"]
    gets = [r.path for r in kube_api.requests if r.method == "GET"]
    assert gets.count("/api/v1/namespaces/shop/pods/web-1") == 1
    assert gets.count("/api/v1/namespaces/shop/pods/web-2") == 1
    assert gets.count("/api/v1/namespaces/shop") == 1
    assert gets.count("/api/v1/nodes/node-1") == 1
    assert pods_named(kube_api) == []
