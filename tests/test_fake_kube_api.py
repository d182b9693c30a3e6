"""The fake Kubernetes API server (tests/fakes/kube_api.py), driven by the real client.

Covers: kubeconfig + token auth (401 on a wrong token); CRUD on core, apps, batch, networking,
coordination, events and custom resources (Cilium, Calico); server-set metadata (uid,
creationTimestamp, global resourceVersion, generateName); Status bodies of 404 (object, unknown
path, API group not installed), 409 AlreadyExists/Conflict, 422 Invalid, 415; optimistic
concurrency on PUT (pods, leases, CRDs needing a resourceVersion); JSON patch (escapes,
add/remove/replace/test/move/copy, the 422 of a patch that does not apply, replace of an absent
key), merge patch, strategic merge (merge keys, $patch delete, CRD refusal); status
subresource; label and field selectors, all-namespaces lists, pagination; DELETE answers and
grace periods; pods/log with tailLines/limitBytes as exact bytes; eviction (201, 404, 429 by
marker and by PDB); ephemeral containers; exec over v5 and v4 (argv, stdin, stdout, stderr,
exit codes, missing handler, missing pod, attach); request recording; fail/forbid/delay/hang-up
fault injection; hooks.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.fakes import kube_api as fake_kube_api
from tests.fakes import kube_patch
from tests.fakes.kube_api import FakeKubeAPI, start

# The fixtures kube_api.py exports, made visible to this module (pytest looks them up here).
kube_api = fake_kube_api.kube_api
kube_config = fake_kube_api.kube_config
kube_client = fake_kube_api.kube_client

NS = "prod"


def make_pod(name: str = "web-1", *, ns: str = NS, labels: dict[str, str] | None = None,
             containers: tuple[str, ...] = ("app",), node: str = "node-1",
             phase: str = "Running") -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": c, "image": "nginx"}
                                                  for c in containers]},
        "status": {"phase": phase},
    }


@pytest.fixture
def fake() -> Iterator[FakeKubeAPI]:
    with start() as server:
        yield server
    assert server.errors == []


@pytest.fixture
def k8s(fake: FakeKubeAPI, tmp_path: Path) -> Iterator[SimpleNamespace]:
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException
    from kubernetes.stream import stream

    api = config.new_client_from_config(config_file=str(fake.kubeconfig(tmp_path / "kc")))
    yield SimpleNamespace(
        core=client.CoreV1Api(api), apps=client.AppsV1Api(api), batch=client.BatchV1Api(api),
        net=client.NetworkingV1Api(api), coord=client.CoordinationV1Api(api),
        events=client.EventsV1Api(api), custom=client.CustomObjectsApi(api),
        client=client, ApiException=ApiException, stream=stream)
    api.close()
    api.rest_client.pool_manager.clear()


def failure(k8s: SimpleNamespace, call: Callable[..., Any], *args: Any,
            **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """Run a client call that must fail; return the HTTP status and the Status body."""
    with pytest.raises(k8s.ApiException) as info:
        call(*args, **kwargs)
    return info.value.status, json.loads(info.value.body)


def finish(ws: Any) -> None:
    """Close an exec stream. When the server closed first, websocket-client marks itself
    disconnected and its close() no longer closes the socket: shut it down explicitly."""
    ws.close()
    ws.sock.shutdown()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        pause.wait(0.01)


# --- connection, CRUD, metadata --------------------------------------------------------------


def test_exported_fixtures_give_a_working_client(kube_api: FakeKubeAPI,
                                                 kube_client: Any) -> None:
    from kubernetes import client

    kube_api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}})
    names = [n.metadata.name for n in client.CoreV1Api(kube_client).list_namespace().items]
    assert names == ["prod"]


def test_wrong_token_is_unauthorized(fake: FakeKubeAPI, k8s: SimpleNamespace,
                                     tmp_path: Path) -> None:
    fake.token = "another-token"
    status, body = failure(k8s, k8s.core.list_namespace)
    assert status == 401
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


def test_create_sets_server_fields_and_resets_pod_status(fake: FakeKubeAPI,
                                                         k8s: SimpleNamespace) -> None:
    body = make_pod()
    created = k8s.core.create_namespaced_pod(NS, body)
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    assert created.status.phase == "Pending"
    stored = fake.get("Pod", NS, "web-1")
    assert stored is not None
    assert stored["metadata"]["resourceVersion"] == created.metadata.resource_version
    assert stored["apiVersion"] == "v1" and stored["kind"] == "Pod"


def test_resource_version_is_one_global_counter(fake: FakeKubeAPI,
                                                k8s: SimpleNamespace) -> None:
    first = k8s.core.create_namespaced_config_map(NS, {"metadata": {"name": "a"}})
    second = k8s.core.create_namespaced_secret(NS, {"metadata": {"name": "b"}})
    patched = k8s.core.patch_namespaced_config_map("a", NS, {"data": {"k": "v"}})
    versions = [int(o.metadata.resource_version) for o in (first, second, patched)]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert patched.metadata.uid == first.metadata.uid



def test_a_write_that_changes_nothing_keeps_the_resource_version(
        fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    created = fake.add(make_pod(labels={"app": "web"}))
    same = k8s.core.patch_namespaced_pod(
        "web-1", NS, {"metadata": {"labels": {"app": "web", "gone": None}}},
        _content_type="application/merge-patch+json")
    assert same.metadata.resource_version == created["metadata"]["resourceVersion"]
    changed = k8s.core.patch_namespaced_pod(
        "web-1", NS, {"metadata": {"labels": {"app": "shop"}}},
        _content_type="application/merge-patch+json")
    assert int(changed.metadata.resource_version) > int(created["metadata"]["resourceVersion"])

def test_generate_name_appends_five_lowercase_alphanumerics(k8s: SimpleNamespace) -> None:
    job = k8s.batch.create_namespaced_job(NS, {
        "metadata": {"generateName": "falco-talon-sysdig-"},
        "spec": {"template": {"spec": {"containers": []}}}})
    suffix = job.metadata.name.removeprefix("falco-talon-sysdig-")
    assert len(suffix) == 5 and suffix.isalnum() and suffix == suffix.lower()


def test_create_twice_is_409_already_exists(k8s: SimpleNamespace) -> None:
    k8s.core.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}})
    status, body = failure(k8s, k8s.core.create_namespaced_config_map, NS,
                           {"metadata": {"name": "cm"}})
    assert status == 409
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'configmaps "cm" already exists'
    assert body["details"] == {"name": "cm", "kind": "configmaps"}


def test_missing_object_is_the_servers_404_status(k8s: SimpleNamespace) -> None:
    status, body = failure(k8s, k8s.core.read_namespaced_pod, "x", NS)
    assert status == 404
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": 'pods "x" not found', "reason": "NotFound",
                    "details": {"name": "x", "kind": "pods"}, "code": 404}
    _, body = failure(k8s, k8s.apps.read_namespaced_deployment, "api", NS)
    assert body["message"] == 'deployments.apps "api" not found'
    assert body["details"] == {"name": "api", "group": "apps", "kind": "deployments"}


def test_unknown_resource_path_is_a_generic_404(k8s: SimpleNamespace) -> None:
    status, body = failure(k8s, k8s.custom.list_namespaced_custom_object,
                           "example.com", "v1", NS, "widgets")
    assert status == 404
    assert body["message"] == "the server could not find the requested resource"
    assert body["details"] == {}


def test_missing_name_is_422_invalid(k8s: SimpleNamespace) -> None:
    status, body = failure(k8s, k8s.core.create_namespaced_config_map, NS, {"metadata": {}})
    assert status == 422
    assert body["reason"] == "Invalid"
    assert body["message"] == ('ConfigMap "" is invalid: metadata.name: Required value: name '
                               "or generateName is required")


def test_namespace_mismatch_is_400(k8s: SimpleNamespace) -> None:
    status, body = failure(k8s, k8s.core.create_namespaced_config_map, NS,
                           {"metadata": {"name": "a", "namespace": "other"}})
    assert status == 400
    assert body["reason"] == "BadRequest"


def test_required_namespaces_are_checked_when_asked(k8s: SimpleNamespace,
                                                    fake: FakeKubeAPI) -> None:
    fake.store.require_namespaces = True
    status, body = failure(k8s, k8s.core.create_namespaced_config_map, NS,
                           {"metadata": {"name": "a"}})
    assert (status, body["message"]) == (404, 'namespaces "prod" not found')
    fake.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    assert k8s.core.create_namespaced_config_map(NS, {"metadata": {"name": "a"}})


# --- updates and concurrency ----------------------------------------------------------------


def test_put_with_stale_resource_version_is_409_conflict(fake: FakeKubeAPI,
                                                         k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    current = k8s.core.read_namespaced_pod("web-1", NS)
    current.metadata.labels["v"] = "1"
    k8s.core.replace_namespaced_pod("web-1", NS, current)
    current.metadata.labels["v"] = "2"
    status, body = failure(k8s, k8s.core.replace_namespaced_pod, "web-1", NS, current)
    assert status == 409
    assert body["reason"] == "Conflict"
    assert body["message"] == ('Operation cannot be fulfilled on pods "web-1": the object has '
                               "been modified; please apply your changes to the latest version "
                               "and try again")


def test_put_keeps_status_and_allows_unconditional_update_of_pods(
        fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    body = make_pod()
    body["status"] = {"phase": "Failed"}
    body["metadata"]["labels"] = {"quarantine": "true"}
    updated = k8s.core.replace_namespaced_pod("web-1", NS, body)
    assert updated.status.phase == "Running"
    assert updated.metadata.labels == {"quarantine": "true"}


def test_put_of_missing_object_is_404(k8s: SimpleNamespace) -> None:
    status, _ = failure(k8s, k8s.core.replace_namespaced_config_map, "nope", NS,
                        {"metadata": {"name": "nope"}})
    assert status == 404


def test_status_subresource_changes_only_status(fake: FakeKubeAPI,
                                                k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    patched = k8s.core.patch_namespaced_pod_status(
        "web-1", NS, {"status": {"phase": "Succeeded"}, "metadata": {"labels": {"x": "y"}}})
    assert patched.status.phase == "Succeeded"
    assert patched.metadata.labels == {"app": "web"}


def test_lease_updates_are_resource_version_checked(k8s: SimpleNamespace) -> None:
    body = {"metadata": {"name": "falco-talon"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
    lease = k8s.coord.create_namespaced_lease(NS, body)
    stale_version = lease.metadata.resource_version
    lease.spec.holder_identity = "b"
    renewed = k8s.coord.replace_namespaced_lease("falco-talon", NS, lease)
    assert renewed.spec.holder_identity == "b"
    lease.metadata.resource_version = stale_version
    status, body = failure(k8s, k8s.coord.replace_namespaced_lease, "falco-talon", NS, lease)
    assert (status, body["reason"]) == (409, "Conflict")
    assert body["details"] == {"name": "falco-talon", "group": "coordination.k8s.io",
                               "kind": "leases"}


def test_custom_resource_put_needs_a_resource_version(k8s: SimpleNamespace) -> None:
    group, version, plural = "cilium.io", "v2", "ciliumnetworkpolicies"
    body = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "web"}, "spec": {"endpointSelector": {}}}
    created = k8s.custom.create_namespaced_custom_object(group, version, NS, plural, body)
    status, err = failure(k8s, k8s.custom.replace_namespaced_custom_object, group, version, NS,
                          plural, "web", body)
    assert status == 422
    assert err["message"] == ('CiliumNetworkPolicy.cilium.io "web" is invalid: '
                              "metadata.resourceVersion: Invalid value: 0x0: must be specified "
                              "for an update")
    body["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    body["spec"]["egressDeny"] = [{"toCIDR": ["10.0.0.1/32"]}]
    updated = k8s.custom.replace_namespaced_custom_object(group, version, NS, plural, "web",
                                                          body)
    assert updated["spec"]["egressDeny"] == [{"toCIDR": ["10.0.0.1/32"]}]


def test_uninstalled_group_answers_the_generic_404(fake: FakeKubeAPI,
                                                  k8s: SimpleNamespace) -> None:
    group, version, plural = "cilium.io", "v2", "ciliumnetworkpolicies"
    body = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "web"}, "spec": {}}
    k8s.custom.create_namespaced_custom_object(group, version, NS, plural, body)
    removed = fake.uninstall("cilium.io")
    assert {rd.resource for rd in removed} == {plural, "ciliumclusterwidenetworkpolicies"}
    generic = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "the server could not find the requested resource",
               "reason": "NotFound", "details": {}, "code": 404}
    for call, args in ((k8s.custom.get_namespaced_custom_object, ("web",)),
                       (k8s.custom.create_namespaced_custom_object, (body,)),
                       (k8s.custom.replace_namespaced_custom_object, ("web", body))):
        assert failure(k8s, call, group, version, NS, plural, *args) == (404, generic)
    calico = k8s.custom.list_namespaced_custom_object("projectcalico.org", "v3", NS,
                                                      "networkpolicies")
    assert calico["items"] == []  # other groups are still served
    fake.register_resource("cilium.io/v2", plural, "CiliumNetworkPolicy")
    assert k8s.custom.get_namespaced_custom_object(group, version, NS, plural,
                                                   "web")["metadata"]["name"] == "web"
    with pytest.raises(KeyError):
        fake.uninstall("example.com")


def test_calico_network_policy_is_distinct_from_the_kubernetes_one(
        fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    calico = {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
              "metadata": {"name": "web"}, "spec": {"types": ["Egress"], "order": 0.0}}
    k8s.custom.create_namespaced_custom_object("projectcalico.org", "v3", NS,
                                               "networkpolicies", calico)
    k8s.net.create_namespaced_network_policy(NS, {"metadata": {"name": "web"},
                                                  "spec": {"podSelector": {}}})
    assert fake.get("networkpolicies.projectcalico.org", NS, "web")["spec"]["order"] == 0.0
    assert fake.get("NetworkPolicy", NS, "web")["apiVersion"] == "networking.k8s.io/v1"
    listed = k8s.custom.list_namespaced_custom_object("projectcalico.org", "v3", NS,
                                                      "networkpolicies")
    assert listed["kind"] == "NetworkPolicyList"
    assert listed["items"][0]["kind"] == "NetworkPolicy"


def test_network_policy_create_then_update(k8s: SimpleNamespace) -> None:
    body = {"metadata": {"name": "web", "labels": {"app.k8s.io/managed-by": "falco-talon"}},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                     "policyTypes": ["Egress"]}}
    k8s.net.create_namespaced_network_policy(NS, body)
    body["spec"]["egress"] = [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]
    updated = k8s.net.replace_namespaced_network_policy("web", NS, body)
    assert updated.spec.egress[0].to[0].ip_block.cidr == "10.0.0.0/8"


# --- patches ----------------------------------------------------------------------------------


def test_json_patch_replace_with_escaped_keys(fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    patched = k8s.core.patch_namespaced_pod("web-1", NS, [
        {"op": "replace", "path": "/metadata/labels/falco.org~1suspicious", "value": "true"},
        {"op": "replace", "path": "/metadata/labels/app", "value": "api"},
        {"op": "add", "path": "/metadata/labels/til~0de", "value": "x"}])
    assert patched.metadata.labels == {"app": "api", "falco.org/suspicious": "true",
                                       "til~de": "x"}
    sent = fake.requests_for("PATCH", f"/api/v1/namespaces/{NS}/pods/web-1")[-1]
    assert sent.content_type == "application/json-patch+json"
    assert sent.body[0]["path"] == "/metadata/labels/falco.org~1suspicious"


def test_json_patch_that_does_not_apply_is_the_generic_422(fake: FakeKubeAPI,
                                                           k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    for operation in ({"op": "remove", "path": "/metadata/labels/absent"},
                      {"op": "replace", "path": "/metadata/annotations/a", "value": "b"},
                      {"op": "test", "path": "/metadata/labels/app", "value": "other"}):
        status, body = failure(k8s, k8s.core.patch_namespaced_pod, "web-1", NS, [operation])
        assert status == 422
        assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "message": "the server rejected our request due "
                        "to an error in our request", "reason": "Invalid", "details": {},
                        "code": 422}
    assert fake.get("Pod", NS, "web-1")["metadata"]["labels"] == {"app": "web"}


def test_node_cordon_patch_on_a_node_seeded_without_spec(fake: FakeKubeAPI,
                                                         k8s: SimpleNamespace) -> None:
    fake.add({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}})
    node = k8s.core.patch_node("node-1", [{"op": "replace", "path": "/spec/unschedulable",
                                           "value": True}])
    assert node.spec.unschedulable is True
    assert fake.list("nodes", field_selector="spec.unschedulable=true")[0]["metadata"][
        "name"] == "node-1"


def test_merge_patch_deletes_with_null(fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    fake.add(make_pod(labels={"app": "web", "tier": "front"}))
    patched = k8s.core.patch_namespaced_pod(
        "web-1", NS, {"metadata": {"labels": {"tier": None, "new": "1"}}},
        _content_type="application/merge-patch+json")
    assert patched.metadata.labels == {"app": "web", "new": "1"}
    assert fake.requests[-1].content_type == "application/merge-patch+json"


def test_merge_patch_of_a_custom_object(k8s: SimpleNamespace) -> None:
    body = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "web"}, "spec": {"egress": [{"toCIDR": ["0.0.0.0/0"]}]}}
    k8s.custom.create_namespaced_custom_object("cilium.io", "v2", NS,
                                               "ciliumnetworkpolicies", body)
    patched = k8s.custom.patch_namespaced_custom_object(
        "cilium.io", "v2", NS, "ciliumnetworkpolicies", "web",
        {"spec": {"egressDeny": [{"toCIDR": ["1.2.3.4/32"]}]}})
    assert patched["spec"] == {"egress": [{"toCIDR": ["0.0.0.0/0"]}],
                               "egressDeny": [{"toCIDR": ["1.2.3.4/32"]}]}


def test_strategic_merge_on_custom_resources_is_415(k8s: SimpleNamespace) -> None:
    body = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "web"}, "spec": {}}
    k8s.custom.create_namespaced_custom_object("cilium.io", "v2", NS,
                                               "ciliumnetworkpolicies", body)
    status, err = failure(k8s, k8s.custom.patch_namespaced_custom_object, "cilium.io", "v2", NS,
                          "ciliumnetworkpolicies", "web", {"spec": {}},
                          _content_type="application/strategic-merge-patch+json")
    assert (status, err["reason"]) == (415, "UnsupportedMediaType")


def test_strategic_merge_merges_containers_env_and_conditions(fake: FakeKubeAPI,
                                                              k8s: SimpleNamespace) -> None:
    fake.add({"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "api", "namespace": NS},
              "spec": {"selector": {"matchLabels": {"app": "api"}},
                       "template": {"spec": {"containers": [
                  {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}]},
                  {"name": "side", "image": "s:1"}]}}, "strategy": {"type": "Recreate"}},
              "status": {"conditions": [{"type": "Available", "status": "True"},
                                        {"type": "Progressing", "status": "True"}]}})
    patched = k8s.apps.patch_namespaced_deployment("api", NS, {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "env": [{"name": "B", "value": "2"}]},
                       {"name": "side", "$patch": "delete"},
                       {"name": "new", "image": "n:1"}]}}}})
    containers = patched.spec.template.spec.containers
    assert [c.name for c in containers] == ["app", "new"]
    assert containers[0].image == "a:1"
    assert [(e.name, e.value) for e in containers[0].env] == [("A", "1"), ("B", "2")]
    assert fake.requests[-1].content_type == "application/strategic-merge-patch+json"
    status = k8s.apps.patch_namespaced_deployment_status("api", NS, {"status": {"conditions": [
        {"type": "Available", "status": "False"}]}})
    assert [(c.type, c.status) for c in status.status.conditions] == [
        ("Available", "False"), ("Progressing", "True")]


def test_json_patch_library_semantics() -> None:
    doc = {"a": {"b": [1, 2]}, "k": "v"}
    assert kube_patch.json_patch(doc, [{"op": "move", "from": "/k", "path": "/a/m"}]) == {
        "a": {"b": [1, 2], "m": "v"}}
    assert kube_patch.json_patch(doc, [{"op": "copy", "from": "/a/b/0", "path": "/a/b/-"}]) == {
        "a": {"b": [1, 2, 1]}, "k": "v"}
    assert kube_patch.json_patch(doc, [{"op": "replace", "path": "/a/new", "value": 3}])["a"][
        "new"] == 3
    assert kube_patch.json_patch(doc, [{"op": "add", "path": "/a/b/1", "value": 9}])["a"][
        "b"] == [1, 9, 2]
    assert kube_patch.json_patch(doc, [{"op": "test", "path": "/k", "value": "v"}]) == doc
    assert kube_patch.pointer_tokens("/a~1b/c~0d/~01") == ["a/b", "c~d", "~1"]
    for bad in ({"op": "remove", "path": "/a/b/5"}, {"op": "add", "path": "/x/y", "value": 1},
                {"op": "replace", "path": "/a/b/2", "value": 1}, {"op": "jump", "path": "/a"}):
        with pytest.raises(kube_patch.PatchError):
            kube_patch.json_patch(doc, [bad])
    assert doc == {"a": {"b": [1, 2]}, "k": "v"}


def test_strategic_merge_directives() -> None:
    doc = {"metadata": {"finalizers": ["a"]}, "spec": {"tolerations": [{"key": "x"}],
                                                       "volumes": [{"name": "v", "x": 1}]}}
    merged = kube_patch.strategic_merge_patch(doc, {
        "metadata": {"finalizers": ["b"]},
        "spec": {"tolerations": [{"key": "y"}], "$setElementOrder/volumes": [{"name": "v"}],
                 "volumes": [{"$patch": "replace"}, {"name": "w"}]}})
    assert merged == {"metadata": {"finalizers": ["a", "b"]},
                      "spec": {"tolerations": [{"key": "y"}], "volumes": [{"name": "w"}]}}
    assert kube_patch.merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None}, "d": [1]}) == {
        "a": {"c": 2}, "d": [1]}


# --- lists and selectors ---------------------------------------------------------------------


@pytest.fixture
def pods(fake: FakeKubeAPI) -> None:
    fake.add(make_pod("a", labels={"app": "web", "tier": "front"}, node="n1"))
    fake.add(make_pod("b", labels={"app": "web", "tier": "back"}, node="n2", phase="Pending"))
    fake.add(make_pod("c", labels={"app": "db", "release": "3"}, node="n1"))
    fake.add(make_pod("d", ns="kube-system", labels={"app": "dns"}, node="n1"))


@pytest.mark.usefixtures("pods")
@pytest.mark.parametrize(("selector", "expected"), [
    ("app=web", ["a", "b"]), ("app==web,tier!=front", ["b"]), ("tier!=front", ["b", "c"]),
    ("app in (web, db)", ["a", "b", "c"]), ("app notin (web)", ["c"]), ("tier", ["a", "b"]),
    ("!tier", ["c"]), ("release>2", ["c"]), ("release<3", []),
])
def test_label_selectors(k8s: SimpleNamespace, selector: str, expected: list[str]) -> None:
    listed = k8s.core.list_namespaced_pod(NS, label_selector=selector)
    assert [p.metadata.name for p in listed.items] == expected


@pytest.mark.usefixtures("pods")
def test_field_selectors_and_all_namespaces(k8s: SimpleNamespace) -> None:
    on_n1 = k8s.core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1")
    assert [(p.metadata.namespace, p.metadata.name) for p in on_n1.items] == [
        ("kube-system", "d"), (NS, "a"), (NS, "c")]
    assert on_n1.kind == "PodList" and on_n1.items[0].kind is None
    pending = k8s.core.list_namespaced_pod(NS, field_selector="status.phase!=Running")
    assert [p.metadata.name for p in pending.items] == ["b"]
    named = k8s.core.list_pod_for_all_namespaces(field_selector="metadata.name=c,"
                                                 "metadata.namespace=prod")
    assert [p.metadata.name for p in named.items] == ["c"]
    status, body = failure(k8s, k8s.core.list_namespaced_pod, NS, field_selector="spec.foo=1")
    assert (status, body["message"]) == (400, "field label not supported: spec.foo")


@pytest.mark.usefixtures("pods")
def test_pagination_with_limit_and_continue(k8s: SimpleNamespace) -> None:
    first = k8s.core.list_pod_for_all_namespaces(limit=3)
    assert len(first.items) == 3 and first.metadata.remaining_item_count == 1
    rest = k8s.core.list_pod_for_all_namespaces(limit=3, _continue=first.metadata._continue)
    assert [p.metadata.name for p in rest.items] == ["c"] and rest.metadata._continue is None


# --- deletes ---------------------------------------------------------------------------------


def test_delete_pod_returns_it_and_records_the_grace_period(fake: FakeKubeAPI,
                                                            k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    deleted = k8s.core.delete_namespaced_pod("web-1", NS, grace_period_seconds=0)
    assert deleted.metadata.name == "web-1" and deleted.metadata.deletion_timestamp is None
    assert fake.get("Pod", NS, "web-1") is None
    assert fake.deletions[-1].grace_period_seconds == 0
    fake.add(make_pod())
    graceful = k8s.core.delete_namespaced_pod("web-1", NS)
    assert graceful.metadata.deletion_grace_period_seconds == 30


@pytest.mark.parametrize(("kind", "api_version", "call", "args"), [
    ("ConfigMap", "v1", "core.delete_namespaced_config_map", ("x", NS)),
    ("Secret", "v1", "core.delete_namespaced_secret", ("x", NS)),
    ("Deployment", "apps/v1", "apps.delete_namespaced_deployment", ("x", NS)),
    ("DaemonSet", "apps/v1", "apps.delete_namespaced_daemon_set", ("x", NS)),
    ("StatefulSet", "apps/v1", "apps.delete_namespaced_stateful_set", ("x", NS)),
    ("ReplicaSet", "apps/v1", "apps.delete_namespaced_replica_set", ("x", NS)),
    ("Role", "rbac.authorization.k8s.io/v1", "rbac.delete_namespaced_role", ("x", NS)),
    ("ClusterRole", "rbac.authorization.k8s.io/v1", "rbac.delete_cluster_role", ("x",)),
])
def test_deletes_answer_a_success_status(fake: FakeKubeAPI, k8s: SimpleNamespace, kind: str,
                                         api_version: str, call: str,
                                         args: tuple[str, ...]) -> None:
    k8s.rbac = k8s.client.RbacAuthorizationV1Api(k8s.core.api_client)
    seeded = fake.add({"apiVersion": api_version, "kind": kind,
                       "metadata": {"name": "x", "namespace": NS}})
    group, method = call.split(".")
    answer = getattr(getattr(k8s, group), method)(*args)
    assert answer.status == "Success"
    assert answer.details.uid == seeded["metadata"]["uid"]
    assert fake.get(kind, NS, "x") is None
    status, _ = failure(k8s, getattr(getattr(k8s, group), method), *args)
    assert status == 404


def test_some_deletes_answer_the_object(fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    fake.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "evil"}})
    fake.add({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": NS}})
    fake.add({"apiVersion": "v1", "kind": "ServiceAccount",
              "metadata": {"name": "sa", "namespace": NS}})
    # The client types a namespace delete as V1Status although the server sends the Namespace.
    raw = k8s.core.delete_namespace("evil", _preload_content=False)
    namespace = json.loads(raw.data)
    assert (namespace["kind"], namespace["status"]["phase"]) == ("Namespace", "Terminating")
    assert k8s.core.delete_namespaced_service("s", NS).metadata.name == "s"
    assert k8s.core.delete_namespaced_service_account("sa", NS).metadata.name == "sa"
    assert [d.resource for d in fake.deletions] == ["namespaces", "services", "serviceaccounts"]


def test_delete_custom_object_and_precondition_conflict(fake: FakeKubeAPI,
                                                        k8s: SimpleNamespace) -> None:
    fake.add({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
              "metadata": {"name": "web", "namespace": NS}})
    status, body = failure(k8s, k8s.custom.delete_namespaced_custom_object, "cilium.io", "v2",
                           NS, "ciliumnetworkpolicies", "web",
                           body={"preconditions": {"uid": "other"}})
    assert (status, body["reason"]) == (409, "Conflict")
    answer = k8s.custom.delete_namespaced_custom_object("cilium.io", "v2", NS,
                                                        "ciliumnetworkpolicies", "web")
    assert answer["status"] == "Success"


def test_registered_resource_and_delete_collection(fake: FakeKubeAPI,
                                                   k8s: SimpleNamespace) -> None:
    fake.register_resource("example.com/v1", "widgets", "Widget")
    for name, team in (("a", "red"), ("b", "blue"), ("c", "red")):
        fake.add({"apiVersion": "example.com/v1", "kind": "Widget",
                  "metadata": {"name": name, "namespace": NS, "labels": {"team": team}}})
    k8s.custom.delete_collection_namespaced_custom_object("example.com", "v1", NS, "widgets",
                                                          label_selector="team=red")
    assert [w["metadata"]["name"] for w in fake.list("widgets", NS)] == ["b"]
    assert [d.name for d in fake.deletions] == ["a", "c"]
    assert fake.remove("Widget", NS, "b") and not fake.remove("Widget", NS, "b")


def test_dry_run_does_not_persist(fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    k8s.core.create_namespaced_config_map(NS, {"metadata": {"name": "a"}}, dry_run="All")
    assert fake.get("configmaps", NS, "a") is None


# --- pod subresources -------------------------------------------------------------------------


def test_logs_tail_lines_exact_bytes(fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    fake.add(make_pod(containers=("app", "side")))
    fake.set_pod_logs(NS, "web-1", "app", "one\ntwo\nthree\nfour")
    fake.set_pod_logs(NS, "web-1", "side", b"\xff\xfebinary\n")
    response = k8s.core.read_namespaced_pod_log("web-1", NS, container="app", tail_lines=2,
                                                _preload_content=False)
    assert response.data == b"three\nfour"
    assert response.headers["Content-Type"] == "text/plain"
    side = k8s.core.read_namespaced_pod_log("web-1", NS, container="side",
                                            _preload_content=False)
    assert side.data == b"\xff\xfebinary\n"
    limited = k8s.core.read_namespaced_pod_log("web-1", NS, container="app", limit_bytes=5,
                                               _preload_content=False)
    assert limited.data == b"one\nt"
    assert fake.requests[-1].param("limitBytes") == "5"


def test_logs_container_rules(fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    fake.add(make_pod(containers=("app", "side")))
    status, body = failure(k8s, k8s.core.read_namespaced_pod_log, "web-1", NS)
    assert status == 400
    assert body["message"] == ("a container name must be specified for pod web-1, choose one "
                               "of: [app side]")
    _, body = failure(k8s, k8s.core.read_namespaced_pod_log, "web-1", NS, container="nope")
    assert body["message"] == "container nope is not valid for pod web-1"
    assert k8s.core.read_namespaced_pod_log("web-1", NS, container="side",
                                            _preload_content=False).data == b""


def test_eviction_deletes_the_pod(fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    body = k8s.client.V1Eviction(
        api_version="policy/v1", kind="Eviction",
        metadata=k8s.client.V1ObjectMeta(name="web-1", namespace=NS),
        delete_options=k8s.client.V1DeleteOptions(grace_period_seconds=5))
    k8s.core.create_namespaced_pod_eviction("web-1", NS, body)
    assert fake.get("Pod", NS, "web-1") is None
    assert [(e.pod, e.grace_period_seconds) for e in fake.evictions] == [("web-1", 5)]
    sent = fake.requests_for("POST", f"/api/v1/namespaces/{NS}/pods/web-1/eviction")[0]
    assert sent.body["apiVersion"] == "policy/v1" and sent.body["kind"] == "Eviction"
    status, _ = failure(k8s, k8s.core.create_namespaced_pod_eviction, "web-1", NS, body)
    assert status == 404


def test_eviction_blocked_by_marker_then_allowed(fake: FakeKubeAPI,
                                                 k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    fake.block_eviction(NS, "web-1", pdb="web-pdb", times=1)
    body = {"metadata": {"name": "web-1", "namespace": NS}}
    status, err = failure(k8s, k8s.core.create_namespaced_pod_eviction, "web-1", NS, body)
    assert status == 429
    assert err == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "Cannot evict pod as it would violate the pod's disruption "
                              "budget.", "reason": "TooManyRequests",
                   "details": {"causes": [{"reason": "DisruptionBudget", "message":
                               "The disruption budget web-pdb needs 1 healthy pods and has 1 "
                               "currently"}]}, "code": 429}
    k8s.core.create_namespaced_pod_eviction("web-1", NS, body)
    assert fake.get("Pod", NS, "web-1") is None


def test_eviction_honours_pod_disruption_budgets(fake: FakeKubeAPI,
                                                 k8s: SimpleNamespace) -> None:
    fake.add(make_pod("a"))
    fake.add(make_pod("b"))
    fake.add({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
              "metadata": {"name": "web", "namespace": NS},
              "spec": {"selector": {"matchLabels": {"app": "web"}}},
              "status": {"disruptionsAllowed": 1, "desiredHealthy": 1, "currentHealthy": 2}})
    k8s.core.create_namespaced_pod_eviction("a", NS, {"metadata": {"name": "a"}})
    status, err = failure(k8s, k8s.core.create_namespaced_pod_eviction, "b", NS,
                          {"metadata": {"name": "b"}})
    assert status == 429
    assert err["details"]["causes"][0]["message"] == ("The disruption budget web needs 1 "
                                                      "healthy pods and has 2 currently")


def test_ephemeral_container_is_added_and_reported_running(fake: FakeKubeAPI,
                                                           k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    debug = {"name": "falco-talon-tcpdump-1a2b3", "image": "issif/tcpdump:latest",
             "command": ["sleep", "60"], "targetContainerName": "app", "stdin": True}
    patched = k8s.core.patch_namespaced_pod_ephemeralcontainers(
        "web-1", NS, {"spec": {"ephemeralContainers": [debug]}})
    assert [c.name for c in patched.spec.ephemeral_containers] == [debug["name"]]
    assert fake.requests[-1].content_type == "application/strategic-merge-patch+json"
    pod = k8s.core.read_namespaced_pod_ephemeralcontainers("web-1", NS)
    state = pod.status.ephemeral_container_statuses[0].state
    assert state.running is not None
    status, body = failure(k8s, k8s.core.patch_namespaced_pod_ephemeralcontainers, "web-1", NS,
                           [{"op": "remove", "path": "/spec/ephemeralContainers/0"}])
    assert status == 422
    assert body["message"] == ('Pod "web-1" is invalid: spec.ephemeralContainers: Forbidden: '
                               'existing ephemeral containers "falco-talon-tcpdump-1a2b3" may '
                               "not be removed")


# --- exec and attach ---------------------------------------------------------------------------


def test_exec_surfaces_stdout_stderr_and_exit_code(fake: FakeKubeAPI,
                                                   k8s: SimpleNamespace) -> None:
    fake.add(make_pod(containers=("app", "side")))
    fake.on_exec(lambda ns, pod, container, argv, stdin: (2, b"out\n", "err\n"))
    ws = k8s.stream(k8s.core.connect_get_namespaced_pod_exec, "web-1", NS,
                    command=["/bin/sh", "-c", "echo $HOME; exit 2"], container="side",
                    stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False)
    try:
        ws.run_forever(timeout=5)
        assert ws.subprotocol == "v5.channel.k8s.io"
        assert (ws.read_stdout(), ws.read_stderr()) == ("out\n", "err\n")
        assert ws.returncode == 2
    finally:
        finish(ws)
    call = fake.execs[-1]
    assert (call.namespace, call.pod, call.container) == (NS, "web-1", "side")
    assert call.argv == ["/bin/sh", "-c", "echo $HOME; exit 2"]
    assert call.status["details"] == {"causes": [{"reason": "ExitCode", "message": "2"}]}


def test_exec_with_stdin_closed_by_the_v5_signal(fake: FakeKubeAPI,
                                                 k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    fake.on_exec(lambda ns, pod, container, argv, stdin: (0, stdin.upper(), b""))
    ws = k8s.stream(k8s.core.connect_get_namespaced_pod_exec, "web-1", NS,
                    command=["tee", "/tmp/talon-script.sh"], stdin=True, stdout=True,
                    stderr=True, tty=False, _preload_content=False)
    try:
        ws.write_stdin("echo hi\n")
        ws.write_stdin(b"\x00binary")
        ws.close_channel(0)
        ws.run_forever(timeout=5)
        assert ws.read_stdout() == "ECHO HI\n\x00BINARY"
        assert ws.returncode == 0
    finally:
        finish(ws)
    call = fake.execs[-1]
    assert call.stdin == b"echo hi\n\x00binary"
    assert call.stdin_closed_by == "signal"
    assert call.argv == ["tee", "/tmp/talon-script.sh"]


def test_exec_large_binary_stdin_and_output_with_resize(fake: FakeKubeAPI,
                                                        k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    fake.on_exec(lambda ns, pod, container, argv, stdin: (0, stdin[::-1], b""))
    payload = bytes(range(256)) * 400  # 100 KiB: 64-bit frame lengths, several output frames
    ws = k8s.stream(k8s.core.connect_get_namespaced_pod_exec, "web-1", NS, command=["rev"],
                    stdin=True, stdout=True, stderr=True, tty=False, binary=True,
                    _preload_content=False)
    try:
        ws.write_channel(4, json.dumps({"Width": 80, "Height": 24}))
        ws.write_stdin(payload[:70000])
        ws.write_stdin(payload[70000:])
        ws.close_channel(0)
        ws.run_forever(timeout=5)
        assert ws.read_stdout() == payload[::-1]
    finally:
        finish(ws)
    assert fake.execs[-1].stdin == payload
    assert fake.execs[-1].resizes == [{"Width": 80, "Height": 24}]


def test_exec_with_an_unsupported_subprotocol_is_refused(fake: FakeKubeAPI,
                                                         k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    with pytest.raises(AttributeError) as refused:
        k8s.stream(k8s.core.connect_get_namespaced_pod_exec, "web-1", NS, command=["ls"],
                   stdout=True, _preload_content=False,
                   _headers={"sec-websocket-protocol": "channel.k8s.io"})
    assert "Handshake status 403" in refused.value.__context__.reason
    assert fake.execs == []


def test_exec_over_v4_ends_stdin_only_when_the_socket_closes(
        fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    fake.on_exec(lambda ns, pod, container, argv, stdin: (0, b"ignored", b""), argv0="cat")
    ws = k8s.stream(k8s.core.connect_get_namespaced_pod_exec, "web-1", NS, command=["cat"],
                    stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False,
                    _headers={"sec-websocket-protocol": "v4.channel.k8s.io"})
    assert ws.subprotocol == "v4.channel.k8s.io"
    ws.write_stdin("data")
    ws.close_channel(0)  # a no-op on v4
    finish(ws)
    wait_for(lambda: len(fake.execs) == 1)
    assert fake.execs[0].stdin == b"data"
    assert fake.execs[0].stdin_closed_by == "close"


def test_exec_preloaded_output_and_tty(fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    fake.on_exec(lambda ns, pod, container, argv, stdin: (0, "a", "b"), wait_stdin=False)
    ws = k8s.stream(k8s.core.connect_get_namespaced_pod_exec, "web-1", NS, command=["id"],
                    stdin=True, stdout=True, stderr=False, tty=True, _preload_content=False)
    try:
        ws.run_forever(timeout=5)
        assert ws.read_all() == "ab"
    finally:
        finish(ws)
    assert fake.execs[-1].tty is True


def test_exec_without_handler_is_an_internal_error(fake: FakeKubeAPI,
                                                   k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    ws = k8s.stream(k8s.core.connect_get_namespaced_pod_exec, "web-1", NS,
                    command=["tcpdump", "-i", "any"], stdout=True, stderr=True, stdin=False,
                    tty=False, _preload_content=False)
    try:
        ws.run_forever(timeout=5)
        status = json.loads(ws.read_channel(3))
    finally:
        finish(ws)
    assert status["reason"] == "InternalError"
    assert 'exec: "tcpdump": executable file not found in $PATH' in status["message"]
    assert fake.execs[-1].exit_code is None


def test_exec_before_upgrade_errors(fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    fake.add(make_pod(containers=("app", "side")))
    # The 36.x client fails the handshake with ApiException(status=0, body=None), then trips
    # over `e.body.decode()`: callers see an AttributeError whose context is the ApiException.
    with pytest.raises(AttributeError) as missing:
        k8s.stream(k8s.core.connect_get_namespaced_pod_exec, "ghost", NS, command=["ls"],
                   stdout=True, _preload_content=False)
    cause = missing.value.__context__
    assert isinstance(cause, k8s.ApiException) and cause.status == 0
    assert "Handshake status 404" in cause.reason and 'pods \\"ghost\\" not found' in cause.reason
    with pytest.raises(AttributeError) as ambiguous:
        k8s.stream(k8s.core.connect_get_namespaced_pod_exec, "web-1", NS, command=["ls"],
                   stdout=True, _preload_content=False)
    cause = ambiguous.value.__context__
    assert isinstance(cause, k8s.ApiException) and "Handshake status 400" in cause.reason
    assert "a container name must be specified for pod web-1" in cause.reason
    status, body = failure(k8s, k8s.core.connect_get_namespaced_pod_exec, "web-1", NS,
                           command=["ls"], container="app", stdout=True)
    assert (status, body["message"]) == (400, "Upgrade request required")
    assert fake.execs == []


def test_attach_uses_the_handler_without_argv(fake: FakeKubeAPI,
                                              k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    seen: list[list[str]] = []

    def attached(ns: str, pod: str, container: str, argv: list[str],
                 stdin: bytes) -> tuple[int, bytes, bytes]:
        seen.append(argv)
        return 0, b"console\n", b""

    fake.on_exec(attached, pod="web-1")
    ws = k8s.stream(k8s.core.connect_get_namespaced_pod_attach, "web-1", NS, stdout=True,
                    stderr=True, stdin=False, tty=False, _preload_content=False)
    try:
        ws.run_forever(timeout=5)
        assert ws.read_stdout() == "console\n"
    finally:
        finish(ws)
    assert seen == [[]] and fake.execs[-1].kind == "attach"


# --- recording, faults, hooks, events ---------------------------------------------------------


def test_requests_are_recorded(fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    k8s.core.create_namespaced_config_map(NS, {"metadata": {"name": "a"}, "data": {"k": "v"}})
    k8s.core.list_namespaced_config_map(NS, label_selector="x=y")
    posted, listed = fake.requests_for("*", f"/api/v1/namespaces/{NS}/configmaps")
    assert (posted.method, posted.content_type) == ("POST", "application/json")
    assert posted.body["data"] == {"k": "v"}
    assert posted.headers["authorization"] == "Bearer fake-token"
    assert (listed.method, listed.param("labelSelector")) == ("GET", "x=y")
    fake.clear_requests()
    assert fake.requests == []


def test_fail_injects_a_status_a_number_of_times(fake: FakeKubeAPI,
                                                 k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    fake.fail("GET", r"/pods/web-1$", 500, message="etcdserver: request timed out", times=1)
    status, body = failure(k8s, k8s.core.read_namespaced_pod, "web-1", NS)
    assert (status, body["reason"], body["message"]) == (
        500, "InternalError", "etcdserver: request timed out")
    assert k8s.core.read_namespaced_pod("web-1", NS).metadata.name == "web-1"
    fake.fail("*", r"/configmaps", 409, "Conflict", "try again", times=None)
    for _ in range(2):
        status, _ = failure(k8s, k8s.core.list_namespaced_config_map, NS)
        assert status == 409
    fake.clear_faults()
    assert k8s.core.list_namespaced_config_map(NS).items == []


def test_forbid_answers_the_rbac_message(fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    fake.add(make_pod())
    fake.forbid("POST", r"/eviction$")
    fake.forbid("GET", r"/api/v1/nodes")
    status, body = failure(k8s, k8s.core.create_namespaced_pod_eviction, "web-1", NS,
                           {"metadata": {"name": "web-1"}})
    assert status == 403
    assert body["message"] == (
        'pods "web-1" is forbidden: User "system:serviceaccount:falco-talon:falco-talon" cannot '
        'create resource "pods/eviction" in API group "" in the namespace "prod"')
    _, body = failure(k8s, k8s.core.list_node)
    assert body["message"].startswith('nodes is forbidden: User "system:serviceaccount:')
    assert body["message"].endswith('cannot list resource "nodes" in API group "" at the '
                                    "cluster scope")


def test_delay_slows_matching_requests(fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    import urllib3

    fake.add(make_pod())
    fake.delay("GET", r"/pods/web-1$", 0.3, times=1)
    started = time.monotonic()
    k8s.core.read_namespaced_pod("web-1", NS)
    assert time.monotonic() - started >= 0.3
    fake.delay("POST", r"/configmaps$", 5.0, times=1)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        k8s.core.create_namespaced_config_map(NS, {"metadata": {"name": "slow"}},
                                              _request_timeout=0.2)


def test_hang_up_closes_without_an_answer(fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    import urllib3

    fake.add(make_pod())
    fake.hang_up("GET", r"/pods/web-1$")
    with pytest.raises(urllib3.exceptions.MaxRetryError) as info:
        k8s.core.read_namespaced_pod("web-1", NS)
    assert "RemoteDisconnected" in str(info.value.reason)
    assert len(fake.requests_for("GET", f"/api/v1/namespaces/{NS}/pods/web-1")) == 4
    fake.clear_faults()
    assert k8s.core.read_namespaced_pod("web-1", NS).metadata.name == "web-1"


def test_write_hooks_see_each_write(fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    seen: list[tuple[str, str, str]] = []
    fake.on_write(lambda verb, resource, obj: seen.append(
        (verb, resource, obj["metadata"]["name"])))
    k8s.batch.create_namespaced_job(NS, {"metadata": {"name": "j"}, "spec": {
        "template": {"spec": {"containers": []}}}})
    k8s.batch.delete_namespaced_job("j", NS)
    assert seen == [("create", "jobs.batch", "j"), ("delete", "jobs.batch", "j")]


def test_events_in_both_api_groups(fake: FakeKubeAPI, k8s: SimpleNamespace) -> None:
    k8s.core.create_namespaced_event(NS, {
        "metadata": {"generateName": "falco-talon-"}, "reason": "falco-talon",
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": NS}, "type": "Normal"})
    k8s.events.create_namespaced_event(NS, {
        "metadata": {"name": "e2"}, "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "falco-talon", "reportingInstance": "talon-0",
        "action": "Terminate", "reason": "Terminated", "type": "Normal"})
    core = fake.list("events", NS, field_selector="involvedObject.name=web-1")
    assert [e["reason"] for e in core] == ["falco-talon"]
    assert fake.get("Event", NS, "e2", api_version="events.k8s.io/v1")["action"] == "Terminate"
