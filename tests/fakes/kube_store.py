"""Object store and selectors of the fake API server (tests/fakes/kube_api.py); stdlib only.

Objects are plain JSON dicts keyed by (group/version, resource, namespace, name); every write
bumps one global resourceVersion counter. `Store` applies the apiserver's write rules: server-set
metadata, generateName, AlreadyExists, optimistic concurrency, status/ephemeralcontainers
subresources, the three PATCH media types, delete preconditions and dry runs.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.fakes import kube_patch
from tests.fakes.kube_resources import (
    JSON,
    NAMESPACES,
    ResourceDef,
    already_exists,
    bad_request,
    clone,
    conflict,
    invalid,
    not_found,
    patch_failed,
    unsupported_media_type,
)

Key = tuple[str, str, str, str]

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's generateName alphabet
_BASE_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


# --- selectors ------------------------------------------------------------------------------

_SET_TERM = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:\s(in|notin)\s*\(([^)]*)\))?\s*$")
_CMP_TERM = re.compile(r"^\s*([\w./-]+)\s*(==|!=|=|>|<)\s*([\w./-]*)\s*$")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One term of a label selector."""

    key: str
    op: str  # = != in notin exists !exists gt lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "exists":
            return value is not None
        if self.op == "!exists":
            return value is None
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        if self.op in ("!=", "notin"):
            return value is None or value not in self.values
        if value is None or not value.lstrip("-").isdigit():
            return False
        limit = int(self.values[0])
        return int(value) > limit if self.op == "gt" else int(value) < limit


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t for t in terms if t.strip()]


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse `a=b,c!=d,e in (f,g),h notin (i),j,!k,l>3` into requirements."""
    return [_parse_term(term) for term in _split_terms(text)]


def _parse_term(term: str) -> Requirement:
    compared = _CMP_TERM.match(term)
    if compared:
        key, op, value = compared.groups()
        op = {"==": "=", ">": "gt", "<": "lt"}.get(op, op)
        if op in ("gt", "lt") and not value.lstrip("-").isdigit():
            raise bad_request(f"unable to parse requirement: for 'gt', 'lt' operators, the "
                              f"value must be an integer: {term.strip()}")
        return Requirement(key, op, (value,))
    in_set = _SET_TERM.match(term)
    if not in_set:
        raise bad_request(f"unable to parse requirement: found '{term.strip()}', expected: "
                          "'=', '!=', '==', 'in', notin'")
    negated, key, op, values = in_set.groups()
    if op:
        if negated:
            raise bad_request(f"unable to parse requirement: found '{term.strip()}'")
        return Requirement(key, op, tuple(v.strip() for v in values.split(",") if v.strip()))
    return Requirement(key, "!exists" if negated else "exists")


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels/matchExpressions); an empty selector matches all."""
    if selector is None:
        return False
    wanted = selector.get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in wanted.items()):
        return False
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expression in selector.get("matchExpressions") or []:
        requirement = Requirement(expression["key"], ops[expression["operator"]],
                                  tuple(expression.get("values") or ()))
        if not requirement.matches(labels):
            return False
    return True


def parse_field_selector(rd: ResourceDef, text: str) -> list[tuple[str, str, str]]:
    """Parse `spec.nodeName=n,status.phase!=Running` into (field, op, value) terms."""
    terms = []
    for term in _split_terms(text):
        match = re.match(r"^\s*([\w.]+)\s*(==|!=|=)\s*(.*?)\s*$", term)
        if not match:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        name, op, value = match.groups()
        if name not in _BASE_FIELDS | rd.fields:
            raise bad_request(f"field label not supported: {name}")
        terms.append((name, "!=" if op == "!=" else "=", value))
    return terms


def field_value(obj: Mapping[str, Any], name: str) -> str:
    """The string a field selector compares against (`source` means source.component)."""
    node: Any = obj
    for part in ("source.component" if name == "source" else name).split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def select(objs: Iterable[JSON], labels: str | None, fields_: str | None,
           rd: ResourceDef) -> list[JSON]:
    """Filter by a label selector and a field selector (both optional)."""
    requirements = parse_label_selector(labels) if labels else []
    terms = parse_field_selector(rd, fields_) if fields_ else []
    chosen = []
    for obj in objs:
        obj_labels = obj.get("metadata", {}).get("labels") or {}
        if not all(r.matches(obj_labels) for r in requirements):
            continue
        if all((field_value(obj, f) == v) == (op == "=") for f, op, v in terms):
            chosen.append(obj)
    return chosen


