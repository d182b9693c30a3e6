"""What calico:networkpolicy and cilium:networkpolicy share: the remote IP of the event, and
the read-merge-write of a namespaced policy object through the CustomObjectsApi.

Layer L2 (plug-in support): imports talon.plugin and its own package. `PolicyAPI` names the
custom resource (group, version, plural, kind) and the words used in texts. `apply()` reads
the current policy, hands it to the plug-in's body builder (None when there is none yet),
then creates it or replaces it with the resourceVersion read. A create that finds the
policy already there (another replica, another worker) and an update that meets a 409
conflict start again from a fresh read, once. A 404 carrying no object name means the
resource itself is not served (the CRD, or Calico's API server, is not installed): that
failure names the API group. Every other failure names the policy and its namespace.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from talon.actionners.kubernetes import common, networkpolicy, pods, rbac, undo
from talon.plugin import ActionContext, ActionError, CheckFailedError, Permission, Result

REMOTE_IP_FIELDS = ("fd.sip", "fd.rip")
"""The fields the live check reads; the IP denied is `fd.rip`, else `fd.sip`."""
REQUIRED_FIELDS = (*pods.POD_FIELDS, "fd.rip|fd.sip")
VERBS = ("get", "create", "update", "patch")
"""`patch` records the expiry of a policy written with `ttl`."""


@dataclass(frozen=True, slots=True)
class PolicyAPI:
    """One namespaced policy resource and how Talon talks about it."""

    group: str
    version: str
    plural: str
    kind: str
    word: str
    """Lower-case name in outputs, errors and the Result's objects (`ciliumnetworkpolicy`)."""
    product: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def not_served(self) -> str:
        return (f"the {self.api_version} {self.kind} API is not served by this cluster: "
                f"is {self.product} installed?")

    def permissions(self) -> tuple[Permission, ...]:
        """Exactly what the actionner calls: GET the pod and its owner, GET/POST/PUT the
        policy, PATCH it to record a `ttl`."""
        return (rbac.PODS_GET, Permission((self.group,), (self.plural,), VERBS),
                *rbac.OWNERS_GET)


Build = Callable[[Mapping[str, Any] | None], dict[str, Any]]
"""The policy to write, given the stored one (None when there is none yet)."""


def _address(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(value, str):
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return None  # "fe80::1%eth0" is not a CIDR a policy can hold
    return address


def check_remote_ip(ctx: ActionContext) -> None:
    """Live check: `fd.sip` or `fd.rip` is set, and each one set is an IP address."""
    fields = ctx.event.output_fields
    present = [key for key in REMOTE_IP_FIELDS if fields.get(key) not in (None, "")]
    if not present:
        raise CheckFailedError("missing IP field(s) (fd.sip or fd.rip)")
    for key in present:
        if _address(fields[key]) is None:
            raise CheckFailedError(f"wrong value for {key}")


def remote_cidr(ctx: ActionContext) -> str:
    """The event's remote address as a one-address CIDR (/32, or /128 for IPv6)."""
    address = _address(ctx.event.remote_ip())
    if address is None:
        raise CheckFailedError("missing IP field(s) (fd.sip or fd.rip)")
    return f"{address.compressed}/{address.max_prefixlen}"


def union(current: Any, new: list[Any]) -> list[Any]:
    """`current` (a stored list, maybe absent) followed by the items of `new` it lacks."""
    merged = list(current) if isinstance(current, list) else []
    merged += [item for item in new if item not in merged]
    return merged


def _api_missing(exc: BaseException) -> bool:
    """A 404 about the resource, not an object: its Status names no object (or is not a
    Status at all, as with older API servers: "404 page not found")."""
    if getattr(exc, "status", None) != 404:
        return False
    try:
        body = json.loads(getattr(exc, "body", None) or "")
    except (TypeError, ValueError):
        return True
    details = body.get("details") if isinstance(body, dict) else None
    return not (isinstance(details, dict) and details.get("name"))


@dataclass(frozen=True, slots=True)
class _Target:
    api: PolicyAPI
    namespace: str
    name: str

    def failure(self, verb: str, exc: BaseException) -> ActionError:
        why = self.api.not_served() if _api_missing(exc) else common.api_error(exc)
        return ActionError(f"cannot {verb} the {self.api.word} '{self.name}' in the "
                           f"namespace '{self.namespace}': {why}")


def _read(k: Any, target: _Target) -> Mapping[str, Any] | None:
    api = target.api
    try:
        found = k.custom.get_namespaced_custom_object(
            api.group, api.version, target.namespace, api.plural, target.name,
            _request_timeout=k.timeout)
    except Exception as exc:
        if common.is_not_found(exc) and not _api_missing(exc):
            return None
        raise target.failure("read", exc) from exc
    return found if isinstance(found, dict) else None


class _WriteFailed(Exception):
    """The create or update call failed (the verb is kept for the message)."""

    def __init__(self, verb: str, cause: BaseException) -> None:
        super().__init__(verb)
        self.verb, self.cause = verb, cause


def _write(k: Any, target: _Target, build: Build) -> str:
    """Read, then create or replace the policy; "created" or "updated"."""
    api = target.api
    current = _read(k, target)
    body = build(current)
    body["metadata"]["name"], body["metadata"]["namespace"] = target.name, target.namespace
    try:
        if current is None:
            k.custom.create_namespaced_custom_object(
                api.group, api.version, target.namespace, api.plural, body,
                _request_timeout=k.timeout)
            return "created"
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        undo.keep_mark(body, current["metadata"].get("labels"),
                       current["metadata"].get("annotations"))
        k.custom.replace_namespaced_custom_object(
            api.group, api.version, target.namespace, api.plural, target.name, body,
            _request_timeout=k.timeout)
    except Exception as exc:
        raise _WriteFailed("create" if current is None else "update", exc) from exc
    return "updated"


def write(k: Any, api: PolicyAPI, namespace: str, name: str, build: Build) -> str:
    """Create or update the policy `name`; a 409 (AlreadyExists on create, Conflict on
    update) starts again from a fresh read, once."""
    target = _Target(api, namespace, name)
    try:
        return _write(k, target, build)
    except _WriteFailed as failed:
        if getattr(failed.cause, "status", None) != 409:
            raise target.failure(failed.verb, failed.cause) from failed.cause
    try:
        return _write(k, target, build)
    except _WriteFailed as failed:
        raise target.failure(failed.verb, failed.cause) from failed.cause


def apply(ctx: ActionContext, api: PolicyAPI,
          build: Callable[[networkpolicy.Selection, Mapping[str, Any] | None], dict[str, Any]]
          ) -> Result:
    """Find the pod's workload, then create or update its policy; the output names it."""
    namespace, pod_name = common.pod_target(ctx)
    objects = common.pod_objects(namespace, pod_name)

    def body() -> Result:
        selection = networkpolicy.select(ctx, common.get_pod(ctx))
        done = write(common.kube(ctx), api, namespace, selection.name,
                     lambda current: build(selection, current))
        output = f"the {api.word} '{selection.name}' in the namespace '{namespace}' has " \
                 f"been {done}"
        if ctx.params.ttl:
            output += networkpolicy.record_expiry(ctx, api.word, namespace, selection.name,
                                                  done)
        return Result(
            output=output,
            objects={**objects, api.word: selection.name})

    return common.report_failures(objects, body)
