"""kubernetes:terminate, kubernetes:label, kubernetes:annotation and kubernetes:delete.

Driven through the real engine (`act`) or the real server (`start`), with the real client
talking to the fake API server; assertions are on what the cluster received and holds.

Behaviours covered:
- terminate: DELETE with gracePeriodSeconds in the DeleteOptions body (default 0); the
  DaemonSet / StatefulSet / standalone skip rules, reported `ignored` with their text;
  min_healthy_replicas on a ReplicaSet owner, absolute (ready < N, as upstream) and
  percentage (ready * 100 < P * spec.replicas: the fix of B5); not applied to other owners;
  a ReplicaSet that can't be read is a failure; default continue false;
- label / annotation on the pod: one merge patch and no read (null removes a key), the map
  created when missing, a patch changing nothing leaving the resourceVersion as it was, the
  patch's 404 reported as the failed check "doesn't exist" (no objects), no retry on a
  conflict; values written as YAML booleans or numbers are sent as their source text
  ("true", "1.50"); level node (the pod's node, "error getting node" when it can't be read,
  unscheduled pod): a read then one JSON patch, `add` to set (also over an existing key),
  `remove` only for keys present, nothing sent when nothing changes, `/` → `~1` and `~` →
  `~0`, retry once on a conflict;
- delete: every supported resource (the 11 of upstream plus pods), GET then DELETE, the
  texts (no namespace for namespaces and clusterroles), unsupported resources, missing
  target fields, a missing target;
- for each: missing k8s/ka fields (failure notified, no request), API errors 404/403/500
  with the API's message, a timeout, dry-run sending no mutating request, and one
  end-to-end run through `python -m talon server`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from talon import models
from talon.actionners.kubernetes import pods, targets
from talon.plugin import CheckFailedError
from tests.actionners.conftest import (
    Acted,
    assert_failed,
    event,
    no_pod_event,
    pod,
    wait_for,
    writes,
)
from tests.fakes.kube_api import FakeKubeAPI
from tests.support import Launch

Act = Callable[..., Acted]
POD_PATH = "/api/v1/namespaces/shop/pods/web-1"
NODE_PATH = "/api/v1/nodes/node-1"
RS_PATH = "/apis/apps/v1/namespaces/shop/replicasets/web-5d9c"


def rules(actionner: str, parameters: dict[str, Any] | None = None, *,
          then: str = "") -> str:
    """One rule matching event rule `F` with action `A` (and optionally a second, `B`)."""
    second = f"\n    - {{action: B, actionner: {then}, parameters: {{labels: {{b: x}}}}}}" \
        if then else ""
    return f"""
