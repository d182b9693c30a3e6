"""`rules test`: run events against rules and check what would happen, touching nothing.

Layer L1 (imports only L0/L1). A suite is a YAML file:

    tests:
      - name: shell in a pod gets it labelled
        event: {rule: Terminal shell in container, priority: Warning,
                output_fields: {k8s.ns.name: shop, k8s.pod.name: web-1}}
        # or: event_file: events/shell.json   (relative to the suite file)
        expect:
          rules: [Terminal shell in container]     # exactly these rules run, in order
          actions: [Label Pod as Suspicious]       # exactly these actions run, in order
          not_rules: [Delete namespace]            # none of these run
          not_actions: [Terminate Pod]
          parameters:                              # final parameters (a subset is enough)
            Label Pod as Suspicious: {labels: {suspicious: "true"}}

Every key under `expect` is optional, but `expect` itself is required. A mismatch prints
a unified diff; an unknown key in a case or in `expect`, or a case without `expect`, is an
error naming the suite file, the case and the key.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talon import models, plan, render, yamlio
from talon.errors import EventError
from talon.registry import Registry
from talon.rules.model import RuleSet

EXPECT_KEYS = ("rules", "actions", "not_rules", "not_actions", "parameters")
CASE_KEYS = ("name", "event", "event_file", "expect")


@dataclass(slots=True)
class CaseResult:
    """The outcome of one test case: its name and every failure message."""

    name: str
    failures: list[str] = field(default_factory=list)


def _diff(what: str, expected: Any, actual: Any) -> str:
    exp = render.dump(models.plain(expected)).splitlines()
    act = render.dump(models.plain(actual)).splitlines()
    lines = difflib.unified_diff(exp, act, "expected", "actual", lineterm="")
    return f"{what} differ:\n" + "\n".join("    " + ln for ln in lines)


def _subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and _subset(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list | tuple) and len(expected) == len(actual) and all(
            _subset(e, a) for e, a in zip(expected, actual, strict=True))
    return bool(expected == actual or (isinstance(actual, str) and str(expected) == actual
                                       and not isinstance(expected, bool)))


def _event(case: Mapping[str, Any], base: Path) -> models.Event:
    if "event_file" in case:
        return models.decode((base / str(case["event_file"])).read_bytes())
    raw = case.get("event")
    if not isinstance(raw, Mapping):
        raise EventError("event", "each test needs an 'event' map or an 'event_file'")
    return models.decode(json.dumps(raw, default=str))


def check_steps(steps: list[plan.Step], expect: Mapping[str, Any]) -> list[str]:
    """Compare what would run with `expect`; one message per mismatch."""
    failures = []
    rules = list(dict.fromkeys(s.rule.name for s in steps))
    actions = [s.action.name for s in steps]
    for key, actual in (("rules", rules), ("actions", actions)):
        if key in expect and list(expect[key] or []) != actual:
            failures.append(_diff(key, list(expect[key] or []), actual))
        hit = sorted(set(expect.get(f"not_{key}") or []) & set(actual))
        if hit:
            failures.append(f"not_{key}: these ran but must not: {', '.join(hit)}")
    by_action = {s.action.name: s for s in steps}
    for name, wanted in (expect.get("parameters") or {}).items():
        got = by_action.get(name)
        if got is None:
            failures.append(f"parameters: action '{name}' does not run")
        elif not _subset(wanted, models.plain(got.parameters)):
            failures.append(_diff(f"parameters of '{name}'", wanted,
                                  models.plain(got.parameters)))
    return failures


def _unknown(keys: Iterable[Any], known: tuple[str, ...], where: str) -> list[str]:
    messages = []
    for key in keys:
        if key in known:
            continue
        near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        tip = f" (did you mean '{near[0]}'?)" if near else ""
        messages.append(f"unknown key '{key}' in {where}{tip}; known: {', '.join(known)}")
    return messages


def case_problems(case: Mapping[str, Any]) -> list[str]:
    """What is wrong with the shape of one case: unknown keys, a missing or bad `expect`."""
    problems = _unknown(case, CASE_KEYS, "the case")
    expect = case.get("expect")
    if "expect" not in case:
        problems.append("the case has no 'expect': say what must happen "
                        f"({', '.join(EXPECT_KEYS)})")
    elif not isinstance(expect, Mapping):
        problems.append(f"'expect' must be a map, got {expect!r}")
    else:
        problems += _unknown(expect, EXPECT_KEYS, "expect")
    return problems


def _run_case(case: Any, where: str, base: Path, ruleset: RuleSet,
              registry: Registry) -> list[str]:
    if not isinstance(case, Mapping):
        return [f"{where}: a test case must be a map"]
    problems = case_problems(case)
    if problems:
        return [f"{where}: {p}" for p in problems]
    try:
        event = _event(case, base)
    except (EventError, OSError) as exc:
        return [f"bad event: {exc}"]
    return check_steps(plan.plan(event, ruleset, registry), case["expect"])


def run_suite(path: Path, ruleset: RuleSet, registry: Registry) -> list[CaseResult]:
    """Run every case of the suite file at `path`."""
    data = yamlio.load_file(path)
    cases = data.get("tests") if isinstance(data, Mapping) else None
    if not isinstance(cases, list) or not cases:
        return [CaseResult(str(path), [f"{path}: expected a 'tests:' list of cases"])]
    results = []
    for i, case in enumerate(cases):
        named = isinstance(case, Mapping) and case.get("name")
        name = str(case["name"]) if named else f"case {i + 1}"
        failures = _run_case(case, f"{path}: case '{name}'", path.parent, ruleset, registry)
        results.append(CaseResult(name, failures))
    return results
