"""Kubernetes actionners acting on the event's pod: terminate, label, annotation, delete.

Layer L2 (plug-in). For now each plug-in is declared with its metadata and its params
dataclass, which is also its parameter schema (see `talon.params`); the run functions come
later in this module. Nothing here imports the kubernetes SDK. `check_min_healthy_replicas`
is shared with kubernetes:drain; the key/value checks follow the API server's own rules, so
a bad label is reported by `talon check` instead of being rejected at run time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from talon import params, registry
from talon.actionners.kubernetes import rbac

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
        raise params.ParamValueError(
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
        raise params.ParamValueError(
            parameter, f"parameter '{parameter}' should have at least one {noun}")
    for key in entries:
        problem = qualified_name_problem(key)
        if problem:
            raise params.ParamValueError(
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
                raise params.ParamValueError(
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

registry.declare(
    "actionner", CATEGORY, "terminate", params=TerminateParams,
    description="Terminate the pod",
    default_continue=False, required_fields=POD_FIELDS, requires=REQUIRES,
    permissions=(rbac.PODS_GET_DELETE_LIST, rbac.REPLICASETS_GET),
    example=TERMINATE_EXAMPLE,
)

registry.declare(
    "actionner", CATEGORY, "label", params=LabelParams,
    description="Add, modify or delete the labels of the pod/node",
    required_fields=POD_FIELDS, requires=REQUIRES,
    permissions=(rbac.PODS_NODES_PATCH,), example=LABEL_EXAMPLE,
)

registry.declare(
    "actionner", CATEGORY, "annotation", params=AnnotationParams,
    description="Add, modify or delete the annotations of the pod/node",
    required_fields=POD_FIELDS, requires=REQUIRES,
    permissions=(rbac.PODS_NODES_PATCH,), example=ANNOTATION_EXAMPLE,
)

registry.declare(
    "actionner", CATEGORY, "delete", params=DeleteParams,
    description="Delete the resource",
    default_continue=False,
    required_fields=("ka.target.resource", "ka.target.name", "ka.target.namespace"),
    sources=("k8s_audit",), requires=REQUIRES,
    permissions=DELETE_PERMISSIONS, example=DELETE_EXAMPLE,
)
