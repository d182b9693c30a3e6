"""The k8sevents notifier against the fake API server.

Behaviours covered:
- built by `notify.build` with the process's clients bound to it (`bind_clients`);
- a successful action: a core/v1 Event in the pod's namespace with generateName, the pod as
  involvedObject (with its uid), reason `falco-talon:action:<actionner>:success`, the
  plaintext message, source, type Normal, eventTime in microseconds, reporting fields and
  action; a failed output: type Warning, reason with the output target, in `default`;
- node actions refer to the Node (Event in `default`); a pod that no longer exists is
  referred to without uid; a namespace that does not exist sends the Event to `default`;
  a namespace that is not a DNS label is never used in a URL;
- the message: `'` → `"`, CRLF → LF, ANSI sequences and control characters dropped, at
  most 1024 bytes (never cutting a UTF-8 character); reason and action at most 128 characters;
- 5xx retried with the delivery's backoff, 403 not retried and reported with the API's
  message; a notifier without clients fails clearly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from talon import catalog, config, notify
from talon.clients import Clients
from talon.errors import NotifyError
from talon.models import Delivery, Notification
from talon.notifiers import k8sevents
from talon.registry import REGISTRY
from tests.actionners.conftest import pod
from tests.fakes.kube_api import FakeKubeAPI

SUCCESS = Notification(
    message="action", status="success", trace_id="trace-1", rule="Shell in container",
    action="Label the pod", actionner="kubernetes:label", event="a shell was spawned",
    output="the pod 'web-1' in the namespace 'shop' has been labeled",
    objects={"pod": "web-1", "namespace": "shop"})
FAILURE = Notification(
    message="output", status="failure", trace_id="trace-2", rule="Grab",
    action="Download", actionner="kubernetes:download", output_target="aws:s3",
    error="bucket 'b' not found", objects={"file": "/etc/passwd"})


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def notifier(kube_config: Path, sleeps: list[float]) -> Any:
    catalog.load_builtins()
    settings = config.load(None, env={}, overrides={"kubeconfig": str(kube_config)})
    delivery = Delivery(timeout=5, retries=2, backoff=0.5, sleep=sleeps.append)
    built = notify.build(["k8sevents"], {}, REGISTRY, delivery,
                         clients=Clients(settings, timeout=5))
    return built["k8sevents"]


def events(kube_api: FakeKubeAPI, namespace: str | None = None) -> list[dict[str, Any]]:
    return kube_api.list("events", namespace, api_version="v1")


def test_success_event(kube_api: FakeKubeAPI, notifier: Any) -> None:
    stored_pod = kube_api.add(pod())
    notifier.send(SUCCESS)
    (ev,) = events(kube_api)
    assert ev["metadata"]["namespace"] == "shop"
    assert ev["metadata"]["name"].startswith("falco-talon-")
    assert ev["involvedObject"] == {"kind": "Pod", "namespace": "shop", "name": "web-1",
                                    "uid": stored_pod["metadata"]["uid"]}
    assert ev["reason"] == "falco-talon:action:kubernetes:label:success"
    assert ev["message"] == (
        "Status: success\nMessage: action\nRule: Shell in container\nAction: Label the pod\n"
        "Actionner: kubernetes:label\nEvent: a shell was spawned\nNamespace: shop\n"
        "Pod: web-1\nOutput: \n"
        "the pod \"web-1\" in the namespace \"shop\" has been labeled\nTraceID: trace-1\n")
    assert ev["source"] == {"component": "falco-talon"}
    assert ev["type"] == "Normal"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ev["eventTime"])
    assert ev["reportingComponent"] == "falcosecurity.org/falco-talon"
    assert ev["reportingInstance"] == "falco-talon"
    assert ev["action"] == "kubernetes:label"
    (post,) = kube_api.requests_for("POST")
    assert post.path == "/api/v1/namespaces/shop/events"


def test_failure_event(kube_api: FakeKubeAPI, notifier: Any) -> None:
    notifier.send(FAILURE)
    (ev,) = events(kube_api)
    assert ev["metadata"]["namespace"] == "default"
    assert ev["type"] == "Warning"
    assert ev["reason"] == "falco-talon:output:aws:s3:failure"
    assert ev["action"] == "aws:s3"
    assert ev["involvedObject"] == {"kind": "Pod", "namespace": "", "name": ""}
    assert ev["message"] == (
        "Status: failure\nMessage: output\nRule: Grab\nAction: Download\n"
        "Actionner: kubernetes:download\nFile: /etc/passwd\nError: bucket \"b\" not found\n"
        "OutputTarget: aws:s3\nTraceID: trace-2\n")


def test_node_event(kube_api: FakeKubeAPI, notifier: Any) -> None:
    notifier.send(Notification(message="action", status="success", trace_id="t",
                               actionner="kubernetes:cordon", objects={"node": "node-1"}))
    (ev,) = events(kube_api, "default")
    assert ev["involvedObject"] == {"kind": "Node", "name": "node-1"}


def test_gone_pod_has_no_uid(kube_api: FakeKubeAPI, notifier: Any) -> None:
    notifier.send(SUCCESS)
    (ev,) = events(kube_api, "shop")
    assert "uid" not in ev["involvedObject"]


def test_missing_namespace_falls_back_to_default(kube_api: FakeKubeAPI, notifier: Any) -> None:
    kube_api.fail("POST", r"^/api/v1/namespaces/shop/events$", 404,
                  message='namespaces "shop" not found')
    notifier.send(SUCCESS)
    (ev,) = events(kube_api)
    assert ev["metadata"]["namespace"] == "default"
    assert ev["involvedObject"]["namespace"] == "shop"


def test_hostile_namespace_is_not_used(kube_api: FakeKubeAPI, notifier: Any) -> None:
    notifier.send(Notification(message="action", status="success", trace_id="t",
                               actionner="kubernetes:label",
                               objects={"pod": "p", "namespace": "../../nodes/x"}))
    assert [(r.method, r.path) for r in kube_api.requests] == [
        ("POST", "/api/v1/namespaces/default/events")]


def test_message_limits() -> None:
    note = Notification(message="action", status="success", trace_id="t",
                        actionner="x:" + "y" * 200,
                        output="l'un\r\nl\x1b[31m'autre\x07\n" + "é" * 1000)
    body = k8sevents.event_body(note, "default")
    text = body["message"]
    assert "l\"un\nl\"autre\n" in text
    assert len(text.encode()) <= 1024
    assert len(text.encode()) >= 1022  # cut at a character boundary, not before
    assert len(body["reason"]) == 128 and len(body["action"]) == 128


def test_server_errors_are_retried(kube_api: FakeKubeAPI, notifier: Any,
                                   sleeps: list[float]) -> None:
    kube_api.fail("POST", r"/events$", 503, message="busy", times=2)
    notifier.send(SUCCESS)
    assert len(events(kube_api)) == 1
    assert sleeps == [0.5, 1.0]
    assert len(kube_api.requests_for("POST", "/api/v1/namespaces/shop/events")) == 3


def test_forbidden_is_reported(kube_api: FakeKubeAPI, notifier: Any,
                               sleeps: list[float]) -> None:
    kube_api.forbid("POST", r"/events$")
    with pytest.raises(NotifyError) as caught:
        notifier.send(SUCCESS)
    message = str(caught.value)
    assert message.startswith("k8sevents: cannot create the event in the namespace 'shop': ")
    assert 'cannot create resource "events"' in message and message.endswith("(403)")
    assert sleeps == []


def test_unbound_notifier_fails_clearly() -> None:
    unbound = k8sevents.K8sEventsNotifier(None, Delivery())
    with pytest.raises(NotifyError, match="no Kubernetes client"):
        unbound.send(SUCCESS)
