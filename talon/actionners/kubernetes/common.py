"""Helpers shared by the Kubernetes actionners: pod lookup, owners, API error text, and
the failure Result that keeps the target's objects.

Layer L2 (a plug-in module): imports only talon.plugin, talon.clients and its package.
API calls go through `ctx.clients.kube()` and always pass `_request_timeout`.
"""

from __future__ import annotations

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


def get_pod(ctx: ActionContext) -> Any:
    """The event's pod (a V1Pod); ActionError with the API's message when it can't be read."""
    namespace, pod = pod_target(ctx)
    k = kube(ctx)
    try:
        return k.core.read_namespaced_pod(pod, namespace, _request_timeout=k.timeout)
    except Exception as exc:
        if is_not_found(exc):
            raise CheckFailedError(
                f"the pod '{pod}' in the namespace '{namespace}' doesn't exist") from exc
        raise ActionError(f"cannot read the pod '{pod}' in the namespace '{namespace}': "
                          f"{api_error(exc)}") from exc


def pod_exists(ctx: ActionContext) -> None:
    """Live check used by every pod-based actionner."""
    get_pod(ctx)


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
