"""What-if replay: what a rule set would do for recorded events, or what a change alters.

Layer L1 (imports only L0/L1). `Replayer.replay(record)` decodes one event and plans it
against the new rules (and the baseline rules, when given) exactly as `rules test` does
(`talon.plan`: matched rules, actions in order, final parameters), touching nothing. It
returns what to show for that event (or None) and adds to the running `Summary`, whose
counters are bounded by the rule sets, so a replay runs in constant memory.

Speed: an event whose Falco rule no rule of either set names (and no rule matches every
Falco rule) cannot match; such an event is counted after JSON parsing only. Every other
event goes through `models.decode`, so a line the server would refuse is a bad line.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from talon import eventfiles, models, plan
from talon.errors import EventError
from talon.registry import Registry
from talon.rules.model import RuleSet


class Act(NamedTuple):
    """One action as it would run; equal tuples mean an identical outcome."""

    rule: str
    action: str
    actionner: str
    parameters: str
    """Final parameters as canonical JSON (sorted keys, ASCII)."""
    output: str = ""
    output_parameters: str = ""
    dry_run: bool = False

    @property
    def key(self) -> str:
        return f"{self.rule} / {self.action}"

    def text(self) -> str:
        line = f"{self.key}: {self.actionner} {self.parameters}"
        if self.output:
            line += f" -> {self.output} {self.output_parameters}"
        return line + (" (dry-run)" if self.dry_run else "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "action": self.action,
                               "actionner": self.actionner,
                               "parameters": json.loads(self.parameters)}
        if self.output:
            out["output"] = {"target": self.output,
                             "parameters": json.loads(self.output_parameters)}
        if self.dry_run:
            out["dry_run"] = True
        return out


def canonical(value: Any) -> str:
    """Plain, sorted, ASCII-only JSON: stable for comparing, safe on a terminal."""
    return json.dumps(models.plain(value), sort_keys=True, separators=(",", ":"),
                      default=str)


def outcome(event: models.Event, ruleset: RuleSet, registry: Registry) -> tuple[Act, ...]:
    """Every action `ruleset` would run for `event`, in order (as `rules test` shows)."""
    acts = []
    for step in plan.plan(event, ruleset, registry):
        spec = step.action.output
        acts.append(Act(step.rule.name, step.action.name, step.action.actionner,
                        canonical(step.parameters),
                        spec.target if spec else "",
                        canonical(spec.parameters) if spec else "",
                        step.dry_run))
    return tuple(acts)


@dataclass(frozen=True, slots=True)
class Shown:
    """One event worth showing: where it is, what it is, what runs (before and after)."""

    record: eventfiles.Record
    event: models.Event
    after: tuple[Act, ...]
    before: tuple[Act, ...] | None = None
    """The baseline's actions; None without a baseline."""


@dataclass(slots=True)
class Summary:
    """Counters only: events read, bad lines, per rule, per actionner, changes."""

    events: int = 0
    bad: int = 0
    with_actions: int = 0
    changed: int = 0
    per_rule: Counter[str] = field(default_factory=Counter)
    per_actionner: Counter[str] = field(default_factory=Counter)
    started: Counter[str] = field(default_factory=Counter)
    stopped: Counter[str] = field(default_factory=Counter)
    altered: Counter[str] = field(default_factory=Counter)

    def count(self, after: tuple[Act, ...]) -> None:
        if after:
            self.with_actions += 1
        self.per_rule.update(dict.fromkeys(a.rule for a in after).keys())
        self.per_actionner.update(a.actionner for a in after)

    def compare(self, before: tuple[Act, ...], after: tuple[Act, ...]) -> None:
        self.changed += 1
        old = {a.key: a for a in before}
        new = {a.key: a for a in after}
        self.started.update(k for k in new if k not in old)
        self.stopped.update(k for k in old if k not in new)
        self.altered.update(k for k in new if k in old and new[k] != old[k])

    def to_json(self, baseline: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"events": self.events, "bad_lines": self.bad}
        if baseline:
            out |= {"changed_events": self.changed, "newly_run": dict(self.started),
                    "stopped": dict(self.stopped), "changed_parameters": dict(self.altered)}
        else:
            out |= {"events_with_actions": self.with_actions,
                    "events_per_rule": dict(self.per_rule),
                    "actions_per_actionner": dict(self.per_actionner)}
        return out


_FALCO_KEYS = frozenset(("output", "priority", "rule", "time", "output_fields", "hostname",
                         "source", "tags", "context", "trace_id", "uuid"))
"""Keys of Falco's JSON output: when an event has no other, none spells `rule` oddly."""


