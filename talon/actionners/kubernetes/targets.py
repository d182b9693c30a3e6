"""kubernetes:delete: delete the target of a Kubernetes audit event.

Layer L2 (plug-in): imports talon.plugin and its own package; the kubernetes SDK is
reached only through the shared client when the action runs. The target is read from the
event's `ka.target.resource`, `ka.target.name` and (for namespaced kinds)
`ka.target.namespace`; the check GETs it, the action DELETEs it (both drain the answer's
body instead of decoding it).

Differences with the Go version (on purpose): `pods` is handled too (its RBAC rule was
already granted), and the texts say nothing about a namespace for cluster-scoped targets.
Failures after the target is known still carry its objects, so notifications name it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from talon.actionners.kubernetes import common, pods, rbac
from talon.clients import kube as kube_names
from talon.plugin import ActionContext, ActionError, CheckFailedError, Result, actionner


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteParams:
    """kubernetes:delete takes no parameter (any key given is reported as unknown)."""


DELETE_EXAMPLE = """\
- action: Delete the suspicious resource
  actionner: kubernetes:delete
"""

DELETE_PERMISSIONS = (
    rbac.get_delete(rbac.CORE, "namespaces"),
    rbac.PODS_GET_DELETE,
    rbac.get_delete(rbac.APPS, "daemonsets"),
    rbac.get_delete(rbac.APPS, "deployments"),
    rbac.get_delete(rbac.APPS, "replicasets"),
    rbac.get_delete(rbac.APPS, "statefulsets"),
    rbac.get_delete("rbac.authorization.k8s.io", "roles"),
    rbac.get_delete("rbac.authorization.k8s.io", "clusterroles"),
    rbac.get_delete(rbac.CORE, "configmaps"),
    rbac.get_delete(rbac.CORE, "secrets"),
    rbac.get_delete(rbac.CORE, "services"),
    rbac.get_delete(rbac.CORE, "serviceaccounts"),
)
"""One rule per resource kind kubernetes:delete handles (services and serviceaccounts too)."""


@dataclass(frozen=True, slots=True)
class Deletable:
    """How kubernetes:delete reaches one resource through the SDK."""

    api: str
    """`Kube` attribute: core, apps or rbac."""
    suffix: str
    """SDK method suffix: `read_namespaced_<suffix>` / `delete_<suffix>`."""
    noun: str
    """Singular name used in the texts."""
    namespaced: bool = True
    name_rule: str = kube_names.SUBDOMAIN
    """Which names the API server accepts for this kind (talon.clients.kube rules)."""


DELETABLE: Mapping[str, Deletable] = {
    "namespaces": Deletable("core", "namespace", "namespace", namespaced=False,
                            name_rule=kube_names.LABEL),
    "pods": Deletable("core", "pod", "pod"),
    "configmaps": Deletable("core", "config_map", "configmap"),
    "secrets": Deletable("core", "secret", "secret"),
    "services": Deletable("core", "service", "service", name_rule=kube_names.DNS1035),
    "serviceaccounts": Deletable("core", "service_account", "serviceaccount"),
    "deployments": Deletable("apps", "deployment", "deployment"),
    "daemonsets": Deletable("apps", "daemon_set", "daemonset"),
    "statefulsets": Deletable("apps", "stateful_set", "statefulset"),
    "replicasets": Deletable("apps", "replica_set", "replicaset"),
    "roles": Deletable("rbac", "role", "role", name_rule=kube_names.RBAC),
    "clusterroles": Deletable("rbac", "cluster_role", "clusterrole", namespaced=False,
                              name_rule=kube_names.RBAC),
}
"""The `ka.target.resource` values kubernetes:delete handles (one RBAC rule each)."""


@dataclass(frozen=True, slots=True)
class _Target:
    kind: Deletable
    resource: str
    name: str
    namespace: str

    @property
    def text(self) -> str:
        if self.kind.namespaced:
            return f"the {self.kind.noun} '{self.name}' in the namespace '{self.namespace}'"
        return f"the {self.kind.noun} '{self.name}'"

    @property
    def objects(self) -> dict[str, str]:
        found = {"name": self.name, "resource": self.resource}
        return (found | {"namespace": self.namespace}) if self.kind.namespaced else found


def _audit_target(ctx: ActionContext) -> _Target:
    """The target of the audit event; CheckFailedError when incomplete or unsupported,
    EventError (nothing sent) when its name or namespace is not one the API accepts."""
    event = ctx.event
    resource, name = event.target_resource(), event.target_name()
    if not resource:
        raise CheckFailedError("missing target resource (ka.target.resource)")
    if not name:
        raise CheckFailedError("missing target name (ka.target.name)")
    kind = DELETABLE.get(resource)
    if kind is None:
        raise CheckFailedError(f"the resource '{resource}' is not supported")
    namespace = event.target_namespace() if kind.namespaced else ""
    if kind.namespaced and not namespace:
        raise CheckFailedError("missing target namespace (ka.target.namespace)")
    if kind.namespaced:
        kube_names.check_name(namespace, "ka.target.namespace", kube_names.LABEL)
    return _Target(kind, resource, kube_names.check_name(name, "ka.target.name", kind.name_rule),
                   namespace)


def _call(ctx: ActionContext, verb: str, target: _Target) -> None:
    """`verb` (read or delete) the target; the answer's body is drained, not decoded."""
    k = common.kube(ctx)
    api = getattr(k, target.kind.api)
    options = {"_request_timeout": k.timeout, "_preload_content": False}
    if target.kind.namespaced:
        method = getattr(api, f"{verb}_namespaced_{target.kind.suffix}")
        response = method(target.name, target.namespace, **options)
    else:
        response = getattr(api, f"{verb}_{target.kind.suffix}")(target.name, **options)
    response.drain_conn()
    response.release_conn()


def target_exists(ctx: ActionContext) -> None:
    """Live check of kubernetes:delete: the audit event's target can be read."""
    target = _audit_target(ctx)
    try:
        _call(ctx, "read", target)
    except Exception as exc:
        if common.is_not_found(exc):
            raise CheckFailedError(f"{target.text} doesn't exist") from exc
        raise ActionError(f"cannot read {target.text}: {common.api_error(exc)}") from exc


def _delete(ctx: ActionContext, target: _Target) -> Result:
    try:
        _call(ctx, "delete", target)
    except Exception as exc:
        raise ActionError(f"cannot delete {target.text}: {common.api_error(exc)}") from exc
    return Result(output=f"{target.text} has been deleted", objects=target.objects)


@actionner(
    pods.CATEGORY, "delete",
    disruptive=True, checks=(target_exists,), params=DeleteParams,
    description="Delete the resource",
    default_continue=False,
    required_fields=("ka.target.resource", "ka.target.name"),
    sources=("k8s_audit",), requires=pods.REQUIRES,
    permissions=DELETE_PERMISSIONS, example=DELETE_EXAMPLE,
)
def delete(ctx: ActionContext) -> Result:
    """Delete the target of a Kubernetes audit event (resource, name, namespace)."""
    target = _audit_target(ctx)
    return common.report_failures(target.objects, lambda: _delete(ctx, target))
