"""kubernetes:networkpolicy: deny the egress traffic of the event's pod (and its siblings).

Layer L2 (plug-in). The policy selects the pods of the pod's owner: a DaemonSet or a
StatefulSet by its name and selector; a ReplicaSet by its selector, named after the
Deployment that owns it (the ReplicaSet's name changes at each rollout, the Deployment's
does not, so a later event updates the same policy); a standalone pod by its name and
labels. Per-revision labels (pod-template-hash, …) are dropped. An existing policy of that
name is replaced (fresh resourceVersion; one retry on a 409 conflict).
`NetworkPolicyParams` (the `allow_cidr` / `allow_namespaces` lists and their validation),
`select` and `Selection` are shared with calico:networkpolicy and cilium:networkpolicy, whose
params subclass it: a CIDR must be written `address/prefix` (what the Kubernetes, Calico
and Cilium APIs accept) and a namespace must be a DNS label.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from talon.actionners.kubernetes import common, pods, rbac, undo
from talon.clients import kube
from talon.plugin import ActionContext, ActionError, ParamValueError, Permission, Result, actionner


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkPolicyParams:
    """Parameters of kubernetes:networkpolicy; with both lists empty, all egress is denied."""

    allow_cidr: tuple[str, ...] = field(default=(), metadata={
        "help": "CIDRs to allow anyway, e.g. private subnets (\"10.0.0.0/8\")"})
    allow_namespaces: tuple[str, ...] = field(default=(), metadata={
        "help": "Namespaces whose pods stay reachable anyway"})
    ttl: str | int = field(default="", metadata={
        "help": undo.TTL_HELP + "; the policy is deleted then, if Talon created it"})

    def __post_init__(self) -> None:
        """Raise ParamValueError naming the first CIDR or namespace that is not valid."""
        undo.check_ttl(self.ttl)
        for index, cidr in enumerate(self.allow_cidr):
            try:
                if "/" not in cidr:
                    raise ValueError(cidr)
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ParamValueError(
                    f"allow_cidr[{index}]", f"wrong CIDR '{cidr}'") from None
        for index, namespace in enumerate(self.allow_namespaces):
            if not kube.is_name(namespace, kube.LABEL):
                raise ParamValueError(
                    f"allow_namespaces[{index}]",
                    f"wrong namespace '{namespace}': must be a DNS label (at most 63 lowercase "
                    f"letters, digits and '-', starting and ending with a letter or digit)")


def policy_permissions(api_group: str, resource: str) -> tuple[Permission, ...]:
    """RBAC of a network policy actionner: read pods and owners, write `resource` (`patch`
    records the expiry of a policy written with `ttl`)."""
    return (rbac.PODS_GET,
            Permission((api_group,), (resource,), ("get", "create", "update", "patch")),
            *rbac.OWNERS_GET)


NETWORKPOLICY_EXAMPLE = """\
- action: Create a network policy
  actionner: kubernetes:networkpolicy
  parameters:
    allow_cidr:
      - "192.168.1.0/24"
      - "172.17.0.0/16"
    allow_namespaces:
      - "green-ns"
      - "blue-ns"
