"""Reads shared within an action, raw JSON answers and the Kubernetes client rate limit.

Driven through the real engine with the real client and the fake API server; assertions are
on the requests the fake received (method, path, order, time of arrival).

Behaviours covered:
- per action, the event's pod is read at most once: the live check's GET serves the run
  (terminate: GET, DELETE; with min_healthy_replicas: GET pod, GET ReplicaSet, DELETE;
  label on the pod: one PATCH, no read; node level: GET pod, GET node, PATCH node); a
  conflict re-reads the node (PATCH 409, GET, PATCH); two actions on one event read
  afresh (no cache across actions); get_pod (typed model, for the other plug-ins) makes
  no second request;
- a plug-in's check can hand a value to its run through `ctx.cache`, fresh per action;
- with `_preload_content=False` a non-2xx answer still raises ApiException with `.status` and
  the Status JSON in `.body`, and the action's error keeps the API server's message;
- the connection pool is sized to the threads that call the API;
- `kubernetes.qps`/`burst`: requests from several threads arrive no earlier than the bucket
  allows (arrival times at the fake); a wait that would pass the action's deadline fails
  the action with a clear error and sends nothing more; qps 0 sets no limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from talon import config, models
from talon import rules as rules_pkg
from talon.actionners.kubernetes import common
from talon.clients import Clients
from talon.engine import Engine
from talon.metrics import Metrics
from talon.models import Notification, Result
from talon.plugin import ActionContext
from talon.registry import Registry, actionner
from talon.reloader import RuleStore
from tests.actionners.conftest import Acted, assert_failed, event, pod
from tests.actionners.test_pods import RS_PATH, node, replicaset, rules
from tests.fakes.kube_api import FakeKubeAPI

Act = Callable[..., Acted]
POD_PATH = "/api/v1/namespaces/shop/pods/web-1"
NODE_PATH = "/api/v1/nodes/node-1"


def calls(kube_api: FakeKubeAPI) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in kube_api.requests]


# --- one read per object per action ----------------------------------------------------------


def test_terminate_reads_the_pod_once(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    acted = act(rules("kubernetes:terminate"), event())
    assert acted.done == [("R", "A", "success")]
    assert calls(kube_api) == [("GET", POD_PATH), ("DELETE", POD_PATH)]


def test_terminate_with_min_healthy_reads_pod_and_replicaset_once(
        act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.add(replicaset(ready=3))
    acted = act(rules("kubernetes:terminate", {"min_healthy_replicas": "2"}), event())
    assert acted.done == [("R", "A", "success")]
    assert calls(kube_api) == [("GET", POD_PATH), ("GET", RS_PATH), ("DELETE", POD_PATH)]


def test_terminate_raw_replicaset_counts_still_skip(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.add(replicaset(ready=1))
    acted = act(rules("kubernetes:terminate", {"min_healthy_replicas": "50%"}), event())
    assert acted.done == [("R", "A", "ignored")]
    assert calls(kube_api) == [("GET", POD_PATH), ("GET", RS_PATH)]


def test_label_sends_one_request(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    acted = act(rules("kubernetes:label", {"labels": {"suspicious": "true"}}), event())
    assert acted.done == [("R", "A", "success")]
    assert calls(kube_api) == [("PATCH", POD_PATH)]
    assert kube_api.get("pods", "shop", "web-1")["metadata"]["labels"]["suspicious"] == "true"


def test_node_label_reads_pod_and_node_once(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.add(node(labels={}))
    acted = act(rules("kubernetes:label", {"labels": {"q": "1"}, "level": "node"}), event())
    assert acted.done == [("R", "A", "success")]
    assert calls(kube_api) == [("GET", POD_PATH), ("GET", NODE_PATH), ("PATCH", NODE_PATH)]
    assert kube_api.get("nodes", None, "node-1")["metadata"]["labels"] == {"q": "1"}


def test_node_label_conflict_reads_the_node_again(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.add(node(labels={}))
    kube_api.fail("PATCH", NODE_PATH, 409, message="the object has been modified")
    acted = act(rules("kubernetes:label", {"labels": {"q": "1"}, "level": "node"}), event())
    assert acted.done == [("R", "A", "success")]
    assert calls(kube_api) == [("GET", POD_PATH), ("GET", NODE_PATH), ("PATCH", NODE_PATH),
                               ("GET", NODE_PATH), ("PATCH", NODE_PATH)]


def test_each_action_reads_afresh(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.add(node(labels={}))
    two = """
