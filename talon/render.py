"""Text renderings for the CLI: merged rules as YAML, plug-in listings, RBAC.

Layer L1 (imports only L0/L1): pure functions from model/registry to text; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from talon import params as params_mod
from talon.models import plain
from talon.registry import Permission, Plugin, PluginInfo
from talon.rules.model import Action, Rule, RuleSet


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in (None, "", [], {}, ())}


def action_dict(action: Action) -> dict[str, Any]:
    """An action in the Go `rules print` key order, empty settings omitted."""
    out = None
    if action.output is not None:
        out = _drop_empty({"parameters": plain(action.output.parameters),
                           "target": action.output.target})
    return _drop_empty({
        "parameters": plain(action.parameters), "output": out, "action": action.name,
        "description": action.description, "actionner": action.actionner,
        "continue": action.continue_, "ignore_errors": action.ignore_errors,
        "retries": action.retries or None,
        "retry_backoff_seconds": action.retry_backoff_seconds
        if action.retries and action.retry_backoff_seconds != 1.0 else None,
        "additional_contexts": list(action.additional_contexts)})


def rule_dict(rule: Rule) -> dict[str, Any]:
    """A merged rule in the Go `rules print` key order."""
    m = rule.match
    match = _drop_empty({"output_fields": list(m.output_fields), "priority": m.priority,
                         "source": m.source, "rules": list(m.rules), "tags": list(m.tags)})
    d = _drop_empty({"rule": rule.name, "description": rule.description,
                     "continue": rule.continue_, "dry_run": rule.dry_run,
                     "notifiers": list(rule.notifiers),
                     "actions": [action_dict(a) for a in rule.actions]})
    d["match"] = match
    return d


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not any(line != line.rstrip() for line in
                                               value.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)
# Maps read by talon.yamlio are dict subclasses that remember their lines: dump them as maps.
_Dumper.add_multi_representer(dict, yaml.SafeDumper.represent_dict)


def dump(data: Any) -> str:
    """YAML with block style for multi-line strings."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100,
                     default_flow_style=False)


def rules_yaml(ruleset: RuleSet) -> str:
    """`rules print`: the merged rules, as one YAML document."""
    return "---\n" + dump([rule_dict(r) for r in ruleset.rules])


def _rbac(perms: Iterable[Permission]) -> list[dict[str, Any]]:
    return [{"apiGroups": list(p.api_groups), "resources": list(p.resources),
             "verbs": list(p.verbs)} for p in perms]


def _parameters(cls: type | None) -> dict[str, Any]:
    out = {}
    for spec in params_mod.describe(cls):
        key = spec.name + (" (required)" if spec.required else "")
        default = plain(spec.default)
        out[key] = {"type": spec.type, **({"default": default} if not spec.required else {}),
                    **({"description": spec.help} if spec.help else {})}
    return out


def plugin_block(plugin: Plugin) -> str:
    """One `--- name ---` block of the `list` commands."""
    info = plugin.info
    body: dict[str, Any] = {"name": info.name, "category": info.category,
                            "description": info.description,
                            "parameters": _parameters(info.params) or None}
    if info.kind == "actionner":
        body.update({
            "source": ", ".join(info.sources), "required_output_fields":
            list(info.required_fields) or None, "continue": info.default_continue,
            "use_context": info.use_context, "allow_output": info.allow_output,
            "require_output": info.require_output})
    if info.permissions:
        body["permissions"] = _rbac(info.permissions)
    if info.cloud_permissions:
        body["cloud_permissions"] = info.cloud_permissions
    if info.requires:
        body["requires"] = list(info.requires)
    if info.example:
        body["example"] = info.example
    return f"--- {info.fullname} ---\n\n" + dump(_drop_empty(body))


def cluster_role(perms: Iterable[Permission], name: str = "talon") -> str:
    """A least-privilege ClusterRole covering `perms`, rules merged per API group/resource."""
    merged: dict[tuple[str, str], set[str]] = {}
    for p in perms:
        for group in p.api_groups:
            for res in p.resources:
                merged.setdefault((group, res), set()).update(p.verbs)
    by_verbs: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, res), verbs in sorted(merged.items()):
        by_verbs.setdefault((group, tuple(sorted(verbs))), []).append(res)
    rules = [{"apiGroups": [g], "resources": sorted(r), "verbs": list(v)}
             for (g, v), r in sorted(by_verbs.items())]
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name}, "rules": rules}
    return dump(role)


LEASE_VERBS = ("get", "create", "update", "delete", "list")
"""What cross-replica deduplication does with its Leases (claim, take over, sweep)."""


def lease_role(namespace: str = "", name: str = "talon-dedup") -> str:
    """The namespaced Role for the dedup Leases; without `namespace`, for `kubectl -n`."""
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": metadata,
            "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                       "verbs": list(LEASE_VERBS)}]}
    where = "" if namespace else (
        "# in the namespace of Talon's pod (kubectl apply -n NAMESPACE), where it keeps its\n"
        "# dedup Leases unless deduplication.lease_namespace says otherwise\n")
    return where + dump(role)


def cloud_permissions(infos: Iterable[PluginInfo]) -> str:
    """The cloud IAM permissions of `infos`, as YAML comments (empty when none needs any),
    so that the `rbac` output stays a valid manifest."""
    lines: list[str] = []
    for info in infos:
        if not info.cloud_permissions.strip():
            continue
        lines.append(f"# {info.fullname} ({info.kind}) needs, for Talon's cloud identity:")
        lines += [f"#   {line}" if line.strip() else "#" for line in
                  info.cloud_permissions.strip().splitlines()]
    if not lines:
        return ""
    return ("# --- cloud permissions (not Kubernetes objects: grant them in AWS IAM or "
            "Google Cloud IAM) ---\n" + "\n".join(lines) + "\n")
