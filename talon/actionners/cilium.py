"""cilium:networkpolicy: deny the egress traffic of the event's pod (and its siblings) to the
event's remote IP, with a cilium.io/v2 CiliumNetworkPolicy.

Layer L2 (plug-in): imports talon.plugin and talon.actionners.kubernetes (the owner and
selector lookup of kubernetes:networkpolicy, the read-merge-write of `crdpolicy`). The
policy is named and selects pods as kubernetes:networkpolicy's does (named after the
Deployment, not its ReplicaSet; `endpointSelector` is the same LabelSelector). Its spec:
`egressDeny: [{toCIDR: [<remote IP>/32]}]` (/128 for IPv6), and `egress` allow rules:
`toCIDR: <allow_cidr>`, then `toEndpoints` whose namespace (Cilium's
`k8s:io.kubernetes.pod.namespace` label) is in `allow_namespaces`; with both lists empty,
`toCIDR: [0.0.0.0/0]`. A later event keeps the stored rules and adds the ones it lacks,
each once (the Go version appended them once per differing stored rule, and never when
the stored list was empty; it also ran without checking the remote IP).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from talon.actionners.kubernetes import common, crdpolicy, networkpolicy, pods
from talon.plugin import ActionContext, Result, actionner

API = crdpolicy.PolicyAPI("cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy",
                          "ciliumnetworkpolicy", "Cilium")
DESCRIPTION = "Network policy created by Falco Talon"
"""`spec.description`, as the Go version writes it (existing tooling may look for it)."""
EVERYWHERE = "0.0.0.0/0"
NAMESPACE_LABEL = "k8s:io.kubernetes.pod.namespace"
"""The label Cilium gives every endpoint with its namespace (the Go version used
`k8s.io/metadata.name`, which no endpoint carries)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CiliumNetworkPolicyParams(networkpolicy.NetworkPolicyParams):
    """Parameters of cilium:networkpolicy; with both lists empty, 0.0.0.0/0 stays allowed."""


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


def allow_rules(p: CiliumNetworkPolicyParams) -> list[dict[str, Any]]:
    """The egress (allow) rules the parameters ask for."""
    if not p.allow_cidr and not p.allow_namespaces:
        return [{"toCIDR": [EVERYWHERE]}]
    rules: list[dict[str, Any]] = []
    if p.allow_cidr:
        rules.append({"toCIDR": list(p.allow_cidr)})
    if p.allow_namespaces:
        rules.append({"toEndpoints": [{"matchExpressions": [{
            "key": NAMESPACE_LABEL, "operator": "In", "values": list(p.allow_namespaces)}]}]})
    return rules


def policy_body(selection: networkpolicy.Selection, p: CiliumNetworkPolicyParams, cidr: str,
                current: Mapping[str, Any] | None) -> dict[str, Any]:
    """The CiliumNetworkPolicy to write, given the stored one (None when there is none)."""
    stored = (current or {}).get("spec") or {}
    return {"apiVersion": API.api_version, "kind": API.kind,
            "metadata": {"name": selection.name,
                         "labels": {**selection.match_labels, **networkpolicy.MANAGED_BY}},
            "spec": {"description": DESCRIPTION,
                     "endpointSelector": selection.pod_selector(),
                     "egressDeny": crdpolicy.union(stored.get("egressDeny"),
                                                   [{"toCIDR": [cidr]}]),
                     "egress": crdpolicy.union(stored.get("egress"), allow_rules(p))}}


@actionner(
    "cilium", "networkpolicy",
    disruptive=True, params=CiliumNetworkPolicyParams,
    checks=(crdpolicy.check_remote_ip, common.pod_exists),
    description="Create a Cilium Network Policy to block the egress traffic to a specific IP",
    required_fields=crdpolicy.REQUIRED_FIELDS, requires=pods.REQUIRES,
    permissions=API.permissions(), example=EXAMPLE,
)
def cilium_networkpolicy(ctx: ActionContext) -> Result:
    """Create, or add the event's remote IP to, the Cilium policy of the pod's workload."""
    cidr = crdpolicy.remote_cidr(ctx)
    return crdpolicy.apply(ctx, API, lambda selection, current: policy_body(
        selection, ctx.params, cidr, current))
