"""The rules language: model, loading and merging, matching, validation.

`load(paths, registry)` is the one path used by `rules check`, server start and reload:
read → merge → validate → RuleSet, raising RulesError with every problem on failure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable

from talon.errors import Problem, RulesError
from talon.registry import Registry
from talon.rules import loader, validate
from talon.rules.model import RuleSet


def check(paths: Iterable[str], registry: Registry, *, strict: bool = False,
          notifiers: Collection[str] | None = None,
          protected: Collection[str] | None = None) -> tuple[RuleSet, list[Problem]]:
    """The RuleSet and all problems; with `strict`, warnings count as errors."""
    ruleset, problems = validate.build(loader.read(paths), registry, notifiers=notifiers,
                                       protected=protected)
    if strict:
        problems = [dataclasses.replace(p, severity="error") for p in problems]
    return ruleset, problems


def load(paths: Iterable[str], registry: Registry, *, strict: bool = False,
         notifiers: Collection[str] | None = None) -> RuleSet:
    """A valid RuleSet, or RulesError listing every problem."""
    ruleset, problems = check(paths, registry, strict=strict, notifiers=notifiers)
    if any(p.severity == "error" for p in problems):
        raise RulesError(problems)
    return ruleset