- rule: R
  match: {rules: [F]}
  actions:
    - {action: A, actionner: kubernetes:label, parameters: {level: node, labels: {a: "1"}}}
    - {action: B, actionner: kubernetes:label, parameters: {level: node, labels: {b: x}}}
"""
    acted = act(two, event())
    assert acted.done == [("R", "A", "success"), ("R", "B", "success")]
    once = [("GET", POD_PATH), ("GET", NODE_PATH), ("PATCH", NODE_PATH)]
    assert calls(kube_api) == once + once
    assert kube_api.get("nodes", None, "node-1")["metadata"]["labels"] == {"a": "1", "b": "x"}


def test_get_pod_builds_the_model_from_the_shared_read(kube_api: FakeKubeAPI,
                                                       kube_config: Path) -> None:
    kube_api.add(pod(containers=("app", "sidecar")))
    settings = config.load(None, env={}, overrides={"kubeconfig": str(kube_config)})
    ctx = _ctx(Clients(settings, timeout=5))
    common.pod_exists(ctx)
    model = common.get_pod(ctx)
    assert [c.name for c in model.spec.containers] == ["app", "sidecar"]
    assert model.metadata.owner_references[0].kind == "ReplicaSet"
    assert calls(kube_api) == [("GET", POD_PATH)]


def _ctx(clients: Clients, ev: models.Event | None = None) -> ActionContext:
    return ActionContext(event=ev or event(), rule=None, action=None,  # type: ignore[arg-type]
                         params=None, context={}, env={}, clients=clients,
                         deadline=time.monotonic() + 10)


def test_checks_hand_values_to_the_run_through_ctx_cache(tmp_path: Path) -> None:
    registry, seen = Registry(), list[Any]()

    def remember(ctx: ActionContext) -> None:
        assert ctx.cache == {}, "a fresh cache for every action"
        ctx.cache[("Thing", ctx.event.pod_name())] = f"read for {ctx.event.pod_name()}"

    def run(ctx: ActionContext) -> Result:
        seen.append(ctx.cache[("Thing", ctx.event.pod_name())])
        return Result(output="ok")

    actionner("t", "cached", registry=registry, checks=(remember,), description="d")(run)
    path = tmp_path / "rules.yaml"
    path.write_text("- rule: R\n  match: {rules: [F]}\n  actions:\n"
                    "    - {action: A, actionner: t:cached}\n"
                    "    - {action: B, actionner: t:cached}\n")
    engine = _engine(registry, path)
    engine.handle(event("p1"))
    engine.handle(event("p2"))
    assert seen == ["read for p1", "read for p1", "read for p2", "read for p2"]


def _engine(registry: Registry, path: Path, clients: Any = None,
            notes: list[Notification] | None = None, **kw: Any) -> Engine:
    ruleset = rules_pkg.load([str(path)], registry)
    sink = notes if notes is not None else []
    return Engine(registry=registry, rules=RuleStore(ruleset), metrics=Metrics(),
                  notify=lambda _names, n: sink.append(n), default_notifiers=("webhook",),
                  clients=clients, **kw)


# --- raw JSON answers keep the API's errors ----------------------------------------------------


def test_raw_answers_still_raise_api_exceptions(kube_api: FakeKubeAPI, kube_config: Path) -> None:
    from kubernetes.client.exceptions import ApiException

    settings = config.load(None, env={}, overrides={"kubeconfig": str(kube_config)})
    k = Clients(settings, timeout=5).kube()
    with pytest.raises(ApiException) as caught:
        k.core.read_namespaced_pod("web-1", "shop", _preload_content=False,
                                   _request_timeout=k.timeout)
    assert caught.value.status == 404
    assert 'pods \\"web-1\\" not found' in caught.value.body or \
        'pods "web-1" not found' in caught.value.body
    assert common.api_error(caught.value) == 'pods "web-1" not found (404)'


@pytest.mark.parametrize(("method", "actionner_name", "expected"), [
    ("GET", "kubernetes:terminate", "cannot read the pod 'web-1' in the namespace 'shop': "
                                    "api server is sad (500)"),
    ("DELETE", "kubernetes:terminate", "cannot terminate the pod 'web-1' in the namespace "
                                       "'shop': api server is sad (500)"),
    ("PATCH", "kubernetes:label", "cannot label the pod 'web-1' in the namespace 'shop': "
                                  "api server is sad (500)"),
])
def test_raw_path_keeps_the_api_message(act: Act, kube_api: FakeKubeAPI, method: str,
                                        actionner_name: str, expected: str) -> None:
    kube_api.add(pod())
    kube_api.fail(method, POD_PATH, 500, message="api server is sad")
    parameters = {"labels": {"x": "y"}} if actionner_name == "kubernetes:label" else None
    assert_failed(act(rules(actionner_name, parameters), event()), expected)


def test_missing_pod_is_a_failed_check(act: Act, kube_api: FakeKubeAPI) -> None:
    assert_failed(act(rules("kubernetes:terminate"), event()),
                  "the pod 'web-1' in the namespace 'shop' doesn't exist")
    assert calls(kube_api) == [("GET", POD_PATH)]


def test_connection_pool_is_sized_to_the_callers(kube_api: FakeKubeAPI,
                                                 kube_config: Path) -> None:
    settings = config.load(None, env={}, overrides={
        "kubeconfig": str(kube_config), "workers": 24, "notifier_workers": 3})
    k = Clients(settings, timeout=5).kube()
    assert k.api_client.configuration.connection_pool_maxsize == 29
    assert k.api_client.rest_client.maxsize == 29  # idle connections kept


# --- client rate limit ------------------------------------------------------------------------


def _limited(kube_config: Path, qps: float, burst: int) -> Clients:
    settings = config.load(None, env={}, overrides={
        "kubeconfig": str(kube_config), "kubernetes.qps": qps, "kubernetes.burst": burst})
    return Clients(settings, timeout=5)


def test_rate_limit_spaces_requests_from_all_threads(kube_api: FakeKubeAPI,
                                                     kube_config: Path) -> None:
    for i in range(8):
        kube_api.add(pod(f"web-{i}"))
    qps, burst = 20.0, 2
    k = _limited(kube_config, qps, burst).kube()
    started = time.monotonic()

    def read(i: int) -> None:
        common.discard(k.core.read_namespaced_pod(f"web-{i}", "shop", _preload_content=False,
                                                  _request_timeout=k.timeout))

    threads = [threading.Thread(target=read, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    arrivals = sorted(r.received for r in kube_api.requests)
    assert len(arrivals) == 8
    for n, arrived in enumerate(arrivals):  # the n-th request had a token no earlier than this
        assert arrived >= started + (n + 1 - burst) / qps, (n, arrived - started)


def test_rate_limit_wait_past_the_deadline_fails_the_action(
        kube_api: FakeKubeAPI, kube_config: Path, tmp_path: Path) -> None:
    from talon import catalog

    kube_api.add(pod())
    registry = catalog.registry()
    path = tmp_path / "rules.yaml"
    path.write_text(rules("kubernetes:terminate"))
    notes: list[Notification] = []
    engine = _engine(registry, path, _limited(kube_config, 0.5, 1), notes,
                     action_timeout=1.0)
    assert engine.handle(event()) == [("R", "A", "failure")]
    [note] = [n for n in notes if n.action == "A"]
    assert "Kubernetes API client rate limit (0.5 requests/s, burst 1)" in note.error
    assert "after the action's deadline" in note.error
    assert calls(kube_api) == [("GET", POD_PATH)]  # the DELETE never went out
    assert kube_api.get("pods", "shop", "web-1") is not None


def test_no_limit_by_default(kube_api: FakeKubeAPI, kube_config: Path) -> None:
    settings = config.load(None, env={}, overrides={"kubeconfig": str(kube_config)})
    assert settings.kubernetes.qps == 0
    k = Clients(settings, timeout=5).kube()
    assert k.api_client.call_api.__func__ is type(k.api_client).call_api
