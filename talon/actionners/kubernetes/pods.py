"""Kubernetes actionners acting on the event's pod or audit target: terminate, label,
annotation, delete.

Layer L2 (plug-in): imports talon.plugin and its own package; the kubernetes SDK is
imported only inside the run functions. Each params dataclass is also the parameter
schema (see `talon.params`); the key/value checks follow the API server's own rules, so a
bad label is reported by `talon check` instead of being rejected at run time.
`check_min_healthy_replicas` and `below_min_healthy` are shared with kubernetes:drain.

Differences with the Go version (on purpose):
- an ignored pod is reported as `ignored`, with its explanation, not as `success`;
- `min_healthy_replicas: "P%"` compares the ready replicas with P% of the ReplicaSet's
  desired replicas (the Go version compared the ready count with P itself);
- a ReplicaSet that cannot be read is a failure, not a silent success;
- label/annotation send a single JSON patch (`add`/`remove`), escape `~` as well as `/`
  in keys, and never try to remove a key the object doesn't have;
- delete also handles `pods` (its RBAC rule was already granted) and says nothing about
  a namespace for cluster-scoped targets.
Failures after the target is known still carry its objects, so notifications name it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from talon.actionners.kubernetes import common, rbac
from talon.plugin import (
    ActionContext,
    ActionError,
    CheckFailedError,
    ParamValueError,
    Result,
    Status,
    actionner,
)

CATEGORY = "kubernetes"
POD_FIELDS = ("k8s.pod.name", "k8s.ns.name")
REQUIRES = ("kubernetes",)

_MIN_HEALTHY = re.compile(r"(\d+)(%?)")
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_RULE = ("1 to 63 characters among letters, digits, '-', '_' and '.', "
              "starting and ending with a letter or digit")


def check_min_healthy_replicas(value: str) -> None:
    """Accept "", an integer N >= 0 or a percentage N% with 0 <= N <= 100."""
    if value == "":
        return
    match = _MIN_HEALTHY.fullmatch(value)
    if match is None or (match.group(2) and int(match.group(1)) > 100):
        raise ParamValueError(
            "min_healthy_replicas",
            f"parameter 'min_healthy_replicas' must be an integer >= 0 or a percentage "
            f"between 0% and 100%, got '{value}'")


def qualified_name_problem(key: str) -> str | None:
    """Why `key` is not a valid label/annotation key, or None when it is."""
    prefix, slash, name = key.rpartition("/")
    if slash and "/" in prefix:
        return "at most one '/' is allowed"
    if slash and (not prefix or len(prefix) > 253 or not _SUBDOMAIN.fullmatch(prefix)):
        return ("the prefix must be a DNS subdomain (lowercase letters, digits, '-' and '.', "
                "at most 253 characters)")
    if len(name) > 63 or not _NAME.fullmatch(name):
        return f"the name must be {_NAME_RULE}"
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a valid label value, or None (the empty value removes the label)."""
    if value == "" or (len(value) <= 63 and _NAME.fullmatch(value)):
        return None
    return f"must be empty (to remove the label) or {_NAME_RULE}"


def _check_keys(parameter: str, noun: str, entries: Mapping[str, str]) -> None:
    if not entries:
        raise ParamValueError(
            parameter, f"parameter '{parameter}' should have at least one {noun}")
    for key in entries:
        problem = qualified_name_problem(key)
        if problem:
            raise ParamValueError(
                f"{parameter}.{key}", f"invalid {noun} key '{key}': {problem}")


