"""kubernetes:networkpolicy against the fake API server.

Behaviours covered:
- a pod of a Deployment: policy named after the Deployment (not the ReplicaSet), selector
  from the ReplicaSet without pod-template-hash, managed-by label, Egress only, no egress
  rule at all (every egress denied); objects pod/namespace/networkpolicy; output text;
- DaemonSet and StatefulSet owners (their revision labels dropped), a ReplicaSet without a
  Deployment, a standalone pod (name and labels), matchExpressions kept;
- allow_cidr then allow_namespaces as one egress rule; the namespace selector uses
  `kubernetes.io/metadata.name` (B10 fixed);
- refusals: an owner kind without selector (Job), a standalone pod without labels (never an
  empty selector that would catch the whole namespace), a missing owner (API message);
- a second event replaces the policy (PUT with the current resourceVersion), also after a
  409 conflict (one retry after a fresh GET); a GET error other than 404 is a failure with
  no write (upstream updated blindly); 403/500 on create; timeout; dry-run; missing pod
  name; end to end through the server.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.actionners.conftest import Acted, event, pod
from tests.fakes.kube_api import FakeKubeAPI
from tests.support import Launch

Act = Callable[..., Acted]
MUTATING = ("POST", "PUT", "PATCH", "DELETE")
NETPOL = "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies"
MANAGED = {"app.k8s.io/managed-by": "falco-talon"}
STATUS = {  # what the API server always reports (the client's models require these)
    "ReplicaSet": {"replicas": 1},
    "StatefulSet": {"replicas": 1},
    "DaemonSet": {"currentNumberScheduled": 1, "desiredNumberScheduled": 1,
                  "numberMisscheduled": 0, "numberReady": 1},
}


def rules(parameters: str = "") -> str:
    params = f"\n      parameters: {parameters}" if parameters else ""
    return f"""
- rule: R
  match: {{rules: [F]}}
  actions:
    - action: Isolate
      actionner: kubernetes:networkpolicy{params}
