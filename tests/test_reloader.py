"""Rules reload failures: whatever goes wrong, the rules in force stay and nothing dies.

Behaviours covered: `Reloader.reload()` (the SIGHUP path, run on the main thread) with a
real rules file that loads, then a load that fails with an OSError (permission denied,
file deleted mid-read), any other exception (ValueError, RecursionError, MemoryError) or
an invalid rules file: it returns False, reports the failure to `on_result`, keeps the
rule set in force, and a later good reload still works.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from talon import catalog, rules
from talon.reloader import Reloader, RuleStore
from talon.rules.model import RuleSet

GOOD = """
- rule: {name}
  actions: [{{action: a, actionner: kubernetes:label, parameters: {{labels: {{a: b}}}}}}]
"""


def _failing(exc: BaseException) -> Callable[[], RuleSet]:
    def load() -> RuleSet:
        raise exc
    return load


@pytest.mark.parametrize("exc", [
    PermissionError(13, "Permission denied", "/etc/talon/rules.d/50-site.yaml"),
    FileNotFoundError(2, "No such file or directory", "/etc/talon/rules.d/50-site.yaml"),
    OSError(5, "Input/output error"),
    ValueError("Exceeds the limit (4300 digits) for integer string conversion"),
    RecursionError("maximum recursion depth exceeded"),
    MemoryError(),
], ids=lambda e: type(e).__name__)
def test_a_failed_reload_keeps_the_rules(tmp_path: Path, exc: BaseException) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(GOOD.format(name="first")))
    registry = catalog.registry()
    store = RuleStore(rules.load([str(path)], registry))
    results: list[bool] = []
    load = [_failing(exc)]
    reloader = Reloader([str(path)], lambda: load[0](), store.swap, on_result=results.append)
    assert reloader.reload("signal") is False
    assert [r.name for r in store.current.rules] == ["first"]
    path.write_text(textwrap.dedent(GOOD.format(name="second")))
    load[0] = lambda: rules.load([str(path)], registry)
    assert reloader.reload("signal") is True
    assert [r.name for r in store.current.rules] == ["second"]
    assert results == [False, True]


def test_an_invalid_file_keeps_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(GOOD.format(name="first")))
    registry = catalog.registry()
    store = RuleStore(rules.load([str(path)], registry))
    reloader = Reloader([str(path)], lambda: rules.load([str(path)], registry), store.swap)
    path.write_text("- rule: [unclosed")
    assert reloader.reload() is False
    path.unlink()
    assert reloader.reload() is False
    assert [r.name for r in store.current.rules] == ["first"]
