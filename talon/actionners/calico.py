"""calico:networkpolicy: deny the egress traffic of the event's pod to the remote IP.

Layer L2 (plug-in). Creates or updates a projectcalico.org/v3 NetworkPolicy through the
Calico API server, with the kubernetes client. Declared with metadata and params
dataclass; the run function comes later in this module. The allow lists follow the rules of
kubernetes:networkpolicy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from talon.actionners.kubernetes import networkpolicy, pods, rbac
from talon.plugin import Permission, declare

REMOTE_IP_FIELD = "fd.rip|fd.sip"


@dataclass(frozen=True, slots=True, kw_only=True)
class CalicoNetworkPolicyParams:
    """Parameters of calico:networkpolicy; with both lists empty, 0.0.0.0/0 stays allowed."""

    allow_cidr: tuple[str, ...] = field(default=(), metadata={
        "help": networkpolicy.ALLOW_CIDR_HELP})
    allow_namespaces: tuple[str, ...] = field(default=(), metadata={
        "help": networkpolicy.ALLOW_NAMESPACES_HELP})
    order: int = field(default=0, metadata={
        "help": "Order of the network policy (lower orders are applied first)"})

    def __post_init__(self) -> None:
        networkpolicy.check_allowances(self.allow_cidr, self.allow_namespaces)


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
    permissions=(
        rbac.PODS_GET_LIST,
        Permission(("projectcalico.org",), ("networkpolicies",),
                   ("get", "update", "patch", "create")),
        *rbac.OWNERS_GET,
    ),
    example=EXAMPLE,
)
