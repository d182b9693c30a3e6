"""calico:networkpolicy and cilium:networkpolicy against the fake API server.

Behaviours covered (the policy objects as the fake stores them, the requests it received):
- a Deployment's pod: the whole stored policy (name, labels, selector, rule shapes), output
  text, objects, one POST; a standalone pod; matchExpressions in Calico's selector text;
- allow_cidr and allow_namespaces (namespace labels that exist: Calico's namespaceSelector
  on `kubernetes.io/metadata.name`, Cilium's `k8s:io.kubernetes.pod.namespace`); Calico
  `order` (default 0);
- a second event with the same remote IP changes no rule (no duplicate), one with another
  IP adds it; the PUT carries the resourceVersion read; rules already stored are kept
  (Calico's Deny nets, Cilium's egress/egressDeny lists);
- the remote IP: fd.rip first, then fd.sip; IPv6 gets /128; an event without one, or with
  a value that is not an IP, fails before any request is sent;
- the API group not installed: a failure naming it, no write; 403 on read, 500 on create,
  503 from Calico's API server, a server that hangs up: failures naming the policy and
  namespace;
- 409: a Conflict on update and an AlreadyExists on create start again from a fresh read,
  once; a second Conflict is a failure;
- end to end: the server reports a cluster without Cilium, keeps serving, and acts on the
  next event once the API is there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.actionners.conftest import Acted, event, pod
from tests.actionners.test_networkpolicy import workload
from tests.fakes.kube_api import FakeKubeAPI
from tests.support import Launch

Act = Callable[..., Acted]
MANAGED = {"app.k8s.io/managed-by": "falco-talon"}
CALICO = "/apis/projectcalico.org/v3/namespaces/shop/networkpolicies"
CILIUM = "/apis/cilium.io/v2/namespaces/shop/ciliumnetworkpolicies"
PATHS = {"calico": CALICO, "cilium": CILIUM}
KINDS = {"calico": ("NetworkPolicy", "projectcalico.org/v3"),
         "cilium": ("CiliumNetworkPolicy", "cilium.io/v2")}
WORDS = {"calico": "caliconetworkpolicy", "cilium": "ciliumnetworkpolicy"}
BOTH = pytest.mark.parametrize("category", ["calico", "cilium"])
IP = "203.0.113.9"


def rules(category: str, parameters: str = "") -> str:
    params = f"\n      parameters: {parameters}" if parameters else ""
    return f"""
- rule: R
  match: {{rules: [F]}}
  actions:
    - action: Isolate
      actionner: {category}:networkpolicy{params}
