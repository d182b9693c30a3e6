"""Served resources and the `Status` errors the fake API server answers about them.

Test-support module of tests/fakes/kube_api.py; stdlib only. `CATALOG` lists the resources
served out of the box (core, apps, batch, policy, networking, rbac, coordination, events,
Cilium and Calico policies). Error builders copy the kube-apiserver's wording (NotFound,
AlreadyExists, Conflict, Invalid, Forbidden, ...) so callers can be tested against the exact
`message` / `reason` / `details` the real server sends.
"""

from __future__ import annotations

import copy
import marshal
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def clone(value: T) -> T:
    """A deep copy of JSON data (dicts, lists, strings, numbers, booleans, None) by a
    marshal round trip, several times cheaper than copy.deepcopy, which was most of the
    fake's CPU per stored object; anything else still goes through deepcopy."""
    try:
        copied: T = marshal.loads(marshal.dumps(value))
    except ValueError:
        return copy.deepcopy(value)
    return copied

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ResourceDef:
    """One served resource: where it lives and how the server treats it."""

    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool = True
    custom: bool = False
    """Served like a custom resource: no strategic merge patch, PUT needs a resourceVersion,
    list items keep apiVersion/kind."""
    subresources: frozenset[str] = frozenset()
    structs: tuple[str, ...] = ()
    """Top-level fields the Go type always serialises (`"spec": {}`), created when absent."""
    fields: frozenset[str] = frozenset()
    """Field-selector labels beyond metadata.name / metadata.namespace."""
    create_on_update: bool = False
    returns_deleted: bool = False
    """DELETE answers the object (pods, services, namespaces) rather than a Status."""

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`pods`, `deployments.apps`: the name used in error messages."""
        return f"{self.resource}.{self.group}" if self.group else self.resource

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


def _def(gv: str, resource: str, kind: str, **kw: Any) -> ResourceDef:
    group, _, version = gv.rpartition("/")
    return ResourceDef(group, version, resource, kind, **kw)


_WORKLOAD = {"subresources": frozenset({"status"}), "structs": ("spec", "status")}
_POD_FIELDS = frozenset({
    "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
    "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName",
})
_EVENT_FIELDS = frozenset({
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
    "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
    "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
})

CATALOG: tuple[ResourceDef, ...] = (
    _def("v1", "pods", "Pod", subresources=frozenset(
        {"status", "log", "eviction", "ephemeralcontainers", "exec", "attach"}),
        structs=("spec", "status"), fields=_POD_FIELDS, returns_deleted=True),
    _def("v1", "nodes", "Node", namespaced=False, fields=frozenset({"spec.unschedulable"}),
         **_WORKLOAD),
    _def("v1", "namespaces", "Namespace", namespaced=False, fields=frozenset({"status.phase"}),
         returns_deleted=True, **_WORKLOAD),
    _def("v1", "configmaps", "ConfigMap"),
    _def("v1", "secrets", "Secret", fields=frozenset({"type"})),
    _def("v1", "services", "Service", returns_deleted=True, **_WORKLOAD),
    _def("v1", "serviceaccounts", "ServiceAccount", returns_deleted=True),
    _def("v1", "endpoints", "Endpoints", create_on_update=True),
    _def("v1", "events", "Event", fields=_EVENT_FIELDS, create_on_update=True),
    _def("apps/v1", "deployments", "Deployment", **_WORKLOAD),
    _def("apps/v1", "replicasets", "ReplicaSet", fields=frozenset({"status.replicas"}),
         **_WORKLOAD),
    _def("apps/v1", "statefulsets", "StatefulSet", **_WORKLOAD),
    _def("apps/v1", "daemonsets", "DaemonSet", **_WORKLOAD),
    _def("batch/v1", "jobs", "Job", fields=frozenset({"status.successful"}), **_WORKLOAD),
    _def("batch/v1", "cronjobs", "CronJob", **_WORKLOAD),
    _def("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", **_WORKLOAD),
    _def("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", structs=("spec",)),
    _def("rbac.authorization.k8s.io/v1", "roles", "Role"),
    _def("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding"),
    _def("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", namespaced=False),
    _def("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding",
         namespaced=False),
    _def("coordination.k8s.io/v1", "leases", "Lease", structs=("spec",), create_on_update=True),
    _def("events.k8s.io/v1", "events", "Event", create_on_update=True),
    _def("cilium.io/v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", custom=True),
    _def("cilium.io/v2", "ciliumclusterwidenetworkpolicies", "CiliumClusterwideNetworkPolicy",
         namespaced=False, custom=True),
    _def("projectcalico.org/v3", "networkpolicies", "NetworkPolicy", custom=True),
    _def("projectcalico.org/v3", "globalnetworkpolicies", "GlobalNetworkPolicy",
         namespaced=False, custom=True),
)


NAMESPACES = next(rd for rd in CATALOG if rd.resource == "namespaces")
PODS = CATALOG[0]


# --- Status errors --------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered with a `Status` body."""

    def __init__(self, status: JSON) -> None:
        super().__init__(status.get("message", ""))
        self.status = status

    @property
    def code(self) -> int:
        return int(self.status["code"])


