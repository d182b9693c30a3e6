"""Kubernetes RBAC rules shared by the kubernetes, calico and cilium actionners.

Layer L2 (plug-in support): stdlib and `talon.plugin` only. Each constant is one rule of
the ClusterRole that Talon's service account needs; a plug-in lists the rules it uses in its
`permissions` metadata, so `talon rbac` can print the ClusterRole to grant. A plug-in
declares exactly the verbs it calls (tests/actionners/test_rbac.py compares them with the
requests its scenarios make against the fake API server).
"""

from __future__ import annotations

from talon.plugin import Permission

CORE = ""
APPS = "apps"

PODS_GET = Permission((CORE,), ("pods",), ("get",))
PODS_GET_LIST = Permission((CORE,), ("pods",), ("get", "list"))
PODS_GET_DELETE = Permission((CORE,), ("pods",), ("get", "delete"))
PODS_EXEC = Permission((CORE,), ("pods/exec",), ("get", "create"))
"""A WebSocket exec is authorized as `get` before Kubernetes 1.30 and as `create` after."""
PODS_LOG = Permission((CORE,), ("pods/log",), ("get",))
PODS_EVICTION = Permission((CORE,), ("pods/eviction",), ("create",))
PODS_EPHEMERAL_CONTAINERS = Permission((CORE,), ("pods/ephemeralcontainers",), ("patch",))
PODS_NODES_GET_PATCH = Permission((CORE,), ("pods", "nodes"), ("get", "patch"))
NODES_GET_PATCH = Permission((CORE,), ("nodes",), ("get", "patch"))
"""kubernetes:cordon: `get` is used with `ttl` (was the node cordoned already?)."""
JOBS = Permission(("batch",), ("jobs",), ("create", "delete"))
REPLICASETS_GET = Permission((APPS,), ("replicasets",), ("get",))

OWNERS_GET = (
    Permission((APPS,), ("daemonsets",), ("get",)),
    REPLICASETS_GET,
    Permission((APPS,), ("statefulsets",), ("get",)),
)
"""What the network policy actionners read to find a pod's owner and its selector (a
Deployment's pods are selected through their ReplicaSet, which names the Deployment)."""


def get_delete(group: str, resource: str) -> Permission:
    """`get` and `delete` on one resource (what kubernetes:delete needs per resource)."""
    return Permission((group,), (resource,), ("get", "delete"))
