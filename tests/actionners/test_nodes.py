"""kubernetes:cordon and kubernetes:drain against the fake API server.

Behaviours covered:
- cordon: JSON patch (replace /spec/unschedulable true) on the pod's node, output text and
  objects; end to end through the server (with the k8sevents notifier creating the Event);
- drain: lists the node's pods with the field selector, evicts them through policy/v1
  Evictions, never touches other nodes; skips mirror pods and Talon's own pod; DaemonSet and
  StatefulSet pods on request; min_healthy_replicas absolute and percentage (B6 fixed: the
  percentage of the ReplicaSet's desired replicas, counting the pods this drain evicted);
  429 from a PodDisruptionBudget counted as an eviction error with the API's message;
  ignore_errors / ignore_error; an owner lookup error counted as "other"; max_wait_period
  waits for the evicted pods to be gone, counts those still there, and skips the
  wait_period_excluded_namespaces (B6 second half); end to end through the server;
- both: missing pod name (failure, no request), pod not found, 403/404/500 with the API's
  message, a timeout, dry-run making no mutating request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from talon.actionners.kubernetes import nodes
from tests.actionners.conftest import Acted, event, pod
from tests.fakes.kube_api import FakeKubeAPI
from tests.support import Launch

Act = Callable[..., Acted]
MUTATING = ("POST", "PUT", "PATCH", "DELETE")


def rules(actionner: str, parameters: str = "", **action: str) -> str:
    extra = "".join(f"\n      {k}: {v}" for k, v in action.items())
    params = f"\n      parameters: {parameters}" if parameters else ""
    return f"""
- rule: R
  match: {{rules: [F]}}
  actions:
    - action: A
      actionner: {actionner}{params}{extra}