"""


def connection(pod_name: str = "web-1", **fields: Any) -> Any:
    """An outbound connection event of `pod_name` (fd.rip 203.0.113.9 unless given)."""
    return event(pod_name, **{"fd.rip": IP, **fields})


def stored(kube_api: FakeKubeAPI, category: str, name: str = "web") -> dict[str, Any]:
    kind, version = KINDS[category]
    found = kube_api.get(kind, "shop", name, api_version=version)
    assert found is not None, f"no {category} policy {name}"
    return found


def writes(kube_api: FakeKubeAPI) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in kube_api.requests if r.method in ("POST", "PUT")]


def denied(policy: dict[str, Any], category: str) -> list[str]:
    """Every CIDR the policy denies, in order."""
    if category == "calico":
        return [net for rule in policy["spec"]["egress"] if rule["action"] == "Deny"
                for net in rule["destination"]["nets"]]
    return [cidr for rule in policy["spec"]["egressDeny"] for cidr in rule["toCIDR"]]


@pytest.fixture
def deployment_pod(kube_api: FakeKubeAPI) -> FakeKubeAPI:
    kube_api.add(pod("web-1", labels={"app": "web", "tier": "front",
                                      "pod-template-hash": "5d9c"}))
    kube_api.add(workload("ReplicaSet", "web-5d9c",
                          {"app": "web", "tier": "front", "pod-template-hash": "5d9c"},
                          owner=("Deployment", "web")))
    return kube_api


def test_calico_policy_of_a_deployment_pod(act: Act, deployment_pod: FakeKubeAPI) -> None:
    acted = act(rules("calico"), connection())
    assert acted.done == [("R", "Isolate", "success")]
    policy = stored(deployment_pod, "calico")
    assert policy["metadata"]["labels"] == {"app": "web", "tier": "front", **MANAGED}
    assert policy["spec"] == {
        "order": 0.0, "selector": 'app == "web" && tier == "front"', "types": ["Egress"],
        "egress": [{"action": "Deny", "destination": {"nets": [f"{IP}/32"]}},
                   {"action": "Allow", "destination": {"nets": ["0.0.0.0/0"]}}]}
    note = acted.note("Isolate")
    assert note.output == ("the caliconetworkpolicy 'web' in the namespace 'shop' has been "
                           "created")
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop",
                                  "caliconetworkpolicy": "web"}
    assert writes(deployment_pod) == [("POST", CALICO)]


def test_cilium_policy_of_a_deployment_pod(act: Act, deployment_pod: FakeKubeAPI) -> None:
    acted = act(rules("cilium"), connection())
    assert acted.done == [("R", "Isolate", "success")]
    policy = stored(deployment_pod, "cilium")
    assert policy["metadata"]["labels"] == {"app": "web", "tier": "front", **MANAGED}
    assert policy["spec"] == {
        "description": "Network policy created by Falco Talon",
        "endpointSelector": {"matchLabels": {"app": "web", "tier": "front"}},
        "egressDeny": [{"toCIDR": [f"{IP}/32"]}],
        "egress": [{"toCIDR": ["0.0.0.0/0"]}]}
    note = acted.note("Isolate")
    assert note.output == ("the ciliumnetworkpolicy 'web' in the namespace 'shop' has been "
                           "created")
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop",
                                  "ciliumnetworkpolicy": "web"}
    assert writes(deployment_pod) == [("POST", CILIUM)]


@BOTH
def test_standalone_pod_uses_its_name_and_labels(act: Act, kube_api: FakeKubeAPI,
                                                 category: str) -> None:
    kube_api.add(pod("debug", owner=None, labels={"run": "debug"}))
    acted = act(rules(category), connection("debug"))
    assert acted.note("Isolate").output == (
        f"the {WORDS[category]} 'debug' in the namespace 'shop' has been created")
    policy = stored(kube_api, category, "debug")
    assert policy["metadata"]["labels"] == {"run": "debug", **MANAGED}
    if category == "calico":
        assert policy["spec"]["selector"] == 'run == "debug"'
    else:
        assert policy["spec"]["endpointSelector"] == {"matchLabels": {"run": "debug"}}


def test_calico_selector_with_expressions(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod("web-1"))
    kube_api.add(workload("ReplicaSet", "web-5d9c", {"app": "web"},
                          owner=("Deployment", "web"), expressions=[
                              {"key": "track", "operator": "In", "values": ["stable", "a"]},
                              {"key": "canary", "operator": "NotIn", "values": ["yes"]},
                              {"key": "team", "operator": "Exists"},
                              {"key": "legacy", "operator": "DoesNotExist"}]))
    act(rules("calico"), connection())
    assert stored(kube_api, "calico")["spec"]["selector"] == (
        'app == "web" && track in { "stable", "a" } && canary not in { "yes" } && '
        "has(team) && !has(legacy)")


ALLOW = '{allow_cidr: ["10.0.0.0/8", "172.17.0.0/16"], allow_namespaces: [dns, green]}'


def test_calico_allowances_and_order(act: Act, deployment_pod: FakeKubeAPI) -> None:
    act(rules("calico", ALLOW[:-1] + ", order: 20}"), connection())
    spec = stored(deployment_pod, "calico")["spec"]
    assert spec["order"] == 20.0
    assert spec["egress"] == [
        {"action": "Deny", "destination": {"nets": [f"{IP}/32"]}},
        {"action": "Allow", "destination": {"nets": ["10.0.0.0/8", "172.17.0.0/16"]}},
        {"action": "Allow", "destination": {
            "namespaceSelector": "kubernetes.io/metadata.name in { 'dns', 'green' }"}}]


def test_calico_namespaces_only(act: Act, deployment_pod: FakeKubeAPI) -> None:
    act(rules("calico", "{allow_namespaces: [dns]}"), connection())
    assert stored(deployment_pod, "calico")["spec"]["egress"][1:] == [
        {"action": "Allow", "destination": {
            "namespaceSelector": "kubernetes.io/metadata.name in { 'dns' }"}}]


def test_cilium_allowances(act: Act, deployment_pod: FakeKubeAPI) -> None:
    act(rules("cilium", ALLOW), connection())
    assert stored(deployment_pod, "cilium")["spec"]["egress"] == [
        {"toCIDR": ["10.0.0.0/8", "172.17.0.0/16"]},
        {"toEndpoints": [{"matchExpressions": [{
            "key": "k8s:io.kubernetes.pod.namespace", "operator": "In",
            "values": ["dns", "green"]}]}]}]


@BOTH
def test_second_event_same_ip_adds_no_duplicate(act: Act, deployment_pod: FakeKubeAPI,
                                                category: str) -> None:
    act(rules(category), connection())
    first = stored(deployment_pod, category)
    acted = act(rules(category), connection())
    assert acted.done == [("R", "Isolate", "success")]
    assert acted.note("Isolate").output == (
        f"the {WORDS[category]} 'web' in the namespace 'shop' has been updated")
    (put,) = deployment_pod.requests_for("PUT")
    assert put.path == f"{PATHS[category]}/web"
    assert put.body["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert stored(deployment_pod, category)["spec"] == first["spec"]


@BOTH
def test_second_event_other_ip_is_added(act: Act, deployment_pod: FakeKubeAPI,
                                        category: str) -> None:
    act(rules(category, ALLOW), connection())
    act(rules(category, ALLOW), connection(**{"fd.rip": "198.51.100.7"}))
    act(rules(category, ALLOW), connection(**{"fd.rip": "198.51.100.7"}))
    policy = stored(deployment_pod, category)
    assert denied(policy, category) == [f"{IP}/32", "198.51.100.7/32"]
    if category == "calico":
        assert [r["action"] for r in policy["spec"]["egress"]] == ["Deny", "Allow", "Allow"]
    else:
        assert len(policy["spec"]["egress"]) == 2  # the allow rules, once each


def test_calico_keeps_stored_deny_nets_and_rebuilds_allowances(
        act: Act, deployment_pod: FakeKubeAPI) -> None:
    act(rules("calico", ALLOW), connection())
    act(rules("calico"), connection(**{"fd.rip": "198.51.100.7"}))
    assert stored(deployment_pod, "calico")["spec"]["egress"] == [
        {"action": "Deny", "destination": {"nets": [f"{IP}/32", "198.51.100.7/32"]}},
        {"action": "Allow", "destination": {"nets": ["0.0.0.0/0"]}}]


def test_cilium_keeps_stored_rules(act: Act, deployment_pod: FakeKubeAPI) -> None:
    admin = {"toCIDR": ["192.0.2.0/24"], "toPorts": [{"ports": [{"port": "53"}]}]}
    deployment_pod.add({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                        "metadata": {"name": "web", "namespace": "shop"},
                        "spec": {"endpointSelector": {}, "egress": [admin],
                                 "egressDeny": [{"toCIDR": ["192.0.2.9/32"]}],
                                 "ingress": [{"fromEntities": ["world"]}]}})
    act(rules("cilium"), connection())
    spec = stored(deployment_pod, "cilium")["spec"]
    assert spec["egressDeny"] == [{"toCIDR": ["192.0.2.9/32"]}, {"toCIDR": [f"{IP}/32"]}]
    assert spec["egress"] == [admin, {"toCIDR": ["0.0.0.0/0"]}]
    assert "ingress" not in spec  # the policy is Talon's: its spec is rewritten


@BOTH
@pytest.mark.parametrize(("fields", "cidr"), [
    ({"fd.sip": "192.0.2.1"}, "192.0.2.1/32"),
    ({"fd.rip": "2001:DB8::1", "fd.sip": "192.0.2.1"}, "2001:db8::1/128"),
])
def test_remote_ip(act: Act, deployment_pod: FakeKubeAPI, category: str,
                   fields: dict[str, str], cidr: str) -> None:
    act(rules(category), event(**fields))
    assert denied(stored(deployment_pod, category), category) == [cidr]


@BOTH
@pytest.mark.parametrize(("fields", "error"), [
    ({}, "missing required field(s) in the event: fd.rip or fd.sip"),
    ({"fd.rip": None, "fd.sip": None},
     "missing required field(s) in the event: fd.rip or fd.sip"),
    ({"fd.rip": "example.com"}, "wrong value for fd.rip"),
    ({"fd.rip": IP, "fd.sip": "10.0.0.1/8"}, "wrong value for fd.sip"),
    ({"fd.rip": "fe80::1%eth0"}, "wrong value for fd.rip"),
])
def test_event_without_a_usable_remote_ip(act: Act, deployment_pod: FakeKubeAPI,
                                          category: str, fields: dict[str, Any],
                                          error: str) -> None:
    acted = act(rules(category), event(**fields))
    assert acted.done == [("R", "Isolate", "failure")]
    assert acted.note("Isolate").error == error
    assert deployment_pod.requests == []


@pytest.mark.parametrize(("category", "error"), [
    ("calico", "the projectcalico.org/v3 NetworkPolicy API is not served by this cluster: "
               "is Calico installed?"),
    ("cilium", "the cilium.io/v2 CiliumNetworkPolicy API is not served by this cluster: "
               "is Cilium installed?"),
])
def test_api_not_installed(act: Act, deployment_pod: FakeKubeAPI, category: str,
                           error: str) -> None:
    deployment_pod.uninstall("projectcalico.org" if category == "calico" else "cilium.io")
    acted = act(rules(category), connection())
    assert acted.done == [("R", "Isolate", "failure")]
    note = acted.note("Isolate")
    assert note.error == (f"cannot read the {WORDS[category]} 'web' in the namespace 'shop': "
                          f"{error}")
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop"}
    assert writes(deployment_pod) == []


@BOTH
def test_read_forbidden(act: Act, deployment_pod: FakeKubeAPI, category: str) -> None:
    deployment_pod.forbid("GET", f"{PATHS[category]}/web$")
    error = act(rules(category), connection()).note("Isolate").error
    assert error.startswith(f"cannot read the {WORDS[category]} 'web' in the namespace "
                            "'shop': ")
    resource = PATHS[category].rsplit("/", 1)[1]
    assert f'cannot get resource "{resource}"' in error and error.endswith("(403)")
    assert writes(deployment_pod) == []


@BOTH
def test_create_error(act: Act, deployment_pod: FakeKubeAPI, category: str) -> None:
    deployment_pod.fail("POST", f"{PATHS[category]}$", 500, message="etcd is down")
    assert act(rules(category), connection()).note("Isolate").error == (
        f"cannot create the {WORDS[category]} 'web' in the namespace 'shop': "
        "etcd is down (500)")


@BOTH
def test_api_server_gone(act: Act, deployment_pod: FakeKubeAPI, category: str) -> None:
    deployment_pod.hang_up("GET", f"{PATHS[category]}/web$")
    acted = act(rules(category), connection())
    assert acted.done == [("R", "Isolate", "failure")]
    error = acted.note("Isolate").error
    assert error.startswith(f"cannot read the {WORDS[category]} 'web' in the namespace "
                            "'shop': ")
    assert "the API server closed the connection without answering" in error  # one try
    assert len(deployment_pod.requests_for("GET", f"{PATHS[category]}/web")) == 1
    assert writes(deployment_pod) == []


def test_calico_api_server_unavailable(act: Act, deployment_pod: FakeKubeAPI) -> None:
    """What the aggregator answers while Calico's API server is down."""
    deployment_pod.fail("GET", f"{CALICO}/web$", 503, "ServiceUnavailable",
                        "the server is currently unable to handle the request")
    assert act(rules("calico"), connection()).note("Isolate").error == (
        "cannot read the caliconetworkpolicy 'web' in the namespace 'shop': the server is "
        "currently unable to handle the request (503)")


