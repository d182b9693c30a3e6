"""The per-action context: Talon's own keys, the environment-style names, substitution.

Layer L1: stdlib only. Nothing here touches `os.environ`: the Go version exports event
values into the process environment (racy across events, stale values leak, and its
expansion sees Talon's own credentials); Talon builds one mapping per action instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from talon.models import Event, plain, value_text

_NAME = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")

_SEED_ALIASES = {
    "FALCO-TALON_ACTION": "FALCO-TALON_RULE_ACTION",
    "FALCO-TALON_ACTIONNER": "FALCO-TALON_RULE_ACTIONNER",
    "FALCO-TALON_RULE_DRY_RUN": "FALCO-TALON_RULE_DRYRUN",
    "FALCO-TALON_ACTION_CONTINUE": "FALCO-TALON_RULE_ACTION_CONTINUE",
    "FALCO-TALON_ACTION_IGNORE_ERRORS": "FALCO-TALON_RULE_ACTION_IGNORE_ERRORS",
    "FALCO-TALON_ACTION_PARAMETERS": "FALCO-TALON_RULE_ACTION_PARAMETERS",
}
"""Talon's context env names (the Go code's) → the names the seed documents; both work."""


def _flag(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")


def talon_context(*, rule: str, action: str, actionner: str, parameters: Mapping[str, Any],
                  rule_continue: bool | None = None, rule_dry_run: bool | None = None,
                  action_continue: bool | None = None, ignore_errors: bool | None = None,
                  parameters_json: str | None = None) -> dict[str, str]:
    """Talon's `falco-talon.*` keys for one action (the Go code's names; unset flags omitted).

    `parameters_json`, when given, is `parameters` already serialised (see Action).
    """
    if parameters_json is None:
        parameters_json = json.dumps(plain(parameters) or None, sort_keys=True, default=str)
    ctx = {
        "falco-talon.rule": rule,
        "falco-talon.rule.continue": _flag(rule_continue),
        "falco-talon.rule.dry_run": _flag(rule_dry_run),
        "falco-talon.action": action,
        "falco-talon.action.continue": _flag(action_continue),
        "falco-talon.action.ignore_errors": _flag(ignore_errors),
        "falco-talon.action.parameters": parameters_json,
        "falco-talon.actionner": actionner,
    }
    return {k: v for k, v in ctx.items() if v}


def field_env_name(key: str) -> str:
    """`proc.args[0]` → `PROC_ARGS_0`, `fd.name` → `FD_NAME`."""
    return key.upper().replace(".", "_").replace("[", "_").replace("]", "")


def context_env_name(key: str) -> str:
    """`falco-talon.rule` → `FALCO-TALON_RULE`, `node.hostname` → `NODE_HOSTNAME`."""
    return key.upper().replace(".", "_")


def env_mapping(event: Event, context: Mapping[str, Any]) -> dict[str, str]:
    """Every name a parameter may reference: output fields, event keys, context keys."""
    env: dict[str, str] = {}
    for key, value in event.output_fields.items():
        env[field_env_name(key)] = "" if value is None else value_text(value)
    env.update({
        "PRIORITY": event.priority, "HOSTNAME": event.hostname, "RULE": event.rule,
        "SOURCE": event.source, "TAGS": ",".join(value_text(t) for t in event.tags),
    })
    for key, value in context.items():
        name = context_env_name(key)
        env[name] = value_text(value)
        if name in _SEED_ALIASES:
            env[_SEED_ALIASES[name]] = env[name]
    return env


class Env(Mapping[str, str]):
    """`env_mapping(event, context)`, built on first use: most actions never read it."""

    __slots__ = ("_context", "_event", "_names")

    def __init__(self, event: Event, context: Mapping[str, Any]) -> None:
        self._event, self._context = event, context
        self._names: dict[str, str] | None = None

    def _built(self) -> dict[str, str]:
        names = self._names
        if names is None:
            names = self._names = env_mapping(self._event, self._context)
        return names

    def __getitem__(self, key: str) -> str:
        return self._built()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._built())


def expand(text: str, env: Mapping[str, str]) -> str:
    """Replace `${NAME}` and `$NAME` with values from `env` (unknown names → empty).

    Only for values that do not reach a shell: exec, script and download pass event
    values to the container as environment variables instead (see their actionners).
    """
    return _NAME.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)


def references(text: str) -> list[str]:
    """The names `text` refers to, in order."""
    return [m.group(1) or m.group(2) for m in _NAME.finditer(text)]
