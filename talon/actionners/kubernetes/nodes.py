"""Kubernetes actionners acting on the node of the event's pod: cordon, drain.

Layer L2 (plug-in). cordon marks the node unschedulable (one JSON patch). drain evicts the
pods of the node through the Eviction API (policy/v1), so PodDisruptionBudgets are honoured;
it does not cordon (pair it with kubernetes:cordon). drain skips mirror (static) pods,
Talon's own pod, and DaemonSet/StatefulSet pods on request; `min_healthy_replicas` keeps a
ReplicaSet's pods when too few of its replicas are ready, counting the pods this drain
already evicted. drain accepts both `ignore_errors` (the Go spelling) and `ignore_error`
(the documented one): either set to true ignores the errors.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from talon.actionners.kubernetes import common, pods, rbac, undo
from talon.clients import kube as kube_client
from talon.plugin import ActionContext, ActionError, Result, Status, actionner

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
POLL_SECONDS = 1.0
"""How often drain checks whether the evicted pods are gone (max_wait_period > 0)."""
DEADLINE_MARGIN = 0.25
"""Seconds kept before the action deadline to build and return the result."""
MAX_DETAILS = 3
"""How many per-pod error messages the failure text quotes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CordonParams:
    """Parameters of kubernetes:cordon."""

    ttl: str | int = field(default="", metadata={"help": undo.TTL_HELP})

    def __post_init__(self) -> None:
        undo.check_ttl(self.ttl)


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainParams:
    """Parameters of kubernetes:drain."""

    ignore_daemonsets: bool = field(default=False, metadata={
        "help": "If true, pods belonging to a DaemonSet are not evicted"})
    ignore_statefulsets: bool = field(default=False, metadata={
        "help": "If true, pods belonging to a StatefulSet are not evicted"})
    min_healthy_replicas: str = field(default="", metadata={
        "help": "Minimum number of healthy pods of a ReplicaSet to allow the eviction of its "
                "pods: an absolute value (\"2\") or a percentage (\"50%\"), as a quoted string"})
    ignore_errors: bool = field(default=False, metadata={
        "help": "If true, errors during the drain are ignored and the action succeeds "
                "(controls the flow of the next actions)"})
    ignore_error: bool = field(default=False, metadata={
        "help": "Same as ignore_errors (the documentation's spelling)"})
    max_wait_period: int = field(default=0, metadata={
        "min": 0,
        "help": "Seconds to wait for the evicted pods to be gone; 0 returns right after "
                "the eviction calls"})
    wait_period_excluded_namespaces: tuple[str, ...] = field(default=(), metadata={
        "help": "Namespaces whose pods are not waited for during max_wait_period"})

    def __post_init__(self) -> None:
        pods.check_min_healthy_replicas(self.min_healthy_replicas)

    @property
    def errors_ignored(self) -> bool:
        """True when either spelling of the ignore-errors parameter is true."""
        return self.ignore_errors or self.ignore_error


CORDON_EXAMPLE = """\
- action: Cordon the node
  actionner: kubernetes:cordon
"""

DRAIN_EXAMPLE = """\
- action: Drain the node
  actionner: kubernetes:drain
  parameters:
    ignore_daemonsets: true
    ignore_statefulsets: true
    min_healthy_replicas: "50%"
    max_wait_period: 90
    wait_period_excluded_namespaces:
      - kube-system
"""


# --- shared -----------------------------------------------------------------------------


def api_errors() -> tuple[type[BaseException], ...]:
    """What a kubernetes client call raises: API statuses, connection errors, timeouts."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    return (ApiException, HTTPError, OSError)


def _node_of(ctx: ActionContext) -> str:
    """The name of the node the event's pod runs on."""
    return common.node_of(common.get_pod(ctx))


# --- cordon -----------------------------------------------------------------------------


