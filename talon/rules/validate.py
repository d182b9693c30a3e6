"""Turn merged rules into the frozen model, checking everything against the registry.

Layer L3 (takes a registry argument; imports no plug-in). Every problem is collected with
its file, rule, action, field and line; nothing stops at the first one. The same code
serves `rules check`, server start and hot reload, so they can never disagree.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Collection, Mapping
from typing import Any

from talon import params as params_mod
from talon import registry as registry_mod
from talon.errors import Problem
from talon.models import freeze
from talon.registry import Registry
from talon.rules import loader, matching
from talon.rules.model import Action, Match, OutputSpec, Rule, RuleSet

PROTECTED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
"""The default of `protected.namespaces` (see talon.config.ProtectedSettings)."""
MAX_RETRIES = 100
"""Most `retries` an action may ask for (each attempt also has to fit in the action timeout)."""


@dataclasses.dataclass(slots=True)
class _Ctx:
    """Where we are, for locating problems."""

    problems: list[Problem]
    registry: Registry
    notifiers: Collection[str] | None
    protected: Collection[str] = PROTECTED_NAMESPACES
    file: str = ""
    line: int | None = None
    rule: str = ""
    action: str = ""
    severity_cap: str = "error"
    missing_sdks: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Plug-in fullname → the SDK modules it needs that are not installed (memo)."""

    def add(self, message: str, field: str = "", *, severity: str = "error",
            line: int | None = None) -> None:
        if self.severity_cap == "warning":
            severity = "warning"
        self.problems.append(Problem(
            message=message, file=self.file, rule=self.rule, action=self.action, field=field,
            line=line if line is not None else self.line, severity=severity))  # type: ignore[arg-type]


def _unknown_keys(data: Mapping[str, Any], known: tuple[str, ...], ctx: _Ctx, where: str) -> None:
    for key in data:
        if isinstance(key, str) and key.startswith("__"):
            continue
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            tip = f" (did you mean '{near[0]}'?)" if near else ""
            ctx.add(f"unknown key '{key}' is ignored{tip}", f"{where}{key}", severity="warning")


def _bool(data: Mapping[str, Any], key: str, ctx: _Ctx) -> bool | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    ctx.add(f"'{key}' setting can be 'true' or 'false' only, got {value!r}", key)
    return None


def _number(data: Mapping[str, Any], key: str, ctx: _Ctx, default: float, *,
            integer: bool = False) -> float:
    """A non-negative number setting (an integer when `integer`), else `default`."""
    value = data.get(key)
    if value is None or value == "":
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 0 \
            or (key == "retries" and value > MAX_RETRIES):
        what = f"an integer from 0 to {MAX_RETRIES}" if integer else "a number >= 0"
        ctx.add(f"'{key}' must be {what}, got {value!r}", key)
        return default
    return float(value)


def _str(data: Mapping[str, Any], key: str, ctx: _Ctx, prefix: str = "") -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    ctx.add(f"expected a string, got {value!r}", prefix + key)
    return ""


def _str_list(data: Mapping[str, Any], key: str, ctx: _Ctx, prefix: str = "") -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        ctx.add(f"expected a list of strings, got {value!r}", prefix + key)
        return ()
    return tuple(value)


def _match(data: Any, ctx: _Ctx) -> Match:
    if data is None:
        return Match()
    if not isinstance(data, Mapping):
        ctx.add(f"expected a map, got {data!r}", "match")
        return Match()
    _unknown_keys(data, loader.MATCH_KEYS, ctx, "match.")
    m = Match(rules=_str_list(data, "rules", ctx, "match."),
              priority=_str(data, "priority", ctx, "match."),
              tags=_str_list(data, "tags", ctx, "match."),
              output_fields=_str_list(data, "output_fields", ctx, "match."),
              source=_str(data, "source", ctx, "match."))
    if m.priority:
        try:
            matching.parse_priority(m.priority)
        except ValueError as exc:
            ctx.add(str(exc), "match.priority")
    for entry in m.tags:
        for bad in matching.parse_tags(entry)[1]:
            ctx.add(f"incorrect tag '{bad}'", "match.tags")
    for entry in m.output_fields:
        for msg in matching.parse_output_fields(entry)[1]:
            ctx.add(msg, "match.output_fields")
    return m


def _coerce(cls: type | None, raw: Any, ctx: _Ctx, prefix: str) -> Any:
    if raw is not None and not isinstance(raw, Mapping):
        ctx.add(f"expected a map, got {raw!r}", prefix.rstrip("."))
        return None
    if cls is None:
        for key in raw or {}:
            ctx.add("unknown parameter: this plug-in takes no parameters", prefix + str(key),
                    severity="warning")
        return None
    value, problems = params_mod.coerce(cls, raw)
    for p in problems:
        ctx.add(p.message, prefix + p.field if p.field else prefix.rstrip("."),
                severity=p.severity)
    return value


