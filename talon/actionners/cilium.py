"""cilium:networkpolicy: deny the egress traffic of the event's pod to the remote IP.

Layer L2 (plug-in). Creates or updates a cilium.io/v2 CiliumNetworkPolicy with the
kubernetes client. Declared with metadata and params dataclass; the run function comes
later in this module. The allow lists follow the rules of kubernetes:networkpolicy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from talon.actionners.kubernetes import networkpolicy, pods, rbac
from talon.plugin import Permission, declare

REMOTE_IP_FIELD = "fd.rip|fd.sip"


@dataclass(frozen=True, slots=True, kw_only=True)
class CiliumNetworkPolicyParams:
    """Parameters of cilium:networkpolicy; with both lists empty, 0.0.0.0/0 stays allowed."""

    allow_cidr: tuple[str, ...] = field(default=(), metadata={
        "help": networkpolicy.ALLOW_CIDR_HELP})
    allow_namespaces: tuple[str, ...] = field(default=(), metadata={
        "help": networkpolicy.ALLOW_NAMESPACES_HELP})

    def __post_init__(self) -> None:
        networkpolicy.check_allowances(self.allow_cidr, self.allow_namespaces)


EXAMPLE = """\
- action: Create Cilium netpol
  actionner: cilium:networkpolicy
  parameters:
    allow_cidr:
      - "192.168.1.0/24"
      - "172.17.0.0/16"
    allow_namespaces:
      - "green-ns"
      - "blue-ns"
"""

declare(
    "actionner", "cilium", "networkpolicy", params=CiliumNetworkPolicyParams,
    description="Create a Cilium Network Policy to block the egress traffic to a specific IP",
    required_fields=(*pods.POD_FIELDS, REMOTE_IP_FIELD), requires=pods.REQUIRES,
    permissions=(
        rbac.PODS_GET_LIST,
        Permission(("cilium.io",), ("ciliumnetworkpolicies",),
                   ("get", "update", "patch", "create")),
        *rbac.OWNERS_GET,
    ),
    example=EXAMPLE,
)
