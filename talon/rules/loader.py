"""Read rules files and merge them the way Falco Talon does, into plain merged items.

Layer L1: stdlib + talon.yamlio. Steps, each documented in the README:
1. read every file (a directory means its *.yaml/*.yml files in name order);
2. split items into action blocks (`action:` key) and rules (`rule:` key);
3. fold later definitions of the same action or rule name into the first one;
4. resolve each rule action against the action block of the same name.
Upstream's merge quirks are kept on purpose (see `_merge_params`), its crashes are not.
The output is plain dicts plus located problems; `talon.rules.validate` builds the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talon import yamlio
from talon.errors import Problem

ACTION_KEYS = ("action", "description", "actionner", "continue", "ignore_errors",
               "retries", "retry_backoff_seconds",
               "parameters", "output", "additional_contexts", "contexts")
RETRY_KEYS = ("retries", "retry_backoff_seconds")
RULE_KEYS = ("rule", "description", "match", "actions", "continue", "dry_run", "notifiers",
             "allow_protected")
MATCH_KEYS = ("rules", "priority", "tags", "output_fields", "source")
OUTPUT_KEYS = ("target", "parameters")


@dataclass(slots=True)
class Item:
    """One action block or rule as read, with where it came from."""

    data: dict[str, Any]
    file: str
    line: int | None
    key_lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, key: str) -> int | None:
        return self.key_lines.get(key, self.line)


@dataclass(slots=True)
class Loaded:
    """Merged action blocks and rules, in first-appearance order, and the problems met."""

    actions: dict[str, Item] = field(default_factory=dict)
    rules: dict[str, Item] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def expand_paths(paths: Iterable[str]) -> tuple[list[str], list[Problem]]:
    """Files to read, in order: a directory contributes its *.yaml/*.yml sorted by name."""
    files: list[str] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                problems.append(Problem(file=raw, message="no *.yaml rules file in this folder"))
            files.extend(str(p) for p in found)
        elif path.is_file():
            files.append(str(path))
        else:
            problems.append(Problem(file=raw, message="rules file not found"))
    return files, problems


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, list):
        return "list"
    return "scalar"


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return yamlio.copy_marks(value, {k: _copy(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _read_file(path: str, out: Loaded) -> list[Item]:
    try:
        data = yamlio.load_file(path)
    except yamlio.YamlError as exc:
        out.problems.append(Problem(file=path, line=exc.line, message=str(exc).split(": ", 1)[1]))
        return []
    except (OSError, UnicodeDecodeError) as exc:
        out.problems.append(Problem(file=path, message=f"cannot read the rules file: {exc}"))
        return []
    if data is None:
        return []
    if not isinstance(data, list):
        out.problems.append(Problem(file=path, line=1,
                                    message="a rules file must be a YAML list of items"))
        return []
    items = []
    for entry in data:
        if not isinstance(entry, Mapping):
            out.problems.append(Problem(file=path, message=f"list item is not a map: {entry!r}"))
            continue
        items.append(Item(dict(entry), path, getattr(entry, "line", None),
                          dict(getattr(entry, "key_lines", {}))))
    return items


def read(paths: Iterable[str]) -> Loaded:
    """Read, split and merge every rules file; never raises for bad content."""
    out = Loaded()
    files, out.problems = expand_paths(paths)
    out.files = files
    if not files and not out.problems:
        out.problems.append(Problem(message="no rules file is provided"))
    for path in files:
        for item in _read_file(path, out):
            _dispatch(item, out)
    for rule in out.rules.values():
        _resolve_rule_actions(rule, out)
    return out


def _name(item: Item, key: str, out: Loaded) -> str | None:
    value = item.data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        out.problems.append(Problem(file=item.file, line=item.line_of(key), field=key,
                                    message=f"the name must be a string, got {value!r}"))
        return None
    return value


def _dispatch(item: Item, out: Loaded) -> None:
    action, rule = _name(item, "action", out), _name(item, "rule", out)
    if action is None and rule is None:
        present = [k for k in ("action", "rule") if k in item.data]
        if not present:
            out.problems.append(Problem(file=item.file, line=item.line,
                                        message="item has neither an 'action' nor a 'rule' name"))
        elif all(item.data[k] in (None, "") for k in present):  # else _name reported it
            out.problems.append(Problem(file=item.file, line=item.line,
                                        message="item has an empty name"))
        return
    if action is not None and rule is not None:
        out.problems.append(Problem(
            file=item.file, line=item.line, rule=rule, action=action, severity="warning",
            message="item has both 'action' and 'rule': it defines both (as Falco Talon does)"))
    if action is not None:
        block = Item(_copy(item.data), item.file, item.line, dict(item.key_lines))
        if "contexts" in block.data and "additional_contexts" not in block.data:
            block.data["additional_contexts"] = block.data.pop("contexts")
        if action in out.actions:
            _fold_action(out.actions[action], block, out)
        else:
            out.actions[action] = block
    if rule is not None:
        _locate_actions(item)
        block = Item(_copy(item.data), item.file, item.line, dict(item.key_lines))
        if rule in out.rules:
            _fold_rule(out.rules[rule], block, out)
        else:
            out.rules[rule] = block


def _locate_actions(item: Item) -> None:
    """Tag each inline action with its file and line before copies lose the marks."""
    actions = item.data.get("actions")
    for entry in actions if isinstance(actions, list) else ():
        if isinstance(entry, dict):
            entry["__file__"] = item.file
            entry["__line__"] = getattr(entry, "line", None)


def _set(value: Any) -> bool:
    """Upstream's 'non-empty' test for scalar settings."""
    return value is not None and value != ""


def _fold_params(first: dict[str, Any], later: Mapping[str, Any]) -> None:
    """Fold a later duplicate's parameters into the first definition (reference §2.3)."""
    for key, value in later.items():
        if value is None:
            continue
        if key not in first or first[key] is None:
            first[key] = _copy(value)  # a list only the later one has stays flat (upstream B23)
            continue
        old = first[key]
        if _kind(old) != _kind(value):
            continue  # upstream ignores a later value of another kind
        if isinstance(old, dict):
            yamlio.update(old, _copy(value))
        elif isinstance(old, list):
            old.extend(_copy(value))
        else:
            first[key] = value


def _output_of(data: dict[str, Any]) -> dict[str, Any] | None:
    out = data.get("output")
    return out if isinstance(out, dict) else None


def _fold_action(first: Item, later: Item, out: Loaded) -> None:
    """A later action block with the same name overrides/extends the first (reference §2.3)."""
    f, l_ = first.data, later.data
    for key in ("actionner", "continue", "description", "ignore_errors", *RETRY_KEYS):
        if _set(l_.get(key)):
            f[key] = l_[key]
            first.key_lines[key] = later.line_of(key) or 0
    if isinstance(l_.get("additional_contexts"), list):
        ctx = f.get("additional_contexts")
        extra = l_["additional_contexts"]
        f["additional_contexts"] = (ctx if isinstance(ctx, list) else []) + extra
    if isinstance(l_.get("parameters"), dict):
        if not isinstance(f.get("parameters"), dict):
            f["parameters"] = {}
        _fold_params(f["parameters"], l_["parameters"])
    lout = _output_of(l_)
    if lout is not None:
        fout = _output_of(f)
        if fout is None:
            f["output"] = fout = {}
        if not _set(fout.get("target")) and _set(lout.get("target")):
            fout["target"] = lout["target"]
        if isinstance(lout.get("parameters"), dict):
            if not isinstance(fout.get("parameters"), dict):
                fout["parameters"] = {}
            _fold_params(fout["parameters"], lout["parameters"])


def _fold_rule(first: Item, later: Item, out: Loaded) -> None:
    """A later rule with the same name overrides/appends (reference §2.4)."""
    f, l_ = first.data, later.data
    for key in ("continue", "dry_run", "description", "allow_protected"):
        if _set(l_.get(key)):
            f[key] = l_[key]
    for key in ("notifiers", "actions"):
        if isinstance(l_.get(key), list):
            f[key] = (f[key] if isinstance(f.get(key), list) else []) + l_[key]
    lmatch: dict[str, Any] = l_["match"] if isinstance(l_.get("match"), dict) else {}
    if not isinstance(f.get("match"), dict):
        f["match"] = {}
    fmatch = f["match"]
    for key in ("rules", "tags", "output_fields"):
        if isinstance(lmatch.get(key), list):
            fmatch[key] = (fmatch[key] if isinstance(fmatch.get(key), list) else []) + lmatch[key]
    for key in ("priority", "source"):
        if _set(fmatch.get(key)) and not _set(lmatch.get(key)):
            out.problems.append(Problem(
                file=later.file, line=later.line, rule=str(l_.get("rule")), field=f"match.{key}",
                severity="warning",
                message=f"this later definition has no match.{key}: it clears "
                        f"'{fmatch[key]}' from the first one (as Falco Talon does)"))
        fmatch[key] = lmatch.get(key)


def _merge_block_params(rule_params: dict[str, Any], block: Mapping[str, Any],
                        warn: Problem, out: Loaded, prefix: str) -> None:
    """Merge an action block's parameters under a rule action's (reference §2.5)."""
    for key, bval in block.items():
        if bval is None:
            continue
        if key not in rule_params or rule_params[key] is None:
            rule_params[key] = _copy(bval)
            continue
        rval = rule_params[key]
        if _kind(rval) != _kind(bval):
            out.problems.append(_with(warn, field=f"{prefix}.{key}", message=(
                f"mismatch of type for a parameter: the rule's {_kind(rval)} is kept, "
                f"the action block's {_kind(bval)} is ignored")))
        elif isinstance(rval, list):
            rule_params[key] = _copy(bval) + rval
        elif isinstance(rval, dict):
            for sub, sval in bval.items():
                if sub in rval and rval[sub] != sval:
                    out.problems.append(_with(warn, field=f"{prefix}.{key}.{sub}", message=(
                        "set by both the rule and the action block: the action block's "
                        f"value {sval!r} wins over {rval[sub]!r} (as Falco Talon does)")))
            yamlio.update(rval, _copy(bval))


def _with(p: Problem, **changes: Any) -> Problem:
    values = {k: getattr(p, k) for k in ("message", "file", "rule", "action", "field", "line")}
    values.update(changes)
    return Problem(severity="warning", **values)


def _resolve_action(item: dict[str, Any], block: Item, warn: Problem, out: Loaded) -> None:
    bd = block.data
    for key in ("description", "actionner", "ignore_errors", "continue", *RETRY_KEYS):
        if not _set(item.get(key)) and _set(bd.get(key)):
            item[key] = bd[key]
    if not item.get("additional_contexts") and bd.get("additional_contexts"):
        item["additional_contexts"] = _copy(bd["additional_contexts"])
    if isinstance(bd.get("parameters"), dict):
        if not isinstance(item.get("parameters"), dict):
            item["parameters"] = {}
        _merge_block_params(item["parameters"], bd["parameters"], warn, out, "parameters")
    bout = _output_of(bd)
    if bout is not None:
        iout = _output_of(item)
        if iout is None:
            item["output"] = iout = {}
        if not _set(iout.get("target")) and _set(bout.get("target")):
            iout["target"] = bout["target"]
        if isinstance(bout.get("parameters"), dict):
            if not isinstance(iout.get("parameters"), dict):
                iout["parameters"] = {}
            _merge_block_params(iout["parameters"], bout["parameters"], warn, out,
                                "output.parameters")


def _resolve_rule_actions(rule: Item, out: Loaded) -> None:
    actions = rule.data.get("actions")
    if not isinstance(actions, list):
        return
    resolved = []
    for entry in actions:
        if not isinstance(entry, Mapping):
            resolved.append(entry)
            continue
        item = _copy(entry)
        if "contexts" in item and "additional_contexts" not in item:
            item["additional_contexts"] = item.pop("contexts")
        name = item.get("action")
        block = out.actions.get(name) if isinstance(name, str) else None
        if block is not None:
            warn = Problem(message="", file=item.get("__file__", rule.file),
                           line=item.get("__line__"), rule=str(rule.data.get("rule")),
                           action=name or "")
            _resolve_action(item, block, warn, out)
        resolved.append(item)
    rule.data["actions"] = resolved
