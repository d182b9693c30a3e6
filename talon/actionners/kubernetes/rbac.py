"""Kubernetes RBAC rules shared by the kubernetes, calico and cilium actionners.

Layer L2 (plug-in support): stdlib and `talon.plugin` only. Each constant is one rule of
the ClusterRole that Talon's service account needs; a plug-in lists the rules it uses in its
`permissions` metadata, so `talon actionners list` can print the ClusterRole to grant.
"""

from __future__ import annotations

from talon.plugin import Permission

CORE = ""
APPS = "apps"

PODS_GET = Permission((CORE,), ("pods",), ("get",))
PODS_GET_LIST = Permission((CORE,), ("pods",), ("get", "list"))
PODS_GET_DELETE_LIST = Permission((CORE,), ("pods",), ("get", "delete", "list"))
PODS_GET_UPDATE_PATCH_LIST = Permission((CORE,), ("pods",), ("get", "update", "patch", "list"))
PODS_EXEC = Permission((CORE,), ("pods/exec",), ("get", "create"))
PODS_LOG = Permission((CORE,), ("pods/log",), ("get",))
PODS_EVICTION = Permission((CORE,), ("pods/eviction",), ("get", "create"))
PODS_EPHEMERAL_CONTAINERS = Permission((CORE,), ("pods/ephemeralcontainers",), ("patch", "create"))
PODS_NODES_PATCH = Permission((CORE,), ("pods", "nodes"), ("get", "update", "patch", "list"))
NODES_PATCH = Permission((CORE,), ("nodes",), ("get", "update", "patch"))
JOBS = Permission(("batch",), ("jobs",), ("create", "get", "list", "delete"))
REPLICASETS_GET = Permission((APPS,), ("replicasets",), ("get",))

OWNERS_GET = (
    Permission((APPS,), ("daemonsets",), ("get",)),
    Permission((APPS,), ("deployments",), ("get",)),
    REPLICASETS_GET,
    Permission((APPS,), ("statefulsets",), ("get",)),
)
"""What kubernetes:networkpolicy is granted to find a pod's owner and its selector."""

SELECTOR_OWNERS_GET = (
    Permission((APPS,), ("daemonsets",), ("get",)),
    REPLICASETS_GET,
    Permission((APPS,), ("statefulsets",), ("get",)),
)
"""Exactly the owners whose selector a policy reuses (a Deployment is known from its
ReplicaSet's owner reference, never read)."""


def get_delete(group: str, resource: str) -> Permission:
    """`get` and `delete` on one resource (what kubernetes:delete needs per resource)."""
    return Permission((group,), (resource,), ("get", "delete"))