"""


MANAGED_BY = {"app.k8s.io/managed-by": "falco-talon"}
"""Label of every policy Talon writes (upstream's key, kept for existing tooling)."""
REVISION_LABELS = ("pod-template-hash", "pod-template-generation", "controller-revision-hash")
NAMESPACE_LABEL = "kubernetes.io/metadata.name"
"""The label the API server puts on every namespace (upstream used `k8s.io/...`, B10)."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Name of the policy and the selector of the pods it applies to."""

    name: str
    match_labels: Mapping[str, str]
    match_expressions: tuple[Mapping[str, Any], ...] = ()

    def pod_selector(self) -> dict[str, Any]:
        """The LabelSelector of the policy's `spec.podSelector`."""
        selector: dict[str, Any] = {"matchLabels": dict(self.match_labels)}
        if self.match_expressions:
            selector["matchExpressions"] = [dict(e) for e in self.match_expressions]
        return selector


def _stable(labels: Mapping[str, str] | None) -> dict[str, str]:
    """`labels` without the per-revision ones."""
    return {k: v for k, v in (labels or {}).items() if k not in REVISION_LABELS}


def _expressions(selector: Any) -> tuple[Mapping[str, Any], ...]:
    """The selector's matchExpressions as plain data, per-revision keys left out."""
    found = []
    for e in getattr(selector, "match_expressions", None) or []:
        if e.key in REVISION_LABELS:
            continue
        entry: dict[str, Any] = {"key": e.key, "operator": e.operator}
        if e.values:
            entry["values"] = list(e.values)
        found.append(entry)
    return tuple(found)


_OWNER_READERS = {"ReplicaSet": "read_namespaced_replica_set",
                  "DaemonSet": "read_namespaced_daemon_set",
                  "StatefulSet": "read_namespaced_stateful_set"}
"""The owner kinds whose selector the policy reuses, and the AppsV1Api call reading each."""


def _read_owner(k: Any, kind: str, name: str, namespace: str) -> Any:
    read = getattr(k.apps, _OWNER_READERS[kind])
    try:
        return read(name, namespace, _request_timeout=k.timeout)
    except Exception as exc:
        raise ActionError(f"cannot read the {kind} '{name}' in the namespace '{namespace}': "
                          f"{common.api_error(exc)}") from exc


def select(ctx: ActionContext, pod: Any) -> Selection:
    """The policy name and pod selector for `pod` (see the module docstring)."""
    namespace, name = pod.metadata.namespace, pod.metadata.name
    kind, owner = common.owner(pod)
    if kind == common.STANDALONE:
        found = Selection(name, _stable(pod.metadata.labels))
    elif kind in _OWNER_READERS:
        obj = _read_owner(common.kube(ctx), kind, owner, namespace)
        selector = obj.spec.selector if obj.spec else None
        policy_name = owner
        if kind == "ReplicaSet":
            parent_kind, parent = common.owner(obj)
            policy_name = parent if parent_kind == "Deployment" else owner
        found = Selection(policy_name, _stable(getattr(selector, "match_labels", None)),
                          _expressions(selector))
    else:
        found = Selection(name, {})
    if not found.match_labels and not found.match_expressions:
        raise ActionError(f"can't find the owner and/or labels for the pod '{name}' in "
                          f"namespace '{namespace}'")
    return found


def policy_body(namespace: str, selection: Selection,
                p: NetworkPolicyParams) -> dict[str, Any]:
    """The NetworkPolicy: egress only; no allowance at all denies every egress connection."""
    spec: dict[str, Any] = {"podSelector": selection.pod_selector(), "policyTypes": ["Egress"]}
    peers: list[dict[str, Any]] = [{"ipBlock": {"cidr": cidr}} for cidr in p.allow_cidr]
    peers += [{"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: ns}}}
              for ns in p.allow_namespaces]
    if peers:
        spec["egress"] = [{"to": peers}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": selection.name, "namespace": namespace,
                         "labels": {**selection.match_labels, **MANAGED_BY}},
            "spec": spec}


def _existing(k: Any, name: str, namespace: str) -> Any:
    """The current policy, or None when there is none."""
    try:
        return k.networking.read_namespaced_network_policy(name, namespace,
                                                           _request_timeout=k.timeout)
    except Exception as exc:
        if common.is_not_found(exc):
            return None
        raise ActionError(f"cannot read the networkpolicy '{name}' in the namespace "
                          f"'{namespace}': {common.api_error(exc)}") from exc


def _write(k: Any, body: dict[str, Any], *, retry: bool = True) -> str:
    """Create or replace the policy; "created" or "updated". A 409 is retried once."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    current = _existing(k, name, namespace)
    try:
        if current is None:
            k.networking.create_namespaced_network_policy(
                namespace, body, _request_timeout=k.timeout)
            return "created"
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        undo.keep_mark(body, current.metadata.labels, current.metadata.annotations)
        k.networking.replace_namespaced_network_policy(
            name, namespace, body, _request_timeout=k.timeout)
    except Exception as exc:
        if retry and getattr(exc, "status", None) == 409:
            return _write(k, body, retry=False)
        verb = "create" if current is None else "update"
        raise ActionError(f"cannot {verb} the networkpolicy '{name}' in the namespace "
                          f"'{namespace}': {common.api_error(exc)}") from exc
    return "updated"


def record_expiry(ctx: ActionContext, kind: str, namespace: str, name: str, done: str) -> str:
    """Mark the policy written with `ttl`; Talon deletes it on expiry only if it created it
    (this time, or under an earlier mark). The text to add to the output."""
    mark = undo.record(ctx, kind, namespace, name,
                       lambda _obj: undo.new_mark(ctx, created=done == "created"))
    return undo.expiry_note(mark)


@actionner(
    pods.CATEGORY, "networkpolicy",
    disruptive=True, params=NetworkPolicyParams, checks=(common.pod_exists,),
    description="Create, update a network policy to block all egress traffic for pod",
    required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=policy_permissions("networking.k8s.io", "networkpolicies"),
    example=NETWORKPOLICY_EXAMPLE,
)
def networkpolicy(ctx: ActionContext) -> Result:
    """Create (or replace) the egress-denying policy of the event pod's workload."""
    namespace, pod_name = common.pod_target(ctx)
    selection = select(ctx, common.get_pod(ctx))
    done = _write(common.kube(ctx), policy_body(namespace, selection, ctx.params))
    output = (f"the networkpolicy '{selection.name}' in the namespace '{namespace}' has "
              f"been {done}")
    if ctx.params.ttl:
        output += record_expiry(ctx, "networkpolicy", namespace, selection.name, done)
    return Result(
        output=output,
        objects={**common.pod_objects(namespace, pod_name), "networkpolicy": selection.name})