def _parameters(raw: Any, info: Any, ctx: _Ctx) -> tuple[Mapping[str, Any], Any]:
    """An action's parameters as they will run (label values as text) and their params."""
    if info is None:
        return (raw if isinstance(raw, Mapping) else {}), None
    if info.params is not None and isinstance(raw, Mapping):
        raw, notes = params_mod.text_values(info.params, raw)
        for p in notes:
            ctx.add(p.message, "parameters." + p.field, severity=p.severity)
    params = _coerce(info.params, raw, ctx, "parameters.")
    return (raw if isinstance(raw, Mapping) else {}), params


def _output(data: Any, plugin_info: Any, ctx: _Ctx) -> OutputSpec | None:
    if data is None or data == {}:
        if plugin_info is not None and plugin_info.require_output:
            ctx.add("an output is required", "output")
        return None
    if not isinstance(data, Mapping):
        ctx.add(f"expected a map, got {data!r}", "output")
        return None
    _unknown_keys(data, loader.OUTPUT_KEYS, ctx, "output.")
    target = _str(data, "target", ctx, "output.")
    raw = data.get("parameters")
    if not target:
        ctx.add("missing output target", "output.target")
        return None
    if not raw:
        ctx.add("missing 'parameters' for the output", "output.parameters")
    if plugin_info is not None and not (plugin_info.allow_output or plugin_info.require_output):
        ctx.add(f"{plugin_info.fullname} produces no artifact: this output is ignored",
                "output", severity="warning")
    if not ctx.registry.has("output", target):
        known = ctx.registry.names("output")
        near = difflib.get_close_matches(target, known, n=1)
        tip = f" (did you mean '{near[0]}'?)" if near else f" (known: {', '.join(known)})"
        ctx.add(f"unknown output target '{target}'{tip}", "output.target")
        return OutputSpec(target=target, parameters=freeze(raw or {}))
    info = ctx.registry.get("output", target).info
    _sdk(info, ctx, "output.target")
    params = _coerce(info.params, raw or {}, ctx, "output.parameters.")
    return OutputSpec(target=target, parameters=freeze(raw or {}), params=params)


def _contexts(data: Mapping[str, Any], info: Any, ctx: _Ctx) -> tuple[str, ...]:
    names = _str_list(data, "additional_contexts", ctx)
    for name in names:
        if not ctx.registry.has("context", name):
            known = ", ".join(ctx.registry.names("context"))
            ctx.add(f"unknown context '{name}' (known: {known})", "additional_contexts")
        else:
            _sdk(ctx.registry.get("context", name).info, ctx, "additional_contexts")
    if names and info is not None and not info.use_context:
        ctx.add(f"{info.fullname} does not use contexts: additional_contexts are ignored",
                "additional_contexts", severity="warning")
    return names


def _action(data: Any, ctx: _Ctx) -> Action | None:
    if not isinstance(data, Mapping):
        ctx.add(f"an action must be a map, got {data!r}", "actions")
        return None
    ctx.file = data.get("__file__", ctx.file)
    ctx.line = data.get("__line__", ctx.line)
    name = data.get("action")
    ctx.action = name if isinstance(name, str) else ""
    if not ctx.action:
        ctx.add("action without a name", "action")
        return None
    _unknown_keys(data, loader.ACTION_KEYS, ctx, "")
    fullname = _str(data, "actionner", ctx)
    info = None
    if not fullname:
        ctx.add("missing actionner", "actionner")
    elif not ctx.registry.has("actionner", fullname):
        near = difflib.get_close_matches(fullname, ctx.registry.names("actionner"), n=1)
        tip = f" (did you mean '{near[0]}'?)" if near else ""
        ctx.add(f"unknown actionner '{fullname}'{tip}", "actionner")
    else:
        info = ctx.registry.get("actionner", fullname).info
        _sdk(info, ctx, "actionner")
    raw, params = _parameters(data.get("parameters"), info, ctx)
    return Action(
        name=ctx.action, actionner=fullname, description=_str(data, "description", ctx),
        continue_=_bool(data, "continue", ctx), ignore_errors=_bool(data, "ignore_errors", ctx),
        retries=int(_number(data, "retries", ctx, 0, integer=True)),
        retry_backoff_seconds=_number(data, "retry_backoff_seconds", ctx, 1.0),
        parameters=freeze(raw), output=_output(data.get("output"), info, ctx),
        additional_contexts=_contexts(data, info, ctx), params=params,
        default_continue=info.default_continue if info else True, file=ctx.file, line=ctx.line)


def _notifiers(data: Mapping[str, Any], ctx: _Ctx) -> tuple[str, ...]:
    names = _str_list(data, "notifiers", ctx)
    for name in names:
        if not ctx.registry.has("notifier", name):
            known = ", ".join(ctx.registry.names("notifier"))
            ctx.add(f"unknown notifier '{name}' (known: {known})", "notifiers")
        elif ctx.notifiers is not None and name not in ctx.notifiers and _needs_settings(
                ctx.registry, name):
            ctx.add(f"notifier '{name}' is not configured: add notifiers.{name} to the "
                    "configuration", "notifiers")
        else:
            _sdk(ctx.registry.get("notifier", name).info, ctx, "notifiers")
    return names


