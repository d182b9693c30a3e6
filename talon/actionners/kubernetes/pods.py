"""Kubernetes actionners acting on the event's pod (or its node): terminate, label,
annotation. kubernetes:delete, which acts on an audit event's target, is in targets.py.

Layer L2 (plug-in): imports talon.plugin and its own package; the kubernetes SDK is
imported only inside the run functions. Each params dataclass is also the parameter
schema (see `talon.params`); the key/value checks follow the API server's own rules, so a
bad label is reported by `talon check` instead of being rejected at run time.
`check_min_healthy_replicas`, `below_min_healthy` and `replica_counts` are shared with
kubernetes:drain.

Differences with the Go version (on purpose):
- an ignored pod is reported as `ignored`, with its explanation, not as `success`;
- `min_healthy_replicas: "P%"` compares the ready replicas with P% of the ReplicaSet's
  desired replicas (the Go version compared the ready count with P itself);
- a ReplicaSet that cannot be read is a failure, not a silent success;
- label/annotation on a pod send one merge patch and nothing else (null removes a key):
  the patch's 404 is the check that the pod exists, so the action costs one request
  instead of Falco Talon's read and two JSON patches; on a node (`level: node`), or with
  `ttl` (whose undo needs the values before), a read then one JSON patch (`add`/`remove`)
  that escapes `~` as well as `/` in keys and never removes a key the object lacks.
Failures after the target is known still carry its objects, so notifications name it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from talon.actionners.kubernetes import common, rbac, undo
from talon.clients import kube
from talon.plugin import (
    ActionContext,
    ActionError,
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
    if slash and not kube.is_name(prefix):
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
        "text_values": True,
        "help": "Labels to add or modify (key: value); an empty value removes the label. "
                "Values are strings: a YAML boolean or number is taken as its text, "
                "with a warning (quote it)"})
    level: Literal["pod", "node"] = field(default="pod", metadata={"help": _LEVEL_HELP})
    ttl: str | int = field(default="", metadata={"help": undo.TTL_HELP})

    def __post_init__(self) -> None:
        undo.check_ttl(self.ttl)
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
        "text_values": True,
        "help": "Annotations to add or modify (key: value); an empty value removes the "
                "annotation. Values are strings: a YAML boolean or number is taken as its "
                "text, with a warning (quote it)"})
    level: Literal["pod", "node"] = field(default="pod", metadata={"help": _LEVEL_HELP})
    ttl: str | int = field(default="", metadata={"help": undo.TTL_HELP})

    def __post_init__(self) -> None:
        undo.check_ttl(self.ttl)
        _check_keys("annotations", "annotation", self.annotations)


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


def replica_counts(rs: Any) -> tuple[int, int]:
    """(ready, desired) replicas of a V1ReplicaSet; no ready count is 0, no desired count 1."""
    ready = int(getattr(rs.status, "ready_replicas", None) or 0) if rs.status else 0
    desired = getattr(rs.spec, "replicas", None) if rs.spec else None
    return ready, 1 if desired is None else int(desired)


def raw_replica_counts(rs: Mapping[str, Any]) -> tuple[int, int]:
    """`replica_counts` of a ReplicaSet as the API server's JSON (a dict)."""
    ready = int((rs.get("status") or {}).get("readyReplicas") or 0)
    desired = (rs.get("spec") or {}).get("replicas")
    return ready, 1 if desired is None else int(desired)


def _replicaset_short(ctx: ActionContext, namespace: str, name: str, spec: str) -> bool:
    """Whether the ReplicaSet `name` has too few ready replicas to lose one of its pods."""
    k = common.kube(ctx)
    try:
        rs = common.read_json(k.apps.read_namespaced_replica_set(
            name, namespace, _preload_content=False, _request_timeout=k.timeout))
    except Exception as exc:
        raise ActionError(f"cannot read the ReplicaSet '{name}' in the namespace "
                          f"'{namespace}': {common.api_error(exc)}") from exc
    return below_min_healthy(spec, *raw_replica_counts(rs))


