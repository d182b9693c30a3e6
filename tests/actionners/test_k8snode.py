"""The k8snode context against the fake API server.

Behaviours covered:
- called directly: GET the pod, GET its node, the six keys from the node's labels and
  spec.providerID, empty values dropped; the role from `kubernetes.io/role`, else from the
  `node-role.kubernetes.io/<role>` keys (sorted, comma-separated);
- through the engine with a test actionner that uses contexts: the keys reach the action's
  context and its `${NODE_…}` variables; a pod or node that can't be read fails the action
  with the API's message, unless `ignore_errors` (then the action runs without the keys);
  a pod not scheduled yet.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from talon import catalog, config, rules
from talon.clients import Clients
from talon.contexts import k8snode
from talon.engine import Engine
from talon.metrics import Metrics
from talon.models import Notification
from talon.plugin import ActionContext, ActionError, Result, actionner
from talon.registry import REGISTRY, Registry
from talon.reloader import RuleStore
from talon.rules.model import Action, Rule
from tests.actionners.conftest import event, pod
from tests.fakes.kube_api import FakeKubeAPI

LABELS = {"kubernetes.io/hostname": "ip-10-0-0-1", "node.kubernetes.io/instance-type": "m5.large",
          "topology.kubernetes.io/region": "eu-west-1", "topology.kubernetes.io/zone": "eu-west-1a",
          "kubernetes.io/role": "worker"}
FACTS = {"node.hostname": "ip-10-0-0-1", "node.instancetype": "m5.large", "node.role": "worker",
         "node.topology.region": "eu-west-1", "node.topology.zone": "eu-west-1a",
         "node.spec.providerid": "aws:///eu-west-1a/i-0abc"}


def node(labels: dict[str, str], provider: str | None = "aws:///eu-west-1a/i-0abc"
         ) -> dict[str, Any]:
    spec = {"providerID": provider} if provider else {}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-1", "labels": labels}, "spec": spec}


@pytest.fixture
def clients(kube_config: Path) -> Clients:
    settings = config.load(None, env={}, overrides={"kubeconfig": str(kube_config)})
    return Clients(settings, timeout=5)


def fetch(clients: Clients, pod_name: str = "web-1") -> dict[str, str]:
    ctx = ActionContext(event=event(pod_name), rule=Rule(name="R"),
                        action=Action(name="A", actionner="t:show"), params=None, context={},
                        env={}, clients=clients, deadline=0.0)
    return k8snode.k8snode(ctx)


def test_the_six_keys(kube_api: FakeKubeAPI, clients: Clients) -> None:
    kube_api.add(pod())
    kube_api.add(node(LABELS))
    assert fetch(clients) == FACTS
    assert [(r.method, r.path) for r in kube_api.requests] == [
        ("GET", "/api/v1/namespaces/shop/pods/web-1"), ("GET", "/api/v1/nodes/node-1")]


def test_empty_values_are_dropped(kube_api: FakeKubeAPI, clients: Clients) -> None:
    kube_api.add(pod())
    kube_api.add(node({"kubernetes.io/hostname": "h", "topology.kubernetes.io/zone": ""},
                      provider=None))
    assert fetch(clients) == {"node.hostname": "h"}


@pytest.mark.parametrize(("labels", "role"), [
    ({"kubernetes.io/role": "master", "node-role.kubernetes.io/worker": ""}, "master"),
    ({"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/control-plane": ""},
     "control-plane,worker"),
    ({"node-role.kubernetes.io/": "x"}, None),
    ({}, None),
])
def test_role(labels: dict[str, str], role: str | None) -> None:
    assert (k8snode.role(labels) or None) == role


def test_pod_not_scheduled(kube_api: FakeKubeAPI, clients: Clients) -> None:
    pending = pod()
    del pending["spec"]["nodeName"]
    kube_api.add(pending)
    with pytest.raises(ActionError, match="the pod 'web-1' in the namespace 'shop' is not "
                                          "scheduled on a node"):
        fetch(clients)


# --- through the engine -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ShowParams:
    text: str = field(default="", metadata={"substitute": True})


def _show(ctx: Any) -> Result:
    keys = ",".join(f"{k}={v}" for k, v in sorted(ctx.context.items()) if k.startswith("node."))
    return Result(output=f"{keys}|{ctx.params.text}")


@pytest.fixture
def act(clients: Clients, tmp_path: Path) -> Callable[..., list[Notification]]:
    catalog.load_builtins()
    registry = Registry()
    registry.add(REGISTRY.get("context", "k8snode"))
    actionner("t", "show", registry=registry, params=ShowParams, use_context=True,
              description="show the context")(_show)

    def run(ignore_errors: bool = False) -> list[Notification]:
        path = tmp_path / "rules.yaml"
        path.write_text(textwrap.dedent(f"""
            - rule: R
              actions:
                - action: A
                  actionner: t:show
                  ignore_errors: {str(ignore_errors).lower()}
                  additional_contexts: [k8snode]
                  parameters: {{text: "${{NODE_HOSTNAME}}/${{NODE_ROLE}}"}}
            """))
        notes: list[Notification] = []
        Engine(registry=registry, rules=RuleStore(rules.load([str(path)], registry)),
               metrics=Metrics(), notify=lambda _n, note: notes.append(note),
               default_notifiers=("webhook",), clients=clients).handle(event())
        return notes

    return run


def test_keys_reach_the_action(kube_api: FakeKubeAPI,
                               act: Callable[..., list[Notification]]) -> None:
    kube_api.add(pod())
    kube_api.add(node(LABELS))
    (note,) = act()
    assert note.status == "success"
    keys, text = note.output.split("|")
    assert keys == ",".join(f"{k}={v}" for k, v in sorted(FACTS.items()))
    assert text == "ip-10-0-0-1/worker"


def test_missing_pod_fails_the_action(kube_api: FakeKubeAPI,
                                      act: Callable[..., list[Notification]]) -> None:
    (note,) = act()
    assert note.status == "failure"
    assert note.error == ("context 'k8snode': cannot read the pod 'web-1' in the namespace "
                          "'shop': pods \"web-1\" not found (404)")


def test_forbidden_node(kube_api: FakeKubeAPI, act: Callable[..., list[Notification]]) -> None:
    kube_api.add(pod())
    kube_api.add(node(LABELS))
    kube_api.forbid("GET", r"^/api/v1/nodes/")
    (note,) = act()
    assert note.error.startswith("context 'k8snode': cannot read the node 'node-1': ")
    assert 'cannot get resource "nodes"' in note.error


def test_ignore_errors_runs_the_action_without_the_keys(
        kube_api: FakeKubeAPI, act: Callable[..., list[Notification]]) -> None:
    (note,) = act(ignore_errors=True)
    assert note.status == "success"
    assert note.output == "|/"
