"""Frozen records of a loaded rule set: Rule, Action, OutputSpec, Match, RuleSet.

Layer L1: stdlib only. Tri-state flags (`continue`, `ignore_errors`, `dry_run`) are
`bool | None`; None means "not set" (the actionner's default, or upstream's default).
A RuleSet is immutable: a reload builds a new one and swaps it in one assignment.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from talon.errors import Problem
from talon.models import plain

_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputSpec:
    """Where an actionner's artifact goes: `target` (category:name) and its parameters."""

    target: str
    parameters: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    params: Any = None
    """The output's coerced params dataclass, set by validation."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """One step of a rule, after merging with the action block of the same name."""

    name: str
    actionner: str = ""
    description: str = ""
    continue_: bool | None = None
    ignore_errors: bool | None = None
    retries: int = 0
    """Extra attempts after a transient failure (talon.retry), within the action timeout."""
    retry_backoff_seconds: float = 1.0
    """Base of the exponential backoff between attempts (full jitter)."""
    parameters: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    output: OutputSpec | None = None
    additional_contexts: tuple[str, ...] = ()
    params: Any = None
    """The actionner's coerced params dataclass, set by validation."""
    default_continue: bool = True
    """The actionner's default `continue`, set by validation."""
    file: str = ""
    line: int | None = None
    parameters_json: str = field(init=False, repr=False, compare=False, default="")
    """`parameters` as the JSON of the `falco-talon.action.parameters` context key,
    made once here rather than for every event."""
    parameters_plain: Any = field(init=False, repr=False, compare=False, default=None)
    """`parameters` as plain data (what logs show), made once here; read only."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters_plain", plain(self.parameters))
        object.__setattr__(self, "parameters_json", json.dumps(
            self.parameters_plain or None, sort_keys=True, default=str))

    @property
    def continues(self) -> bool:
        """Whether the rule goes on after this action succeeds."""
        return self.default_continue if self.continue_ is None else self.continue_


@dataclass(frozen=True, slots=True, kw_only=True)
class Match:
    """The criteria of a rule, as written (each list is OR; commas inside are AND)."""

    rules: tuple[str, ...] = ()
    priority: str = ""
    tags: tuple[str, ...] = ()
    output_fields: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """A Talon rule: what to match and which actions to run, in order."""

    name: str
    description: str = ""
    match: Match = field(default_factory=Match)
    actions: tuple[Action, ...] = ()
    continue_: bool | None = None
    dry_run: bool | None = None
    notifiers: tuple[str, ...] = ()
    allow_protected: bool = False
    """Disruptive actions of this rule may act on protected workloads."""
    file: str = ""
    line: int | None = None
    index: int = 0
    """Position in load order; matching preserves it."""

    @property
    def continues(self) -> bool:
        """Whether later matching rules still run (upstream: only an explicit false stops)."""
        return self.continue_ is not False


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleSet:
    """Every rule in load order plus the reusable action blocks and load warnings."""

    rules: tuple[Rule, ...] = ()
    actions: tuple[Action, ...] = ()
    files: tuple[str, ...] = ()
    warnings: tuple[Problem, ...] = ()
    matcher: Any = None
    """The compiled `talon.rules.matching.Matcher`, set by `rules.load`."""
