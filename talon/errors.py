"""The error tree of Talon and the `Problem` record used for validation reports.

Layer L0: stdlib only. Every error Talon raises on purpose derives from `TalonError`.
Validation never stops at the first problem: it collects `Problem` records, each naming
the file, the rule or action, the field and (when known) the line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal


class TalonError(Exception):
    """Base class of every error Talon raises on purpose."""


class ConfigError(TalonError):
    """The configuration (file, environment or flags) is invalid."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems) or "invalid configuration")


class EventError(TalonError, ValueError):
    """A Falco event payload is malformed; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class UnknownPluginError(TalonError, LookupError):
    """No actionner, output, notifier or context is registered under that name."""


class RegistryError(TalonError):
    """A plug-in registration is invalid (duplicate name, registry frozen, bad metadata)."""


class RulesError(TalonError):
    """A rules set failed to load or validate; `problems` holds every finding."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        first = str(errors[0]) if errors else "invalid rules"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)


class PluginError(TalonError):
    """Base class for failures raised while a plug-in runs.

    `transient` says whether trying again may succeed (an action's `retries`): True or
    False decides; None (the default) lets the cause decide (talon.retry.is_transient)."""

    transient: bool | None = None


class CheckFailedError(PluginError):
    """A live check (for example: the pod still exists) failed before the action ran."""


class ActionError(PluginError):
    """An actionner failed."""


class OutputError(PluginError):
    """An output failed to store an artifact."""


class NotifyError(PluginError):
    """A notifier failed to deliver a notification."""


Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One finding of rules or parameter validation, located as precisely as known."""

    message: str
    file: str = ""
    rule: str = ""
    action: str = ""
    field: str = ""
    line: int | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.file
        if where and self.line is not None:
            where = f"{where}:{self.line}"
        parts = [where] if where else []
        if self.rule:
            parts.append(f"rule '{self.rule}'")
        if self.action:
            parts.append(f"action '{self.action}'")
        if self.field:
            parts.append(f"field '{self.field}'")
        prefix = ", ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


def describe(exc: BaseException) -> str:
    """`Type: text` of an exception, even when its `str()` fails (a hostile `__str__`)."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a hostile __str__
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