@actionner(
    pods.CATEGORY, "cordon",
    disruptive=True, params=CordonParams, checks=(common.pod_exists,),
    description="Cordon a node",
    required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=(rbac.PODS_GET, rbac.NODES_GET_PATCH), example=CORDON_EXAMPLE,
)
def cordon(ctx: ActionContext) -> Result:
    """Mark the pod's node unschedulable (JSON patch of /spec/unschedulable); with `ttl`,
    record whether Talon cordoned it (a node cordoned before stays cordoned on expiry)."""
    node = _node_of(ctx)
    k = common.kube(ctx)
    was_cordoned = False
    patch = [{"op": "replace", "path": "/spec/unschedulable", "value": True}]
    try:
        if ctx.params.ttl:
            spec = undo.read(k, undo.KINDS["node"], "", node).get("spec") or {}
            was_cordoned = spec.get("unschedulable") is True
        k.core.patch_node(node, patch, _request_timeout=k.timeout)
    except Exception as exc:
        raise ActionError(f"the node '{node}' could not be cordoned: "
                          f"{common.api_error(exc)}") from exc
    output = f"the node '{node}' has been cordoned"
    if ctx.params.ttl:
        mark = undo.record(ctx, "node", "", node,
                           lambda _obj: undo.new_mark(ctx, cordoned=not was_cordoned))
        output += undo.expiry_note(mark)
    return Result(output=output, objects={"node": node})


# --- drain ------------------------------------------------------------------------------


@dataclass
class _Tally:
    """What happened to the pods of the node."""

    ignored: int = 0
    eviction_errors: int = 0
    other_errors: int = 0
    not_evicted: int = 0
    details: list[str] = field(default_factory=list)
    evicted: list[tuple[str, str, str]] = field(default_factory=list)
    """(namespace, name, uid) of the pods whose eviction was accepted."""

    def error(self, kind: str, pod: Any, message: str) -> None:
        if kind == "eviction":
            self.eviction_errors += 1
        else:
            self.other_errors += 1
        self.detail(f"{pod.metadata.namespace}/{pod.metadata.name}: {message}")

    def detail(self, text: str) -> None:
        if len(self.details) < MAX_DETAILS:
            self.details.append(text)

    @property
    def errors(self) -> int:
        return self.eviction_errors + self.other_errors + self.not_evicted


class _Replicas:
    """Ready and desired replicas of the ReplicaSets seen, minus the pods evicted here."""

    def __init__(self, k: Any, minimum: str) -> None:
        self.k, self.minimum = k, minimum
        self._known: dict[tuple[str, str], list[int]] = {}

    def _get(self, namespace: str, name: str) -> list[int]:
        key = (namespace, name)
        if key not in self._known:
            rs = self.k.apps.read_namespaced_replica_set(name, namespace,
                                                         _request_timeout=self.k.timeout)
            self._known[key] = list(pods.replica_counts(rs))
        return self._known[key]

    def too_few(self, namespace: str, name: str) -> bool:
        """True when evicting one more pod of this ReplicaSet goes below the minimum."""
        ready, desired = self._get(namespace, name)
        return pods.below_min_healthy(self.minimum, ready, desired)

    def evicted(self, namespace: str, name: str) -> None:
        if (namespace, name) in self._known:
            self._known[(namespace, name)][0] -= 1


def _own_pod() -> tuple[str, str] | None:
    """(namespace, name) of Talon's own pod: POD_NAMESPACE/POD_NAME, else in-cluster facts."""
    name = os.environ.get("POD_NAME", "")
    namespace = os.environ.get("POD_NAMESPACE", "")
    if kube_client.in_cluster():
        name = name or os.environ.get("HOSTNAME", "") or socket.gethostname()
        if not namespace:
            try:
                namespace = (kube_client.SERVICE_ACCOUNT / "namespace").read_text().strip()
            except OSError:
                namespace = ""
    return (namespace, name) if namespace and name else None


def _pods_on(k: Any, node: str) -> list[Any]:
    """Every pod of every namespace scheduled on `node` (paginated list)."""
    found: list[Any] = []
    token = None
    while True:
        page = k.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={node}", limit=500, _continue=token,
            _request_timeout=k.timeout)
        found += page.items or []
        token = page.metadata._continue if page.metadata else None
        if not token:
            return found


def _skipped(pod: Any, p: DrainParams, own: tuple[str, str] | None,
             replicas: _Replicas) -> bool:
    """True when `pod` is not to be evicted (raises on an owner lookup error)."""
    meta = pod.metadata
    if MIRROR_ANNOTATION in (meta.annotations or {}) or own == (meta.namespace, meta.name):
        return True
    kind, owner = common.owner(pod)
    if (kind == "DaemonSet" and p.ignore_daemonsets) or (
            kind == "StatefulSet" and p.ignore_statefulsets):
        return True
    return bool(kind == "ReplicaSet" and p.min_healthy_replicas
                and replicas.too_few(meta.namespace, owner))


