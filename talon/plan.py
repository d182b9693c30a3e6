"""What Talon would do for an event: matched rules, actions in order, final parameters.

Layer L1 (imports only L0/L1): used by `rules test` (touching nothing) and by the engine
to compute the context and substituted parameters of each action. Only parameters a plug-in
marks with `metadata={"substitute": True}` are expanded here; the others are passed as
written (`$LATEST` stays `$LATEST`).
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from talon import context
from talon.models import Event
from talon.registry import Registry
from talon.rules.model import Action, Rule, RuleSet


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One action as it would run for one event."""

    rule: Rule
    action: Action
    parameters: Mapping[str, Any]
    context: Mapping[str, str]
    env: Mapping[str, str]
    dry_run: bool
    stops_rule: bool
    """True when the rule's remaining actions do not run after this one (continue false)."""


@functools.cache
def substitutable(cls: type | None) -> tuple[str, ...]:
    """Names of the params fields that take `${VAR}` substitution (cached per class)."""
    if cls is None or not dataclasses.is_dataclass(cls):
        return ()
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("substitute"))


def substitute(raw: Mapping[str, Any], names: tuple[str, ...],
               env: Mapping[str, str]) -> Mapping[str, Any]:
    """`raw` with the named string parameters expanded against `env`."""
    names = tuple(n for n in names if isinstance(raw.get(n), str) and "$" in raw[n])
    if not names:
        return raw
    out = dict(raw)
    for name in names:
        out[name] = context.expand(out[name], env)
    return types.MappingProxyType(out)


def step(event: Event, rule: Rule, action: Action, registry: Registry,
         extra_context: Mapping[str, str] | None = None, *, dry_run: bool = False) -> Step:
    """The context, environment names and final parameters of `action` for `event`."""
    ctx = context.talon_context(
        rule=rule.name, action=action.name, actionner=action.actionner,
        parameters=action.parameters, rule_continue=rule.continue_,
        rule_dry_run=rule.dry_run, action_continue=action.continue_,
        ignore_errors=action.ignore_errors, parameters_json=action.parameters_json)
    if extra_context:
        ctx.update({k: v for k, v in extra_context.items() if v})
    env = context.Env(event, ctx)
    info = registry.get("actionner", action.actionner).info if registry.has(
        "actionner", action.actionner) else None
    params = substitute(action.parameters, substitutable(info.params if info else None), env)
    return Step(rule=rule, action=action, parameters=params, context=ctx, env=env,
                dry_run=dry_run or bool(rule.dry_run), stops_rule=not action.continues)


def parameters(event: Event, rule: Rule, action: Action,
               registry: Registry) -> Mapping[str, Any]:
    """`step(event, rule, action, registry).parameters`, without building the action's
    context and environment when no parameter refers to them (a dry run needs only the
    parameters; most parameters have nothing to substitute)."""
    info = registry.get("actionner", action.actionner).info if registry.has(
        "actionner", action.actionner) else None
    raw = action.parameters
    if not any(isinstance(raw.get(n), str) and "$" in raw[n]
               for n in substitutable(info.params if info else None)):
        return raw
    return step(event, rule, action, registry).parameters


def plan(event: Event, ruleset: RuleSet, registry: Registry, *,
         dry_run: bool = False) -> list[Step]:
    """Every action that runs for `event` when each one succeeds, in order."""
    steps: list[Step] = []
    for rule in ruleset.matcher.match(event):
        for action in rule.actions:
            s = step(event, rule, action, registry, dry_run=dry_run)
            steps.append(s)
            if s.stops_rule:
                break
        if not rule.continues:
            break
    return steps