# --- the store ------------------------------------------------------------------------------


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_NAME_ALPHABET) for _ in range(length))


class _Objects(dict[Key, JSON]):
    """The stored objects by key, also grouped by resource (as the apiserver's cache is), so
    that listing one resource does not walk every object of the fake."""

    def __init__(self) -> None:
        super().__init__()
        self.by_resource: dict[tuple[str, str], dict[Key, JSON]] = {}

    def __setitem__(self, key: Key, value: JSON) -> None:
        super().__setitem__(key, value)
        self.by_resource.setdefault(key[:2], {})[key] = value

    def __delitem__(self, key: Key) -> None:
        super().__delitem__(key)
        del self.by_resource[key[:2]][key]


class Store:
    """Thread-safe object store with the apiserver's write semantics. `lock` (re-entrant)
    may be held by callers that need several operations to be atomic."""

    def __init__(self, *, require_namespaces: bool = False) -> None:
        self.require_namespaces = require_namespaces
        """Refuse to create objects in a namespace that has no Namespace object (404)."""
        self.lock = threading.RLock()
        self._objects = _Objects()
        self._rv = 0

    @staticmethod
    def key(rd: ResourceDef, namespace: str | None, name: str) -> Key:
        return (rd.group_version, rd.resource, namespace or "", name)

    def resource_version(self) -> str:
        with self.lock:
            return str(self._rv)

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def find(self, rd: ResourceDef, namespace: str | None, name: str) -> JSON | None:
        with self.lock:
            obj = self._objects.get(self.key(rd, namespace, name))
            return clone(obj) if obj is not None else None

    def get_bytes(self, rd: ResourceDef, namespace: str | None, name: str) -> bytes:
        """The stored object as the JSON the server answers (no copy: encoded under the
        lock); the server's 404 when it does not exist."""
        with self.lock:
            obj = self._objects.get(self.key(rd, namespace, name))
            if obj is not None:
                return json.dumps(obj, separators=(",", ":")).encode()
        raise not_found(rd, name)

    def get(self, rd: ResourceDef, namespace: str | None, name: str) -> JSON:
        obj = self.find(rd, namespace, name)
        if obj is None:
            raise not_found(rd, name)
        return obj

    def items(self, rd: ResourceDef, namespace: str | None, *,
              copies: bool = True) -> list[JSON]:
        """Objects of one resource (all namespaces when `namespace` is None), key order;
        `copies=False` gives the stored objects themselves (hold `lock`, change nothing)."""
        with self.lock:
            bucket = self._objects.by_resource.get((rd.group_version, rd.resource), {})
            keys = sorted(k for k in bucket if namespace is None or k[2] == namespace)
            if not copies:
                return [bucket[k] for k in keys]
            return [clone(bucket[k]) for k in keys]

    def seed(self, rd: ResourceDef, obj: JSON) -> JSON:
        """Store `obj` as given (overwriting), filling server-set metadata."""
        obj = clone(obj)
        meta = obj.setdefault("metadata", {})
        if rd.namespaced:
            meta.setdefault("namespace", "default")
        with self.lock:
            self._stamp(rd, obj, meta.get("uid"), meta.get("creationTimestamp"))
            self._objects[self.key(rd, meta.get("namespace"), meta["name"])] = obj
            return clone(obj)

    def _stamp(self, rd: ResourceDef, obj: JSON, uid: str | None, created: str | None) -> None:
        obj["apiVersion"], obj["kind"] = rd.group_version, rd.kind
        meta = obj["metadata"]
        meta["uid"] = uid or str(uuid.uuid4())
        meta["creationTimestamp"] = created or now()
        meta["resourceVersion"] = self._bump()
        if not rd.namespaced:
            meta.pop("namespace", None)
        for name in rd.structs:
            if not isinstance(obj.get(name), dict):
                obj[name] = {}

    def create(self, rd: ResourceDef, namespace: str | None, body: Any, *,
               dry_run: bool = False) -> JSON:
        obj = _as_object(body)
        meta = obj.setdefault("metadata", {})
        if rd.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + random_suffix()
        if not meta.get("name"):
            raise invalid(rd, "", [("metadata.name", "FieldValueRequired",
                                    "Required value: name or generateName is required")])
        if "status" in rd.subresources:
            obj["status"] = {"phase": "Pending"} if rd.resource == "pods" else {}
        for server_set in ("uid", "resourceVersion", "deletionTimestamp", "selfLink"):
            meta.pop(server_set, None)
        with self.lock:
            self._check_namespace(rd, namespace)
            if self.key(rd, namespace, meta["name"]) in self._objects:
                raise already_exists(rd, meta["name"])
            return self._commit(rd, obj, None, dry_run)

    def _check_namespace(self, rd: ResourceDef, namespace: str | None) -> None:
        if not (self.require_namespaces and rd.namespaced and namespace):
            return
        if ("v1", "namespaces", "", namespace) not in self._objects:
            raise not_found(NAMESPACES, namespace)

    def _commit(self, rd: ResourceDef, obj: JSON, old: JSON | None, dry_run: bool) -> JSON:
        """Stamp and store `obj` (replacing `old`); the lock is held by the caller."""
        old_meta = (old or {}).get("metadata", {})
        rv = self._rv
        self._stamp(rd, obj, old_meta.get("uid"), old_meta.get("creationTimestamp"))
        if dry_run or (old is not None and _unchanged(obj, old)):
            self._rv = rv  # a write that changes nothing keeps the resourceVersion, as the
            obj["metadata"]["resourceVersion"] = old_meta.get("resourceVersion", "")  # server
            return clone(obj)
        meta = obj["metadata"]
        self._objects[self.key(rd, meta.get("namespace"), meta["name"])] = obj
        return clone(obj)

    def replace(self, rd: ResourceDef, namespace: str | None, name: str, body: Any, *,
                subresource: str | None = None, dry_run: bool = False) -> JSON:
        """PUT: optimistic concurrency on metadata.resourceVersion."""
        obj = _as_object(body)
        meta = obj.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the "
                              f"name on the URL ({name})")
        meta["name"] = name
        with self.lock:
            old = self._objects.get(self.key(rd, namespace, name))
            if old is None:
                if rd.create_on_update and subresource is None:
                    return self.create(rd, namespace, obj, dry_run=dry_run)
                raise not_found(rd, name)
            self._check_version(rd, name, meta.get("resourceVersion"), old)
            merged = _apply_subresource(rd, subresource, old, obj)
            if rd.namespaced:
                merged["metadata"]["namespace"] = namespace
            return self._commit(rd, merged, old, dry_run)

    def _check_version(self, rd: ResourceDef, name: str, sent: str | None, old: JSON) -> None:
        if not sent:
            if rd.custom:
                raise invalid(rd, name, [(
                    "metadata.resourceVersion", "FieldValueInvalid",
                    "Invalid value: 0x0: must be specified for an update")])
            return
        if sent != old["metadata"]["resourceVersion"]:
            raise conflict(rd, name)

    def patch(self, rd: ResourceDef, namespace: str | None, name: str, content_type: str,
              patch: Any, *, subresource: str | None = None, dry_run: bool = False) -> JSON:
        with self.lock:
            current = self.get(rd, namespace, name)
            patched = apply_patch(rd, content_type, current, patch)
            if not isinstance(patched, dict):
                raise bad_request("the patched object is not a JSON object")
            patched.setdefault("metadata", {})
            if patched["metadata"].get("name") != name:
                raise bad_request("the name of the object cannot be changed by a patch")
            if subresource is None and rd.custom and not patched["metadata"].get(
                    "resourceVersion"):
                patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self.replace(rd, namespace, name, patched, subresource=subresource,
                                dry_run=dry_run)

    def delete(self, rd: ResourceDef, namespace: str | None, name: str, *,
               preconditions: Mapping[str, Any] | None = None, dry_run: bool = False) -> JSON:
        """Remove immediately and return the removed object."""
        with self.lock:
            key = self.key(rd, namespace, name)
            obj = self._objects.get(key)
            if obj is None:
                raise not_found(rd, name)
            _check_preconditions(rd, name, obj, preconditions or {})
            if not dry_run:
                del self._objects[key]
                self._bump()
            return clone(obj)

    def put(self, rd: ResourceDef, obj: JSON) -> JSON:
        """Store a modified copy of an existing object, bumping its resourceVersion."""
        with self.lock:
            meta = obj["metadata"]
            old = self._objects.get(self.key(rd, meta.get("namespace"), meta["name"]))
            return self._commit(rd, clone(obj), old, False)