def status_body(code: int, reason: str, message: str, details: JSON | None = None) -> JSON:
    """A failure `Status`, keys in the order the apiserver writes them."""
    body: JSON = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def details_for(rd: ResourceDef | None, name: str, kind: str | None = None) -> JSON:
    details: JSON = {}
    if name:
        details["name"] = name
    if rd is not None and rd.group:
        details["group"] = rd.group
    if rd is not None:
        details["kind"] = kind or rd.resource
    return details


def not_found(rd: ResourceDef, name: str) -> ApiError:
    return ApiError(status_body(404, "NotFound", f'{rd.qualified} "{name}" not found',
                                details_for(rd, name)))


def unknown_path() -> ApiError:
    return ApiError(status_body(404, "NotFound",
                                "the server could not find the requested resource", {}))


def already_exists(rd: ResourceDef, name: str) -> ApiError:
    return ApiError(status_body(409, "AlreadyExists", f'{rd.qualified} "{name}" already exists',
                                details_for(rd, name)))


def conflict(rd: ResourceDef, name: str, why: str | None = None) -> ApiError:
    why = why or ("the object has been modified; please apply your changes to the latest "
                  "version and try again")
    message = f'Operation cannot be fulfilled on {rd.qualified} "{name}": {why}'
    return ApiError(status_body(409, "Conflict", message, details_for(rd, name)))


def invalid(rd: ResourceDef, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid; each cause is (field, reason such as FieldValueRequired, text)."""
    texts = [f"{path}: {text}" for path, _, text in causes]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details = details_for(rd, name, kind=rd.kind)
    details["causes"] = [{"reason": r, "message": t, "field": f} for f, r, t in causes]
    return ApiError(status_body(422, "Invalid", f'{rd.qualified_kind} "{name}" is invalid: '
                                f"{summary}", details))


def patch_failed() -> ApiError:
    """What the apiserver answers for any JSON patch that does not apply: the library's own
    error text is dropped, only this generic message is sent."""
    return ApiError(status_body(
        422, "Invalid", "the server rejected our request due to an error in our request", {}))


def bad_request(message: str) -> ApiError:
    return ApiError(status_body(400, "BadRequest", message))


def internal_error(message: str) -> ApiError:
    return ApiError(status_body(500, "InternalError", f"Internal error occurred: {message}",
                                {"causes": [{"message": message}]}))


def unsupported_media_type(content_type: str) -> ApiError:
    accepted = ("application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml")
    if content_type == "application/strategic-merge-patch+json":
        message = f"the body of the request was in an unknown format - accepted media types " \
                  f"include: {accepted}"
    else:
        message = f"the fake API server does not accept the media type {content_type!r}"
    return ApiError(status_body(415, "UnsupportedMediaType", message))


def forbidden(rd: ResourceDef, name: str, *, verb: str, user: str, namespace: str | None,
              subresource: str | None) -> ApiError:
    resource = f"{rd.resource}/{subresource}" if subresource else rd.resource
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    why = (f'User "{user}" cannot {verb} resource "{resource}" in API group "{rd.group}" '
           f"{scope}")
    head = f'{rd.qualified} "{name}"' if name else rd.qualified
    return ApiError(status_body(403, "Forbidden", f"{head} is forbidden: {why}",
                                details_for(rd, name)))


def not_allowed() -> ApiError:
    return ApiError(status_body(
        405, "MethodNotAllowed", "the server does not allow this method on the requested "
        "resource", {}))


def unauthorized() -> ApiError:
    return ApiError(status_body(401, "Unauthorized", "Unauthorized"))


def pdb_refusal(budget: str, desired: int, current: int) -> ApiError:
    """The 429 of an eviction that a PodDisruptionBudget does not allow."""
    cause = {"reason": "DisruptionBudget",
             "message": f"The disruption budget {budget} needs {desired} healthy pods and has "
                        f"{current} currently"}
    return ApiError(status_body(
        429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption "
        "budget.", {"causes": [cause]}))
