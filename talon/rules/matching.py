"""Hand-rolled, compiled rule matching.

Layer L1: stdlib only (plus the frozen rule model). Criteria, all of which must hold
(an empty criterion matches everything):
- rules: the event's Falco rule equals one entry (OR, exact, case-sensitive);
- priority: `=`, `>`, `>=`, `<`, `<=` or bare name over Falco's priority order;
- tags: OR over entries; an entry is a comma-separated AND group of tags;
- output_fields: OR over entries; an entry is a comma-separated AND group of
  `key=value` / `key!=value` (a `!=` on an absent field holds);
- source: equals the event's source.
Rules are indexed by Falco rule name so the cost per event grows with the number of
rules that can match it, not with the size of the rule set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from talon.models import Event
from talon.rules.model import Match, Rule

PRIORITIES = {"debug": 1, "informational": 2, "notice": 3, "warning": 4, "error": 5,
              "critical": 6, "alert": 7, "emergency": 8}
_PRIORITY_RX = re.compile(
    r"^(<|>)?(=)?(Debug|Informational|Notice|Warning|Error|Critical|Alert|Emergency|)$",
    re.IGNORECASE)
_TAG_RX = re.compile(r"^[A-Za-z0-9_.:/\-]*[A-Za-z0-9]$")
_KEY_RX = re.compile(r"^[A-Za-z0-9_.\-]*(\[[^\]]*\])?$")


def priority_level(name: str) -> int:
    """Falco's priority order: Debug 1 … Emergency 8; anything else 0."""
    return PRIORITIES.get(name.lower(), 0)


def parse_priority(text: str) -> tuple[str, int]:
    """`>=Warning` → ('>=', 4); raises ValueError for anything upstream rejects."""
    found = _PRIORITY_RX.match(text)
    if not found:
        raise ValueError(f"incorrect priority '{text}' (expected e.g. Warning, >=Error, <Notice)")
    op = (found.group(1) or "") + (found.group(2) or "")
    return op or "=", priority_level(found.group(3))


def parse_tags(entry: str) -> tuple[frozenset[str], list[str]]:
    """An AND group of tags (spaces removed, as upstream) and the invalid pieces."""
    pieces = entry.replace(" ", "").split(",")
    bad = [p for p in pieces if not _TAG_RX.match(p)]
    return frozenset(pieces), bad


@dataclass(frozen=True, slots=True)
class Condition:
    """`key=value` (negate False) or `key!=value` (negate True) on an output field."""

    key: str
    value: str
    negate: bool


def parse_output_fields(entry: str) -> tuple[tuple[Condition, ...], list[str]]:
    """An AND group of conditions and the problems found (one message per bad piece).

    Unlike upstream, a value may contain `=` or `!` (`proc.cmdline=a=b` is one condition on
    `a=b`, not an empty group that matches every event), and spaces around keys, values
    and commas are ignored. Double quotes are removed from values, as upstream does.
    """
    conditions: list[Condition] = []
    problems: list[str] = []
    for piece in (p.strip() for p in entry.split(",")):
        ne, eq = piece.find("!="), piece.find("=")
        if ne != -1 and ne + 1 == eq:
            key, value, negate = piece[:ne], piece[ne + 2:], True
        elif eq != -1:
            key, value, negate = piece[:eq], piece[eq + 1:], False
        else:
            problems.append(f"incorrect output field condition '{piece}': "
                            "expected key=value or key!=value")
            continue
        key = key.strip()
        if not key or not _KEY_RX.match(key):
            problems.append(f"incorrect output field key '{key}' in '{piece}'")
            continue
        conditions.append(Condition(key, value.strip().replace('"', ""), negate))
    return tuple(conditions), problems


@dataclass(frozen=True, slots=True)
class CompiledMatch:
    """A rule's criteria in the form the hot path wants."""

    priority_op: str
    priority: int
    tag_groups: tuple[frozenset[str], ...]
    field_groups: tuple[tuple[Condition, ...], ...]
    source: str

    def matches(self, event: Event, view: _View | None = None) -> bool:
        """Everything but the Falco rule name (the index handles that)."""
        view = view or _View(event)
        if self.source and event.source != self.source:
            return False
        if self.priority and not _compare(view.level, self.priority_op, self.priority):
            return False
        if self.tag_groups:
            tags = view.tags()
            if not any(group <= tags for group in self.tag_groups):
                return False
        return not self.field_groups or any(
            _fields_hold(group, view) for group in self.field_groups)


class _View:
    """Per-event values computed once and shared by every candidate rule."""

    __slots__ = ("_tags", "_texts", "event", "level")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.level = priority_level(event.priority)
        self._tags: frozenset[str] | None = None
        self._texts: dict[str, str | None] = {}

    def tags(self) -> frozenset[str]:
        if self._tags is None:
            self._tags = self.event.string_tags()
        return self._tags

    def text(self, key: str) -> str | None:
        try:
            return self._texts[key]
        except KeyError:
            value = self._texts[key] = self.event.field_text(key)
            return value


def _compare(level: int, op: str, wanted: int) -> bool:
    if op == "=":
        return level == wanted
    if op == ">":
        return level > wanted
    if op == ">=":
        return level >= wanted
    if op == "<":
        return level < wanted
    return level <= wanted


def _fields_hold(group: tuple[Condition, ...], view: _View) -> bool:
    for cond in group:
        text = view.text(cond.key)
        if cond.negate:
            if text == cond.value:
                return False
        elif text != cond.value:
            return False
    return True


def compile_match(match: Match) -> CompiledMatch:
    """Compile criteria already checked by validation (invalid pieces are dropped)."""
    op, level = ("=", 0)
    if match.priority:
        try:
            op, level = parse_priority(match.priority)
        except ValueError:
            op, level = ("=", 0)
    tag_groups = tuple(parse_tags(t)[0] for t in match.tags)
    field_groups = tuple(parse_output_fields(f)[0] for f in match.output_fields)
    return CompiledMatch(op, level, tag_groups, field_groups, match.source)


class Matcher:
    """Which rules, in load order, match an event."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._compiled = {r.index: compile_match(r.match) for r in rules}
        self._by_name: dict[str, list[Rule]] = {}
        self._wildcard: list[Rule] = []
        for rule in rules:
            if not rule.match.rules:
                self._wildcard.append(rule)
            for name in dict.fromkeys(rule.match.rules):
                self._by_name.setdefault(name, []).append(rule)

    def candidates(self, event: Event) -> list[Rule]:
        """Rules whose `match.rules` admit the event's Falco rule, in load order."""
        named = self._by_name.get(event.rule)
        if not named:
            return self._wildcard
        if not self._wildcard:
            return named
        return sorted(named + self._wildcard, key=lambda r: r.index)

    def match(self, event: Event) -> list[Rule]:
        """Every matching rule, in load order."""
        compiled, view = self._compiled, _View(event)
        return [r for r in self.candidates(event) if compiled[r.index].matches(event, view)]