- rule: R
  match: {{rules: [F]}}
  actions:
    - {{action: A, actionner: {actionner}, parameters: {json.dumps(parameters or {})}}}""" \
        + second + "\n"


def replicaset(ready: int | None, desired: int | None = 3,
               name: str = "web-5d9c") -> dict[str, Any]:
    labels = {"app": "web"}
    spec: dict[str, Any] = {"selector": {"matchLabels": labels},
                            "template": {"metadata": {"labels": labels},
                                         "spec": {"containers": [{"name": "app",
                                                                  "image": "nginx"}]}}}
    if desired is not None:
        spec["replicas"] = desired
    status: dict[str, Any] = {"replicas": desired or 0}
    if ready is not None:
        status["readyReplicas"] = ready
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "shop"}, "spec": spec, "status": status}


def node(name: str = "node-1", labels: dict[str, str] | None = None,
         annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": {}}


# --- kubernetes:terminate -------------------------------------------------------------------


def test_terminate_deletes_the_pod_immediately_by_default(act: Act,
                                                          kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    acted = act(rules("kubernetes:terminate"), event())
    assert acted.done == [("R", "A", "success")]
    note = acted.note("A")
    assert note.output == "the pod 'web-1' in the namespace 'shop' has been terminated"
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop"}
    assert kube_api.get("pods", "shop", "web-1") is None
    [deletion] = kube_api.deletions
    assert (deletion.resource, deletion.namespace, deletion.name,
            deletion.grace_period_seconds) == ("pods", "shop", "web-1", 0)
    [request] = kube_api.requests_for("DELETE")
    assert request.path == POD_PATH
    assert request.body["gracePeriodSeconds"] == 0


def test_terminate_sends_the_grace_period(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    act(rules("kubernetes:terminate", {"grace_period_seconds": 30}), event())
    [request] = kube_api.requests_for("DELETE", POD_PATH)
    assert request.body["gracePeriodSeconds"] == 30
    assert kube_api.deletions[0].grace_period_seconds == 30


SKIPS = [
    (("DaemonSet", "agent"), "ignore_daemonsets", "belongs to a DaemonSet"),
    (("StatefulSet", "db"), "ignore_statefulsets", "belongs to a StatefulSet"),
    (None, "ignore_standalone_pods", "is a standalone pod"),
]


@pytest.mark.parametrize(("owner", "flag", "reason"), SKIPS)
def test_terminate_skip_rules(act: Act, kube_api: FakeKubeAPI,
                              owner: tuple[str, str] | None, flag: str, reason: str) -> None:
    kube_api.add(pod(owner=owner))
    acted = act(rules("kubernetes:terminate", {flag: True}), event())
    assert acted.done == [("R", "A", "ignored")]
    note = acted.note("A")
    assert note.status == "ignored"
    assert note.output == f"the pod 'web-1' in the namespace 'shop' {reason} and will be ignored."
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop"}
    assert kube_api.get("pods", "shop", "web-1") is not None
    assert writes(kube_api) == []


@pytest.mark.parametrize(("owner", "flag", "_reason"), SKIPS)
def test_terminate_skip_rules_only_apply_to_their_owner(
        act: Act, kube_api: FakeKubeAPI, owner: tuple[str, str] | None, flag: str,
        _reason: str) -> None:
    kube_api.add(pod(owner=owner))
    others = {f: True for _, f, _ in SKIPS if f != flag}
    assert act(rules("kubernetes:terminate", others), event()).done == [("R", "A", "success")]
    assert kube_api.get("pods", "shop", "web-1") is None


HEALTH = [
    # spec, ready, desired, ignored
    ("2", 1, 3, True),
    ("2", 2, 3, False),        # upstream's comparison kept: ready < N
    ("0", 0, 3, False),
    ("50%", 1, 3, True),       # 100 < 150
    ("50%", 2, 3, False),      # 200 >= 150
    ("50%", 3, 3, False),      # B5: the Go version compared 3 with 50 and always ignored
    ("33%", 1, 3, False),      # 100 >= 99
    ("100%", 2, 3, True),
    ("100%", 3, 3, False),
    ("50%", 0, 0, False),      # scaled to zero: nothing to protect
    ("1", None, 3, True),      # no readyReplicas in the status means 0 ready
]


@pytest.mark.parametrize(("spec", "ready", "desired", "ignored"), HEALTH)
def test_terminate_min_healthy_replicas(act: Act, kube_api: FakeKubeAPI, spec: str,
                                        ready: int | None, desired: int,
                                        ignored: bool) -> None:
    kube_api.add(pod())
    kube_api.add(replicaset(ready, desired))
    acted = act(rules("kubernetes:terminate", {"min_healthy_replicas": spec}), event())
    assert kube_api.requests_for("GET", RS_PATH)
    if ignored:
        assert acted.done == [("R", "A", "ignored")]
        assert acted.note("A").output == (
            "the pod 'web-1' in the namespace 'shop' belongs to a ReplicaSet without enough "
            "healthy replicas and will be ignored.")
        assert kube_api.requests_for("DELETE") == []
    else:
        assert acted.done == [("R", "A", "success")]
        assert kube_api.get("pods", "shop", "web-1") is None


@pytest.mark.parametrize(("spec", "ready", "desired", "ignored"), HEALTH)
def test_below_min_healthy(spec: str, ready: int | None, desired: int, ignored: bool) -> None:
    assert pods.below_min_healthy(spec, ready or 0, desired) is ignored
    assert pods.below_min_healthy("", 0, 10) is False


@pytest.mark.parametrize("owner", [("Job", "batch-1"), ("StatefulSet", "db"), None])
def test_terminate_min_healthy_only_reads_replicasets(
        act: Act, kube_api: FakeKubeAPI, owner: tuple[str, str] | None) -> None:
    kube_api.add(pod(owner=owner))
    acted = act(rules("kubernetes:terminate", {"min_healthy_replicas": "100%"}), event())
    assert acted.done == [("R", "A", "success")]
    assert kube_api.requests_for("GET", "/apis/apps") == []


@pytest.mark.parametrize(("status", "message"), [
    (404, 'replicasets.apps "web-5d9c" not found'),
    (403, "is forbidden"),
    (500, "etcd is down"),
])
def test_terminate_replicaset_read_error_is_a_failure(act: Act, kube_api: FakeKubeAPI,
                                                      status: int, message: str) -> None:
    kube_api.add(pod())
    if status == 403:
        kube_api.add(replicaset(3))
        kube_api.forbid("GET", RS_PATH)
    elif status == 500:
        kube_api.add(replicaset(3))
        kube_api.fail("GET", RS_PATH, 500, message="etcd is down")
    acted = act(rules("kubernetes:terminate", {"min_healthy_replicas": "1"}), event())
    note = assert_failed(acted, message)
    assert note.error.startswith("cannot read the ReplicaSet 'web-5d9c' in the namespace 'shop'")
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop"}
    assert writes(kube_api) == []


def test_terminate_stops_the_rule_by_default(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    acted = act(rules("kubernetes:terminate", then="kubernetes:label"), event())
    assert acted.done == [("R", "A", "success")]
    assert kube_api.get("pods", "shop", "web-1") is None
    assert kube_api.requests_for("PATCH") == []  # B never ran


def test_terminate_missing_pod_name(act: Act, kube_api: FakeKubeAPI) -> None:
    acted = act(rules("kubernetes:terminate"), no_pod_event())
    assert_failed(acted, "k8s.pod.name")
    assert kube_api.requests == []


def test_terminate_pod_not_found(act: Act, kube_api: FakeKubeAPI) -> None:
    acted = act(rules("kubernetes:terminate"), event())
    assert_failed(acted, "the pod 'web-1' in the namespace 'shop' doesn't exist")
    assert writes(kube_api) == []


def test_terminate_delete_forbidden(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.forbid("DELETE", POD_PATH)
    note = assert_failed(act(rules("kubernetes:terminate"), event()),
                         'pods "web-1" is forbidden')
    assert note.error.startswith("cannot terminate the pod 'web-1' in the namespace 'shop': ")
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop"}
    assert kube_api.get("pods", "shop", "web-1") is not None


def test_terminate_read_error(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.fail("GET", POD_PATH, 500, message="etcd is down")
    assert_failed(act(rules("kubernetes:terminate"), event()), "etcd is down")
    assert writes(kube_api) == []


def test_terminate_timeout(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.delay("DELETE", POD_PATH, 3)
    acted = act(rules("kubernetes:terminate"), event(), action_timeout=0.5)
    assert_failed(acted, "did not finish within 0.5s")


def test_terminate_dry_run(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    acted = act(rules("kubernetes:terminate"), event(), dry_run=True)
    assert acted.done == [("R", "A", "dry_run")]
    assert writes(kube_api) == []
    assert kube_api.get("pods", "shop", "web-1") is not None


def test_terminate_end_to_end(start: Launch, kube_api: FakeKubeAPI,
                              kube_config: Path) -> None:
    kube_api.add(pod())
    kube_api.add(replicaset(3))
    server = start(rules("kubernetes:terminate",
                         {"grace_period_seconds": 5, "min_healthy_replicas": "50%"}),
                   f"kubeconfig: {kube_config}\n")
    assert server.post({"rule": "F", "priority": "Warning", "output": "shell",
                        "output_fields": {"k8s.pod.name": "web-1",
                                          "k8s.ns.name": "shop"}}) == 200
    wait_for(lambda: bool(kube_api.deletions))
    assert kube_api.deletions[0].grace_period_seconds == 5
    assert kube_api.get("pods", "shop", "web-1") is None
    server.wait_log("the pod 'web-1' in the namespace 'shop' has been terminated")


# --- kubernetes:label and kubernetes:annotation ---------------------------------------------

KINDS = [("kubernetes:label", "labels", "labeled"),
         ("kubernetes:annotation", "annotations", "annotated")]


def meta_pod(field: str, current: dict[str, str] | None) -> dict[str, Any]:
    manifest = pod(labels={})
    manifest["metadata"].pop("labels")
    if current is not None:
        manifest["metadata"][field] = current
    return manifest


def patches(kube_api: FakeKubeAPI, path: str = POD_PATH,
            media: str = "application/json-patch+json") -> list[Any]:
    found = kube_api.requests_for("PATCH", path)
    assert all(r.content_type.startswith(media) for r in found)
    return [r.body for r in found]


def merge_patches(kube_api: FakeKubeAPI) -> list[Any]:
    return patches(kube_api, POD_PATH, "application/merge-patch+json")


@pytest.mark.parametrize(("actionner", "field", "done"), KINDS)
def test_edit_sets_and_removes_in_one_merge_patch(act: Act, kube_api: FakeKubeAPI,
                                                  actionner: str, field: str,
                                                  done: str) -> None:
    kube_api.add(meta_pod(field, {"app": "web", "old": "1", "keep": "k"}))
    wanted = {"app": "shop", "suspicious": "true", "old": "", "absent": ""}
    acted = act(rules(actionner, {field: wanted}), event())
    assert acted.done == [("R", "A", "success")]
    note = acted.note("A")
    assert note.output == f"the pod 'web-1' in the namespace 'shop' has been {done}"
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop"}
    assert merge_patches(kube_api) == [{"metadata": {field: {
        "app": "shop", "suspicious": "true", "old": None, "absent": None}}}]
    assert [r.method for r in kube_api.requests] == ["PATCH"]  # one request: no read
    stored = kube_api.get("pods", "shop", "web-1")
    assert stored is not None
    assert stored["metadata"][field] == {"app": "shop", "suspicious": "true", "keep": "k"}


@pytest.mark.parametrize(("actionner", "field", "done"), KINDS)
def test_yaml_booleans_and_numbers_reach_the_cluster_as_their_text(
        act: Act, kube_api: FakeKubeAPI, actionner: str, field: str, done: str) -> None:
    kube_api.add(meta_pod(field, {"app": "web"}))
    acted = act(f"""
