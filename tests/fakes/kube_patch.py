"""The three PATCH flavours of the fake API server (tests/fakes/kube_api.py); stdlib only.

- `json_patch`: RFC 6902 with the semantics of the JSON-Patch library the kube-apiserver links
  (evanphx/json-patch v4): `replace` of an absent key inside an existing object behaves as `add`;
  a missing parent, `remove` of an absent key, an index out of range or a failed `test` are
  errors. The server answers all of them with the same 422 (see `kube_store.patch_failed`).
- `merge_patch`: RFC 7386 (null deletes, objects merge, anything else replaces).
- `strategic_merge_patch`: a field-name driven approximation of Kubernetes strategic merge
  patch. Lists named in `MERGE_KEYS` merge by key, `PRIMITIVE_MERGE` lists are unions, other
  lists are replaced; `$patch: delete|replace`, `$deleteFromPrimitiveList/…` are honoured,
  `$setElementOrder/…` and `$retainKeys` are accepted and ignored. The real server looks the
  strategy up in the Go type of each field; here it depends on the field name only.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.kube_resources import clone

MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "conditions": "type",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "taints": "key",
    "addresses": "type",
    "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey",
    "ports": "containerPort",
}
"""List fields merged item by item, and the key that identifies an item."""

PRIMITIVE_MERGE = frozenset({"finalizers"})
"""Lists of scalars merged as ordered unions."""

_MISSING = object()


class PatchError(Exception):
    """A patch that cannot be applied. `bad_request` marks a malformed patch (400)."""

    def __init__(self, message: str, *, bad_request: bool = False) -> None:
        super().__init__(message)
        self.bad_request = bad_request


# --- RFC 6902 -------------------------------------------------------------------------------


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply a JSON Patch document to a copy of `doc` and return it."""
    if not isinstance(operations, list) or not all(isinstance(o, dict) for o in operations):
        kind = type(operations).__name__
        raise PatchError(
            f"json: cannot unmarshal {kind} into Go value of type jsonpatch.Patch",
            bad_request=True,
        )
    result = clone(doc)
    for operation in operations:
        result = _apply_operation(result, operation)
    return result


def _apply_operation(doc: Any, operation: dict[str, Any]) -> Any:
    kind = operation.get("op")
    path = operation.get("path")
    if not isinstance(path, str):
        raise PatchError(f"{kind} operation missing path field")
    if kind == "add":
        return _add(doc, path, clone(operation.get("value")))
    if kind == "remove":
        _remove(doc, path)
        return doc
    if kind == "replace":
        return _replace(doc, path, clone(operation.get("value")))
    if kind == "test":
        _test(doc, path, operation.get("value"))
        return doc
    if kind in ("move", "copy"):
        return _move_or_copy(doc, kind, operation.get("from"), path)
    raise PatchError(f"Unexpected kind: {kind}")


def pointer_tokens(path: str) -> list[str]:
    """Split a JSON pointer and undo the `~1` (slash) and `~0` (tilde) escapes."""
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer must be empty or start with a '/': {path}")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str]) -> Any:
    """The container holding the last token, or _MISSING when the path does not exist."""
    node = doc
    for token in tokens[:-1]:
        node = _child(node, token)
        if not isinstance(node, dict | list):
            return _MISSING
    return node


def _child(node: Any, token: str) -> Any:
    if isinstance(node, dict):
        return node.get(token, _MISSING)
    if isinstance(node, list):
        index = _index(node, token, allow_end=False)
        return _MISSING if index is None else node[index]
    return _MISSING


def _index(array: list[Any], token: str, *, allow_end: bool) -> int | None:
    """A valid position in `array` for `token`, or None."""
    try:
        index = int(token)
    except ValueError:
        return None
    limit = len(array) + (1 if allow_end else 0)
    if index < 0:
        index += len(array)
    return index if 0 <= index < limit else None


def _locate(doc: Any, path: str, verb: str) -> tuple[Any, str]:
    tokens = pointer_tokens(path)
    container = _parent(doc, tokens)
    if container is _MISSING:
        raise PatchError(f"{verb} operation does not apply: doc is missing path: {path}")
    return container, tokens[-1]


def _add(doc: Any, path: str, value: Any) -> Any:
    if path == "":
        return value
    container, key = _locate(doc, path, "add")
    if isinstance(container, dict):
        container[key] = value
        return doc
    if key == "-":
        container.append(value)
        return doc
    index = _index(container, key, allow_end=True)
    if index is None:
        raise PatchError(f"Unable to access invalid index: {key}")
    container.insert(index, value)
    return doc


