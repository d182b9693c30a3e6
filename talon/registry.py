"""The plug-in registry: actionners, outputs, notifiers and contexts with their metadata.

Layer L0: stdlib only. A plug-in is a frozen `PluginInfo` record plus an optional callable
(`run` for actionners and outputs, `fetch` for contexts, a factory for notifiers). The
params dataclass named in the metadata *is* the parameter schema (see `talon.params`).
`REGISTRY` is the one process-wide registry; tests build their own `Registry()`.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from talon.errors import RegistryError, UnknownPluginError

Kind = Literal["actionner", "output", "notifier", "context"]
KINDS: tuple[Kind, ...] = ("actionner", "output", "notifier", "context")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Permission:
    """One RBAC rule a plug-in needs: API groups, resources and verbs."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginInfo:
    """What a plug-in is and what it needs; shown by the `list` commands."""

    kind: Kind
    category: str
    name: str
    description: str
    params: type | None = None
    """Frozen dataclass whose fields are the parameter (or settings) schema."""
    default_continue: bool = True
    use_context: bool = False
    allow_output: bool = False
    require_output: bool = False
    required_fields: tuple[str, ...] = ()
    """Falco output fields the plug-in reads; `a|b` means one of them."""
    sources: tuple[str, ...] = ("syscalls",)
    requires: tuple[str, ...] = ()
    """Importable SDK modules the plug-in needs at run time, e.g. ("boto3",)."""
    permissions: tuple[Permission, ...] = ()
    """Kubernetes RBAC rules needed by the plug-in."""
    cloud_permissions: str = ""
    """Cloud IAM permissions, as text (AWS policy or GCP permission names)."""
    secrets: tuple[str, ...] = ()
    """Settings that must never be logged (notifiers)."""
    example: str = ""
    checked_by_run: bool = False
    """Whether the run's first request is also the action's live check, as for a label's
    merge patch, which a missing pod answers with 404 (the run raises CheckFailedError).
    The `in_progress` line is then written when the run is over, and not at all when the
    run raised CheckFailedError, so the log reads as if the check had run first."""
    disruptive: bool = False
    """Whether the action disrupts a workload (terminate, delete, drain, cordon, network
    policies, exec, script, captures): the governor's budgets and protection apply to it."""

    @property
    def fullname(self) -> str:
        """`category:name`, or the bare name for notifiers and contexts."""
        if self.kind in ("notifier", "context"):
            return self.name
        return f"{self.category}:{self.name}"


@dataclass(frozen=True, slots=True)
class Plugin:
    """A registered plug-in: metadata, its callable and its live checks."""

    info: PluginInfo
    run: Callable[..., Any]
    checks: tuple[Callable[..., Any], ...] = field(default=())

    @property
    def fullname(self) -> str:
        return self.info.fullname


class Registry:
    """Name → plug-in, per kind. Thread-safe; refuses duplicates and changes once frozen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plugins: dict[Kind, dict[str, Plugin]] = {k: {} for k in KINDS}
        self._frozen = False

    def add(self, plugin: Plugin) -> None:
        """Register `plugin`; a second plug-in with the same kind and name is an error."""
        info = plugin.info
        if info.kind not in KINDS:
            raise RegistryError(f"unknown plug-in kind {info.kind!r}")
        with self._lock:
            if self._frozen:
                raise RegistryError(f"registry is frozen, cannot add {info.fullname}")
            table = self._plugins[info.kind]
            if info.fullname in table:
                raise RegistryError(f"{info.kind} {info.fullname!r} is already registered")
            table[info.fullname] = plugin

    def freeze(self) -> None:
        """Refuse any later registration (called once the catalog and plug-ins are loaded)."""
        with self._lock:
            self._frozen = True

    def get(self, kind: Kind, fullname: str) -> Plugin:
        """The plug-in of `kind` named `fullname`; raises UnknownPluginError."""
        try:
            return self._plugins[kind][fullname]
        except KeyError:
            raise UnknownPluginError(f"unknown {kind} '{fullname}'") from None

    def has(self, kind: Kind, fullname: str) -> bool:
        return fullname in self._plugins[kind]

    def all(self, kind: Kind) -> list[Plugin]:
        """Every plug-in of `kind`, in registration order."""
        return list(self._plugins[kind].values())

    def names(self, kind: Kind) -> list[str]:
        return list(self._plugins[kind])


REGISTRY = Registry()


def _register(
    kind: Kind, category: str, name: str, registry: Registry | None,
    checks: tuple[Callable[..., Any], ...], meta: dict[str, Any],
) -> Callable[[F], F]:
    info = PluginInfo(kind=kind, category=category, name=name, **meta)

    def decorate(func: F) -> F:
        (registry or REGISTRY).add(Plugin(info, func, checks))
        return func

    return decorate


def actionner(
    category: str, name: str, *, registry: Registry | None = None,
    checks: tuple[Callable[..., Any], ...] = (), **meta: Any,
) -> Callable[[F], F]:
    """Register the decorated `run(ctx) -> Result` as actionner `category:name`."""
    return _register("actionner", category, name, registry, checks, meta)


def output(
    category: str, name: str, *, registry: Registry | None = None,
    checks: tuple[Callable[..., Any], ...] = (), **meta: Any,
) -> Callable[[F], F]:
    """Register the decorated `run(ctx, artifact) -> Result` as output `category:name`."""
    return _register("output", category, name, registry, checks, meta)


def notifier(name: str, *, registry: Registry | None = None, **meta: Any) -> Callable[[F], F]:
    """Register the decorated factory `cls(settings)` as notifier `name`."""
    return _register("notifier", "notifier", name, registry, (), meta)


def context(name: str, *, registry: Registry | None = None, **meta: Any) -> Callable[[F], F]:
    """Register the decorated `fetch(ctx) -> Mapping[str, str]` as context `name`."""
    return _register("context", "context", name, registry, (), meta)


def _finder(location: str) -> Any:
    """The import finder for one path entry (the one the import system would use)."""
    found = sys.path_importer_cache.get(location)
    if found is not None:
        return found
    for hook in sys.path_hooks:
        try:
            return hook(location)
        except ImportError:
            continue
    return None


def _find(fullname: str, locations: list[str]) -> tuple[bool, list[str] | None]:
    """(found, its package locations, None for a plain module) of `fullname` on
    `locations`; namespace portions are gathered the way the import system does."""
    portions: list[str] = []
    for location in locations:
        finder = _finder(location or ".")
        spec = finder.find_spec(fullname) if finder is not None else None
        if spec is None:
            continue
        if spec.loader is not None:
            found = spec.submodule_search_locations
            return True, None if found is None else list(found)
        portions += list(spec.submodule_search_locations or ())
    return bool(portions), portions


def module_available(name: str) -> bool:
    """Whether module `name` (dotted) could be imported, found without importing it or its
    parents, so that `rules check` stays free of SDK imports."""
    if name in sys.modules:
        return True
    locations = list(sys.path)
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        found, package = _find(".".join(parts[:depth]), locations)
        if not found:
            return False
        if package is None:
            return depth == len(parts)
        locations = package
    return True


def missing_modules(info: PluginInfo) -> list[str]:
    """The SDK modules `info.requires` names that are not installed."""
    return [name for name in info.requires if not module_available(name)]