- rule: R
  match: {{rules: [F]}}
  actions:
    - action: A
      actionner: {actionner}
      parameters:
        {field}: {{suspicious: true, ratio: 1.50, count: 3}}
""", event())
    assert acted.done == [("R", "A", "success")]
    assert merge_patches(kube_api) == [{"metadata": {field: {
        "suspicious": "true", "ratio": "1.50", "count": "3"}}}]
    stored = kube_api.get("pods", "shop", "web-1")
    assert stored is not None
    assert stored["metadata"][field] == {"app": "web", "suspicious": "true", "ratio": "1.50",
                                         "count": "3"}


@pytest.mark.parametrize(("actionner", "field", "_done"), KINDS)
def test_edit_creates_a_missing_map(act: Act, kube_api: FakeKubeAPI, actionner: str,
                                    field: str, _done: str) -> None:
    kube_api.add(meta_pod(field, None))
    act(rules(actionner, {field: {"example.com/flag": "on", "gone": ""}}), event())
    assert merge_patches(kube_api) == [{"metadata": {field: {
        "example.com/flag": "on", "gone": None}}}]
    stored = kube_api.get("pods", "shop", "web-1")
    assert stored is not None
    assert stored["metadata"][field] == {"example.com/flag": "on"}
    assert kube_api.requests_for("PUT") == []


@pytest.mark.parametrize(("actionner", "field", "_done"), KINDS)
def test_edit_that_changes_nothing_keeps_the_resource_version(
        act: Act, kube_api: FakeKubeAPI, actionner: str, field: str, _done: str) -> None:
    created = kube_api.add(meta_pod(field, {"a": "1"}))
    acted = act(rules(actionner, {field: {"a": "1", "b": ""}}), event())
    assert acted.done == [("R", "A", "success")]
    assert merge_patches(kube_api) == [{"metadata": {field: {"a": "1", "b": None}}}]
    stored = kube_api.get("pods", "shop", "web-1")
    assert stored is not None
    assert stored["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


@pytest.mark.parametrize(("actionner", "field", "_done"), KINDS)
def test_edit_of_a_node_sends_nothing_when_nothing_changes(
        act: Act, kube_api: FakeKubeAPI, actionner: str, field: str, _done: str) -> None:
    kube_api.add(pod())
    kube_api.add(node(**{field: {"a": "1"}}))
    acted = act(rules(actionner, {"level": "node", field: {"a": "1", "b": ""}}), event())
    assert acted.done == [("R", "A", "success")]
    assert writes(kube_api) == []


def test_annotation_values_are_free_text(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    text = "shell by 'root': see https://falco.org/x?y=1 ~ / \"quoted\""
    act(rules("kubernetes:annotation", {"annotations": {"talon.io/why": text}}), event())
    stored = kube_api.get("pods", "shop", "web-1")
    assert stored is not None
    assert stored["metadata"]["annotations"] == {"talon.io/why": text}


def test_pointer_token_escapes_tilde_then_slash() -> None:
    assert pods.pointer_token("a/b~c") == "a~1b~0c"
    assert pods.pointer_token("~1") == "~01"
    assert pods.metadata_patch("labels", {"x/~y": "v"}, {"x/~y": ""}) == [
        {"op": "remove", "path": "/metadata/labels/x~1~0y"}]


def test_metadata_patch_without_a_map_and_only_removals_is_empty() -> None:
    assert pods.metadata_patch("annotations", None, {"a": ""}, "12") == []


@pytest.mark.parametrize(("actionner", "field", "done"), KINDS)
def test_edit_the_node(act: Act, kube_api: FakeKubeAPI, actionner: str, field: str,
                       done: str) -> None:
    kube_api.add(pod())
    kube_api.add(node(**{field: {"zone": "a", "drop": "x"}}))
    acted = act(rules(actionner, {"level": "node", field: {"talon": "yes", "drop": ""}}),
                event())
    assert acted.done == [("R", "A", "success")]
    note = acted.note("A")
    assert note.output == f"the node 'node-1' has been {done}"
    assert dict(note.objects) == {"node": "node-1"}
    assert patches(kube_api, NODE_PATH) == [[
        {"op": "add", "path": f"/metadata/{field}/talon", "value": "yes"},
        {"op": "remove", "path": f"/metadata/{field}/drop"}]]
    stored = kube_api.get("nodes", None, "node-1")
    assert stored is not None
    assert stored["metadata"][field] == {"zone": "a", "talon": "yes"}
    assert kube_api.requests_for("PATCH", POD_PATH) == []


def test_edit_missing_node(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    acted = act(rules("kubernetes:label", {"level": "node", "labels": {"a": "b"}}), event())
    note = assert_failed(acted, "error getting node 'node-1': ")
    assert 'nodes "node-1" not found' in note.error
    assert writes(kube_api) == []


def test_edit_node_of_an_unscheduled_pod(act: Act, kube_api: FakeKubeAPI) -> None:
    manifest = pod()
    del manifest["spec"]["nodeName"]
    kube_api.add(manifest)
    acted = act(rules("kubernetes:annotation", {"level": "node", "annotations": {"a": "b"}}),
                event())
    assert_failed(acted, "the pod 'web-1' in the namespace 'shop' is not scheduled on a node")
    assert writes(kube_api) == []


def test_edit_of_a_node_retries_once_when_it_changed(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.add(node(labels={"old": "1"}))
    kube_api.fail("PATCH", NODE_PATH, 422, times=1,
                  message="the server rejected our request due to an error in our request")
    acted = act(rules("kubernetes:label", {"level": "node", "labels": {"old": "", "new": "2"}}),
                event())
    assert acted.done == [("R", "A", "success")]
    assert len(patches(kube_api, NODE_PATH)) == 2
    stored = kube_api.get("nodes", None, "node-1")
    assert stored is not None
    assert stored["metadata"]["labels"] == {"new": "2"}


def test_edit_of_a_node_gives_up_after_the_second_conflict(act: Act,
                                                           kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.add(node())
    kube_api.fail("PATCH", NODE_PATH, 409, times=None, message="the object has been modified")
    acted = act(rules("kubernetes:label", {"level": "node", "labels": {"new": "2"}}), event())
    note = assert_failed(acted, "the object has been modified")
    assert note.error.startswith("cannot label the node 'node-1': ")
    assert len(kube_api.requests_for("PATCH")) == 2


def test_a_merge_patch_is_not_retried_on_a_conflict(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.fail("PATCH", POD_PATH, 409, times=None, message="the object has been modified")
    acted = act(rules("kubernetes:label", {"labels": {"new": "2"}}), event())
    note = assert_failed(acted, "the object has been modified")
    assert note.error.startswith("cannot label the pod 'web-1' in the namespace 'shop': ")
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop"}
    assert len(kube_api.requests_for("PATCH")) == 1


@pytest.mark.parametrize(("actionner", "field", "_done"), KINDS)
def test_edit_patch_forbidden(act: Act, kube_api: FakeKubeAPI, actionner: str, field: str,
                              _done: str) -> None:
    kube_api.add(pod())
    kube_api.forbid("PATCH", POD_PATH)
    note = assert_failed(act(rules(actionner, {field: {"a": "b"}}), event()),
                         'pods "web-1" is forbidden')
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop"}
    assert len(kube_api.requests_for("PATCH")) == 1


@pytest.mark.parametrize(("actionner", "field", "_done"), KINDS)
def test_edit_errors_without_request(act: Act, kube_api: FakeKubeAPI, actionner: str,
                                     field: str, _done: str) -> None:
    assert_failed(act(rules(actionner, {field: {"a": "b"}}), no_pod_event()), "k8s.pod.name")
    assert kube_api.requests == []


@pytest.mark.parametrize("level", ["pod", "node"])
@pytest.mark.parametrize(("actionner", "field", "_done"), KINDS)
def test_edit_of_a_missing_pod(act: Act, kube_api: FakeKubeAPI, actionner: str, field: str,
                               _done: str, level: str) -> None:
    note = assert_failed(act(rules(actionner, {"level": level, field: {"a": "b"}}), event()),
                         "the pod 'web-1' in the namespace 'shop' doesn't exist")
    assert dict(note.objects) == {}  # as for every failed check
    assert kube_api.get("pods", "shop", "web-1") is None
    assert kube_api.requests_for("PUT") == kube_api.requests_for("POST") == []


def test_edit_write_error(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.fail("PATCH", POD_PATH, 500, message="etcd is down")
    note = assert_failed(act(rules("kubernetes:label", {"labels": {"a": "b"}}), event()),
                         "etcd is down")
    assert note.error.startswith("cannot label the pod 'web-1' in the namespace 'shop': ")


def test_edit_of_a_node_read_error(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.fail("GET", POD_PATH, 500, message="etcd is down")
    assert_failed(act(rules("kubernetes:label", {"level": "node", "labels": {"a": "b"}}),
                      event()), "etcd is down")
    assert writes(kube_api) == []


def test_edit_timeout(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.delay("PATCH", POD_PATH, 3)
    acted = act(rules("kubernetes:annotation", {"annotations": {"a": "b"}}), event(),
                action_timeout=0.5)
    assert_failed(acted, "did not finish within 0.5s")


@pytest.mark.parametrize(("actionner", "field", "_done"), KINDS)
def test_edit_dry_run(act: Act, kube_api: FakeKubeAPI, actionner: str, field: str,
                      _done: str) -> None:
    kube_api.add(pod())
    kube_api.add(node())
    acted = act(rules(actionner, {"level": "node", field: {"a": "b"}}), event(),
                dry_run=True)
    assert acted.done == [("R", "A", "dry_run")]
    assert writes(kube_api) == []


def test_label_and_annotation_end_to_end(start: Launch, kube_api: FakeKubeAPI,
                                         kube_config: Path) -> None:
    kube_api.add(pod())
    kube_api.add(node(labels={"zone": "a"}))
    server = start("""
