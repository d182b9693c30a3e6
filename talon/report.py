"""One reporter for every stage's outcome, and the standard sinks: log, metrics, notifications.

Layer L1. The engine and the notification dispatcher make one frozen record per stage
outcome (talon.outcome) and call `Reporter.report(record)`; the reporter hands it to each
sink in turn. A sink is any callable taking a record; it acts on the record types it
knows and ignores the others; a sink that names them in a `kinds` attribute is handed
only those (the reporter routes each record type to its sinks once, not per record).
Adding a sink (spans, an action ledger…) touches no stage: `Reporter.add(sink)`.
Sinks that are off are not in the list, so they cost nothing.

The standard sinks write exactly what the stages wrote themselves before: the same log
lines (the `talon.engine` and `talon.notify` loggers), the same metric labels, the same
notifications. A sink that raises is logged (at most once a minute per sink) and the
others still run: a faulty sink never fails an action.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from talon import log
from talon.metrics import Metrics
from talon.models import Notification
from talon.outcome import (
    DONE,
    DUPLICATE,
    RECEIVED,
    UNUSABLE,
    ActionOutcome,
    ActionStarted,
    EventOutcome,
    MatchOutcome,
    NotificationOutcome,
    Outcome,
    OutputOutcome,
)

Sink = Callable[[Any], None]
"""Takes any talon.outcome record (Any: a sink may accept only some of them)."""
Notify = Callable[[tuple[str, ...], Notification], None]

engine_logger = logging.getLogger("talon.engine")
notify_logger = logging.getLogger("talon.notify")
logger = logging.getLogger(__name__)

UNUSABLE_ERROR = ("the event can match no rule: Falco events carry a rule name and one of "
                  "Falco's priorities")
QUEUE_FULL_ERROR = "notification queue full"
_SPAN_IDS = random.Random()  # noqa: S311 - span ids identify spans, they guard nothing


class Reporter:
    """Hands each stage record to every sink, in the order they were added."""

    def __init__(self, sinks: Iterable[Sink] = (), *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sinks: tuple[Sink, ...] = tuple(sinks)
        self._routes: dict[type, tuple[Sink, ...]] = {}
        self._failing = log.Throttle(60.0, clock)
        self.tracing = False
        """Whether some sink wants span ids (`span_id()` returns "" otherwise)."""

    @classmethod
    def standard(cls, metrics: Metrics, *, notify: Notify | None = None,
                 default_notifiers: tuple[str, ...] = (), notify_dry_run: bool = False,
                 print_all_events: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> Reporter:
        """Metrics, log and (when `notify` is given) notification sinks."""
        sinks: list[Sink] = [MetricsSink(metrics), LogSink(print_all_events, clock)]
        if notify is not None:
            sinks.append(NotifySink(notify, default_notifiers, notify_dry_run))
        return cls(sinks, clock=clock)

    @property
    def sinks(self) -> tuple[Sink, ...]:
        return self._sinks

    def add(self, sink: Sink, *, tracing: bool = False) -> None:
        """Add `sink` after the others; `tracing` when it needs span ids in the records."""
        self._sinks = (*self._sinks, sink)
        self._routes = {}
        self.tracing = self.tracing or tracing

    def span_id(self) -> str:
        """A new span id (16 hex digits, never zero) when tracing, else ""."""
        if not self.tracing:
            return ""
        return f"{_SPAN_IDS.getrandbits(64) or 1:016x}"

    def _route(self, kind: type) -> tuple[Sink, ...]:
        """The sinks that take records of type `kind`, in order (remembered)."""
        found = self._routes[kind] = tuple(
            sink for sink in self._sinks if kind in getattr(sink, "kinds", (kind,)))
        return found

    def report(self, outcome: Outcome) -> None:
        """Give `outcome` to every sink that takes its type; a sink's failure is logged,
        never raised."""
        sinks = self._routes.get(type(outcome))
        if sinks is None:
            sinks = self._route(type(outcome))
        for sink in sinks:
            try:
                sink(outcome)
            except Exception as exc:  # noqa: BLE001 - a sink must not fail a stage
                self._sink_failed(sink, exc)

    def _sink_failed(self, sink: Sink, exc: Exception) -> None:
        name = getattr(sink, "name", type(sink).__name__)
        held = self._failing.allow(name)
        if held is not None:
            log.emit(logger, logging.ERROR, "report", sink=name,
                     error=f"{type(exc).__name__}: {exc}", suppressed=held or None)


class MetricsSink:
    """Counts each outcome in the Prometheus counters (talon.metrics)."""

    name = "metrics"
    kinds = frozenset({MatchOutcome, ActionOutcome, OutputOutcome, NotificationOutcome,
                       EventOutcome})

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def __call__(self, o: Any) -> None:
        m = self.metrics
        kind = type(o)
        if kind is MatchOutcome:
            event = o.event
            m.match(o.rule.name, event.rule, event.priority, event.source)
        elif kind is ActionOutcome:
            self._action(o)
        elif kind is OutputOutcome:
            m.child(m.outputs, o.rule.name, o.action.name, o.target, o.status).inc()
        elif kind is NotificationOutcome:
            m.child(m.notifications, o.notifier, o.status).inc()
        elif kind is EventOutcome:
            if o.status == DUPLICATE:
                m.duplicates.inc()
            elif o.status == UNUSABLE:
                m.child(m.unusable, o.reason).inc()

    def _action(self, o: ActionOutcome) -> None:
        m, action = self.metrics, o.action
        namespace, pod = o.objects.get("namespace", ""), o.objects.get("pod", "")
        m.action(rule=o.rule.name, event=o.event.rule, action=action.name,
                 actionner=action.actionner, status=o.status, namespace=namespace, pod=pod)
        if o.seconds is not None:  # it ran: throttled, protected and dry runs did not
            m.child(m.action_seconds, action.actionner).observe(o.seconds)


class LogSink:
    """Writes each outcome's log line (the upstream LogLine fields)."""

    name = "log"
    kinds = frozenset({ActionOutcome, ActionStarted, MatchOutcome, OutputOutcome,
                       NotificationOutcome, EventOutcome})

    def __init__(self, print_all_events: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.print_all_events = print_all_events
        self._throttle = log.Throttle(60.0, clock)

    def __call__(self, o: Any) -> None:
        kind = type(o)
        if kind is ActionOutcome:
            self._action(o)
        elif kind is ActionStarted:
            self._started(o)
        elif kind is MatchOutcome:
            e = o.event
            log.emit(engine_logger, logging.INFO, "match", rule=o.rule.name, event=e.rule,
                     priority=e.priority, source=e.source, trace_id=e.trace_id)
        elif kind is OutputOutcome:
            self._output(o)
        elif kind is NotificationOutcome:
            self._notification(o)
        elif kind is EventOutcome and o.status != DONE:
            self._event(o)

    def _event(self, o: EventOutcome) -> None:
        e = o.event
        if o.status == RECEIVED:
            if not self.print_all_events:  # else the server logged it on receipt
                log.emit(engine_logger, logging.INFO, "event", rule=e.rule,
                         priority=e.priority, source=e.source, output=e.output,
                         trace_id=e.trace_id)
        elif o.status == DUPLICATE:
            log.emit(engine_logger, logging.INFO, "event", status="duplicate", rule=e.rule,
                     output=e.output, trace_id=e.trace_id)
        elif o.status == UNUSABLE:
            held = self._throttle.allow("unusable:" + o.reason)
            if held is not None:
                log.emit(engine_logger, logging.WARNING, "event", status="unusable",
                         reason=o.reason, error=UNUSABLE_ERROR, rule=e.rule,
                         priority=e.priority, source=e.source, output=e.output,
                         trace_id=e.trace_id, suppressed=held or None)

    def _started(self, o: ActionStarted) -> None:
        action = o.action
        log.emit(engine_logger, logging.INFO, "action", rule=o.rule.name, action=action.name,
                 actionner=action.actionner, status="in_progress",
                 trace_id=o.event.trace_id, event=o.event.rule)

    def _action(self, o: ActionOutcome) -> None:
        action, e = o.action, o.event
        if o.dry_run:
            log.emit(engine_logger, logging.INFO, "action", rule=o.rule.name,
                     action=action.name, actionner=action.actionner, status="success",
                     trace_id=e.trace_id, dry_run=True, event=e.rule,
                     parameters=o.parameters, output=o.output, **o.objects)
            return
        level = logging.ERROR if o.status == "failure" else logging.INFO
        log.emit(engine_logger, level, "action", rule=o.rule.name, action=action.name,
                 actionner=action.actionner, status=o.status, trace_id=e.trace_id,
                 event=e.rule, **{k.lower(): v for k, v in o.objects.items()},
                 output=o.output, error=o.error)

    def _output(self, o: OutputOutcome) -> None:
        level = logging.ERROR if o.status == "failure" else logging.INFO
        log.emit(engine_logger, level, "output", rule=o.rule.name, action=o.action.name,
                 actionner=o.action.actionner, output_target=o.target, status=o.status,
                 result=o.result, error=o.error, trace_id=o.event.trace_id,
                 **{k.lower(): v for k, v in o.objects.items()})

    def _notification(self, o: NotificationOutcome) -> None:
        n = o.notification
        if o.status == "dropped":
            log.emit(notify_logger, logging.ERROR, "notification", notifier=o.notifier,
                     status="dropped", error=o.error, trace_id=n.trace_id)
        elif o.missing:
            held = self._throttle.allow("notifier:" + o.notifier)
            if held is not None:
                log.emit(notify_logger, logging.WARNING, "notification", notifier=o.notifier,
                         status=o.status, rule=n.rule, action=n.action, stage=n.message,
                         trace_id=n.trace_id, error=o.error, suppressed=held or None)
        else:
            level = logging.ERROR if o.status == "failure" else logging.INFO
            log.emit(notify_logger, level, "notification", notifier=o.notifier,
                     status=o.status, rule=n.rule, action=n.action, stage=n.message,
                     error=o.error, trace_id=n.trace_id)


class NotifySink:
    """Hands each action and output outcome to the notifiers the rule names."""

    name = "notifications"
    kinds = frozenset({ActionOutcome, OutputOutcome})

    def __init__(self, notify: Notify, default_notifiers: tuple[str, ...] = (),
                 notify_dry_run: bool = False) -> None:
        self.notify = notify
        self.default_notifiers = tuple(dict.fromkeys(default_notifiers))
        self.notify_dry_run = notify_dry_run

    def _names(self, rule: Any) -> tuple[str, ...]:
        """Who hears about `rule`'s results: the default notifiers, then the rule's own."""
        if not rule.notifiers:
            return self.default_notifiers
        return tuple(dict.fromkeys(self.default_notifiers + rule.notifiers))

    def __call__(self, o: Any) -> None:
        kind = type(o)
        if kind is ActionOutcome:
            if o.dry_run and not self.notify_dry_run:
                return
            names = self._names(o.rule)
            if names:  # a Notification is only built for someone to receive it
                self.notify(names, _action_notification(o))
        elif kind is OutputOutcome:
            names = self._names(o.rule)
            if names:
                e, action, target = o.event, o.action, o.target
                self.notify(names, Notification(
                    message="output", status=o.status, trace_id=e.trace_id, rule=o.rule.name,
                    action=action.name, actionner=action.actionner, event=e.output,
                    output_target=target, category=target.split(":", 1)[0], result=o.result,
                    error=o.error, objects=dict(o.objects), span_id=_span_id(o)))


def _action_notification(o: ActionOutcome) -> Notification:
    e, action = o.event, o.action
    return Notification(
        message="action", status=o.status, trace_id=e.trace_id, rule=o.rule.name,
        action=action.name, actionner=action.actionner, event=e.output, priority=e.priority,
        source=e.source, output=o.output, error=o.error, objects=dict(o.objects),
        span_id=_span_id(o))


def _span_id(o: ActionOutcome | OutputOutcome) -> str:
    return o.span.span_id if o.span is not None else ""
