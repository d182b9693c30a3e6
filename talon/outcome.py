"""What each stage of handling an event produced: one frozen record per stage outcome.

Layer L1 (stdlib, talon.models and talon.rules.model). The engine and the notification
dispatcher make these records and hand them to one `talon.report.Reporter`, which passes
each to every sink (log, metrics, notifications, spans, ledger…): a new sink reads
records, it touches no stage. Records hold references to the event, rule and action (no
copies), so making one costs one small object (a frozen dataclass pays per field, so the
span's ids and times travel in one `span` tuple, None unless a tracing sink is on).

Stages, in the order an event goes through them:
- EventOutcome: `received` (logged before any rule runs), `duplicate`, `unusable`, and
  `done` once every matching rule has run (the event's root span, start to end);
- MatchOutcome: one rule matched the event;
- ActionStarted: an action passed its live checks and is about to run (log only);
- ActionOutcome: an action ended (`success`, `failure`, `ignored`, or a dry run);
- OutputOutcome: an action's artifact was stored (or not) by an output;
- NotificationOutcome: one notifier delivered (or failed, or dropped) one notification.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from talon.models import Event, Notification
from talon.rules.model import Action, Rule

RECEIVED = "received"
DUPLICATE = "duplicate"
UNUSABLE = "unusable"
DONE = "done"
DRY_RUN = "dry_run"


def _empty() -> Mapping[str, str]:
    return {}


class Span(NamedTuple):
    """Where a stage sits in its trace: its span id, its parent's, start and end (ns since
    the epoch). Made only when tracing (`Reporter.span_id()` gave an id)."""

    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EventOutcome:
    """An event reached the engine (`status` says how far it went)."""

    stage: ClassVar[str] = "event"
    event: Event
    status: str
    reason: str = ""
    """Why an `unusable` event can match no rule (`no_rule`, `unknown_priority`)."""
    span: Span | None = None
    """The root span (`done` only); its parent is the caller's span, if any."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchOutcome:
    """A rule matched the event."""

    stage: ClassVar[str] = "match"
    event: Event
    rule: Rule
    span: Span | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionStarted:
    """An action passed its checks and runs now."""

    stage: ClassVar[str] = "action"
    event: Event
    rule: Rule
    action: Action


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionOutcome:
    """An action ended; `status` is `success`, `failure`, `ignored` or `dry_run`."""

    stage: ClassVar[str] = "action"
    event: Event
    rule: Rule
    action: Action
    status: str
    output: str = ""
    error: str = ""
    objects: Mapping[str, str] = field(default_factory=_empty)
    """What the actionner named; for a dry run, the event's namespace and pod."""
    parameters: Mapping[str, Any] | None = None
    """The final parameters (dry runs log them)."""
    seconds: float | None = None
    """How long the action ran (monotonic clock); None when it did not run (a dry run, or
    held by the governor)."""
    span: Span | None = None

    @property
    def dry_run(self) -> bool:
        return self.status == DRY_RUN

    @property
    def ok(self) -> bool:
        return self.status != "failure"


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputOutcome:
    """An output stored an action's artifact, or failed to."""

    stage: ClassVar[str] = "output"
    event: Event
    rule: Rule
    action: Action
    target: str
    status: str
    result: str = ""
    error: str = ""
    objects: Mapping[str, str] = field(default_factory=_empty)
    span: Span | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationOutcome:
    """One notifier's delivery of one notification: `success`, `failure` or `dropped`.

    `missing` marks a notifier that was never built (a configuration problem, which the
    log sink reports at most once a minute per notifier).
    """

    stage: ClassVar[str] = "notification"
    notifier: str
    status: str
    notification: Notification
    error: str = ""
    missing: bool = False
    started_ns: int = 0
    ended_ns: int = 0


Outcome = (EventOutcome | MatchOutcome | ActionStarted | ActionOutcome | OutputOutcome
           | NotificationOutcome)
"""Any stage record."""
