"""Helpers shared by the Kubernetes actionners: pod lookup, owners, API error text, and
the failure Result that keeps the target's objects.

Layer L2 (a plug-in module): imports only talon.plugin, talon.clients and its package.
API calls go through `ctx.clients.kube()` and always pass `_request_timeout`.
The event's pod is read once per action, as raw JSON (`read_pod`, kept in `ctx.cache` by
the `pod_exists` check for the run); hot paths skip the client's generated models, whose
deserialisation costs far more CPU than the request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from talon.clients import kube as kube_names
from talon.clients.kube import api_error as api_error  # shared with contexts and notifiers
from talon.clients.kube import node_of as node_of
from talon.plugin import (
    NAMESPACE_KEYS,
    POD_KEYS,
    ActionContext,
    ActionError,
    CheckFailedError,
    Result,
    Status,
)

STANDALONE = "StandalonePod"


def kube(ctx: Any) -> Any:
    """The shared Kubernetes client of the process."""
    return ctx.clients.kube()


def is_not_found(exc: BaseException) -> bool:
    return getattr(exc, "status", None) == 404


def pod_target(ctx: ActionContext) -> tuple[str, str]:
    """(namespace, pod) from the event; CheckFailedError when either is missing, EventError
    (an invalid event, nothing sent) when either is not a name the API server accepts."""
    pod_key, pod = ctx.event.pick(*POD_KEYS)
    ns_key, namespace = ctx.event.pick(*NAMESPACE_KEYS)
    if not pod:
        raise CheckFailedError("missing pod name (k8s.pod.name)")
    if not namespace:
        raise CheckFailedError("missing namespace (k8s.ns.name)")
    return (kube_names.check_name(namespace, ns_key, kube_names.LABEL),
            kube_names.check_name(pod, pod_key, kube_names.SUBDOMAIN))


def read_pod(ctx: ActionContext) -> dict[str, Any]:
    """The event's pod as the API server's JSON (a dict), read once per action.

    The first call (usually the `pod_exists` check) reads the pod; later calls in the same
    action (the run) get the same dict from `ctx.cache` under ("Pod", namespace, name).
    CheckFailedError when the pod does not exist, ActionError with the API's message when
    it cannot be read. The dict is shared: do not change it.
    """
    namespace, pod = pod_target(ctx)
    key = ("Pod", namespace, pod)
    found: dict[str, Any] | None = ctx.cache.get(key)
    if found is None:
        found = ctx.cache[key] = _read_pod(ctx, namespace, pod)
    return found


def reread_pod(ctx: ActionContext) -> dict[str, Any]:
    """The event's pod read again (after a conflict), replacing the one in `ctx.cache`."""
    namespace, pod = pod_target(ctx)
    found = ctx.cache[("Pod", namespace, pod)] = _read_pod(ctx, namespace, pod)
    return found


def _read_pod(ctx: ActionContext, namespace: str, pod: str) -> dict[str, Any]:
    try:
        return read_json(kube(ctx).call("GET", kube_names.pod_path(namespace, pod)))
    except Exception as exc:
        if is_not_found(exc):
            raise pod_missing(namespace, pod) from exc
        raise ActionError(f"cannot read the pod '{pod}' in the namespace '{namespace}': "
                          f"{api_error(exc)}") from exc


def pod_missing(namespace: str, pod: str) -> CheckFailedError:
    """The failed check of every pod-based actionner: the pod is not there (a 404)."""
    return CheckFailedError(f"the pod '{pod}' in the namespace '{namespace}' doesn't exist")


def read_json(response: Any) -> dict[str, Any]:
    """The JSON object of a `_preload_content=False` answer (its connection released)."""
    try:
        data = json.loads(response.data)
    finally:
        response.release_conn()
    if not isinstance(data, dict):
        raise ActionError(f"the API server answered {type(data).__name__}, not an object")
    return data


def discard(response: Any) -> None:
    """Drain and release a `_preload_content=False` answer whose body is not needed."""
    response.drain_conn()
    response.release_conn()


def get_pod(ctx: ActionContext, *, fresh: bool = False) -> Any:
    """The event's pod as a V1Pod model, built from `read_pod` (no second request), or
    from a new read with `fresh` (when waiting for the pod to change).

    For plug-ins that walk the typed model (containers, labels); the fast paths use the
    dict of `read_pod`, since building models costs far more CPU than the request.
    """
    raw = reread_pod(ctx) if fresh else read_pod(ctx)
    return kube(ctx).api_client.deserialize(_Body(json.dumps(raw)), "V1Pod")


class _Body:
    """What ApiClient.deserialize reads from a response: its `data`."""

    def __init__(self, data: str) -> None:
        self.data = data


def pod_exists(ctx: ActionContext) -> None:
    """Live check used by every pod-based actionner; its read is kept for the run."""
    read_pod(ctx)


def pod_owner(pod: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, name) of the first owner reference of a pod dict, or (StandalonePod, "")."""
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    if not refs:
        return STANDALONE, ""
    return str(refs[0].get("kind", "")), str(refs[0].get("name", ""))


def pod_node(pod: Mapping[str, Any]) -> str:
    """The node a pod dict runs on; ActionError when it is not scheduled yet."""
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        meta = pod.get("metadata") or {}
        raise ActionError(f"the pod '{meta.get('name')}' in the namespace "
                          f"'{meta.get('namespace')}' is not scheduled on a node")
    return str(node)


def owner(pod: Any) -> tuple[str, str]:
    """(kind, name) of the pod's first owner reference, or (StandalonePod, "")."""
    refs = getattr(pod.metadata, "owner_references", None) or []
    if not refs:
        return STANDALONE, ""
    return str(refs[0].kind), str(refs[0].name)


def pod_objects(namespace: str, pod: str) -> dict[str, str]:
    return {"pod": pod, "namespace": namespace}


def report_failures(objects: Mapping[str, str], body: Callable[[], Result]) -> Result:
    """Run `body`; an expected failure becomes a failure Result that keeps `objects`."""
    try:
        return body()
    except (ActionError, CheckFailedError) as exc:
        return Result(status=Status.FAILURE, error=str(exc), objects=objects, cause=exc)