def _evict(k: Any, pod: Any, tally: _Tally, replicas: _Replicas) -> None:
    from kubernetes import client

    meta = pod.metadata
    body = client.V1Eviction(api_version="policy/v1", kind="Eviction",
                             metadata=client.V1ObjectMeta(name=meta.name,
                                                          namespace=meta.namespace))
    try:
        k.core.create_namespaced_pod_eviction(meta.name, meta.namespace, body,
                                              _request_timeout=k.timeout)
    except api_errors() as exc:
        if not common.is_not_found(exc):
            tally.error("eviction", pod, common.api_error(exc))
            return
    tally.evicted.append((meta.namespace, meta.name, meta.uid or ""))
    kind, owner = common.owner(pod)
    if kind == "ReplicaSet":
        replicas.evicted(meta.namespace, owner)


def _evict_all(ctx: ActionContext, k: Any, pods_: list[Any]) -> _Tally:
    p: DrainParams = ctx.params
    tally, own, replicas = _Tally(), _own_pod(), _Replicas(k, p.min_healthy_replicas)
    for pod in pods_:
        if time.monotonic() >= ctx.deadline - DEADLINE_MARGIN:
            tally.error("other", pod, "not evicted: the action deadline was reached")
            continue
        try:
            skip = _skipped(pod, p, own, replicas)
        except api_errors() as exc:
            tally.error("other", pod, common.api_error(exc))
            continue
        if skip:
            tally.ignored += 1
        else:
            _evict(k, pod, tally, replicas)
    return tally


def _wait(ctx: ActionContext, k: Any, node: str, tally: _Tally) -> None:
    """Poll until the evicted pods (outside the excluded namespaces) are gone."""
    p: DrainParams = ctx.params
    excluded = set(p.wait_period_excluded_namespaces)
    waiting = {(ns, name, uid) for ns, name, uid in tally.evicted if ns not in excluded}
    end = min(time.monotonic() + p.max_wait_period, ctx.deadline - DEADLINE_MARGIN)
    while waiting:
        try:
            present = {(x.metadata.namespace, x.metadata.name, x.metadata.uid or "")
                       for x in _pods_on(k, node)}
        except api_errors() as exc:
            tally.detail(f"cannot list the pods of the node: {common.api_error(exc)}")
            break
        waiting &= present
        left = end - time.monotonic()
        if not waiting or left <= 0:
            break
        time.sleep(min(POLL_SECONDS, left))
    tally.not_evicted = len(waiting)


@actionner(
    pods.CATEGORY, "drain",
    disruptive=True, params=DrainParams, checks=(common.pod_exists,),
    description="Drain a node",
    required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=(rbac.PODS_GET_LIST, rbac.PODS_EVICTION, rbac.REPLICASETS_GET),
    example=DRAIN_EXAMPLE,
)
def drain(ctx: ActionContext) -> Result:
    """Evict the pods of the event pod's node, then optionally wait for them to be gone."""
    node = _node_of(ctx)
    k = common.kube(ctx)
    try:
        pods_ = _pods_on(k, node)
    except Exception as exc:
        raise ActionError(f"cannot list the pods of the node '{node}': "
                          f"{common.api_error(exc)}") from exc
    tally = _evict_all(ctx, k, pods_)
    if ctx.params.max_wait_period > 0:
        _wait(ctx, k, node, tally)
    if tally.errors == 0 or ctx.params.errors_ignored:
        return Result(
            output=f"the node '{node}' has been drained, errors are ignored: {tally.ignored} "
                   f"ignored pods, {tally.eviction_errors} eviction errors, "
                   f"{tally.other_errors} other errors",
            objects={"node": node})
    message = (f"the node '{node}' has not been fully drained: {tally.ignored} pods ignored, "
               f"{tally.eviction_errors} eviction errors, {tally.not_evicted} were not evicted "
               f"during max_wait_period, {tally.other_errors} other errors")
    if tally.details:
        message += " (" + "; ".join(tally.details) + ")"
    return Result(status=Status.FAILURE, error=message, objects={"node": node})
