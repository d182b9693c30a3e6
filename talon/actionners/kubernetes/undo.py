"""Containment marks: what Talon did to an object, kept on the object, and how to undo it.

Layer L2 (plug-in support): stdlib, `talon.plugin` and its own package; the kubernetes SDK
is only reached through the shared client. An actionner run with `ttl` records its change
on the object it changed: the label `talon.falco.org/contained: "true"` and the annotation
`talon.falco.org/containment`, a JSON document saying what to undo (the labels and
annotations Talon set, with their values; that Talon created the policy; that Talon
cordoned the node), since when, until when (`expires_at`, RFC 3339) and why (rule, action,
trace id). Any replica, and Talon after a restart, can then undo exactly that
(`talon.containment` runs the expiry loop and the CLI verbs). A second event for the same
object merges into the mark and moves `expires_at` later; it never stacks a second mark.
Undo removes a label or annotation only while it still holds Talon's value, deletes a
policy only if Talon created it, uncordons a node only if Talon cordoned it; every write
carries the resourceVersion read, so a change made meanwhile is never overwritten.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from talon.actionners.kubernetes import common
from talon.plugin import ActionContext, ActionError, ParamValueError, Permission, duration_seconds

MARK_LABEL = "talon.falco.org/contained"
MARK_ANNOTATION = "talon.falco.org/containment"
SELECTOR = f"{MARK_LABEL}=true"
TTL_HELP = ("Undo the change after this long: \"90s\", \"30m\", \"2h\" or seconds; empty "
            "keeps it until removed by hand. Talon marks the object so that any replica "
            "undoes it, also after a restart; a later event moves the expiry")
MAX_TTL = 30 * 86400


def parse_duration(value: str | int) -> int:
    """Seconds in `value` ("90s", "30m", "2h", "1d" or whole seconds), at most MAX_TTL;
    ValueError when invalid."""
    seconds = duration_seconds(value)
    if seconds != int(seconds):
        raise ValueError(f"'{value}' is not a whole number of seconds")
    if not 0 < seconds <= MAX_TTL:
        raise ValueError(f"'{value}' must be between 1s and {MAX_TTL // 86400}d")
    return int(seconds)


def check_ttl(value: str | int) -> None:
    """Parameter check of `ttl` (empty means no expiry)."""
    if value == "":
        return
    try:
        parse_duration(value)
    except ValueError as exc:
        raise ParamValueError("ttl", f"invalid ttl: {exc}") from None


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    """Unix time of an RFC 3339 stamp; 0 when it is not one (an unreadable expiry is due)."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Mark:
    """What Talon did to one object and when it is undone."""

    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    created: bool = False
    cordoned: bool = False
    since: str = ""
    expires_at: str = ""
    rule: str = ""
    action: str = ""
    actionner: str = ""
    trace_id: str = ""

    def to_json(self) -> str:
        data = {"labels": dict(self.labels), "annotations": dict(self.annotations),
                "created": self.created, "cordoned": self.cordoned, "since": self.since,
                "expires_at": self.expires_at, "rule": self.rule, "action": self.action,
                "actionner": self.actionner, "trace_id": self.trace_id}
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def what(self) -> str:
        """What will be undone, in words."""
        parts = [f"label {k}={v}" for k, v in self.labels.items()]
        parts += [f"annotation {k}={v}" for k, v in self.annotations.items()]
        parts += ["created by Talon"] if self.created else []
        parts += ["cordoned by Talon"] if self.cordoned else []
        return ", ".join(parts) or "mark only"


def _text_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str)}


def read_mark(obj: Mapping[str, Any]) -> Mark | None:
    """The mark of a plain object (as the API returns it), or None when it has none."""
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(MARK_ANNOTATION)
    if not isinstance(text, str):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return Mark()  # damaged: expires at once, undoing nothing but the mark
    if not isinstance(data, dict):
        return Mark()
    return Mark(labels=_text_map(data.get("labels")),
                annotations=_text_map(data.get("annotations")),
                created=data.get("created") is True, cordoned=data.get("cordoned") is True,
                **{k: str(data.get(k) or "") for k in
                   ("since", "expires_at", "rule", "action", "actionner", "trace_id")})


def merged(current: Mark | None, new: Mark) -> Mark:
    """`new` folded into `current`: the union of what to undo, the later expiry."""
    if current is None:
        return new
    later = max(new.expires_at, current.expires_at, key=parse_time)
    return replace(new, labels={**current.labels, **new.labels},
                   annotations={**current.annotations, **new.annotations},
                   created=current.created or new.created,
                   cordoned=current.cordoned or new.cordoned,
                   since=current.since or new.since, expires_at=later)


def token(key: str) -> str:
    """`key` as one JSON-pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def guard(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A `test` of the resourceVersion read: the patch fails if the object changed since."""
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": version}] \
        if version else []


