"""Hostile target fields: what an event names is checked before any request is built.

Driven through the real engine (`act`) with the real client talking to the fake API server;
assertions are on the requests the fake received (none, for a rejected target).

Behaviours covered:
- a namespace, pod name or `ka.target.*` field that is not a string fails the action as an
  invalid event naming the field; `k8s.ns.name` present (even as `true` or null) is never
  replaced by `ka.target.namespace` (only an absent key falls back), so the shipped
  `k8s.ns.name!=kube-system` exclusion and the actionner see the same value: an event
  carrying `"k8s.ns.name": true` and `"ka.target.namespace": "kube-system"` does nothing to
  kube-system;
- names are checked as the API server would check them (DNS-1123 label for namespaces,
  subdomain for pods and most objects, DNS-1035 label for services, path-segment names for
  RBAC roles, which may hold `:`); empty, `.`, `..`, `/`, `%`, `?`, `#`, whitespace and
  control characters never reach a URL: the action fails, no request is sent;
- the same for every pod-based actionner, kubernetes:delete's `ka.target.*`, the k8snode
  context and the k8sevents notifier's pod lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from talon import catalog, config, models, notify
from talon.clients import Clients
from talon.clients import kube as kube_client
from talon.errors import EventError
from talon.models import Delivery, Notification
from talon.registry import REGISTRY
from tests.actionners.conftest import Acted, assert_failed, pod
from tests.fakes.kube_api import FakeKubeAPI

Act = Callable[..., Acted]
ROOT = Path(__file__).resolve().parent.parent.parent
SHIPPED = (ROOT / "rules.d" / "00-default.yaml").read_text()


def falco(**fields: Any) -> models.Event:
    return models.from_mapping({"rule": "Terminal shell in container", "priority": "Warning",
                                "output": "shell", "output_fields": fields})


def rules(actionner: str, parameters: str = "{}", output: str = "") -> str:
    """Rule `R` on Falco rule `F` with action `A`; `output` is a local:file destination."""
    out = (f"\n      output: {{target: local:file, parameters: {{destination: {output}}}}}"
           if output else "")
    return f"""
- rule: R
  match: {{rules: [F]}}
  actions:
    - action: A
      actionner: {actionner}
      parameters: {parameters}{out}