- rule: R
  match: {rules: [F]}
  actions:
    - {action: L, actionner: kubernetes:label, parameters: {labels: {suspicious: "true"}}}
    - {action: N, actionner: kubernetes:annotation,
       parameters: {level: node, annotations: {talon.io/seen: web-1}}}
""", f"kubeconfig: {kube_config}\n")
    assert server.post({"rule": "F", "priority": "Warning", "output": "shell",
                        "output_fields": {"k8s.pod.name": "web-1",
                                          "k8s.ns.name": "shop"}}) == 200
    server.wait_log("the node 'node-1' has been annotated")
    stored_pod = kube_api.get("pods", "shop", "web-1")
    stored_node = kube_api.get("nodes", None, "node-1")
    assert stored_pod is not None and stored_node is not None
    assert stored_pod["metadata"]["labels"] == {"app": "web", "suspicious": "true"}
    assert stored_node["metadata"]["annotations"] == {"talon.io/seen": "web-1"}
    assert "the pod 'web-1' in the namespace 'shop' has been labeled" in server.log()


# --- kubernetes:delete ----------------------------------------------------------------------


def audit(resource: str | None, name: str | None, namespace: str | None) -> models.Event:
    fields = {"ka.target.resource": resource, "ka.target.name": name,
              "ka.target.namespace": namespace}
    return models.from_mapping({"rule": "F", "priority": "Warning", "source": "k8s_audit",
                                "output": "audit", "output_fields": fields})


TARGETS = [
    # resource, manifest (kind, apiVersion), namespaced, noun
    ("configmaps", "ConfigMap", "v1", True, "configmap"),
    ("secrets", "Secret", "v1", True, "secret"),
    ("services", "Service", "v1", True, "service"),
    ("serviceaccounts", "ServiceAccount", "v1", True, "serviceaccount"),
    ("pods", "Pod", "v1", True, "pod"),
    ("deployments", "Deployment", "apps/v1", True, "deployment"),
    ("daemonsets", "DaemonSet", "apps/v1", True, "daemonset"),
    ("statefulsets", "StatefulSet", "apps/v1", True, "statefulset"),
    ("replicasets", "ReplicaSet", "apps/v1", True, "replicaset"),
    ("roles", "Role", "rbac.authorization.k8s.io/v1", True, "role"),
    ("namespaces", "Namespace", "v1", False, "namespace"),
    ("clusterroles", "ClusterRole", "rbac.authorization.k8s.io/v1", False, "clusterrole"),
]


def manifest(kind: str, api_version: str, namespaced: bool,
             name: str = "evil") -> dict[str, Any]:
    if kind == "Pod":
        return pod(name)
    if kind == "ReplicaSet":
        return replicaset(1, 1, name)
    meta = {"name": name, "namespace": "shop"} if namespaced else {"name": name}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


def test_delete_supports_exactly_the_permitted_resources() -> None:
    assert set(targets.DELETABLE) == {t[0] for t in TARGETS}
    assert set(targets.DELETABLE) == {
        p.resources[0] for p in targets.DELETE_PERMISSIONS}


@pytest.mark.parametrize(("resource", "kind", "api_version", "namespaced", "noun"), TARGETS)
def test_delete_each_resource(act: Act, kube_api: FakeKubeAPI, resource: str, kind: str,
                              api_version: str, namespaced: bool, noun: str) -> None:
    name = "web-1" if kind == "Pod" else "evil"
    kube_api.add(manifest(kind, api_version, namespaced, name))
    # A real audit event names the namespace itself as ka.target.namespace for namespaces.
    ev_namespace = "shop" if namespaced else ("evil" if resource == "namespaces" else "-")
    acted = act(rules("kubernetes:delete"), audit(resource, name, ev_namespace))
    assert acted.done == [("R", "A", "success")]
    note = acted.note("A")
    where = " in the namespace 'shop'" if namespaced else ""
    assert note.output == f"the {noun} '{name}'{where} has been deleted"
    expected = {"name": name, "resource": resource}
    assert dict(note.objects) == (expected | {"namespace": "shop"} if namespaced else expected)
    assert kube_api.get(resource, "shop" if namespaced else None, name) is None
    [deletion] = kube_api.deletions
    assert (deletion.name, deletion.namespace) == (name, "shop" if namespaced else None)
    [get, delete] = [r for r in kube_api.requests if r.method in ("GET", "DELETE")]
    assert (get.method, delete.method) == ("GET", "DELETE")
    assert get.path == delete.path


def test_delete_clusterrole_without_namespace_field(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(manifest("ClusterRole", "rbac.authorization.k8s.io/v1", False))
    acted = act(rules("kubernetes:delete"), audit("clusterroles", "evil", None))
    assert acted.done == [("R", "A", "success")]
    assert kube_api.get("clusterroles", None, "evil") is None
    [deletion] = kube_api.deletions
    assert (deletion.resource, deletion.namespace, deletion.name) == (
        "clusterroles.rbac.authorization.k8s.io", None, "evil")


@pytest.mark.parametrize(("fields", "message"), [
    (("clusterroles", "evil", None), None),
    (("namespaces", "evil", ""), None),
    (("configmaps", "evil", ""), "missing target namespace (ka.target.namespace)"),
    (("", "evil", "shop"), "missing target resource (ka.target.resource)"),
    (("configmaps", None, "shop"), "missing target name (ka.target.name)"),
    (("nodes", "node-1", "shop"), "the resource 'nodes' is not supported"),
    (("Secrets", "evil", "shop"), "the resource 'Secrets' is not supported"),
])
def test_delete_target_rules(fields: tuple[str | None, ...], message: str | None) -> None:
    ctx = SimpleNamespace(event=audit(*fields))
    if message is None:
        target = targets._audit_target(ctx)  # type: ignore[arg-type]
        assert (target.name, target.namespace) == ("evil", "")
        return
    with pytest.raises(CheckFailedError, match=message.replace("(", r"\(").replace(")", r"\)")):
        targets._audit_target(ctx)  # type: ignore[arg-type]


def test_delete_unsupported_resource(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(node())
    acted = act(rules("kubernetes:delete"), audit("nodes", "node-1", "shop"))
    assert_failed(acted, "the resource 'nodes' is not supported")
    assert kube_api.requests == []


def test_delete_missing_field(act: Act, kube_api: FakeKubeAPI) -> None:
    acted = act(rules("kubernetes:delete"), audit("configmaps", None, "shop"))
    assert_failed(acted, "ka.target.name")
    assert kube_api.requests == []


def test_delete_target_not_found(act: Act, kube_api: FakeKubeAPI) -> None:
    acted = act(rules("kubernetes:delete"), audit("configmaps", "evil", "shop"))
    assert_failed(acted, "the configmap 'evil' in the namespace 'shop' doesn't exist")
    assert writes(kube_api) == []


def test_delete_hostile_name_is_an_invalid_event(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(manifest("Secret", "v1", True, "x"))
    acted = act(rules("kubernetes:delete"), audit("secrets", "../secrets/x", "shop"))
    assert_failed(acted, "invalid event: ka.target.name: '../secrets/x' is not a valid name")
    assert kube_api.requests == []
    assert kube_api.get("secrets", "shop", "x") is not None


def test_delete_read_forbidden(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(manifest("Secret", "v1", True))
    kube_api.forbid("GET", "/secrets/evil$")
    note = assert_failed(act(rules("kubernetes:delete"), audit("secrets", "evil", "shop")),
                         'secrets "evil" is forbidden')
    assert note.error.startswith("cannot read the secret 'evil' in the namespace 'shop': ")
    assert writes(kube_api) == []


def test_delete_server_error(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(manifest("Deployment", "apps/v1", True))
    kube_api.fail("DELETE", "/deployments/evil$", 500, message="etcd is down")
    acted = act(rules("kubernetes:delete"), audit("deployments", "evil", "shop"))
    note = assert_failed(acted, "etcd is down")
    assert note.error.startswith(
        "cannot delete the deployment 'evil' in the namespace 'shop': ")
    assert dict(note.objects) == {"name": "evil", "resource": "deployments",
                                  "namespace": "shop"}
    assert kube_api.get("deployments", "shop", "evil") is not None


def test_delete_timeout(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(manifest("ConfigMap", "v1", True))
    kube_api.delay("DELETE", "/configmaps/evil$", 3)
    acted = act(rules("kubernetes:delete"), audit("configmaps", "evil", "shop"),
                action_timeout=0.5)
    assert_failed(acted, "did not finish within 0.5s")


def test_delete_dry_run(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(manifest("ConfigMap", "v1", True))
    acted = act(rules("kubernetes:delete"), audit("configmaps", "evil", "shop"),
                dry_run=True)
    assert acted.done == [("R", "A", "dry_run")]
    assert writes(kube_api) == []


def test_delete_end_to_end(start: Launch, kube_api: FakeKubeAPI, kube_config: Path) -> None:
    kube_api.add(manifest("ConfigMap", "v1", True))
    server = start(rules("kubernetes:delete"), f"kubeconfig: {kube_config}\n")
    assert server.post({"rule": "F", "priority": "Warning", "source": "k8s_audit",
                        "output": "configmap created",
                        "output_fields": {"ka.target.resource": "configmaps",
                                          "ka.target.name": "evil",
                                          "ka.target.namespace": "shop"}}) == 200
    wait_for(lambda: kube_api.get("configmaps", "shop", "evil") is None)
    server.wait_log("the configmap 'evil' in the namespace 'shop' has been deleted")