"""


def node(name: str = "node-1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec}


def replicaset(name: str, *, ready: int, replicas: int, namespace: str = "shop",
               deployment: str | None = "web") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if deployment:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": deployment, "uid": "u-d", "controller": True}]
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta,
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": replicas, "readyReplicas": ready}}


def mutations(kube_api: FakeKubeAPI) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in kube_api.requests if r.method in MUTATING]


def evicted(kube_api: FakeKubeAPI) -> list[tuple[str, str]]:
    return sorted((e.namespace, e.pod) for e in kube_api.evictions)


def mirror_pod(name: str, namespace: str = "kube-system") -> dict[str, Any]:
    static = pod(name, namespace, owner=("Node", "node-1"))
    static["metadata"]["annotations"] = {nodes.MIRROR_ANNOTATION: "abc"}
    return static


@pytest.fixture
def cluster(kube_api: FakeKubeAPI) -> FakeKubeAPI:
    """node-1 runs web-1 (the event's pod) plus five others; node-2 runs one pod."""
    kube_api.add(node("node-1"))
    kube_api.add(node("node-2"))
    kube_api.add(pod("web-1"))
    kube_api.add(pod("db-0", owner=("StatefulSet", "db")))
    kube_api.add(pod("agent-x", "monitoring", owner=("DaemonSet", "agent")))
    kube_api.add(pod("lonely", "tools", owner=None))
    kube_api.add(pod("job-1", "batch", owner=("Job", "job")))
    kube_api.add(mirror_pod("etcd-node-1"))
    kube_api.add(pod("web-2", node="node-2"))
    return kube_api


# --- cordon -----------------------------------------------------------------------------


def test_cordon_patches_the_node(act: Act, cluster: FakeKubeAPI) -> None:
    acted = act(rules("kubernetes:cordon"), event())
    assert acted.done == [("R", "A", "success")]
    assert cluster.get("Node", None, "node-1")["spec"]["unschedulable"] is True
    assert not cluster.get("Node", None, "node-2")["spec"].get("unschedulable")
    note = acted.note("A")
    assert note.output == "the node 'node-1' has been cordoned"
    assert dict(note.objects) == {"node": "node-1"}
    (patch,) = cluster.requests_for("PATCH")
    assert patch.path == "/api/v1/nodes/node-1"
    assert patch.content_type == "application/json-patch+json"
    assert patch.body == [{"op": "replace", "path": "/spec/unschedulable", "value": True}]


def test_cordon_twice_stays_cordoned(act: Act, cluster: FakeKubeAPI) -> None:
    act(rules("kubernetes:cordon"), event())
    assert act(rules("kubernetes:cordon"), event()).done == [("R", "A", "success")]
    assert cluster.get("Node", None, "node-1")["spec"]["unschedulable"] is True


def test_cordon_missing_pod_name_sends_nothing(act: Act, cluster: FakeKubeAPI) -> None:
    ev = event()
    ev = type(ev)(rule="F", output_fields={"k8s.ns.name": "shop"})
    acted = act(rules("kubernetes:cordon"), ev)
    assert acted.done == [("R", "A", "failure")]
    assert "k8s.pod.name" in acted.note("A").error
    assert cluster.requests == []


def test_cordon_pod_not_found(act: Act, cluster: FakeKubeAPI) -> None:
    acted = act(rules("kubernetes:cordon"), event("ghost"))
    assert acted.done == [("R", "A", "failure")]
    assert acted.note("A").error == "the pod 'ghost' in the namespace 'shop' doesn't exist"
    assert mutations(cluster) == []


def test_cordon_unscheduled_pod(act: Act, cluster: FakeKubeAPI) -> None:
    pending = pod("pending")
    del pending["spec"]["nodeName"]
    cluster.add(pending)
    acted = act(rules("kubernetes:cordon"), event("pending"))
    assert acted.note("A").error == ("the pod 'pending' in the namespace 'shop' is not "
                                     "scheduled on a node")
    assert mutations(cluster) == []


def test_cordon_missing_node_reports_the_api_message(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod("web-1", node="gone"))
    acted = act(rules("kubernetes:cordon"), event())
    assert acted.done == [("R", "A", "failure")]
    assert acted.note("A").error == ("the node 'gone' could not be cordoned: "
                                     "nodes \"gone\" not found (404)")


def test_cordon_forbidden(act: Act, cluster: FakeKubeAPI) -> None:
    cluster.forbid("PATCH", r"^/api/v1/nodes/")
    error = act(rules("kubernetes:cordon"), event()).note("A").error
    assert error.startswith("the node 'node-1' could not be cordoned: ")
    assert 'cannot patch resource "nodes"' in error and error.endswith("(403)")
    assert not cluster.get("Node", None, "node-1")["spec"].get("unschedulable")


def test_cordon_server_error(act: Act, cluster: FakeKubeAPI) -> None:
    cluster.fail("PATCH", r"^/api/v1/nodes/", 500, message="etcd is sad")
    assert act(rules("kubernetes:cordon"), event()).note("A").error == (
        "the node 'node-1' could not be cordoned: etcd is sad (500)")


def test_cordon_timeout(act: Act, cluster: FakeKubeAPI) -> None:
    cluster.delay("PATCH", r"^/api/v1/nodes/", 3)
    acted = act(rules("kubernetes:cordon"), event(), action_timeout=1)
    assert acted.done == [("R", "A", "failure")]
    assert "did not finish within 1s" in acted.note("A").error


def test_cordon_dry_run(act: Act, cluster: FakeKubeAPI) -> None:
    acted = act(rules("kubernetes:cordon"), event(), dry_run=True)
    assert acted.done == [("R", "A", "dry_run")]
    assert mutations(cluster) == []


def test_cordon_end_to_end_with_k8sevents(start: Launch, kube_config: Path,
                                          cluster: FakeKubeAPI) -> None:
    server = start(rules("kubernetes:cordon"),
                   f"kubeconfig: {kube_config}\ndefault_notifiers: [k8sevents]\n")
    assert server.post({"rule": "F", "priority": "Warning", "output": "shell",
                        "output_fields": {"k8s.pod.name": "web-1", "k8s.ns.name": "shop"}}) == 200
    server.wait_log(r"has been cordoned")
    server.wait_log(r'"notifier": "k8sevents".*"status": "success"')
    assert cluster.get("Node", None, "node-1")["spec"]["unschedulable"] is True
    (ev,) = cluster.list("events", "default")
    assert ev["involvedObject"] == {"kind": "Node", "name": "node-1"}
    assert ev["reason"] == "falco-talon:action:kubernetes:cordon:success"
    assert "the node \"node-1\" has been cordoned" in ev["message"]


# --- drain ------------------------------------------------------------------------------


def test_drain_evicts_the_pods_of_the_node(act: Act, cluster: FakeKubeAPI) -> None:
    acted = act(rules("kubernetes:drain"), event())
    assert acted.done == [("R", "A", "success")]
    assert evicted(cluster) == [("batch", "job-1"), ("monitoring", "agent-x"),
                                ("shop", "db-0"), ("shop", "web-1"), ("tools", "lonely")]
    assert cluster.get("Pod", "shop", "web-2") is not None
    assert cluster.get("Pod", "kube-system", "etcd-node-1") is not None
    note = acted.note("A")
    assert note.output == ("the node 'node-1' has been drained, errors are ignored: "
                           "1 ignored pods, 0 eviction errors, 0 other errors")
    assert dict(note.objects) == {"node": "node-1"}
    (listing,) = cluster.requests_for("GET", "/api/v1/pods")
    assert listing.param("fieldSelector") == "spec.nodeName=node-1"
    post = cluster.requests_for("POST", "/api/v1/namespaces/shop/pods/web-1/eviction")[0]
    assert post.body["apiVersion"] == "policy/v1" and post.body["kind"] == "Eviction"
    assert post.body["metadata"] == {"name": "web-1", "namespace": "shop"}
    assert cluster.requests_for("DELETE") == []


@pytest.mark.parametrize(("parameters", "kept"), [
    ("{ignore_daemonsets: true}", ("monitoring", "agent-x")),
    ("{ignore_statefulsets: true}", ("shop", "db-0")),
])
def test_drain_ignores_daemonsets_and_statefulsets(act: Act, cluster: FakeKubeAPI,
                                                   parameters: str,
                                                   kept: tuple[str, str]) -> None:
    acted = act(rules("kubernetes:drain", parameters), event())
    assert kept not in evicted(cluster)
    assert len(evicted(cluster)) == 4
    assert "2 ignored pods" in acted.note("A").output


def test_drain_skips_talons_own_pod(act: Act, cluster: FakeKubeAPI,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cluster.add(pod("falco-talon-abc", "falco", owner=("ReplicaSet", "falco-talon-5f")))
    monkeypatch.setenv("POD_NAME", "falco-talon-abc")
    monkeypatch.setenv("POD_NAMESPACE", "falco")
    acted = act(rules("kubernetes:drain"), event())
    assert ("falco", "falco-talon-abc") not in evicted(cluster)
    assert "2 ignored pods" in acted.note("A").output


@pytest.mark.parametrize(("minimum", "ready", "replicas", "evicts"), [
    ("2", 2, 3, True), ("3", 2, 3, False), ("0", 0, 3, True),
    ("50%", 2, 4, True), ("50%", 1, 4, False), ("100%", 3, 4, False), ("0%", 0, 4, True),
    ("34%", 2, 6, False), ("33%", 2, 6, True),
])
def test_drain_min_healthy_replicas(act: Act, kube_api: FakeKubeAPI, minimum: str,
                                    ready: int, replicas: int, evicts: bool) -> None:
    kube_api.add(pod("web-1"))
    kube_api.add(replicaset("web-5d9c", ready=ready, replicas=replicas))
    acted = act(rules("kubernetes:drain", f'{{min_healthy_replicas: "{minimum}"}}'), event())
    assert acted.done == [("R", "A", "success")]
    assert evicted(kube_api) == ([("shop", "web-1")] if evicts else [])
    assert f"{0 if evicts else 1} ignored pods" in acted.note("A").output


def test_drain_min_healthy_counts_the_pods_it_evicted(act: Act, kube_api: FakeKubeAPI) -> None:
    for name in ("web-1", "web-2", "web-3"):
        kube_api.add(pod(name))
    kube_api.add(replicaset("web-5d9c", ready=3, replicas=3))
    acted = act(rules("kubernetes:drain", '{min_healthy_replicas: "60%"}'), event())
    assert evicted(kube_api) == [("shop", "web-1"), ("shop", "web-2")]
    assert "1 ignored pods" in acted.note("A").output
    assert len(kube_api.requests_for("GET", "/apis/apps/v1/namespaces/shop/replicasets")) == 1


def test_drain_replicaset_lookup_error_is_an_other_error(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod("web-1"))
    kube_api.add(pod("lonely", owner=None))
    acted = act(rules("kubernetes:drain", '{min_healthy_replicas: "1"}'), event())
    assert acted.done == [("R", "A", "failure")]
    assert evicted(kube_api) == [("shop", "lonely")]
    assert acted.note("A").error == (
        "the node 'node-1' has not been fully drained: 0 pods ignored, 0 eviction errors, "
        "0 were not evicted during max_wait_period, 1 other errors "
        "(shop/web-1: replicasets.apps \"web-5d9c\" not found (404))")


def test_drain_pdb_refusal_is_an_eviction_error(act: Act, cluster: FakeKubeAPI) -> None:
    cluster.block_eviction("shop", "db-0", pdb="db-pdb")
    acted = act(rules("kubernetes:drain"), event())
    assert acted.done == [("R", "A", "failure")]
    error = acted.note("A").error
    assert error.startswith(
        "the node 'node-1' has not been fully drained: 1 pods ignored, 1 eviction errors, "
        "0 were not evicted during max_wait_period, 0 other errors (shop/db-0: Cannot evict "
        "pod as it would violate the pod's disruption budget.")
    assert error.endswith("(429))")
    assert dict(acted.note("A").objects) == {"node": "node-1"}
    assert ("shop", "db-0") not in evicted(cluster) and len(evicted(cluster)) == 4


@pytest.mark.parametrize("spelling", ["ignore_errors", "ignore_error"])
def test_drain_errors_ignored(act: Act, cluster: FakeKubeAPI, spelling: str) -> None:
    cluster.block_eviction("shop", "db-0")
    acted = act(rules("kubernetes:drain", f"{{{spelling}: true}}"), event())
    assert acted.done == [("R", "A", "success")]
    assert acted.note("A").output == ("the node 'node-1' has been drained, errors are "
                                      "ignored: 1 ignored pods, 1 eviction errors, "
                                      "0 other errors")


def test_drain_eviction_of_a_vanished_pod_is_fine(act: Act, cluster: FakeKubeAPI) -> None:
    cluster.fail("POST", r"/pods/lonely/eviction$", 404, message='pods "lonely" not found')
    assert act(rules("kubernetes:drain"), event()).done == [("R", "A", "success")]
    assert evicted(cluster) == [("batch", "job-1"), ("monitoring", "agent-x"),
                                ("shop", "db-0"), ("shop", "web-1")]
    assert len(cluster.requests_for("POST", "/api/v1/namespaces/tools/pods/lonely")) == 1


def _linger(kube_api: FakeKubeAPI, namespaces: set[str], seconds: float | None) -> None:
    """Evicted pods of `namespaces` stay (terminating) for `seconds` (None: forever)."""
    def hook(verb: str, resource: str, obj: dict[str, Any]) -> None:
        if verb != "evict" or obj["metadata"]["namespace"] not in namespaces:
            return
        obj["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
        kube_api.add(obj)
        if seconds is not None:
            meta = obj["metadata"]
            timer = threading.Timer(seconds, kube_api.remove,
                                    ("Pod", meta["namespace"], meta["name"]))
            timer.daemon = True
            timer.start()
    kube_api.on_write(hook)


@pytest.fixture
def fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes, "POLL_SECONDS", 0.1)


@pytest.mark.usefixtures("fast_poll")
def test_drain_waits_for_the_evicted_pods(act: Act, cluster: FakeKubeAPI) -> None:
    _linger(cluster, {"shop", "tools"}, 0.4)
    acted = act(rules("kubernetes:drain", "{max_wait_period: 5}"), event())
    assert acted.done == [("R", "A", "success")]
    listings = cluster.requests_for("GET", "/api/v1/pods")
    assert len(listings) >= 3
    assert cluster.get("Pod", "shop", "web-1") is None


@pytest.mark.usefixtures("fast_poll")
def test_drain_counts_pods_still_there_after_max_wait_period(act: Act,
                                                             cluster: FakeKubeAPI) -> None:
    _linger(cluster, {"shop"}, None)
    acted = act(rules("kubernetes:drain", "{max_wait_period: 1}"), event())
    assert acted.done == [("R", "A", "failure")]
    assert acted.note("A").error == (
        "the node 'node-1' has not been fully drained: 1 pods ignored, 0 eviction errors, "
        "2 were not evicted during max_wait_period, 0 other errors")


@pytest.mark.usefixtures("fast_poll")
def test_drain_does_not_wait_for_excluded_namespaces(act: Act, cluster: FakeKubeAPI) -> None:
    _linger(cluster, {"shop", "tools"}, None)
    acted = act(rules("kubernetes:drain", "{max_wait_period: 30, wait_period_excluded_"
                                          "namespaces: [shop, tools, batch, monitoring]}"),
                event())
    assert acted.done == [("R", "A", "success")]
    assert len(cluster.requests_for("GET", "/api/v1/pods")) == 1  # no polling at all
    assert cluster.get("Pod", "shop", "web-1") is not None  # still terminating


@pytest.mark.usefixtures("fast_poll")
def test_drain_waits_only_for_the_other_namespaces(act: Act, cluster: FakeKubeAPI) -> None:
    _linger(cluster, {"shop"}, None)
    _linger(cluster, {"tools"}, 0.3)
    acted = act(rules("kubernetes:drain", "{max_wait_period: 30, "
                                          "wait_period_excluded_namespaces: [shop]}"),
                event())
    assert acted.done == [("R", "A", "success")]
    assert cluster.get("Pod", "tools", "lonely") is None
    assert cluster.get("Pod", "shop", "web-1") is not None


@pytest.mark.usefixtures("fast_poll")
def test_drain_wait_stops_at_the_action_deadline(act: Act, cluster: FakeKubeAPI) -> None:
    _linger(cluster, {"shop"}, None)
    acted = act(rules("kubernetes:drain", "{max_wait_period: 60}"), event(), action_timeout=1.5)
    assert acted.done == [("R", "A", "failure")]
    assert "2 were not evicted during max_wait_period" in acted.note("A").error


def test_drain_missing_pod_name_sends_nothing(act: Act, cluster: FakeKubeAPI) -> None:
    ev = type(event())(rule="F", output_fields={"k8s.ns.name": "shop"})
    acted = act(rules("kubernetes:drain"), ev)
    assert acted.done == [("R", "A", "failure")]
    assert cluster.requests == []


def test_drain_pod_not_found(act: Act, cluster: FakeKubeAPI) -> None:
    acted = act(rules("kubernetes:drain"), event("ghost"))
    assert acted.note("A").error == "the pod 'ghost' in the namespace 'shop' doesn't exist"
    assert mutations(cluster) == []


def test_drain_list_forbidden(act: Act, cluster: FakeKubeAPI) -> None:
    cluster.forbid("GET", r"^/api/v1/pods$")
    error = act(rules("kubernetes:drain"), event()).note("A").error
    assert error.startswith("cannot list the pods of the node 'node-1': ")
    assert 'cannot list resource "pods"' in error and error.endswith("(403)")
    assert mutations(cluster) == []


def test_drain_eviction_server_errors(act: Act, cluster: FakeKubeAPI) -> None:
    cluster.fail("POST", r"/eviction$", 500, message="boom", times=None)
    acted = act(rules("kubernetes:drain"), event())
    assert acted.note("A").error == (
        "the node 'node-1' has not been fully drained: 1 pods ignored, 5 eviction errors, "
        "0 were not evicted during max_wait_period, 0 other errors (batch/job-1: boom (500); "
        "monitoring/agent-x: boom (500); shop/db-0: boom (500))")


def test_drain_timeout(act: Act, cluster: FakeKubeAPI) -> None:
    cluster.delay("GET", r"^/api/v1/pods$", 3)
    acted = act(rules("kubernetes:drain"), event(), action_timeout=1)
    assert acted.done == [("R", "A", "failure")]
    assert "did not finish within 1s" in acted.note("A").error
    assert cluster.evictions == []


def test_drain_dry_run(act: Act, cluster: FakeKubeAPI) -> None:
    acted = act(rules("kubernetes:drain", "{max_wait_period: 10}"), event(), dry_run=True)
    assert acted.done == [("R", "A", "dry_run")]
    assert mutations(cluster) == []


def test_drain_end_to_end(start: Launch, kube_config: Path, cluster: FakeKubeAPI) -> None:
    server = start(rules("kubernetes:drain", "{ignore_daemonsets: true}"),
                   f"kubeconfig: {kube_config}\n")
    assert server.post({"rule": "F", "priority": "Warning", "output": "shell",
                        "output_fields": {"k8s.pod.name": "web-1", "k8s.ns.name": "shop"}}) == 200
    server.wait_log(r"the node 'node-1' has been drained")
    assert evicted(cluster) == [("batch", "job-1"), ("shop", "db-0"), ("shop", "web-1"),
                                ("tools", "lonely")]
