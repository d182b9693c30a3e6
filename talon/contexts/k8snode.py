"""Context `k8snode`: facts about the node the event's pod runs on.

Layer L2 (plug-in). Read from the node object (its well-known labels and providerID) with
the kubernetes client. Declared with metadata only; the fetch function comes later in this
module. Keys whose value is empty are left out.
"""

from __future__ import annotations

from talon import registry

KEYS = ("node.hostname", "node.instancetype", "node.role", "node.topology.region",
        "node.topology.zone", "node.spec.providerid")
"""Keys added to the event's context; as variables: NODE_HOSTNAME, NODE_INSTANCETYPE, ..."""

DESCRIPTION = (
    "Facts about the node of the event's pod: node.hostname (label kubernetes.io/hostname), "
    "node.instancetype (node.kubernetes.io/instance-type), node.role (kubernetes.io/role), "
    "node.topology.region (topology.kubernetes.io/region), node.topology.zone "
    "(topology.kubernetes.io/zone) and node.spec.providerid (spec.providerID); "
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

registry.declare(
    "context", "context", "k8snode",
    description=DESCRIPTION,
    required_fields=("k8s.pod.name", "k8s.ns.name"), requires=("kubernetes",),
    permissions=(registry.Permission(("",), ("pods",), ("get",)),
                 registry.Permission(("",), ("nodes",), ("get",))),
    example=EXAMPLE,
)
