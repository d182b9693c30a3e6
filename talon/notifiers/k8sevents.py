"""The `k8sevents` notifier: one core/v1 Event per notification, next to the involved pod.

Layer L2. No settings. The Kubernetes client is the process's shared one: the dispatcher
hands it over with `bind_clients()` right after building the notifier. The Event lands in
the namespace of the notification's `namespace` object (in `default` when there is none or
when that namespace does not exist), refers to the pod (with its uid when the pod still
exists, so tools such as Argo CD attach it) or, for node actions, to the node. Its type is
`Warning` for failures and `Normal` otherwise, so `kubectl get events --field-selector
type=Warning` lists the failed responses (the Go version always says Normal). Field lengths
follow the API server's limits for Events that carry an eventTime.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from talon.clients import kube
from talon.notifiers import _http, _text
from talon.plugin import (
    Delivery,
    Notification,
    NotifyError,
    Permission,
    notifier,
)

COMPONENT = "falco-talon"
REPORTING_COMPONENT = "falcosecurity.org/falco-talon"
DEFAULT_NAMESPACE = "default"
MESSAGE_LIMIT = 1024
"""Bytes of `message` the API server accepts."""
FIELD_LIMIT = 128
"""Characters of `reason` and `action` the API server accepts."""
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")
"""ANSI escape sequences and control characters (newlines and tabs are kept)."""

EXAMPLE = """\
default_notifiers:
  - k8sevents
notifiers:
  k8sevents: {}
"""


def _object(n: Notification, key: str) -> str:
    """Object `key` of the notification, whatever its casing (`pod`, `Pod`)."""
    return next((str(v) for k, v in n.objects.items() if k.lower() == key), "")


def message(n: Notification) -> str:
    """The plaintext block, at most MESSAGE_LIMIT bytes, `'` turned into `"`."""
    lines = [f"Status: {n.status}", f"Message: {n.message}",
             *_text.labelled(("Rule", n.rule), ("Action", n.action),
                             ("Actionner", n.actionner), ("Event", n.event)),
             *_text.details(n), f"TraceID: {n.trace_id}"]
    text = _CONTROL.sub("", "\n".join(lines) + "\n").replace("'", '"')
    return text.encode()[:MESSAGE_LIMIT].decode("utf-8", "ignore")


def involved(n: Notification, uid: str = "") -> dict[str, str]:
    """The involvedObject: the pod (with its uid when known), else the node."""
    pod, node = _object(n, "pod"), _object(n, "node")
    if not pod and node:
        return {"kind": "Node", "name": node}
    ref = {"kind": "Pod", "namespace": _object(n, "namespace"), "name": pod}
    if uid:
        ref["uid"] = uid
    return ref


def event_body(n: Notification, namespace: str, uid: str = "",
               now: datetime | None = None) -> dict[str, Any]:
    """The core/v1 Event for `n`, to be created in `namespace`."""
    target = (n.actionner if n.message == "action" else n.output_target) or n.message
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{COMPONENT}-", "namespace": namespace},
        "involvedObject": involved(n, uid),
        "reason": f"{COMPONENT}:{n.message}:{target}:{n.status}"[:FIELD_LIMIT],
        "message": message(n),
        "source": {"component": COMPONENT},
        "type": "Warning" if n.status == "failure" else "Normal",
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": COMPONENT,
        "action": target[:FIELD_LIMIT],
    }


def _status(exc: BaseException | None) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and status > 0 else None


@notifier(
    "k8sevents",
    description="Create a Kubernetes Event in the namespace of the target resource",
    requires=("kubernetes",),
    permissions=(Permission(("",), ("events",), ("create",)),
                 Permission(("",), ("pods",), ("get",))),
    example=EXAMPLE,
)
class K8sEventsNotifier:
    """Creates one Event per notification with the shared Kubernetes client."""

    def __init__(self, settings: None, delivery: Delivery) -> None:
        self.delivery = delivery
        self._clients: Any = None

    def bind_clients(self, clients: Any) -> None:
        """Receive the process's client facade (`talon.clients.Clients`)."""
        self._clients = clients

    def send(self, n: Notification) -> None:
        if self._clients is None:
            raise NotifyError("k8sevents: no Kubernetes client was given to this notifier")
        k = self._clients.kube()
        namespace = _object(n, "namespace")
        if involved(n)["kind"] != "Pod" or not kube.is_name(namespace, kube.LABEL):
            namespace = DEFAULT_NAMESPACE
        body = event_body(n, namespace, self._pod_uid(k, n))
        try:
            self._create(k, namespace, body)
        except NotifyError as exc:
            if _status(exc.__cause__) != 404 or namespace == DEFAULT_NAMESPACE:
                raise
            self._create(k, DEFAULT_NAMESPACE, body)

    def _create(self, k: Any, namespace: str, body: dict[str, Any]) -> None:
        """Create the Event in `namespace`; NotifyError (caused by the API error) if not."""
        body["metadata"]["namespace"] = namespace
        try:
            self._retrying(lambda: k.core.create_namespaced_event(
                namespace, body, _request_timeout=self.delivery.timeout))
        except Exception as exc:
            raise NotifyError(f"k8sevents: cannot create the event in the namespace "
                              f"'{namespace}': {kube.api_error(exc)}") from exc

    def _pod_uid(self, k: Any, n: Notification) -> str:
        """The pod's uid, or "" when there is no pod or it cannot be read (never fails)."""
        pod, namespace = _object(n, "pod"), _object(n, "namespace")
        if not pod or not kube.is_name(namespace, kube.LABEL) or not kube.is_name(pod):
            return ""
        try:
            found = k.core.read_namespaced_pod(pod, namespace,
                                               _request_timeout=self.delivery.timeout)
        except Exception:  # noqa: BLE001 - the uid is optional: the event goes out without it
            return ""
        return str(getattr(found.metadata, "uid", None) or "")

    def _retrying(self, call: Callable[[], Any]) -> Any:
        """`call()`, retried on connection errors, 429 and 5xx as the delivery says."""
        for attempt in range(self.delivery.retries + 1):
            try:
                return call()
            except Exception as exc:
                status = _status(exc)
                if attempt >= self.delivery.retries or (status is not None and status != 429
                                                        and status < 500):
                    raise
                self.delivery.sleep(_http.backoff(self.delivery, attempt))
        raise NotifyError("k8sevents: no attempt was made")  # retries < 0
