"""What RBAC permission each request received by the fake API server needs.

The API server authorizes a request as (API group, resource[/subresource], verb); this maps
a recorded request to that triple the way the real one does, so tests can compare what a
plug-in declares (`PluginInfo.permissions`) with what it actually asks of the cluster:
- GET of a named object is `get`; GET of a collection is `list` (`watch` with watch=true);
- POST `create`, PUT `update`, PATCH `patch`, DELETE `delete` (of a collection:
  `deletecollection`);
- an exec is a WebSocket GET: API servers before 1.30 authorize it as `get` on
  `pods/exec`, later ones (AuthorizePodWebsocketUpgradeCreatePermission) as `create`, so it
  needs both to work on either;
- non-resource paths (`/version`, `/api`, `/apis`) need no RBAC rule of ours (every
  authenticated user may read them through `system:discovery`).
"""

from __future__ import annotations

from collections.abc import Iterable

from talon.registry import Permission
from tests.fakes.kube_http import RecordedRequest

Need = tuple[str, str, str]
"""(API group, resource or resource/subresource, verb)."""

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _split(path: str) -> tuple[str, list[str]] | None:
    """(group, the parts after the group version) or None for a non-resource path."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        return "", parts[2:]
    if len(parts) >= 4 and parts[0] == "apis":
        return parts[1], parts[3:]
    return None


def needs(request: RecordedRequest) -> set[Need]:
    """The permissions the API server checks for `request` (empty for discovery)."""
    split = _split(request.path)
    if split is None:
        return set()
    group, rest = split
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]                      # namespaced: drop namespaces/<ns>
    resource = rest[0]
    named = len(rest) >= 2
    if len(rest) >= 3:
        resource = f"{resource}/{rest[2]}"
    if request.method == "GET":
        if resource == "pods/exec":
            return {(group, resource, "get"), (group, resource, "create")}
        if not named:
            verb = "watch" if request.param("watch") in ("true", "1") else "list"
            return {(group, resource, verb)}
        return {(group, resource, "get")}
    verb = _VERBS[request.method]
    if verb == "delete" and not named:
        verb = "deletecollection"
    return {(group, resource, verb)}


def needed(requests: Iterable[RecordedRequest]) -> set[Need]:
    """The union of `needs` over `requests`."""
    found: set[Need] = set()
    for request in requests:
        found |= needs(request)
    return found


def granted(permissions: Iterable[Permission]) -> set[Need]:
    """Every (group, resource, verb) that `permissions` grant."""
    return {(group, resource, verb)
            for permission in permissions
            for group in permission.api_groups
            for resource in permission.resources
            for verb in permission.verbs}