@BOTH
def test_update_conflict_is_retried_from_a_fresh_read(act: Act, deployment_pod: FakeKubeAPI,
                                                      category: str) -> None:
    act(rules(category), connection())
    deployment_pod.fail("PUT", f"{PATHS[category]}/web$", 409, message="modified")
    acted = act(rules(category), connection(**{"fd.rip": "198.51.100.7"}))
    assert acted.done == [("R", "Isolate", "success")]
    assert len(deployment_pod.requests_for("PUT")) == 2
    assert len(deployment_pod.requests_for("GET", f"{PATHS[category]}/web")) == 3
    assert denied(stored(deployment_pod, category), category) == [f"{IP}/32",
                                                                   "198.51.100.7/32"]


@BOTH
def test_second_conflict_is_a_failure(act: Act, deployment_pod: FakeKubeAPI,
                                      category: str) -> None:
    act(rules(category), connection())
    deployment_pod.fail("PUT", f"{PATHS[category]}/web$", 409, message="modified", times=2)
    acted = act(rules(category), connection())
    assert acted.done == [("R", "Isolate", "failure")]
    assert acted.note("Isolate").error == (
        f"cannot update the {WORDS[category]} 'web' in the namespace 'shop': modified (409)")


@BOTH
def test_create_race_turns_into_an_update(act: Act, deployment_pod: FakeKubeAPI,
                                          category: str) -> None:
    """Another writer created the policy between our read and our create."""
    act(rules(category), connection(**{"fd.rip": "192.0.2.1"}))
    resource = deployment_pod.resource(*KINDS[category])
    deployment_pod.fail("GET", f"{PATHS[category]}/web$", 404, "NotFound",  # the first read
                        f'{resource.qualified} "web" not found',            # misses it
                        details={"name": "web", "group": resource.group,
                                 "kind": resource.resource})
    acted = act(rules(category), connection())
    assert acted.note("Isolate").output.endswith("has been updated")
    assert [r.method for r in deployment_pod.requests_for("*", PATHS[category])] == [
        "GET", "POST", "GET", "POST", "GET", "PUT"]
    assert denied(stored(deployment_pod, category), category) == ["192.0.2.1/32", f"{IP}/32"]