_LEVEL_HELP = "Where to apply them: 'pod' (the event's pod) or 'node' (the pod's node)"


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminateParams:
    """Parameters of kubernetes:terminate."""

    grace_period_seconds: int = field(default=0, metadata={
        "min": 0,
        "help": "Seconds before the pod is deleted; 0 deletes it immediately"})
    ignore_daemonsets: bool = field(default=False, metadata={
        "help": "If true, pods belonging to a DaemonSet are not terminated"})
    ignore_statefulsets: bool = field(default=False, metadata={
        "help": "If true, pods belonging to a StatefulSet are not terminated"})
    ignore_standalone_pods: bool = field(default=False, metadata={
        "help": "If true, standalone pods (not owned by any controller) are not terminated"})
    min_healthy_replicas: str = field(default="", metadata={
        "help": "Minimum number of healthy pods of the ReplicaSet to allow the termination: "
                "an absolute value (\"2\") or a percentage (\"50%\"), as a quoted string"})

    def __post_init__(self) -> None:
        check_min_healthy_replicas(self.min_healthy_replicas)


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelParams:
    """Parameters of kubernetes:label."""

    labels: Mapping[str, str] = field(metadata={
        "help": "Labels to add or modify (key: value); an empty value removes the label. "
                "Values are strings: quote \"true\" and numbers"})
    level: Literal["pod", "node"] = field(default="pod", metadata={"help": _LEVEL_HELP})

    def __post_init__(self) -> None:
        _check_keys("labels", "label", self.labels)
        for key, value in self.labels.items():
            problem = label_value_problem(value)
            if problem:
                raise ParamValueError(
                    f"labels.{key}", f"invalid label value '{value}': {problem}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnotationParams:
    """Parameters of kubernetes:annotation."""

    annotations: Mapping[str, str] = field(metadata={
        "help": "Annotations to add or modify (key: value); an empty value removes the "
                "annotation. Values are free text, but strings: quote \"true\" and numbers"})
    level: Literal["pod", "node"] = field(default="pod", metadata={"help": _LEVEL_HELP})

    def __post_init__(self) -> None:
        _check_keys("annotations", "annotation", self.annotations)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteParams:
    """kubernetes:delete takes no parameter (any key given is reported as unknown)."""


TERMINATE_EXAMPLE = """\
- action: Terminate the pod
  actionner: kubernetes:terminate
  parameters:
    grace_period_seconds: 5
    ignore_daemonsets: true
    ignore_statefulsets: true
    min_healthy_replicas: "33%"
"""

LABEL_EXAMPLE = """\
- action: Label the pod
  actionner: kubernetes:label
  parameters:
    level: pod
    labels:
      suspicious: "true"
"""

ANNOTATION_EXAMPLE = """\
- action: Annotate the pod
  actionner: kubernetes:annotation
  parameters:
    level: pod
    annotations:
      suspicious: "true"
"""

DELETE_EXAMPLE = """\
- action: Delete the suspicious resource
  actionner: kubernetes:delete
"""

DELETE_PERMISSIONS = (
    rbac.get_delete(rbac.CORE, "namespaces"),
    rbac.PODS_GET_DELETE_LIST,
    rbac.get_delete(rbac.APPS, "daemonsets"),
    rbac.get_delete(rbac.APPS, "deployments"),
    rbac.get_delete(rbac.APPS, "replicasets"),
    rbac.get_delete(rbac.APPS, "statefulsets"),
    rbac.get_delete("rbac.authorization.k8s.io", "roles"),
    rbac.get_delete("rbac.authorization.k8s.io", "clusterroles"),
    rbac.get_delete(rbac.CORE, "configmaps"),
    rbac.get_delete(rbac.CORE, "secrets"),
    rbac.get_delete(rbac.CORE, "services"),
    rbac.get_delete(rbac.CORE, "serviceaccounts"),
)
"""One rule per resource kind kubernetes:delete handles (services and serviceaccounts too)."""


def _reporting(objects: Mapping[str, str], body: Callable[[], Result]) -> Result:
    """Run `body`; an expected failure becomes a failure Result that keeps `objects`."""
    try:
        return body()
    except (ActionError, CheckFailedError) as exc:
        return Result(status=Status.FAILURE, error=str(exc), objects=objects)


# --- kubernetes:terminate -------------------------------------------------------------------


def below_min_healthy(spec: str, ready: int, desired: int) -> bool:
    """Whether `ready` replicas fall short of `spec`: "N", "P%" (of `desired`) or "" (never).

    An absolute N keeps the Go version's comparison, ready < N (the pod about to go is
    counted among the ready ones). A percentage compares the ready replicas with P% of the
    desired replicas: ready * 100 < P * desired (the Go version compared ready with P).
    """
    if not spec:
        return False
    if spec.endswith("%"):
        return ready * 100 < int(spec[:-1]) * desired
    return ready < int(spec)


def _replicaset_short(ctx: ActionContext, namespace: str, name: str, spec: str) -> bool:
    """Whether the ReplicaSet `name` has too few ready replicas to lose one of its pods."""
    k = common.kube(ctx)
    try:
        rs = k.apps.read_namespaced_replica_set(name, namespace, _request_timeout=k.timeout)
    except Exception as exc:
        raise ActionError(f"cannot read the ReplicaSet '{name}' in the namespace "
                          f"'{namespace}': {common.api_error(exc)}") from exc
    ready = (rs.status.ready_replicas if rs.status else 0) or 0
    desired = rs.spec.replicas if rs.spec and rs.spec.replicas is not None else 1
    return below_min_healthy(spec, int(ready), int(desired))


def _ignore_reason(ctx: ActionContext, pod: Any, namespace: str) -> str:
    """Why the pod must be left alone ("" when it can be terminated).

    min_healthy_replicas applies to ReplicaSet owners, which covers Deployment pods (the
    current ReplicaSet is what keeps them ready). StatefulSet owners are not counted, as in
    the Go version: that would need one more RBAC rule, and ignore_statefulsets covers them.
    """
    p: TerminateParams = ctx.params
    kind, name = common.owner(pod)
    if kind == "DaemonSet" and p.ignore_daemonsets:
        return "belongs to a DaemonSet"
    if kind == "StatefulSet" and p.ignore_statefulsets:
        return "belongs to a StatefulSet"
    if kind == common.STANDALONE and p.ignore_standalone_pods:
        return "is a standalone pod"
    if (kind == "ReplicaSet" and p.min_healthy_replicas
            and _replicaset_short(ctx, namespace, name, p.min_healthy_replicas)):
        return "belongs to a ReplicaSet without enough healthy replicas"
    return ""


def _terminate(ctx: ActionContext, namespace: str, name: str,
               objects: Mapping[str, str]) -> Result:
    from kubernetes import client

    where = f"the pod '{name}' in the namespace '{namespace}'"
    reason = _ignore_reason(ctx, common.get_pod(ctx), namespace)
    if reason:
        return Result(status=Status.IGNORED, output=f"{where} {reason} and will be ignored.",
                      objects=objects)
    k = common.kube(ctx)
    options = client.V1DeleteOptions(grace_period_seconds=ctx.params.grace_period_seconds)
    try:
        k.core.delete_namespaced_pod(name, namespace, body=options, _request_timeout=k.timeout)
    except Exception as exc:
        raise ActionError(f"cannot terminate {where}: {common.api_error(exc)}") from exc
    return Result(output=f"{where} has been terminated", objects=objects)


@actionner(
    CATEGORY, "terminate", checks=(common.pod_exists,), params=TerminateParams,
    description="Terminate the pod",
    default_continue=False, required_fields=POD_FIELDS, requires=REQUIRES,
    permissions=(rbac.PODS_GET_DELETE_LIST, rbac.REPLICASETS_GET),
    example=TERMINATE_EXAMPLE,
)
def terminate(ctx: ActionContext) -> Result:
    """Delete the event's pod with `grace_period_seconds`, unless a skip rule applies."""
    namespace, name = common.pod_target(ctx)
    objects = common.pod_objects(namespace, name)
    return _reporting(objects, lambda: _terminate(ctx, namespace, name, objects))


# --- kubernetes:label and kubernetes:annotation ---------------------------------------------


def pointer_token(key: str) -> str:
    """`key` as one JSON-pointer token (RFC 6901: `~` → `~0`, then `/` → `~1`)."""
    return key.replace("~", "~0").replace("/", "~1")


def metadata_patch(field_name: str, current: Mapping[str, str] | None,
                   entries: Mapping[str, str], resource_version: str = "",
                   ) -> list[dict[str, Any]]:
    """The RFC 6902 operations turning metadata.<field_name> `current` into the wanted one.

    A non-empty value is set with `add` (which creates or replaces the key), unless it is
    already there; an empty value removes the key, only if it exists. When the object has
    no map at all, an `add` of `{}` creates it first, guarded by a `test` of the
    resourceVersion read, so a map created meanwhile by someone else is never overwritten.
    """
    base = f"/metadata/{field_name}"
    existing = current or {}
    ops: list[dict[str, Any]] = []
    for key, value in entries.items():
        path = f"{base}/{pointer_token(key)}"
        if value and existing.get(key) != value:
            ops.append({"op": "add", "path": path, "value": value})
        elif not value and key in existing:
            ops.append({"op": "remove", "path": path})
    if current is None and ops:
        guard = [{"op": "test", "path": "/metadata/resourceVersion",
                  "value": resource_version}] if resource_version else []
        ops[:0] = [*guard, {"op": "add", "path": base, "value": {}}]
    return ops


def _apply(read: Callable[[], Any], patch: Callable[[list[dict[str, Any]]], Any],
           entries: Mapping[str, str], field_name: str, failed: str) -> None:
    """Read the object, then patch it; one more try when it changed in between (409/422)."""
    for attempt in (1, 2):
        meta = read().metadata
        ops = metadata_patch(field_name, getattr(meta, field_name), entries,
                             meta.resource_version or "")
        if not ops:
            return
        try:
            patch(ops)
            return
        except Exception as exc:
            if attempt == 1 and getattr(exc, "status", None) in (409, 422):
                continue
            raise ActionError(f"{failed}: {common.api_error(exc)}") from exc


def _read_node(ctx: ActionContext, node: str) -> Any:
    k = common.kube(ctx)
    try:
        return k.core.read_node(node, _request_timeout=k.timeout)
    except Exception as exc:
        raise ActionError(f"error getting node '{node}': {common.api_error(exc)}") from exc


def _edit(ctx: ActionContext, field_name: str, verb: str, done: str) -> Result:
    """Set/remove metadata.<field_name> keys of the event's pod, or of its node."""
    namespace, name = common.pod_target(ctx)
    objects = common.pod_objects(namespace, name)
    return _reporting(objects, lambda: _edit_target(ctx, namespace, name, field_name,
                                                    (verb, done)))


def _patch_pod(k: Any, namespace: str, name: str, ops: list[dict[str, Any]]) -> Any:
    return k.core.patch_namespaced_pod(name, namespace, ops, _request_timeout=k.timeout)


def _patch_node(k: Any, node: str, ops: list[dict[str, Any]]) -> Any:
    return k.core.patch_node(node, ops, _request_timeout=k.timeout)


def _edit_target(ctx: ActionContext, namespace: str, name: str, field_name: str,
                 words: tuple[str, str]) -> Result:
    k = common.kube(ctx)
    where = f"the pod '{name}' in the namespace '{namespace}'"
    objects: Mapping[str, str] = common.pod_objects(namespace, name)
    read: Callable[[], Any] = functools.partial(common.get_pod, ctx)
    patch: Callable[[list[dict[str, Any]]], Any] = functools.partial(
        _patch_pod, k, namespace, name)
    if ctx.params.level == "node":
        node = common.node_of(common.get_pod(ctx))
        where, objects = f"the node '{node}'", {"node": node}
        read = functools.partial(_read_node, ctx, node)
        patch = functools.partial(_patch_node, k, node)
    _apply(read, patch, getattr(ctx.params, field_name), field_name,
           f"cannot {words[0]} {where}")
    return Result(output=f"{where} has been {words[1]}", objects=objects)


@actionner(
    CATEGORY, "label", checks=(common.pod_exists,), params=LabelParams,
    description="Add, modify or delete the labels of the pod/node",
    required_fields=POD_FIELDS, requires=REQUIRES,
    permissions=(rbac.PODS_NODES_PATCH,), example=LABEL_EXAMPLE,
)
def label(ctx: ActionContext) -> Result:
    """Set the non-empty labels and remove the empty ones, on the pod or its node."""
    return _edit(ctx, "labels", "label", "labeled")


@actionner(
    CATEGORY, "annotation", checks=(common.pod_exists,), params=AnnotationParams,
    description="Add, modify or delete the annotations of the pod/node",
    required_fields=POD_FIELDS, requires=REQUIRES,
    permissions=(rbac.PODS_NODES_PATCH,), example=ANNOTATION_EXAMPLE,
)
def annotation(ctx: ActionContext) -> Result:
    """Set the non-empty annotations and remove the empty ones, on the pod or its node."""
    return _edit(ctx, "annotations", "annotate", "annotated")


# --- kubernetes:delete ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deletable:
    """How kubernetes:delete reaches one resource through the SDK."""

    api: str
    """`Kube` attribute: core, apps or rbac."""
    suffix: str
    """SDK method suffix: `read_namespaced_<suffix>` / `delete_<suffix>`."""
    noun: str
    """Singular name used in the texts."""
    namespaced: bool = True


DELETABLE: Mapping[str, Deletable] = {
    "namespaces": Deletable("core", "namespace", "namespace", namespaced=False),
    "pods": Deletable("core", "pod", "pod"),
    "configmaps": Deletable("core", "config_map", "configmap"),
    "secrets": Deletable("core", "secret", "secret"),
    "services": Deletable("core", "service", "service"),
    "serviceaccounts": Deletable("core", "service_account", "serviceaccount"),
    "deployments": Deletable("apps", "deployment", "deployment"),
    "daemonsets": Deletable("apps", "daemon_set", "daemonset"),
    "statefulsets": Deletable("apps", "stateful_set", "statefulset"),
    "replicasets": Deletable("apps", "replica_set", "replicaset"),
    "roles": Deletable("rbac", "role", "role"),
    "clusterroles": Deletable("rbac", "cluster_role", "clusterrole", namespaced=False),
}
"""The `ka.target.resource` values kubernetes:delete handles (one RBAC rule each)."""


@dataclass(frozen=True, slots=True)
class _Target:
    kind: Deletable
    resource: str
    name: str
    namespace: str

    @property
    def text(self) -> str:
        if self.kind.namespaced:
            return f"the {self.kind.noun} '{self.name}' in the namespace '{self.namespace}'"
        return f"the {self.kind.noun} '{self.name}'"

    @property
    def objects(self) -> dict[str, str]:
        found = {"name": self.name, "resource": self.resource}
        return (found | {"namespace": self.namespace}) if self.kind.namespaced else found


def _audit_target(ctx: ActionContext) -> _Target:
    """The target of the audit event; CheckFailedError when incomplete or unsupported."""
    event = ctx.event
    resource, name = event.target_resource(), event.target_name()
    if not resource:
        raise CheckFailedError("missing target resource (ka.target.resource)")
    if not name:
        raise CheckFailedError("missing target name (ka.target.name)")
    kind = DELETABLE.get(resource)
    if kind is None:
        raise CheckFailedError(f"the resource '{resource}' is not supported")
    namespace = event.target_namespace() if kind.namespaced else ""
    if kind.namespaced and not namespace:
        raise CheckFailedError("missing target namespace (ka.target.namespace)")
    return _Target(kind, resource, name, namespace)


def _call(ctx: ActionContext, verb: str, target: _Target) -> None:
    """`verb` (read or delete) the target; the answer's body is drained, not decoded."""
    k = common.kube(ctx)
    api = getattr(k, target.kind.api)
    options = {"_request_timeout": k.timeout, "_preload_content": False}
    if target.kind.namespaced:
        method = getattr(api, f"{verb}_namespaced_{target.kind.suffix}")
        response = method(target.name, target.namespace, **options)
    else:
        response = getattr(api, f"{verb}_{target.kind.suffix}")(target.name, **options)
    response.drain_conn()
    response.release_conn()


def target_exists(ctx: ActionContext) -> None:
    """Live check of kubernetes:delete: the audit event's target can be read."""
    target = _audit_target(ctx)
    try:
        _call(ctx, "read", target)
    except Exception as exc:
        if common.is_not_found(exc):
            raise CheckFailedError(f"{target.text} doesn't exist") from exc
        raise ActionError(f"cannot read {target.text}: {common.api_error(exc)}") from exc


def _delete(ctx: ActionContext, target: _Target) -> Result:
    try:
        _call(ctx, "delete", target)
    except Exception as exc:
        raise ActionError(f"cannot delete {target.text}: {common.api_error(exc)}") from exc
    return Result(output=f"{target.text} has been deleted", objects=target.objects)


@actionner(
    CATEGORY, "delete", checks=(target_exists,), params=DeleteParams,
    description="Delete the resource",
    default_continue=False,
    required_fields=("ka.target.resource", "ka.target.name"),
    sources=("k8s_audit",), requires=REQUIRES,
    permissions=DELETE_PERMISSIONS, example=DELETE_EXAMPLE,
)
def delete(ctx: ActionContext) -> Result:
    """Delete the target of a Kubernetes audit event (resource, name, namespace)."""
    target = _audit_target(ctx)
    return _reporting(target.objects, lambda: _delete(ctx, target))