def _remove(doc: Any, path: str) -> Any:
    if path == "":
        raise PatchError("remove operation does not apply: cannot remove the whole document")
    container, key = _locate(doc, path, "remove")
    if isinstance(container, dict):
        if key not in container:
            raise PatchError(f"Unable to remove nonexistent key: {key}: missing value")
        return container.pop(key)
    index = _index(container, key, allow_end=False)
    if index is None:
        raise PatchError(f"Unable to access invalid index: {key}")
    return container.pop(index)


def _replace(doc: Any, path: str, value: Any) -> Any:
    if path == "":
        return value
    container, key = _locate(doc, path, "replace")
    if isinstance(container, dict):
        container[key] = value  # an absent key is added: the server's library does the same
        return doc
    index = _index(container, key, allow_end=False)
    if index is None:
        raise PatchError(f"Unable to access invalid index: {key}")
    container[index] = value
    return doc


def _test(doc: Any, path: str, expected: Any) -> None:
    if path == "":
        actual = doc
    else:
        container, key = _locate(doc, path, "test")
        actual = _child(container, key)
    if actual is _MISSING and expected is None:
        return
    if actual is _MISSING or actual != expected:
        raise PatchError(f"testing value {path} failed: test failed")


def _move_or_copy(doc: Any, kind: str, source: Any, path: str) -> Any:
    if not isinstance(source, str):
        raise PatchError(f"{kind} operation missing from field")
    if kind == "move":
        value = _remove(doc, source)
    else:
        container, key = _locate(doc, source, "copy")
        value = _child(container, key)
        if value is _MISSING:
            raise PatchError(f"copy operation does not apply: doc is missing from path: {source}")
        value = clone(value)
    return _add(doc, path, value)


# --- RFC 7386 -------------------------------------------------------------------------------


def merge_patch(doc: Any, patch: Any) -> Any:
    """Apply a JSON Merge Patch and return the merged copy."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = clone(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- strategic merge ------------------------------------------------------------------------


def strategic_merge_patch(doc: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply a strategic merge patch to an object and return the merged copy."""
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object", bad_request=True)
    merged = _merge_map(doc, patch)
    return merged if merged is not None else {}


def _merge_map(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip(patch)
    result = clone(original)
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result.get(field) or [] if item not in value]
            continue
        _merge_field(result, key, value)
    return result


def _merge_field(result: dict[str, Any], key: str, value: Any) -> None:
    current = result.get(key)
    if value is None:
        result.pop(key, None)
    elif isinstance(value, dict):
        merged = _merge_map(current if isinstance(current, dict) else {}, value)
        if merged is None:
            result.pop(key, None)
        else:
            result[key] = merged
    elif isinstance(value, list) and isinstance(current, list):
        result[key] = _merge_list(key, current, value)
    else:
        result[key] = _strip(value)


def _merge_list(field: str, original: list[Any], patch: list[Any]) -> list[Any]:
    if field in PRIMITIVE_MERGE:
        return clone(original) + [item for item in patch if item not in original]
    key = _merge_key(field, original + patch)
    if key is None:
        return _strip(patch)
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [_strip(item) for item in patch if not _is_directive_only(item)]
    result = clone(original)
    for item in patch:
        _merge_item(result, key, item)
    return result


def _merge_key(field: str, items: list[Any]) -> str | None:
    key = MERGE_KEYS.get(field)
    if field == "ports" and not any(isinstance(i, dict) and "containerPort" in i for i in items):
        return "port"  # Service ports merge on `port`, container ports on `containerPort`
    return key


def _merge_item(result: list[Any], key: str, item: Any) -> None:
    if not isinstance(item, dict) or key not in item:
        result.append(_strip(item))
        return
    position = next(
        (i for i, old in enumerate(result) if isinstance(old, dict) and old.get(key) == item[key]),
        None,
    )
    if item.get("$patch") == "delete":
        if position is not None:
            del result[position]
        return
    if position is None:
        result.append(_strip(item))
        return
    merged = _merge_map(result[position], item)
    if merged is not None:
        result[position] = merged


def _is_directive_only(item: Any) -> bool:
    return isinstance(item, dict) and set(item) == {"$patch"}


def _strip(value: Any) -> Any:
    """A deep copy of `value` without `$`-directives."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return clone(value)