@BOTH
def test_dry_run_writes_nothing(act: Act, deployment_pod: FakeKubeAPI, category: str) -> None:
    assert act(rules(category), connection(), dry_run=True).done == [
        ("R", "Isolate", "dry_run")]
    assert deployment_pod.requests == []


def test_end_to_end_without_then_with_cilium(start: Launch, kube_config: Path,
                                            deployment_pod: FakeKubeAPI) -> None:
    removed = deployment_pod.uninstall("cilium.io")
    server = start(rules("cilium", "{allow_namespaces: [dns]}"), f"kubeconfig: {kube_config}\n")
    body = {"rule": "F", "priority": "Warning", "output": "connect",
            "output_fields": {"k8s.pod.name": "web-1", "k8s.ns.name": "shop", "fd.rip": IP}}
    assert server.post(body) == 200
    server.wait_log("the cilium.io/v2 CiliumNetworkPolicy API is not served by this cluster: "
                    r"is Cilium installed\?")
    for rd in removed:
        deployment_pod.register_resource(rd.group_version, rd.resource, rd.kind,
                                         namespaced=rd.namespaced)
    assert server.post({**body, "output": "connect again"}) == 200  # not a duplicate
    server.wait_log("the ciliumnetworkpolicy 'web' in the namespace 'shop' has been created")
    assert stored(deployment_pod, "cilium")["spec"]["egress"] == [{"toEndpoints": [{
        "matchExpressions": [{"key": "k8s:io.kubernetes.pod.namespace", "operator": "In",
                              "values": ["dns"]}]}]}]
