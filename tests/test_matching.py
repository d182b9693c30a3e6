"""Matching: every operator of rules, priority, tags, output_fields and source.

Covers: exact rule names (OR), priority comparators over Falco's order and unknown
priorities, tag AND groups / OR lists (duplicates do not inflate counts), output-field
=/!= with absent fields, numbers compared as their JSON text, values containing = or !,
source, empty criteria, load order, the name index with wildcard rules.
"""

from __future__ import annotations

import pytest

from talon import models
from talon.rules import matching
from talon.rules.model import Match, Rule


def ev(**kw: object) -> models.Event:
    return models.from_mapping(kw)


def matches(match: Match, event: models.Event) -> bool:
    rule = Rule(name="r", match=match)
    return bool(matching.Matcher([rule]).match(event))


@pytest.mark.parametrize(("rule_prio", "event_prio", "expected"), [
    ("Warning", "Warning", True), ("Warning", "warning", True), ("Warning", "Error", False),
    ("=Notice", "Notice", True), (">=Warning", "Critical", True), (">=Warning", "Warning", True),
    (">=Warning", "Notice", False), (">Warning", "Warning", False), (">Warning", "Error", True),
    ("<Warning", "Notice", True), ("<Warning", "Warning", False), ("<=Warning", "Warning", True),
    ("<=Warning", "Error", False), ("<Warning", "Info", True), (">=Debug", "Info", False),
    ("<=", "Emergency", True), ("", "anything", True), (">=emergency", "EMERGENCY", True),
])
def test_priority(rule_prio: str, event_prio: str, expected: bool) -> None:
    assert matches(Match(priority=rule_prio), ev(priority=event_prio)) is expected


@pytest.mark.parametrize("bad", ["Info", ">= Warning", "> =Warning", "=>Warning", "!=Warning"])
def test_priority_syntax_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="incorrect priority"):
        matching.parse_priority(bad)


def test_rules_are_exact_and_ored() -> None:
    m = Match(rules=("Terminal shell in container", "Other"))
    assert matches(m, ev(rule="Terminal shell in container"))
    assert matches(m, ev(rule="Other"))
    assert not matches(m, ev(rule="terminal shell in container"))
    assert not matches(m, ev(rule="Terminal shell"))


@pytest.mark.parametrize(("tags", "event_tags", "expected"), [
    (("a, b",), ["a", "b", "c"], True),
    (("a,b",), ["a"], False),
    (("a,b", "c"), ["c"], True),
    (("a,b",), ["a", "a"], False),
    (("my tag",), ["mytag"], True),
    (("T1055.008",), ["T1055.008"], True),
    (("a",), [1, "b"], False),
    ((), [], True),
])
def test_tags(tags: tuple[str, ...], event_tags: list[object], expected: bool) -> None:
    assert matches(Match(tags=tags), ev(tags=event_tags)) is expected


@pytest.mark.parametrize(("fields", "output_fields", "expected"), [
    (("k8s.ns.name!=kube-system, k8s.ns.name!=falco",), {"k8s.ns.name": "default"}, True),
    (("k8s.ns.name!=kube-system, k8s.ns.name!=falco",), {"k8s.ns.name": "falco"}, False),
    (("k8s.ns.name!=kube-system",), {}, True),
    (("k8s.ns.name=default",), {}, False),
    (("a=1,b=2",), {"a": "1", "b": "2"}, True),
    (("a=1,b=2",), {"a": "1", "b": "3"}, False),
    (("a=1", "b=2"), {"a": "0", "b": "2"}, True),
    (('fd.name="/etc/shadow"',), {"fd.name": "/etc/shadow"}, True),
    (("fd.rport=8080",), {"fd.rport": 8080}, True),
    (("proc.pid=1234567",), {"proc.pid": 1234567}, True),
    (("x=0.00001",), {"x": 0.00001}, True),
    (("flag=true",), {"flag": True}, True),
    (("proc.cmdline=a=b",), {"proc.cmdline": "a=b"}, True),
    (("proc.cmdline=a=b",), {"proc.cmdline": "other"}, False),
    (("proc.name=sh!x",), {"proc.name": "sh!x"}, True),
    (("k8s.ns.name= x",), {"k8s.ns.name": "x"}, True),
    (("k8s.pod.labels[app]=web",), {"k8s.pod.labels[app]": "web"}, True),
    (("container.id=<nil>",), {"container.id": None}, True),
])
def test_output_fields(fields: tuple[str, ...], output_fields: dict[str, object],
                       expected: bool) -> None:
    import json
    event = models.decode(json.dumps({"output_fields": output_fields}))
    assert matches(Match(output_fields=fields), event) is expected


@pytest.mark.parametrize("bad", ["k8s.ns.name", "a b=c", "key/x=1", "=x", "a=1,,b=2"])
def test_output_field_syntax_rejected(bad: str) -> None:
    assert matching.parse_output_fields(bad)[1]


def test_source() -> None:
    assert matches(Match(source="k8saudit"), ev(source="k8saudit"))
    assert not matches(Match(source="syscalls"), ev())  # defaulted source is "syscall"
    assert matches(Match(source="syscall"), ev())


def test_empty_match_matches_everything() -> None:
    assert matches(Match(), ev(rule="x", priority="Debug"))


def test_all_criteria_must_hold() -> None:
    m = Match(rules=("R",), priority=">=Warning", tags=("a",), output_fields=("k=v",),
              source="syscall")
    good = {"rule": "R", "priority": "Error", "tags": ["a"], "output_fields": {"k": "v"}}
    assert matches(m, ev(**good))
    for key, bad in (("rule", "S"), ("priority", "Notice"), ("tags", ["b"]),
                     ("output_fields", {"k": "w"}), ("source", "k8saudit")):
        assert not matches(m, ev(**{**good, key: bad})), key


def test_load_order_is_kept_with_index_and_wildcards() -> None:
    rules = [Rule(name="wild1", index=0), Rule(name="named", match=Match(rules=("R",)), index=1),
             Rule(name="wild2", index=2),
             Rule(name="other", match=Match(rules=("S",)), index=3)]
    m = matching.Matcher(rules)
    assert [r.name for r in m.match(ev(rule="R"))] == ["wild1", "named", "wild2"]
    assert [r.name for r in m.match(ev(rule="S"))] == ["wild1", "wild2", "other"]
    assert [r.name for r in m.match(ev(rule="T"))] == ["wild1", "wild2"]


def test_index_only_without_wildcards() -> None:
    rules = [Rule(name=f"r{i}", match=Match(rules=(f"F{i}",)), index=i) for i in range(100)]
    m = matching.Matcher(rules)
    assert [r.name for r in m.match(ev(rule="F42"))] == ["r42"]
    assert m.match(ev(rule="nope")) == []