"""


def workload(kind: str, name: str, match_labels: dict[str, str], *,
             owner: tuple[str, str] | None = None, expressions: list[Any] | None = None
             ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop"}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0],
                                    "name": owner[1], "uid": "u-o", "controller": True}]
    selector: dict[str, Any] = {"matchLabels": match_labels}
    if expressions:
        selector["matchExpressions"] = expressions
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta,
            "spec": {"selector": selector, "template": {
                "metadata": {"labels": match_labels},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
            "status": STATUS[kind]}


def policy(kube_api: FakeKubeAPI, name: str) -> dict[str, Any]:
    found = kube_api.get("NetworkPolicy", "shop", name, api_version="networking.k8s.io/v1")
    assert found is not None, f"no policy {name}"
    return found


def mutations(kube_api: FakeKubeAPI) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in kube_api.requests if r.method in MUTATING]


@pytest.fixture
def deployment_pod(kube_api: FakeKubeAPI) -> FakeKubeAPI:
    kube_api.add(pod("web-1", labels={"app": "web", "tier": "front",
                                      "pod-template-hash": "5d9c"}))
    kube_api.add(workload("ReplicaSet", "web-5d9c", {"app": "web", "pod-template-hash": "5d9c"},
                          owner=("Deployment", "web")))
    return kube_api


def test_deployment_pod_gets_a_deny_all_egress_policy(act: Act,
                                                      deployment_pod: FakeKubeAPI) -> None:
    acted = act(rules(), event())
    assert acted.done == [("R", "Isolate", "success")]
    found = policy(deployment_pod, "web")
    assert found["metadata"]["labels"] == {"app": "web", **MANAGED}
    assert found["spec"]["podSelector"] == {"matchLabels": {"app": "web"}}
    assert found["spec"]["policyTypes"] == ["Egress"]
    assert not found["spec"].get("egress")
    assert not found["spec"].get("ingress")
    note = acted.note("Isolate")
    assert note.output == "the networkpolicy 'web' in the namespace 'shop' has been created"
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop", "networkpolicy": "web"}
    assert mutations(deployment_pod) == [("POST", NETPOL)]


def test_allowances_use_the_real_namespace_label(act: Act, deployment_pod: FakeKubeAPI) -> None:
    act(rules('{allow_cidr: ["10.0.0.0/8", "2001:db8::/32"], allow_namespaces: [dns, green]}'),
        event())
    assert policy(deployment_pod, "web")["spec"]["egress"] == [{"to": [
        {"ipBlock": {"cidr": "10.0.0.0/8"}},
        {"ipBlock": {"cidr": "2001:db8::/32"}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "green"}}},
    ]}]


@pytest.mark.parametrize(("kind", "labels", "revision"), [
    ("DaemonSet", {"app": "agent"}, "pod-template-generation"),
    ("StatefulSet", {"app": "db"}, "controller-revision-hash"),
])
def test_daemonset_and_statefulset_owners(act: Act, kube_api: FakeKubeAPI, kind: str,
                                          labels: dict[str, str], revision: str) -> None:
    kube_api.add(pod("web-1", owner=(kind, "owner")))
    kube_api.add(workload(kind, "owner", {**labels, revision: "7"}))
    acted = act(rules(), event())
    assert acted.note("Isolate").objects["networkpolicy"] == "owner"
    found = policy(kube_api, "owner")
    assert found["spec"]["podSelector"] == {"matchLabels": labels}
    assert found["metadata"]["labels"] == {**labels, **MANAGED}


def test_replicaset_without_deployment_names_the_policy_after_it(act: Act,
                                                                 kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod("web-1"))
    kube_api.add(workload("ReplicaSet", "web-5d9c", {"app": "web"}))
    act(rules(), event())
    assert policy(kube_api, "web-5d9c")["spec"]["podSelector"] == {"matchLabels": {"app": "web"}}


def test_match_expressions_are_kept(act: Act, kube_api: FakeKubeAPI) -> None:
    expressions = [{"key": "track", "operator": "In", "values": ["stable"]},
                   {"key": "pod-template-hash", "operator": "Exists"}]
    kube_api.add(pod("web-1"))
    kube_api.add(workload("ReplicaSet", "web-5d9c", {}, owner=("Deployment", "web"),
                          expressions=expressions))
    act(rules(), event())
    assert policy(kube_api, "web")["spec"]["podSelector"] == {
        "matchLabels": {}, "matchExpressions": [expressions[0]]}


def test_standalone_pod_uses_its_name_and_labels(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod("debug", owner=None, labels={"run": "debug", "pod-template-hash": "x"}))
    acted = act(rules(), event("debug"))
    assert acted.note("Isolate").output == ("the networkpolicy 'debug' in the namespace "
                                            "'shop' has been created")
    assert policy(kube_api, "debug")["spec"]["podSelector"] == {
        "matchLabels": {"run": "debug"}}


@pytest.mark.parametrize("owner", [("Job", "batch-1"), None])
def test_no_selector_is_refused(act: Act, kube_api: FakeKubeAPI,
                                owner: tuple[str, str] | None) -> None:
    kube_api.add(pod("web-1", owner=owner, labels={}))
    acted = act(rules(), event())
    assert acted.done == [("R", "Isolate", "failure")]
    assert acted.note("Isolate").error == (
        "can't find the owner and/or labels for the pod 'web-1' in namespace 'shop'")
    assert mutations(kube_api) == []


def test_missing_owner_reports_the_api_message(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod("web-1"))
    assert act(rules(), event()).note("Isolate").error == (
        "cannot read the ReplicaSet 'web-5d9c' in the namespace 'shop': "
        "replicasets.apps \"web-5d9c\" not found (404)")
    assert mutations(kube_api) == []


def test_second_event_replaces_the_policy(act: Act, deployment_pod: FakeKubeAPI) -> None:
    act(rules('{allow_cidr: ["10.0.0.0/8"]}'), event())
    version = policy(deployment_pod, "web")["metadata"]["resourceVersion"]
    acted = act(rules("{allow_namespaces: [dns]}"), event())
    assert acted.done == [("R", "Isolate", "success")]
    assert acted.note("Isolate").output == ("the networkpolicy 'web' in the namespace 'shop' "
                                            "has been updated")
    (put,) = deployment_pod.requests_for("PUT")
    assert put.path == f"{NETPOL}/web"
    assert put.body["metadata"]["resourceVersion"] == version
    assert policy(deployment_pod, "web")["spec"]["egress"] == [{"to": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}}}]}]


def test_conflict_is_retried_once(act: Act, deployment_pod: FakeKubeAPI) -> None:
    act(rules(), event())
    deployment_pod.fail("PUT", f"{NETPOL}/web$", 409, message="the object has been modified")
    acted = act(rules('{allow_cidr: ["10.0.0.0/8"]}'), event())
    assert acted.done == [("R", "Isolate", "success")]
    assert len(deployment_pod.requests_for("PUT")) == 2
    assert len(deployment_pod.requests_for("GET", f"{NETPOL}/web")) == 3
    assert policy(deployment_pod, "web")["spec"]["egress"]


def test_second_conflict_is_a_failure(act: Act, deployment_pod: FakeKubeAPI) -> None:
    act(rules(), event())
    deployment_pod.fail("PUT", f"{NETPOL}/web$", 409, message="modified", times=2)
    assert act(rules(), event()).note("Isolate").error == (
        "cannot update the networkpolicy 'web' in the namespace 'shop': modified (409)")


def test_create_race_turns_into_an_update(act: Act, deployment_pod: FakeKubeAPI) -> None:
    deployment_pod.fail("POST", f"{NETPOL}$", 409, "AlreadyExists", "already exists")
    deployment_pod.add({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                        "metadata": {"name": "web", "namespace": "shop"}, "spec": {}})
    deployment_pod.fail("GET", f"{NETPOL}/web$", 404)  # the first GET misses it
    acted = act(rules(), event())
    assert acted.note("Isolate").output.endswith("has been updated")
    assert policy(deployment_pod, "web")["spec"]["policyTypes"] == ["Egress"]


def test_get_error_is_a_failure_without_write(act: Act, deployment_pod: FakeKubeAPI) -> None:
    deployment_pod.forbid("GET", f"{NETPOL}/web$")
    error = act(rules(), event()).note("Isolate").error
    assert error.startswith("cannot read the networkpolicy 'web' in the namespace 'shop': ")
    assert 'cannot get resource "networkpolicies"' in error and error.endswith("(403)")
    assert mutations(deployment_pod) == []


@pytest.mark.parametrize(("status", "text"), [(403, "forbidden"), (500, "boom")])
def test_create_errors(act: Act, deployment_pod: FakeKubeAPI, status: int, text: str) -> None:
    deployment_pod.fail("POST", f"{NETPOL}$", status, message=text)
    acted = act(rules(), event())
    assert acted.done == [("R", "Isolate", "failure")]
    assert acted.note("Isolate").error == (
        f"cannot create the networkpolicy 'web' in the namespace 'shop': {text} ({status})")


def test_pod_not_found(act: Act, kube_api: FakeKubeAPI) -> None:
    acted = act(rules(), event("ghost"))
    assert acted.note("Isolate").error == ("the pod 'ghost' in the namespace 'shop' "
                                           "doesn't exist")
    assert mutations(kube_api) == []


def test_missing_pod_name_sends_nothing(act: Act, kube_api: FakeKubeAPI) -> None:
    ev = type(event())(rule="F", output_fields={"k8s.ns.name": "shop"})
    assert act(rules(), ev).done == [("R", "Isolate", "failure")]
    assert kube_api.requests == []


def test_timeout(act: Act, deployment_pod: FakeKubeAPI) -> None:
    deployment_pod.delay("POST", f"{NETPOL}$", 3)
    acted = act(rules(), event(), action_timeout=1)
    assert acted.done == [("R", "Isolate", "failure")]
    assert "did not finish within 1s" in acted.note("Isolate").error


def test_dry_run(act: Act, deployment_pod: FakeKubeAPI) -> None:
    assert act(rules(), event(), dry_run=True).done == [("R", "Isolate", "dry_run")]
    assert mutations(deployment_pod) == []


def test_end_to_end(start: Launch, kube_config: Path, deployment_pod: FakeKubeAPI) -> None:
    server = start(rules("{allow_namespaces: [dns]}"), f"kubeconfig: {kube_config}\n")
    assert server.post({"rule": "F", "priority": "Warning", "output": "nc -l",
                        "output_fields": {"k8s.pod.name": "web-1", "k8s.ns.name": "shop"}}) == 200
    server.wait_log("the networkpolicy 'web' in the namespace 'shop' has been created")
    assert policy(deployment_pod, "web")["spec"]["egress"] == [{"to": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}}}]}]