def _names(rulesets: Iterable[RuleSet]) -> frozenset[str] | None:
    """The Falco rule names any rule can match; None when some rule matches any name."""
    names: set[str] = set()
    for ruleset in rulesets:
        for rule in ruleset.rules:
            if not rule.match.rules:
                return None
            names.update(rule.match.rules)
    return frozenset(names)


def _cannot_match(data: Any, names: frozenset[str]) -> bool:
    """Whether a parsed event surely matches no rule: its `rule` (the only key spelling
    it, since keys match case-insensitively) is a string no rule names."""
    if type(data) is not dict:
        return False
    name = data.get("rule")
    if type(name) is not str or name in names:
        return False
    return _FALCO_KEYS.issuperset(data) or all(type(k) is str and k == k.lower()
                                               for k in data)


class Replayer:
    """Replays records against `ruleset` (and `baseline`), keeping only counters."""

    def __init__(self, ruleset: RuleSet, registry: Registry,
                 baseline: RuleSet | None = None) -> None:
        self.ruleset, self.registry, self.baseline = ruleset, registry, baseline
        self.summary = Summary()
        self._names = _names([ruleset] if baseline is None else [ruleset, baseline])

    def decode(self, record: eventfiles.Record) -> models.Event | None:
        """The event of `record`, or None if it cannot match any rule; raises EventError."""
        if record.error:
            raise EventError("", record.error)
        if self._names is not None:
            try:
                data = eventfiles.quick_parse(record.text)
            except (ValueError, RecursionError):
                data = None  # models.decode names the problem
            if _cannot_match(data, self._names):
                return None
        return models.decode(record.text)

    def replay(self, record: eventfiles.Record) -> Shown | None:
        """Replay one record: what to show for it (None: nothing); raises EventError
        (after counting the bad line) for a line that is not a usable event."""
        try:
            event = self.decode(record)
        except EventError:
            self.summary.bad += 1
            raise
        self.summary.events += 1
        if event is None:
            return None
        after = outcome(event, self.ruleset, self.registry)
        if self.baseline is None:
            self.summary.count(after)
            return Shown(record, event, after) if after else None
        before = outcome(event, self.baseline, self.registry)
        if before == after:
            return None
        self.summary.compare(before, after)
        return Shown(record, event, after, before)


# -- rendering (text for people, JSON Lines for programs) ------------------------------


def _header(shown: Shown) -> str:
    event = shown.event
    return f"{shown.record.where}: {json.dumps(event.rule)} ({json.dumps(event.priority)})"


def _diff(before: tuple[Act, ...], after: tuple[Act, ...]) -> list[str]:
    old, new = [a.text() for a in before], [a.text() for a in after]
    lines = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            lines += ["    " + text for text in old[i1:i2]]
            continue
        lines += ["  - " + text for text in old[i1:i2]]
        lines += ["  + " + text for text in new[j1:j2]]
    if not new:
        lines.append("  (no action runs with the new rules)")
    return lines


def text(shown: Shown) -> str:
    """The lines shown for one event: its actions, or the diff against the baseline."""
    if shown.before is None:
        body = ["  " + a.text() for a in shown.after]
    else:
        body = _diff(shown.before, shown.after)
    return "\n".join([_header(shown), *body])


def to_json(shown: Shown) -> dict[str, Any]:
    """One JSON Lines record for one event."""
    record = shown.record
    out: dict[str, Any] = {"file": record.file, "line": record.line}
    if record.item is not None:
        out["item"] = record.item
    out |= {"rule": shown.event.rule, "priority": shown.event.priority}
    if shown.before is not None:
        out["before"] = [a.to_json() for a in shown.before]
    out["actions" if shown.before is None else "after"] = [a.to_json() for a in shown.after]
    return out


def _block(title: str, counts: Counter[str]) -> list[str]:
    if not counts:
        return [f"{title}: none"]
    return [f"{title}:"] + [f"  {name}: {n}" for name, n in sorted(counts.items())]


def summary_text(summary: Summary, baseline: bool) -> str:
    """The closing summary, in lines of text."""
    lines = [f"events read: {summary.events}, bad lines: {summary.bad}"]
    if baseline:
        lines.append(f"events whose outcome differs: {summary.changed}")
        lines += _block("would newly run (rule / action: events)", summary.started)
        lines += _block("would stop (rule / action: events)", summary.stopped)
        lines += _block("would run with other parameters (rule / action: events)",
                        summary.altered)
    else:
        lines.append(f"events with actions: {summary.with_actions}")
        lines += _block("events per rule", summary.per_rule)
        lines += _block("actions per actionner", summary.per_actionner)
    return "\n".join(lines)