def _as_object(body: Any) -> JSON:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return clone(body)


def _check_preconditions(rd: ResourceDef, name: str, obj: JSON,
                         preconditions: Mapping[str, Any]) -> None:
    meta = obj["metadata"]
    for field_name, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        wanted = preconditions.get(field_name)
        if wanted and wanted != meta.get(field_name):
            raise conflict(rd, name, f"Precondition failed: {label} in precondition: {wanted}, "
                           f"{label} in object meta: {meta.get(field_name)}")


def _unchanged(new: JSON, old: JSON) -> bool:
    """Whether `new` is `old` but for its resourceVersion."""
    def bare(obj: JSON) -> JSON:
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": ""}}
    return bare(new) == bare(old)


def apply_patch(rd: ResourceDef, content_type: str, current: JSON, patch: Any) -> Any:
    """Dispatch on the PATCH media type, mapping failures to the server's answers."""
    media = content_type.split(";")[0].strip().lower()
    try:
        if media == "application/json-patch+json":
            return kube_patch.json_patch(current, patch)
        if media == "application/merge-patch+json":
            if not isinstance(patch, dict):
                raise bad_request("Invalid JSON Patch")
            return kube_patch.merge_patch(current, patch)
        if media == "application/strategic-merge-patch+json" and not rd.custom:
            return kube_patch.strategic_merge_patch(current, patch)
    except kube_patch.PatchError as exc:
        raise bad_request(str(exc)) if exc.bad_request else patch_failed() from exc
    raise unsupported_media_type(media)


