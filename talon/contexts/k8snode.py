"""Context `k8snode`: facts about the node the event's pod runs on.

Layer L2 (plug-in). Reads the event's pod, then its node, with the kubernetes client, and
takes the node's well-known labels and spec.providerID. The role comes from the legacy
`kubernetes.io/role` label when set, else from the `node-role.kubernetes.io/<role>` label
keys that kubeadm and most distributions set (sorted, comma-separated: "control-plane").
Keys whose value is empty are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from talon.clients import kube
from talon.plugin import (
    NAMESPACE_KEYS,
    POD_KEYS,
    ActionContext,
    ActionError,
    Permission,
    context,
)

KEYS = ("node.hostname", "node.instancetype", "node.role", "node.topology.region",
        "node.topology.zone", "node.spec.providerid")
"""Keys added to the event's context; as variables: NODE_HOSTNAME, NODE_INSTANCETYPE, ..."""

LABELS = {"node.hostname": "kubernetes.io/hostname",
          "node.instancetype": "node.kubernetes.io/instance-type",
          "node.topology.region": "topology.kubernetes.io/region",
          "node.topology.zone": "topology.kubernetes.io/zone"}
ROLE_LABEL = "kubernetes.io/role"
ROLE_PREFIX = "node-role.kubernetes.io/"

DESCRIPTION = (
    "Facts about the node of the event's pod: node.hostname (label kubernetes.io/hostname), "
    "node.instancetype (node.kubernetes.io/instance-type), node.role (kubernetes.io/role, "
    "else the node-role.kubernetes.io/<role> label keys), node.topology.region "
    "(topology.kubernetes.io/region), node.topology.zone (topology.kubernetes.io/zone) and"
    " node.spec.providerid (spec.providerID); "
    "available as ${NODE_HOSTNAME}, ${NODE_INSTANCETYPE}, ${NODE_ROLE}, "
    "${NODE_TOPOLOGY_REGION}, ${NODE_TOPOLOGY_ZONE} and ${NODE_SPEC_PROVIDERID}"
)

EXAMPLE = """\
- action: Show the node of the pod
  actionner: kubernetes:exec
  additional_contexts:
    - k8snode
  parameters:
    command: "echo running on ${NODE_HOSTNAME} in ${NODE_TOPOLOGY_ZONE}"
"""


def _read(what: str, call: Callable[[], Any]) -> Any:
    """`call()`; an API failure becomes ActionError naming `what` and the API's message."""
    try:
        return call()
    except Exception as exc:
        raise ActionError(f"cannot read {what}: {kube.api_error(exc)}") from exc


def role(labels: Mapping[str, str]) -> str:
    """The node's role: `kubernetes.io/role`, else the `node-role.kubernetes.io/*` keys."""
    if labels.get(ROLE_LABEL):
        return labels[ROLE_LABEL]
    roles = sorted(k[len(ROLE_PREFIX):] for k in labels if k.startswith(ROLE_PREFIX))
    return ",".join(r for r in roles if r)


def facts(node: Any) -> dict[str, str]:
    """The six keys of a V1Node, empty values left out."""
    labels = dict(getattr(node.metadata, "labels", None) or {})
    found = {key: labels.get(label, "") for key, label in LABELS.items()}
    found["node.role"] = role(labels)
    found["node.spec.providerid"] = str(getattr(node.spec, "provider_id", None) or "")
    return {key: found[key] for key in KEYS if found.get(key)}


@context(
    "k8snode",
    description=DESCRIPTION,
    required_fields=("k8s.pod.name", "k8s.ns.name"), requires=("kubernetes",),
    permissions=(Permission(("",), ("pods",), ("get",)),
                 Permission(("",), ("nodes",), ("get",))),
    example=EXAMPLE,
)
def k8snode(ctx: ActionContext) -> dict[str, str]:
    """GET the event's pod, GET its node, return the node facts."""
    pod_key, pod_name = ctx.event.pick(*POD_KEYS)
    ns_key, namespace = ctx.event.pick(*NAMESPACE_KEYS)
    if not pod_name or not namespace:
        raise ActionError("missing pod name (k8s.pod.name) or namespace (k8s.ns.name)")
    kube.check_name(namespace, ns_key, kube.LABEL)
    kube.check_name(pod_name, pod_key, kube.SUBDOMAIN)
    k = ctx.clients.kube()
    pod = _read(f"the pod '{pod_name}' in the namespace '{namespace}'",
                lambda: k.core.read_namespaced_pod(pod_name, namespace,
                                                   _request_timeout=k.timeout))
    node_name = kube.node_of(pod)
    node = _read(f"the node '{node_name}'",
                 lambda: k.core.read_node(node_name, _request_timeout=k.timeout))
    return facts(node)
