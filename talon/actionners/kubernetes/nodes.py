"""Kubernetes actionners acting on the node of the event's pod: cordon, drain.

Layer L2 (plug-in). Declared with metadata and params dataclass; the run functions come
later in this module. drain accepts both `ignore_errors` (the Go spelling) and
`ignore_error` (the documented one): either set to true ignores the errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from talon import registry
from talon.actionners.kubernetes import pods, rbac


@dataclass(frozen=True, slots=True, kw_only=True)
class CordonParams:
    """kubernetes:cordon takes no parameter (any key given is reported as unknown)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainParams:
    """Parameters of kubernetes:drain."""

    ignore_daemonsets: bool = field(default=False, metadata={
        "help": "If true, pods belonging to a DaemonSet are not evicted"})
    ignore_statefulsets: bool = field(default=False, metadata={
        "help": "If true, pods belonging to a StatefulSet are not evicted"})
    min_healthy_replicas: str = field(default="", metadata={
        "help": "Minimum number of healthy pods of a ReplicaSet to allow the eviction of its "
                "pods: an absolute value (\"2\") or a percentage (\"50%\"), as a quoted string"})
    ignore_errors: bool = field(default=False, metadata={
        "help": "If true, errors during the drain are ignored and the action succeeds "
                "(controls the flow of the next actions)"})
    ignore_error: bool = field(default=False, metadata={
        "help": "Same as ignore_errors (the documentation's spelling)"})
    max_wait_period: int = field(default=0, metadata={
        "min": 0,
        "help": "Seconds to wait for the evicted pods to be gone; 0 returns right after "
                "the eviction calls"})
    wait_period_excluded_namespaces: tuple[str, ...] = field(default=(), metadata={
        "help": "Namespaces whose pods are not waited for during max_wait_period"})

    def __post_init__(self) -> None:
        pods.check_min_healthy_replicas(self.min_healthy_replicas)

    @property
    def errors_ignored(self) -> bool:
        """True when either spelling of the ignore-errors parameter is true."""
        return self.ignore_errors or self.ignore_error


CORDON_EXAMPLE = """\
- action: Cordon the node
  actionner: kubernetes:cordon
"""

DRAIN_EXAMPLE = """\
- action: Drain the node
  actionner: kubernetes:drain
  parameters:
    ignore_daemonsets: true
    ignore_statefulsets: true
    min_healthy_replicas: "50%"
    max_wait_period: 90
    wait_period_excluded_namespaces:
      - kube-system
"""

registry.declare(
    "actionner", pods.CATEGORY, "cordon", params=CordonParams,
    description="Cordon a node",
    required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=(rbac.PODS_GET_LIST, rbac.NODES_PATCH), example=CORDON_EXAMPLE,
)

registry.declare(
    "actionner", pods.CATEGORY, "drain", params=DrainParams,
    description="Drain a node",
    required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=(rbac.PODS_GET_LIST, rbac.PODS_EVICTION, rbac.REPLICASETS_GET),
    example=DRAIN_EXAMPLE,
)