def _sdk(info: Any, ctx: _Ctx, field: str) -> None:
    """Warn when the plug-in's SDK is not installed: the rule is valid, running it fails."""
    key = f"{info.kind}:{info.fullname}"
    if key not in ctx.missing_sdks:
        ctx.missing_sdks[key] = registry_mod.missing_modules(info)
    for name in ctx.missing_sdks[key]:
        ctx.add(f"{info.fullname} needs the Python module '{name}', which is not installed "
                "here: running it will fail (pip install -r requirements.txt)", field,
                severity="warning")


def _needs_settings(registry: Registry, name: str) -> bool:
    cls = registry.get("notifier", name).info.params
    return cls is not None and any(s.required for s in params_mod.describe(cls))


def _rule(item: loader.Item, index: int, ctx: _Ctx) -> Rule:
    data = item.data
    ctx.file, ctx.line, ctx.rule, ctx.action = item.file, item.line, str(data["rule"]), ""
    _unknown_keys(data, loader.RULE_KEYS, ctx, "")
    match = _match(data.get("match"), ctx)
    continue_, dry_run = _bool(data, "continue", ctx), _bool(data, "dry_run", ctx)
    notifiers = _notifiers(data, ctx)
    description = _str(data, "description", ctx)
    raw_actions = data.get("actions")
    actions: list[Action] = []
    if not isinstance(raw_actions, list) or not raw_actions:
        ctx.add("no action specified", "actions", line=item.line_of("actions"))
    else:
        for entry in raw_actions:
            built = _action(entry, ctx)
            if built is not None:
                actions.append(built)
    rule = Rule(name=ctx.rule, description=description, match=match, actions=tuple(actions),
                continue_=continue_, dry_run=dry_run, notifiers=notifiers, file=item.file,
                line=item.line, index=index,
                allow_protected=_bool(data, "allow_protected", ctx) is True)
    _warn_if_protected_only(rule, ctx)
    return rule


def _pinned_namespace(entry: str) -> str | None:
    """The namespace an output_fields entry (`a=b, c=d`, all required) pins, if any."""
    for term in entry.split(","):
        key, eq, value = term.partition("=")
        if eq and not key.endswith("!") and key.strip() == "k8s.ns.name":
            return value.strip()
    return None


def _warn_if_protected_only(rule: Rule, ctx: _Ctx) -> None:
    """Warn when every event the rule matches is in a protected namespace while its
    disruptive actions would skip protected targets (no `allow_protected`)."""
    entries = rule.match.output_fields
    if rule.allow_protected or not entries:
        return
    pinned = {_pinned_namespace(entry) for entry in entries}
    if None in pinned or not pinned <= set(ctx.protected):
        return
    for action in rule.actions:
        if ctx.registry.has("actionner", action.actionner) and ctx.registry.get(
                "actionner", action.actionner).info.disruptive:
            ctx.action = action.name
            ctx.add(f"'{action.actionner}' is disruptive and the rule only matches the "
                    f"protected namespace(s) {', '.join(sorted(map(str, pinned)))}: it will "
                    f"never run (set allow_protected: true on the rule if it must)",
                    "match.output_fields", severity="warning")
    ctx.action = ""


def _blocks(loaded: loader.Loaded, rules: list[Rule], ctx: _Ctx) -> list[Action]:
    """Every action block, built. Only blocks no rule uses report problems, as warnings
    (upstream does not check them); a used block's problems surfaced through its rules."""
    used = {a.name for r in rules for a in r.actions}
    blocks = []
    for name, item in loaded.actions.items():
        where = ctx if name not in used else dataclasses.replace(ctx, problems=[])
        where.rule, where.file, where.line = "", item.file, item.line
        where.severity_cap = "warning"
        block = _action({**item.data, "__file__": item.file, "__line__": item.line}, where)
        if block is not None:
            blocks.append(block)
    ctx.severity_cap = "error"
    return blocks


def build(loaded: loader.Loaded, registry: Registry, *,
          notifiers: Collection[str] | None = None,
          protected: Collection[str] | None = None) -> tuple[RuleSet, list[Problem]]:
    """The RuleSet and every problem (errors and warnings) found while building it;
    `protected`: the protected namespaces (the default ones when None)."""
    ctx = _Ctx(list(loaded.problems), registry, notifiers,
               PROTECTED_NAMESPACES if protected is None else tuple(protected))
    rules = [_rule(item, i, ctx) for i, item in enumerate(loaded.rules.values())]
    blocks = _blocks(loaded, rules, ctx)
    ruleset = RuleSet(rules=tuple(rules), actions=tuple(blocks), files=tuple(loaded.files),
                      warnings=tuple(p for p in ctx.problems if p.severity == "warning"),
                      matcher=matching.Matcher(rules))
    return ruleset, ctx.problems
