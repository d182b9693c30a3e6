"""calico:networkpolicy: deny the egress traffic of the event's pod to the remote IP.

Layer L2 (plug-in). Declared only (metadata and params, so `rules check` validates it);
there is no run function in this build: running it fails with "not available in this
build". Meant to create or update a projectcalico.org/v3 NetworkPolicy. The params are
those of kubernetes:networkpolicy plus `order`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from talon.actionners.kubernetes import networkpolicy, pods
from talon.plugin import declare

REMOTE_IP_FIELD = "fd.rip|fd.sip"


@dataclass(frozen=True, slots=True, kw_only=True)
class CalicoNetworkPolicyParams(networkpolicy.NetworkPolicyParams):
    """Parameters of calico:networkpolicy; with both lists empty, 0.0.0.0/0 stays allowed."""

    order: int = field(default=0, metadata={
        "help": "Order of the network policy (lower orders are applied first)"})


EXAMPLE = """\
- action: Create Calico netpol
  actionner: calico:networkpolicy
  parameters:
    order: 20
    allow_cidr:
      - "192.168.1.0/24"
      - "172.17.0.0/16"
    allow_namespaces:
      - "green-ns"
      - "blue-ns"
"""

declare(
    "actionner", "calico", "networkpolicy", params=CalicoNetworkPolicyParams,
    description="Create a Calico Network Policy to block the egress traffic to a specific IP",
    required_fields=(*pods.POD_FIELDS, REMOTE_IP_FIELD), requires=pods.REQUIRES,
    permissions=networkpolicy.policy_permissions("projectcalico.org", "networkpolicies"),
    example=EXAMPLE,
)