def _apply_subresource(rd: ResourceDef, subresource: str | None, old: JSON,
                       new: JSON) -> JSON:
    """What an update through the main resource or a subresource may change."""
    if subresource is None:
        merged = clone(new)
        if "status" in rd.subresources:
            merged["status"] = clone(old.get("status", {}))
        return merged
    merged = clone(old)
    if subresource == "status":
        merged["status"] = clone(new.get("status", {}))
    elif subresource == "ephemeralcontainers":
        wanted = (new.get("spec") or {}).get("ephemeralContainers") or []
        _check_ephemeral(rd, old, wanted)
        merged.setdefault("spec", {})["ephemeralContainers"] = clone(wanted)
    return merged


def _check_ephemeral(rd: ResourceDef, pod: JSON, wanted: list[JSON]) -> None:
    name = pod["metadata"]["name"]
    spec = pod.get("spec") or {}
    existing = {c.get("name"): c for c in spec.get("ephemeralContainers") or []}
    by_name = {c.get("name"): c for c in wanted}
    causes = []
    for old_name, old in existing.items():
        verb = "removed" if old_name not in by_name else "changed"
        if old_name not in by_name or by_name[old_name] != old:
            causes.append(("spec.ephemeralContainers", "FieldValueForbidden",
                           f'Forbidden: existing ephemeral containers "{old_name}" may not be '
                           f"{verb}"))
    taken = {c.get("name") for c in spec.get("containers") or []} | {
        c.get("name") for c in spec.get("initContainers") or []}
    for index, container in enumerate(wanted):
        path = f"spec.ephemeralContainers[{index}]"
        if not container.get("name"):
            causes.append((f"{path}.name", "FieldValueRequired", "Required value"))
        elif container["name"] in taken:
            causes.append((f"{path}.name", "FieldValueDuplicate",
                           f'Duplicate value: "{container["name"]}"'))
        if not container.get("image"):
            causes.append((f"{path}.image", "FieldValueRequired", "Required value"))
    if causes:
        raise invalid(rd, name, causes)