def set_ops(obj: Mapping[str, Any], section: str, entries: Mapping[str, str]
            ) -> list[dict[str, Any]]:
    """Operations setting `entries` in metadata.<section> (created when absent)."""
    current = (obj.get("metadata") or {}).get(section)
    if not isinstance(current, dict):
        return [{"op": "add", "path": f"/metadata/{section}", "value": dict(entries)}]
    return [{"op": "add", "path": f"/metadata/{section}/{token(k)}", "value": v}
            for k, v in entries.items() if current.get(k) != v]


# --- the objects Talon marks ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of marked object: how to name, read, patch, delete and list it."""

    name: str
    namespaced: bool
    read: Callable[[Any, str, str], Any]
    patch: Callable[[Any, str, str, list[dict[str, Any]]], Any]
    listing: Callable[[Any], Any]
    delete: Callable[[Any, str, str, str], Any] | None = None


def _raw(response: Any) -> dict[str, Any]:
    data = json.loads(response.data)
    return data if isinstance(data, dict) else {}


def _opts(k: Any) -> dict[str, Any]:
    return {"_request_timeout": k.timeout, "_preload_content": False}


def _delete_body(version: str) -> dict[str, Any]:
    return {"preconditions": {"resourceVersion": version}} if version else {}


def _custom(plural: str, group: str, version: str, name: str) -> Kind:
    def read(k: Any, ns: str, obj: str) -> Any:
        return k.custom.get_namespaced_custom_object(group, version, ns, plural, obj,
                                                     **_opts(k))

    def patch(k: Any, ns: str, obj: str, ops: list[dict[str, Any]]) -> Any:
        return k.custom.patch_namespaced_custom_object(  # a list is sent as merge patch
            group, version, ns, plural, obj, ops, **_opts(k),  # unless told otherwise
            _content_type="application/json-patch+json")

    def listing(k: Any) -> Any:
        return k.custom.list_cluster_custom_object(group, version, plural,
                                                   label_selector=SELECTOR, **_opts(k))

    def delete(k: Any, ns: str, obj: str, rv: str) -> Any:
        return k.custom.delete_namespaced_custom_object(group, version, ns, plural, obj,
                                                        body=_delete_body(rv), **_opts(k))

    return Kind(name, True, read, patch, listing, delete)


KINDS: dict[str, Kind] = {
    "pod": Kind(
        "pod", True,
        lambda k, ns, n: k.core.read_namespaced_pod(n, ns, **_opts(k)),
        lambda k, ns, n, ops: k.core.patch_namespaced_pod(n, ns, ops, **_opts(k)),
        lambda k: k.core.list_pod_for_all_namespaces(label_selector=SELECTOR, **_opts(k))),
    "node": Kind(
        "node", False,
        lambda k, _ns, n: k.core.read_node(n, **_opts(k)),
        lambda k, _ns, n, ops: k.core.patch_node(n, ops, **_opts(k)),
        lambda k: k.core.list_node(label_selector=SELECTOR, **_opts(k))),
    "networkpolicy": Kind(
        "networkpolicy", True,
        lambda k, ns, n: k.networking.read_namespaced_network_policy(n, ns, **_opts(k)),
        lambda k, ns, n, ops: k.networking.patch_namespaced_network_policy(
            n, ns, ops, **_opts(k)),
        lambda k: k.networking.list_network_policy_for_all_namespaces(
            label_selector=SELECTOR, **_opts(k)),
        lambda k, ns, n, rv: k.networking.delete_namespaced_network_policy(
            n, ns, body=_delete_body(rv), **_opts(k))),
    "caliconetworkpolicy": _custom("networkpolicies", "projectcalico.org", "v3",
                                   "caliconetworkpolicy"),
    "ciliumnetworkpolicy": _custom("ciliumnetworkpolicies", "cilium.io", "v2",
                                   "ciliumnetworkpolicy"),
}
"""Marked kinds by their name in `kind/NS/NAME` references (the Result's object words)."""