def _ignore_reason(ctx: ActionContext, pod: Mapping[str, Any], namespace: str) -> str:
    """Why the pod must be left alone ("" when it can be terminated).

    min_healthy_replicas applies to ReplicaSet owners, which covers Deployment pods (the
    current ReplicaSet is what keeps them ready). StatefulSet owners are not counted, as in
    the Go version: that would need one more RBAC rule, and ignore_statefulsets covers them.
    """
    p: TerminateParams = ctx.params
    kind, name = common.pod_owner(pod)
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
    where = f"the pod '{name}' in the namespace '{namespace}'"
    reason = _ignore_reason(ctx, common.read_pod(ctx), namespace)
    if reason:
        return Result(status=Status.IGNORED, output=f"{where} {reason} and will be ignored.",
                      objects=objects)
    k = common.kube(ctx)
    options = {"gracePeriodSeconds": ctx.params.grace_period_seconds}
    try:
        common.discard(k.call("DELETE", kube.pod_path(namespace, name), body=options))
    except Exception as exc:
        raise ActionError(f"cannot terminate {where}: {common.api_error(exc)}") from exc
    return Result(output=f"{where} has been terminated", objects=objects)


@actionner(
    CATEGORY, "terminate",
    disruptive=True, checks=(common.pod_exists,), params=TerminateParams,
    description="Terminate the pod",
    default_continue=False, required_fields=POD_FIELDS, requires=REQUIRES,
    permissions=(rbac.PODS_GET_DELETE, rbac.REPLICASETS_GET),
    example=TERMINATE_EXAMPLE,
)
def terminate(ctx: ActionContext) -> Result:
    """Delete the event's pod with `grace_period_seconds`, unless a skip rule applies."""
    namespace, name = common.pod_target(ctx)
    objects = common.pod_objects(namespace, name)
    return common.report_failures(objects, lambda: _terminate(ctx, namespace, name, objects))


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


def _apply(read: Callable[[bool], Mapping[str, Any]],
           patch: Callable[[list[dict[str, Any]]], Any],
           entries: Mapping[str, str], field_name: str, failed: str) -> None:
    """Read the object (`read(fresh)`: the action's earlier read first), then patch it; one
    more try, on a fresh read, when it changed in between (409/422)."""
    for attempt in (1, 2):
        meta = read(attempt > 1).get("metadata") or {}
        ops = metadata_patch(field_name, meta.get(field_name), entries,
                             meta.get("resourceVersion") or "")
        if not ops:
            return
        try:
            patch(ops)
            return
        except Exception as exc:
            if attempt == 1 and getattr(exc, "status", None) in (409, 422):
                continue
            raise ActionError(f"{failed}: {common.api_error(exc)}") from exc


def _read_node(ctx: ActionContext, node: str, fresh: bool = False) -> dict[str, Any]:
    k = common.kube(ctx)
    try:
        return common.read_json(k.core.read_node(
            node, _preload_content=False, _request_timeout=k.timeout))
    except Exception as exc:
        raise ActionError(f"error getting node '{node}': {common.api_error(exc)}") from exc


def _read_pod(ctx: ActionContext, fresh: bool) -> dict[str, Any]:
    return common.reread_pod(ctx) if fresh else common.read_pod(ctx)


def _patch_pod(k: Any, namespace: str, name: str, patch: Any,
               content_type: str = "application/json-patch+json") -> None:
    common.discard(k.call("PATCH", kube.pod_path(namespace, name), body=patch,
                          content_type=content_type))


def _patch_node(k: Any, node: str, ops: list[dict[str, Any]]) -> None:
    common.discard(k.core.patch_node(
        node, ops, _preload_content=False, _request_timeout=k.timeout))


