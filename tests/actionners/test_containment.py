"""Containment that expires: actions given a `ttl` mark the object, the reconciler undoes.

Covers, against the fake API server with the real client: the mark written by
kubernetes:label (pod and node level), annotation, cordon and the three network policy
actionners; a second event merges into the mark and moves its expiry (no second mark);
the reconciler removes the labels it added, leaves alone a label someone changed since,
deletes the NetworkPolicy (and the Calico/Cilium policies) Talon created but keeps one
it only updated, uncordons a node it cordoned but not one cordoned before; not yet due
is left alone; a CRD that is not served is skipped; the `ttl` parameter's checks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from talon import config, containment, params
from talon.actionners.kubernetes import pods, undo
from talon.clients import Clients
from tests.actionners.conftest import Acted, event, pod
from tests.actionners.test_execs import rules
from tests.actionners.test_networkpolicy import workload
from tests.actionners.test_nodes import node
from tests.fakes.kube_api import FakeKubeAPI

Act = Callable[..., Acted]
Reports = list[tuple[str, str, str]]


def ok(acted: Acted) -> None:
    assert [status for _r, _a, status in acted.done] == ["success"], acted.notes


def mark_of(obj: dict[str, Any]) -> undo.Mark:
    mark = undo.read_mark(obj)
    assert mark is not None, obj["metadata"]
    assert obj["metadata"]["labels"][undo.MARK_LABEL] == "true"
    return mark


def reconcile(kube_config: Path, *, later: float) -> Reports:
    """One reconciler pass, `later` seconds from now; the reports it made."""
    settings = config.load(None, env={}, overrides={"kubeconfig": str(kube_config)})
    reports: Reports = []
    loop = containment.Reconciler(
        Clients(settings, timeout=5).kube, lambda item, status, text: reports.append(
            (item.ref, status, text)), wall=lambda: time.time() + later)
    loop.reconcile()
    return reports


def test_label_with_ttl_is_marked_then_undone(act: Act, kube_api: FakeKubeAPI,
                                              kube_config: Path) -> None:
    kube_api.add(pod(labels={"app": "web", "keep": "me"}))
    acted = act(rules("kubernetes:label", {"labels": {"quarantine": "true", "keep": "me"},
                                           "ttl": "2s"}), event())
    ok(acted)
    assert "(ttl)" in acted.note("A").output
    mark = mark_of(kube_api.get("pods", "shop", "web-1"))
    assert mark.labels == {"quarantine": "true"}  # `keep: me` was there before Talon
    assert (mark.rule, mark.action, mark.actionner) == ("R", "A", "kubernetes:label")
    assert 1 <= undo.parse_time(mark.expires_at) - undo.parse_time(mark.since) <= 2
    assert reconcile(kube_config, later=0) == []  # not due yet
    reports = reconcile(kube_config, later=5)
    assert reports == [("pod/shop/web-1", "reverted",
                        "pod/shop/web-1: undone: label quarantine=true")]
    meta = kube_api.get("pods", "shop", "web-1")["metadata"]
    assert meta["labels"] == {"app": "web", "keep": "me"}
    assert undo.MARK_ANNOTATION not in (meta.get("annotations") or {})


def test_a_label_changed_meanwhile_is_left_alone(act: Act, kube_api: FakeKubeAPI,
                                                 kube_config: Path) -> None:
    kube_api.add(pod())
    ok(act(rules("kubernetes:label", {"labels": {"quarantine": "true"}, "ttl": 60}),
           event()))
    changed = kube_api.get("pods", "shop", "web-1")
    assert changed is not None
    changed["metadata"]["labels"]["quarantine"] = "reviewed"
    kube_api.add(changed)
    assert [r[1] for r in reconcile(kube_config, later=120)] == ["reverted"]
    labels = kube_api.get("pods", "shop", "web-1")["metadata"]["labels"]
    assert labels == {"app": "web", "quarantine": "reviewed"}


def test_second_event_extends_instead_of_stacking(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.add(node())
    ok(act(rules("kubernetes:annotation", {"annotations": {"a": "1"}, "ttl": "1m",
                                           "level": "node"}), event()))
    first = mark_of(kube_api.get("nodes", None, "node-1"))
    ok(act(rules("kubernetes:annotation", {"annotations": {"b": "2"}, "ttl": "2h",
                                           "level": "node"}), event()))
    second = mark_of(kube_api.get("nodes", None, "node-1"))
    assert second.annotations == {"a": "1", "b": "2"}
    assert second.since == first.since
    assert undo.parse_time(second.expires_at) - undo.parse_time(first.expires_at) > 3000


def test_cordon_is_undone_only_if_talon_cordoned(act: Act, kube_api: FakeKubeAPI,
                                                 kube_config: Path) -> None:
    kube_api.add(pod())
    kube_api.add(pod("db-1", node="node-2"))
    kube_api.add(node())
    kube_api.add(node("node-2", unschedulable=True))
    ok(act(rules("kubernetes:cordon", {"ttl": "30m"}), event()))
    ok(act(rules("kubernetes:cordon", {"ttl": "30m"}), event("db-1")))
    assert mark_of(kube_api.get("nodes", None, "node-1")).cordoned
    assert not mark_of(kube_api.get("nodes", None, "node-2")).cordoned
    reports = reconcile(kube_config, later=3600)
    assert sorted(r[0] for r in reports) == ["node/node-1", "node/node-2"]
    assert kube_api.get("nodes", None, "node-1")["spec"].get("unschedulable") is False
    assert kube_api.get("nodes", None, "node-2")["spec"]["unschedulable"] is True
    assert undo.MARK_LABEL not in kube_api.get("nodes", None, "node-2")["metadata"]["labels"]


def _policy_world(kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.add(workload("ReplicaSet", "web-5d9c", {"app": "web"},
                          owner=("Deployment", "web")))


@pytest.mark.parametrize(("actionner", "resource", "api_version"), [
    ("kubernetes:networkpolicy", "networkpolicies", "networking.k8s.io/v1"),
    ("calico:networkpolicy", "networkpolicies", "projectcalico.org/v3"),
    ("cilium:networkpolicy", "ciliumnetworkpolicies", "cilium.io/v2"),
])
def test_policy_created_by_talon_is_deleted(act: Act, kube_api: FakeKubeAPI,
                                            kube_config: Path, actionner: str,
                                            resource: str, api_version: str) -> None:
    _policy_world(kube_api)
    ok(act(rules(actionner, {"ttl": "10s"}), event(**{"fd.rip": "203.0.113.9"})))
    ok(act(rules(actionner, {"ttl": "10s"}), event(**{"fd.rip": "203.0.113.7"})))
    stored = kube_api.get(resource, "shop", "web", api_version=api_version)
    assert stored is not None and mark_of(stored).created
    reports = reconcile(kube_config, later=20)
    assert [r[1] for r in reports] == ["reverted"]
    assert "deleted (created by Talon)" in reports[0][2]
    assert kube_api.list(resource, "shop", api_version=api_version) == []


def test_policy_talon_only_updated_is_kept(act: Act, kube_api: FakeKubeAPI,
                                           kube_config: Path) -> None:
    _policy_world(kube_api)
    ok(act(rules("kubernetes:networkpolicy"), event()))  # a permanent one, no ttl
    ok(act(rules("kubernetes:networkpolicy", {"ttl": "10s"}), event()))
    assert not mark_of(kube_api.get("networkpolicies", "shop", "web")).created
    assert [r[1] for r in reconcile(kube_config, later=20)] == ["reverted"]
    kept = kube_api.get("networkpolicies", "shop", "web")
    assert undo.MARK_LABEL not in kept["metadata"]["labels"]


def test_unserved_policy_apis_are_skipped(act: Act, kube_api: FakeKubeAPI,
                                          kube_config: Path) -> None:
    kube_api.uninstall("cilium.io")
    kube_api.uninstall("projectcalico.org")
    kube_api.add(pod())
    ok(act(rules("kubernetes:label", {"labels": {"q": "1"}, "ttl": "5s"}), event()))
    assert [r[:2] for r in reconcile(kube_config, later=10)] == [("pod/shop/web-1",
                                                                   "reverted")]


@pytest.mark.parametrize(("value", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200),
                                                 (45, 45), ("45", 45)])
def test_ttl_forms(value: str | int, seconds: int) -> None:
    assert undo.parse_duration(value) == seconds
    found, problems = params.coerce(pods.LabelParams, {"labels": {"a": "b"}, "ttl": value})
    assert found is not None and not problems


@pytest.mark.parametrize("value", ["2 weeks", "0s", "-5", "31d", True])
def test_bad_ttl_is_reported(value: Any) -> None:
    found, problems = params.coerce(pods.LabelParams, {"labels": {"a": "b"}, "ttl": value})
    assert found is None and any(p.field == "ttl" for p in problems), problems


def test_damaged_mark_is_removed_without_undoing(kube_api: FakeKubeAPI,
                                                 kube_config: Path) -> None:
    damaged = pod(labels={"app": "web", undo.MARK_LABEL: "true"})
    damaged["metadata"]["annotations"] = {undo.MARK_ANNOTATION: "{not json"}
    kube_api.add(damaged)
    assert [r[1] for r in reconcile(kube_config, later=0)] == ["reverted"]
    meta = kube_api.get("pods", "shop", "web-1")["metadata"]
    assert meta["labels"] == {"app": "web"}
    assert json.dumps(meta.get("annotations") or {}) == "{}"


def test_a_kind_not_granted_is_warned_about_once(kube_api: FakeKubeAPI, kube_config: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Without `list` on pods, expired pods could never be undone: say so, once; a kind
    that is not served (no Calico here) is normal and says nothing."""
    kube_api.forbid("GET", r"^/api/v1/pods$")
    settings = config.load(None, env={}, overrides={"kubeconfig": str(kube_config)})
    loop = containment.Reconciler(Clients(settings, timeout=5).kube,
                                  lambda item, status, text: None)
    with caplog.at_level("WARNING", logger="talon.containment"):
        loop.reconcile()
        loop.reconcile()
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1
    assert "listing pod objects is forbidden (403)" in warned[0].getMessage() + str(
        getattr(warned[0], "fields", ""))