def read(k: Any, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
    return _raw(kind.read(k, namespace, name))


# --- recording (called by the actionners when `ttl` is set) --------------------------------


def new_mark(ctx: ActionContext, **what: Any) -> Mark:
    """A mark for this action: `what` it did, expiring `ctx.params.ttl` from now."""
    start = time.time()
    return Mark(since=rfc3339(start), rule=ctx.rule.name, action=ctx.action.name,
                actionner=ctx.action.actionner, trace_id=ctx.event.trace_id,
                expires_at=rfc3339(start + parse_duration(ctx.params.ttl)), **what)


def mark_ops(obj: Mapping[str, Any], mark: Mark) -> list[dict[str, Any]]:
    """The patch writing `mark` (already merged with the stored one) on `obj`."""
    return [*guard(obj), *set_ops(obj, "labels", {MARK_LABEL: "true"}),
            *set_ops(obj, "annotations", {MARK_ANNOTATION: mark.to_json()})]


def record(ctx: ActionContext, kind_name: str, namespace: str, name: str,
           build: Callable[[dict[str, Any]], Mark]) -> Mark:
    """Read the object, then write its merged mark; one more try after a conflict.

    `build(obj)` makes the new mark from the object as read (what Talon did, compared
    with what was there). ActionError when the mark cannot be written: the change then
    stays, and says so, rather than be left without an expiry silently.
    """
    k, kind = common.kube(ctx), KINDS[kind_name]
    for attempt in (1, 2):
        try:
            obj = read(k, kind, namespace, name)
            mark = merged(read_mark(obj), build(obj))
            kind.patch(k, namespace, name, mark_ops(obj, mark))
            return mark
        except Exception as exc:
            if attempt == 1 and getattr(exc, "status", None) in (409, 422):
                continue
            raise ActionError(f"the {kind_name} '{name}' was changed but its expiry could not "
                              f"be recorded: {common.api_error(exc)}") from exc
    raise AssertionError("unreachable")


def keep_mark(body: dict[str, Any], labels: Mapping[str, str] | None,
              annotations: Mapping[str, str] | None) -> None:
    """Carry the stored mark into `body`, a full replacement of a marked object (a policy
    rewritten by a later event keeps its expiry, whether or not that event has a ttl)."""
    meta = body.setdefault("metadata", {})
    if (labels or {}).get(MARK_LABEL):
        meta.setdefault("labels", {})[MARK_LABEL] = (labels or {})[MARK_LABEL]
    if (annotations or {}).get(MARK_ANNOTATION):
        meta.setdefault("annotations", {})[MARK_ANNOTATION] = (annotations or {})[
            MARK_ANNOTATION]


def added(before: Mapping[str, str] | None, wanted: Mapping[str, str]) -> dict[str, str]:
    """The non-empty entries of `wanted` that `before` did not already hold."""
    return {k: v for k, v in wanted.items() if v and (before or {}).get(k) != v}


def expiry_note(mark: Mark) -> str:
    return f"; undone at {mark.expires_at} (ttl)"


# --- undoing (the reconciler and the CLI, talon.containment) -------------------------------


def _removals(obj: Mapping[str, Any], section: str, entries: Mapping[str, str]
              ) -> list[dict[str, Any]]:
    """Removals of the `entries` that still hold Talon's value (a changed one is kept)."""
    current = (obj.get("metadata") or {}).get(section) or {}
    return [{"op": "remove", "path": f"/metadata/{section}/{token(k)}"}
            for k, v in entries.items() if k in current and current[k] == v]


def undo_ops(obj: Mapping[str, Any], mark: Mark) -> list[dict[str, Any]]:
    """The patch undoing `mark` on `obj`, its own label and annotation included."""
    labels = {k: v for k, v in mark.labels.items() if k != MARK_LABEL}
    annotations = {k: v for k, v in mark.annotations.items() if k != MARK_ANNOTATION}
    ops = [*guard(obj), *_removals(obj, "labels", labels),
           *_removals(obj, "annotations", annotations)]
    if mark.cordoned and (obj.get("spec") or {}).get("unschedulable") is True:
        ops.append({"op": "replace", "path": "/spec/unschedulable", "value": False})
    meta = obj.get("metadata") or {}
    if MARK_LABEL in (meta.get("labels") or {}):
        ops.append({"op": "remove", "path": f"/metadata/labels/{token(MARK_LABEL)}"})
    if MARK_ANNOTATION in (meta.get("annotations") or {}):
        ops.append({"op": "remove", "path": f"/metadata/annotations/{token(MARK_ANNOTATION)}"})
    return ops


def revert(k: Any, kind: Kind, obj: Mapping[str, Any], mark: Mark) -> str:
    """Undo what `mark` says Talon did to `obj`; what was done, in words."""
    meta = obj.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    if mark.created and kind.delete is not None:
        kind.delete(k, namespace, name, str(meta.get("resourceVersion") or ""))
        return "deleted (created by Talon)"
    kind.patch(k, namespace, name, undo_ops(obj, mark))
    return f"undone: {mark.what()}"


def extend(k: Any, kind: Kind, obj: Mapping[str, Any], mark: Mark, until: float) -> Mark:
    """Move the expiry of `mark` on `obj` to `until` (Unix time)."""
    meta = obj.get("metadata") or {}
    moved = replace(mark, expires_at=rfc3339(until))
    kind.patch(k, str(meta.get("namespace") or ""), str(meta.get("name") or ""),
               mark_ops(obj, moved))
    return moved


def reconciler_permissions(actionners: set[str]) -> tuple[Permission, ...]:
    """What the expiry loop needs to undo what `actionners` (the ones used with a ttl) mark:
    list and patch, and delete for the policies. A kind it may not list is skipped."""
    found: list[Permission] = []
    if actionners & {"kubernetes:label", "kubernetes:annotation", "kubernetes:cordon"}:
        found.append(Permission(("",), ("pods", "nodes"), ("list", "patch")))
    policies = {"kubernetes:networkpolicy": ("networking.k8s.io", "networkpolicies"),
                "calico:networkpolicy": ("projectcalico.org", "networkpolicies"),
                "cilium:networkpolicy": ("cilium.io", "ciliumnetworkpolicies")}
    found += [Permission((group,), (plural,), ("list", "patch", "delete"))
              for name, (group, plural) in policies.items() if name in actionners]
    return tuple(found)