def _edit(ctx: ActionContext, field_name: str, verb: str, done: str) -> Result:
    """Set/remove metadata.<field_name> keys of the event's pod, or of its node."""
    namespace, name = common.pod_target(ctx)
    objects = common.pod_objects(namespace, name)
    if ctx.params.level != "node" and not ctx.params.ttl:
        return _merge_edit(ctx, field_name, f"cannot {verb}", done, objects)
    common.pod_exists(ctx)  # this path's check: its read is the one the run uses

    def body() -> Result:
        k = common.kube(ctx)
        if ctx.params.level == "node":
            node = common.pod_node(common.read_pod(ctx))
            where, target = f"the node '{node}'", {"node": node}
            read = functools.partial(_read_node, ctx, node)
            patch = functools.partial(_patch_node, k, node)
            mark_on = ("node", "", node)
        else:
            where, target = f"the pod '{name}' in the namespace '{namespace}'", objects
            read = functools.partial(_read_pod, ctx)
            patch = functools.partial(_patch_pod, k, namespace, name)
            mark_on = ("pod", namespace, name)
        entries = getattr(ctx.params, field_name)
        before = (read(False).get("metadata") or {}).get(field_name) if ctx.params.ttl else None
        _apply(read, patch, entries, field_name, f"cannot {verb} {where}")
        output = f"{where} has been {done}"
        if ctx.params.ttl:
            mark = undo.record(ctx, *mark_on, lambda _obj: undo.new_mark(
                ctx, **{field_name: undo.added(before, entries)}))
            output += undo.expiry_note(mark)
        return Result(output=output, objects=target)

    return common.report_failures(objects, body)


def merge_body(field_name: str, entries: Mapping[str, str]) -> dict[str, Any]:
    """The RFC 7386 merge patch setting the non-empty values of metadata.<field_name> and
    removing the keys whose value is empty (null removes a key, absent or not)."""
    return {"metadata": {field_name: {key: value or None for key, value in entries.items()}}}


def _merge_edit(ctx: ActionContext, field_name: str, failed: str, done: str,
                objects: Mapping[str, str]) -> Result:
    """The pod's keys in one request: a merge patch, atomic on the API server (no read, no
    conflict to retry), whose 404 is the check that the pod exists."""
    namespace, name = objects["namespace"], objects["pod"]
    where = f"the pod '{name}' in the namespace '{namespace}'"
    try:
        _patch_pod(common.kube(ctx), namespace, name,
                   merge_body(field_name, getattr(ctx.params, field_name)),
                   "application/merge-patch+json")
    except Exception as exc:
        if common.is_not_found(exc):
            raise common.pod_missing(namespace, name) from exc
        return Result(status=Status.FAILURE, objects=objects, cause=exc,
                      error=f"{failed} {where}: {common.api_error(exc)}")
    return Result(output=f"{where} has been {done}", objects=objects)


@actionner(
    CATEGORY, "label", checked_by_run=True, params=LabelParams,
    description="Add, modify or delete the labels of the pod/node",
    required_fields=POD_FIELDS, requires=REQUIRES,
    permissions=(rbac.PODS_NODES_GET_PATCH,), example=LABEL_EXAMPLE,
)
def label(ctx: ActionContext) -> Result:
    """Set the non-empty labels and remove the empty ones, on the pod or its node."""
    return _edit(ctx, "labels", "label", "labeled")


@actionner(
    CATEGORY, "annotation", checked_by_run=True, params=AnnotationParams,
    description="Add, modify or delete the annotations of the pod/node",
    required_fields=POD_FIELDS, requires=REQUIRES,
    permissions=(rbac.PODS_NODES_GET_PATCH,), example=ANNOTATION_EXAMPLE,
)
def annotation(ctx: ActionContext) -> Result:
    """Set the non-empty annotations and remove the empty ones, on the pod or its node."""
    return _edit(ctx, "annotations", "annotate", "annotated")
