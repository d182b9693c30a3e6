"""calico:networkpolicy: deny the egress traffic of the event's pod (and its siblings) to the
event's remote IP, with a projectcalico.org/v3 NetworkPolicy.

Layer L2 (plug-in): imports talon.plugin and talon.actionners.kubernetes (the owner and
selector lookup of kubernetes:networkpolicy, the read-merge-write of `crdpolicy`). The
policy is named and selects pods as kubernetes:networkpolicy's does (named after the
Deployment, not its ReplicaSet); `spec.selector` is Calico's selector text over the same
labels (keys sorted), `order` is the parameter as a number, `types: [Egress]`. Its egress
rules, in order: Deny to the remote IP (/32, /128 for IPv6), then Allow to `allow_cidr`,
then Allow to the namespaces of `allow_namespaces` (selected by their
`kubernetes.io/metadata.name` label; the Go version used `k8s.io/...`, which matches no
namespace); with both lists empty, Allow to 0.0.0.0/0. A later event adds its IP to the
Deny rule (no duplicates) and rebuilds the Allow rules from the current parameters.
Running it needs Calico's API server (projectcalico.org/v3 is served by it, not by CRDs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from talon.actionners.kubernetes import common, crdpolicy, networkpolicy, pods
from talon.plugin import ActionContext, Result, actionner

API = crdpolicy.PolicyAPI("projectcalico.org", "v3", "networkpolicies", "NetworkPolicy",
                          "caliconetworkpolicy", "Calico")
EVERYWHERE = "0.0.0.0/0"


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

_OPERATORS = {"In": "in", "NotIn": "not in"}


def _quoted(values: Any, quote: str) -> str:
    return "{ " + ", ".join(f"{quote}{v}{quote}" for v in values or ()) + " }"


def selector(selection: networkpolicy.Selection) -> str:
    """Calico's selector for the labels and expressions of `selection`."""
    terms = [f'{key} == "{value}"' for key, value in sorted(selection.match_labels.items())]
    for expression in selection.match_expressions:
        key, operator = expression["key"], expression["operator"]
        if operator in _OPERATORS:
            values = _quoted(expression.get("values"), '"')
            terms.append(f"{key} {_OPERATORS[operator]} {values}")
        else:
            terms.append(f"has({key})" if operator == "Exists" else f"!has({key})")
    return " && ".join(terms)


def allow_rules(p: CalicoNetworkPolicyParams) -> list[dict[str, Any]]:
    """The Allow rules that follow the Deny rule."""
    if not p.allow_cidr and not p.allow_namespaces:
        return [{"action": "Allow", "destination": {"nets": [EVERYWHERE]}}]
    rules: list[dict[str, Any]] = []
    if p.allow_cidr:
        rules.append({"action": "Allow", "destination": {"nets": list(p.allow_cidr)}})
    if p.allow_namespaces:
        names = _quoted(p.allow_namespaces, "'")
        rules.append({"action": "Allow", "destination": {
            "namespaceSelector": f"{networkpolicy.NAMESPACE_LABEL} in {names}"}})
    return rules


def denied(current: Mapping[str, Any] | None, cidr: str) -> list[str]:
    """The nets of every Deny rule of the stored policy, then `cidr`, without duplicates."""
    nets: list[str] = []
    for rule in ((current or {}).get("spec") or {}).get("egress") or []:
        if isinstance(rule, dict) and rule.get("action") == "Deny":
            nets = crdpolicy.union(nets, list((rule.get("destination") or {}).get("nets") or []))
    return crdpolicy.union(nets, [cidr])


def policy_body(selection: networkpolicy.Selection, p: CalicoNetworkPolicyParams, cidr: str,
                current: Mapping[str, Any] | None) -> dict[str, Any]:
    """The NetworkPolicy to write, given the stored one (None when there is none)."""
    deny = {"action": "Deny", "destination": {"nets": denied(current, cidr)}}
    return {"apiVersion": API.api_version, "kind": API.kind,
            "metadata": {"name": selection.name,
                         "labels": {**selection.match_labels, **networkpolicy.MANAGED_BY}},
            "spec": {"order": float(p.order), "selector": selector(selection),
                     "types": ["Egress"], "egress": [deny, *allow_rules(p)]}}


@actionner(
    "calico", "networkpolicy",
    disruptive=True, params=CalicoNetworkPolicyParams,
    checks=(crdpolicy.check_remote_ip, common.pod_exists),
    description="Create a Calico Network Policy to block the egress traffic to a specific IP",
    required_fields=crdpolicy.REQUIRED_FIELDS, requires=pods.REQUIRES,
    permissions=API.permissions(), example=EXAMPLE,
)
def calico_networkpolicy(ctx: ActionContext) -> Result:
    """Create, or add the event's remote IP to, the Calico policy of the pod's workload."""
    cidr = crdpolicy.remote_cidr(ctx)
    return crdpolicy.apply(ctx, API, lambda selection, current: policy_body(
        selection, ctx.params, cidr, current))
