"""Shared fixtures: a fresh plug-in registry with small test plug-ins, rules-file writer."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from talon.registry import Kind, Plugin, PluginInfo, Registry  # noqa: E402


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelParams:
    labels: Mapping[str, str]
    level: str = "pod"


@dataclass(frozen=True, slots=True, kw_only=True)
class ListParams:
    allow_cidr: tuple[str, ...] = ()
    allow_namespaces: tuple[str, ...] = ()
    count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecParams:
    command: str = field(metadata={"substitute": True})
    shell: str = "/bin/sh"


@dataclass(frozen=True, slots=True, kw_only=True)
class FileParams:
    destination: str


def _validation_only(*_args: object) -> None:
    raise AssertionError("a test plug-in for validation was run")


def declare(kind: Kind, category: str, name: str, *, registry: Registry,
            **meta: object) -> None:
    """Register a plug-in shaped like a real one, for tests that only load rules."""
    info = PluginInfo(kind=kind, category=category, name=name, **meta)  # type: ignore[arg-type]
    registry.add(Plugin(info, _validation_only))


def make_registry() -> Registry:
    """A registry with test plug-ins shaped like the real ones."""
    reg = Registry()
    declare("actionner", "test", "label", registry=reg, description="label", params=LabelParams)
    declare("actionner", "test", "lists", registry=reg, description="lists", params=ListParams)
    declare("actionner", "test", "exec", registry=reg, description="exec", params=ExecParams,
            use_context=True)
    declare("actionner", "test", "kill", registry=reg, description="kill",
            default_continue=False)
    declare("actionner", "test", "capture", registry=reg, description="capture",
            require_output=True)
    declare("actionner", "test", "logs", registry=reg, description="logs", allow_output=True)
    declare("output", "local", "file", registry=reg, description="file", params=FileParams)
    declare("notifier", "notifier", "webhook", registry=reg, description="webhook")
    declare("context", "context", "k8snode", registry=reg, description="node")
    return reg


@pytest.fixture
def registry() -> Registry:
    return make_registry()


@pytest.fixture
def write_rules(tmp_path: Path) -> Callable[..., str]:
    """Write dedented YAML to a file under tmp_path and return its path."""
    counter = iter(range(1000))

    def write(text: str, name: str | None = None) -> str:
        path = tmp_path / (name or f"rules{next(counter)}.yaml")
        path.write_text(textwrap.dedent(text))
        return str(path)

    return write