"""


def ev(**fields: Any) -> models.Event:
    return models.from_mapping({"rule": "F", "priority": "Warning", "output": "x",
                                "output_fields": fields})


# --- item: non-string targets and the namespace fallback ---------------------------------


def test_boolean_namespace_does_not_reach_kube_system(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod("coredns-1", "kube-system"))
    acted = act(SHIPPED, falco(**{"k8s.ns.name": True, "k8s.pod.name": "coredns-1",
                                  "ka.target.namespace": "kube-system"}))
    [note] = acted.notes
    assert note.status == "failure"
    assert "invalid event" in note.error and "k8s.ns.name" in note.error, note.error
    assert kube_api.requests == []
    assert kube_api.get("pods", "kube-system", "coredns-1")["metadata"]["labels"] == {
        "app": "web"}


def test_null_namespace_does_not_fall_back(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod("coredns-1", "kube-system"))
    acted = act(SHIPPED, falco(**{"k8s.ns.name": None, "k8s.pod.name": "coredns-1",
                                  "ka.target.namespace": "kube-system"}))
    assert [n.status for n in acted.notes] == ["failure"]
    assert kube_api.requests == []


def test_shipped_exclusion_holds_for_the_real_namespace(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod("coredns-1", "kube-system"))
    acted = act(SHIPPED, falco(**{"k8s.ns.name": "kube-system", "k8s.pod.name": "coredns-1"}))
    assert acted.done == []
    assert kube_api.requests == []


@pytest.mark.parametrize("fields", [
    {"k8s.ns.name": 7, "k8s.pod.name": "web-1"},
    {"k8s.ns.name": "shop", "k8s.pod.name": ["web-1"]},
    {"k8s.ns.name": {"name": "shop"}, "k8s.pod.name": "web-1"},
])
def test_non_string_targets_are_invalid_events(act: Act, kube_api: FakeKubeAPI,
                                               fields: dict[str, Any]) -> None:
    kube_api.add(pod())
    [bad] = [k for k, v in fields.items() if not isinstance(v, str)]
    note = assert_failed(act(rules("kubernetes:terminate"), ev(**fields)), bad)
    assert note.error.startswith("invalid event: "), note.error
    assert kube_api.requests == []


def test_absent_namespace_still_falls_back() -> None:
    event = ev(**{"ka.target.namespace": "shop", "ka.target.pod.name": "web-1"})
    assert (event.namespace(), event.pod_name()) == ("shop", "web-1")
    present = ev(**{"k8s.ns.name": "", "ka.target.namespace": "kube-system"})
    assert present.namespace() == ""


def test_non_string_audit_target_is_an_invalid_event(act: Act, kube_api: FakeKubeAPI) -> None:
    fields = {"ka.target.resource": "secrets", "ka.target.name": True,
              "ka.target.namespace": "shop"}
    note = assert_failed(act(rules("kubernetes:delete"), ev(**fields)), "ka.target.name")
    assert note.error.startswith("invalid event: ")
    assert kube_api.requests == []


# --- item: names checked before any URL is built -----------------------------------------

BAD_NAMES = ["", ".", "..", "a/b", "../x", "a%2fb", "a?b", "a#b", "a b", "a\tb", "a\nb",
             "a\x00b", "a\x7fb", "Web-1", "web_1", "-web", "web-", "x" * 254]


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if n])
def test_bad_pod_names_send_nothing(act: Act, kube_api: FakeKubeAPI, name: str) -> None:
    kube_api.add(pod())
    note = assert_failed(act(rules("kubernetes:label", "{labels: {a: b}}"),
                             ev(**{"k8s.ns.name": "shop", "k8s.pod.name": name})),
                         "k8s.pod.name")
    assert note.error.startswith("invalid event: "), note.error
    assert kube_api.requests == []


@pytest.mark.parametrize("namespace", [n for n in BAD_NAMES if n] + ["a.b", "x" * 64])
def test_bad_namespaces_send_nothing(act: Act, kube_api: FakeKubeAPI, namespace: str) -> None:
    kube_api.add(pod())
    note = assert_failed(act(rules("kubernetes:terminate"),
                             ev(**{"k8s.ns.name": namespace, "k8s.pod.name": "web-1"})),
                         "k8s.ns.name")
    assert note.error.startswith("invalid event: "), note.error
    assert kube_api.requests == []


POD_ACTIONNERS = {
    "kubernetes:terminate": "{}", "kubernetes:label": "{labels: {a: b}}",
    "kubernetes:annotation": "{annotations: {a: b}}", "kubernetes:cordon": "{}",
    "kubernetes:drain": "{}", "kubernetes:exec": "{command: id}",
    "kubernetes:script": "{script: id}", "kubernetes:log": "{}",
    "kubernetes:download": "{file: /etc/passwd}", "kubernetes:tcpdump": "{}",
    "kubernetes:sysdig": "{}", "kubernetes:networkpolicy": "{}",
    "calico:networkpolicy": "{}", "cilium:networkpolicy": "{}",
}


@pytest.mark.parametrize("actionner", sorted(POD_ACTIONNERS))
def test_every_pod_actionner_checks_names(act: Act, kube_api: FakeKubeAPI, tmp_path: Path,
                                          actionner: str) -> None:
    kube_api.add(pod())
    output = str(tmp_path) if REGISTRY.get("actionner", actionner).info.require_output else ""
    rules_yaml = rules(actionner, POD_ACTIONNERS[actionner], output)
    acted = act(rules_yaml, ev(**{"k8s.ns.name": "shop",
                                         "k8s.pod.name": "../../nodes/node-1",
                                         "fd.rip": "10.0.0.1"}))
    note = assert_failed(acted, "k8s.pod.name")
    assert note.error.startswith("invalid event: "), note.error
    assert kube_api.requests == []


@pytest.mark.parametrize(("resource", "name", "ok"), [
    ("namespaces", "a.b", False),
    ("namespaces", "shop", True),
    ("configmaps", "a.b", True),
    ("configmaps", "../x", False),
    ("services", "1abc", False),
    ("services", "web", True),
    ("clusterroles", "system:controller:evil", True),
    ("roles", "Evil Role", False),
    ("clusterroles", "..", False),
    ("clusterroles", "a/b", False),
    ("clusterroles", "a%b", False),
    ("clusterroles", "a?b", False),
])
def test_delete_checks_the_name_for_its_kind(act: Act, kube_api: FakeKubeAPI, resource: str,
                                             name: str, ok: bool) -> None:
    fields = {"ka.target.resource": resource, "ka.target.name": name,
              "ka.target.namespace": "shop"}
    acted = act(rules("kubernetes:delete"), ev(**fields))
    [note] = acted.notes
    if ok:
        assert "invalid event" not in note.error
        assert len(kube_api.requests) == 1  # the GET of the check (404: not there)
    else:
        assert note.error.startswith("invalid event: ka.target.name: "), note.error
        assert kube_api.requests == []


def test_delete_checks_the_namespace(act: Act, kube_api: FakeKubeAPI) -> None:
    fields = {"ka.target.resource": "secrets", "ka.target.name": "x",
              "ka.target.namespace": "../../../api/v1/namespaces/kube-system/secrets"}
    assert_failed(act(rules("kubernetes:delete"), ev(**fields)), "ka.target.namespace")
    assert kube_api.requests == []


def test_name_rules() -> None:
    check = kube_client.check_name
    assert check("system:aggregate-to-admin", "f", kube_client.RBAC) == \
        "system:aggregate-to-admin"
    assert check("web-1.v2", "f", kube_client.SUBDOMAIN) == "web-1.v2"
    for bad, rule in [("a.b", kube_client.LABEL), ("a..b", kube_client.SUBDOMAIN),
                      ("a\u2028b", kube_client.RBAC), ("a\x85b", kube_client.RBAC)]:
        with pytest.raises(EventError, match=r"^f: "):
            check(bad, "f", rule)


# --- the k8snode context and the k8sevents notifier --------------------------------------


@pytest.fixture
def clients(kube_config: Path) -> Clients:
    settings = config.load(None, env={}, overrides={"kubeconfig": str(kube_config)})
    return Clients(settings, timeout=5)


def test_k8snode_checks_names(kube_api: FakeKubeAPI, clients: Clients) -> None:
    from talon.contexts import k8snode
    from talon.plugin import ActionContext
    from talon.rules.model import Action, Rule

    ctx = ActionContext(event=ev(**{"k8s.ns.name": "shop", "k8s.pod.name": "../nodes/x"}),
                        rule=Rule(name="R"), action=Action(name="A", actionner="t:x"),
                        params=None, context={}, env={}, clients=clients, deadline=0.0)
    with pytest.raises(EventError, match=r"^k8s\.pod\.name: "):
        k8snode.k8snode(ctx)
    assert kube_api.requests == []


def test_k8sevents_does_not_look_up_a_bad_pod_name(kube_api: FakeKubeAPI,
                                                   clients: Clients) -> None:
    catalog.load_builtins()
    built = notify.build(["k8sevents"], {}, REGISTRY, Delivery(timeout=5, retries=0),
                         clients=clients)
    built["k8sevents"].send(Notification(
        message="action", status="success", trace_id="t", actionner="kubernetes:label",
        objects={"pod": "../../nodes/x", "namespace": "shop"}))
    assert [(r.method, r.path) for r in kube_api.requests] == [
        ("POST", "/api/v1/namespaces/shop/events")]
