"""kubernetes:networkpolicy: deny the egress traffic of the event's pod (and its siblings).

Layer L2 (plug-in). Declared with metadata and params dataclass; the run function comes
later in this module. `check_allowances` validates the `allow_cidr` / `allow_namespaces`
lists and is shared with calico:networkpolicy and cilium:networkpolicy: a CIDR must be
written `address/prefix` (what the Kubernetes, Calico and Cilium APIs accept) and a
namespace must be a DNS label.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from talon import params, registry
from talon.actionners.kubernetes import pods, rbac

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

ALLOW_CIDR_HELP = "CIDRs to allow anyway, e.g. private subnets (\"10.0.0.0/8\")"
ALLOW_NAMESPACES_HELP = "Namespaces whose pods stay reachable anyway"


def check_allowances(allow_cidr: Sequence[str], allow_namespaces: Sequence[str]) -> None:
    """Raise ParamValueError naming the first CIDR or namespace that is not valid."""
    for index, cidr in enumerate(allow_cidr):
        try:
            if "/" not in cidr:
                raise ValueError(cidr)
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise params.ParamValueError(
                f"allow_cidr[{index}]", f"wrong CIDR '{cidr}'") from None
    for index, namespace in enumerate(allow_namespaces):
        if len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
            raise params.ParamValueError(
                f"allow_namespaces[{index}]",
                f"wrong namespace '{namespace}': must be a DNS label (at most 63 lowercase "
                f"letters, digits and '-', starting and ending with a letter or digit)")


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkPolicyParams:
    """Parameters of kubernetes:networkpolicy; with both lists empty, all egress is denied."""

    allow_cidr: tuple[str, ...] = field(default=(), metadata={"help": ALLOW_CIDR_HELP})
    allow_namespaces: tuple[str, ...] = field(default=(), metadata={
        "help": ALLOW_NAMESPACES_HELP})

    def __post_init__(self) -> None:
        check_allowances(self.allow_cidr, self.allow_namespaces)


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

registry.declare(
    "actionner", pods.CATEGORY, "networkpolicy", params=NetworkPolicyParams,
    description="Create, update a network policy to block all egress traffic for pod",
    required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=(
        rbac.PODS_GET_LIST,
        registry.Permission(("networking.k8s.io",), ("networkpolicies",),
                            ("get", "update", "patch", "create")),
        *rbac.OWNERS_GET,
    ),
    example=NETWORKPOLICY_EXAMPLE,
)
