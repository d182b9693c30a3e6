"""The engine: match an event, then run each matching rule's actions in order.

Layer L3. For each event: snapshot the rule set, match, drop duplicates, then per rule and
per action: context → required fields → live checks → run (with a timeout) → output →
metrics, logs and notifications. Semantics (the Go version's, bugs fixed):
- an action's `continue` (explicit, else the actionner's default) false ends the rule;
- a failed action ends the rule unless `ignore_errors: true` (which never changes
  `continue`); a rule's `continue: false` stops later rules;
- `dry_run` (rule or global) logs the action with its final parameters and calls nothing;
  with `notify_dry_run` its notification goes out too, with status `dry_run`;
- a failure is always logged, counted and notified; `ignored` stays `ignored`;
- a transient failure is retried when the action sets `retries` (talon.retry); one that
  still fails is handed to `dead_letter` (the journal records it);
- an event that matches nothing and that Falco could not have sent (no rule, a priority
  Falco does not have) is counted by reason and logged at most once a minute per reason.
Each stage's outcome is one frozen record (talon.outcome) handed to one talon.report
Reporter, whose sinks log, count, notify and trace it; the engine itself only decides.
The only broad `except` around plug-in calls lives here.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from talon import log, params, plan, report, retry
from talon.clients import ratelimit
from talon.errors import CheckFailedError, EventError, PluginError
from talon.metrics import Metrics
from talon.models import Event, Notification, Result, Status, Verdict
from talon.outcome import (
    DONE,
    DRY_RUN,
    DUPLICATE,
    RECEIVED,
    UNUSABLE,
    ActionOutcome,
    ActionStarted,
    EventOutcome,
    MatchOutcome,
    OutputOutcome,
    Span,
)
from talon.plugin import ActionContext, OutputContext
from talon.registry import Plugin, PluginInfo, Registry
from talon.rules.matching import PRIORITIES
from talon.rules.model import Action, Rule, RuleSet

logger = logging.getLogger(__name__)

Notify = Callable[[tuple[str, ...], Notification], None]

DRY_RUN_OUTPUT = "no action, dry-run is enabled"
"""The output of a dry-run action, in its log line and its notification (as upstream logs)."""


class RuleSource(Protocol):
    """Anything with a `current` RuleSet (swapped atomically on reload)."""

    current: RuleSet


class DuplicateFilter(Protocol):
    """Anything that says whether an event repeats a recent one (talon.dedup.Deduplicator;
    a protocol because the engine, L3, does not import L4 modules)."""

    def is_duplicate(self, event: Event) -> bool: ...


class Gate(Protocol):
    """Decides, just before a disruptive action's checks, whether it runs as asked
    (talon.governor.Governor: budgets and protected workloads); None means run."""

    def decide(self, event: Event, rule: Rule, action: Action, info: PluginInfo,
               cache: dict[tuple[str, ...], Any]) -> Verdict | None: ...
    """`cache` becomes the action's `ActionContext.cache`: an object the gate reads
    there (the pod) is not read again by the action's checks and run."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one action ended, for the sequencing logic."""

    ok: bool
    status: str


class ActionTimeoutError(PluginError):
    """The action did not finish within its timeout."""

    transient = False  # its whole time is spent: no attempt could fit


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """An action that failed for good (after its retries): a dead letter to record."""

    event: Event
    rule: Rule
    action: Action
    parameters: Any
    error: str
    attempts: int


DeadLetter = Callable[[Failure], None]


@dataclass(slots=True)
class _Running:
    """A plug-in call in progress on one worker thread."""

    deadline: float
    what: str
    trace_id: str
    reported: bool = False


def _usable(event: Event) -> bool:
    """Whether an event can be matched at all: it names its Falco rule and a known
    priority (else it is counted and logged as unusable)."""
    return bool(event.rule) and event.priority.lower() in PRIORITIES


def _missing_fields(event: Event, required: tuple[str, ...]) -> list[str]:
    missing = []
    for spec in required:
        names = spec.split("|")
        if not any(event.field_text(n) not in (None, "", "<nil>") for n in names):
            missing.append(" or ".join(names))
    return missing


class Engine:
    """Handles one event at a time per call; safe to call from many worker threads."""

    def __init__(self, *, registry: Registry, rules: RuleSource, metrics: Metrics,
                 notify: Notify, default_notifiers: tuple[str, ...] = (),
                 dedup: DuplicateFilter | None = None, clients: Any = None,
                 dry_run: bool = False, notify_dry_run: bool = False,
                 action_timeout: float = 120.0, print_all_events: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 reporter: report.Reporter | None = None, gate: Gate | None = None,
                 dead_letter: DeadLetter | None = None) -> None:
        """`reporter` replaces the standard sinks built from `metrics`, `notify`,
        `default_notifiers`, `notify_dry_run` and `print_all_events` (app builds one
        reporter, with its span sink, for the engine and the notification dispatcher)."""
        self.registry, self.rules, self.metrics = registry, rules, metrics
        self.dedup, self.clients = dedup, clients
        self.dry_run, self.action_timeout = dry_run, action_timeout
        self.reporter = reporter or report.Reporter.standard(
            metrics, notify=notify, default_notifiers=default_notifiers,
            notify_dry_run=notify_dry_run, print_all_events=print_all_events, clock=clock)
        self.report = self.reporter.report
        self.gate = gate
        self.dead_letter = dead_letter
        self._lock = threading.Lock()
        self._running: dict[int, _Running] = {}
        self._retired: set[int] = set()
        self._paced = bool(getattr(clients, "rate_limited", False))

    # -- timeouts ---------------------------------------------------------------------

    def _call(self, func: Callable[[], Any], what: str, trace_id: str) -> Any:
        """Run a plug-in call inline; an overrun of `action_timeout` is a failure.

        Calls run on the worker thread itself (a thread per call costs two GIL hand-offs
        and tens of milliseconds at p99 under load). A call still running past its
        deadline is reported by `overdue()`, so the pool can replace the worker while it
        is stuck; when the call returns, its result is discarded as a timeout.
        """
        ident = threading.get_ident()
        started = time.monotonic()
        with self._lock:
            self._running[ident] = _Running(started + self.action_timeout, what, trace_id)
        try:
            value = self._invoke(func, started + self.action_timeout)
        except BaseException as exc:
            self._check_overrun(ident, started, what, exc)
            raise
        self._check_overrun(ident, started, what, None)
        return value

    def _invoke(self, func: Callable[[], Any], deadline: float) -> Any:
        """`func()`; with a client rate limit, its waits are bounded by `deadline`."""
        if not self._paced:
            return func()
        with ratelimit.deadline_scope(deadline):
            return func()

    def _check_overrun(self, ident: int, started: float, what: str,
                       exc: BaseException | None) -> None:
        """Forget the call; an overrun is a timeout, whatever the call returned or raised."""
        with self._lock:
            self._running.pop(ident, None)
        if time.monotonic() - started > self.action_timeout:
            raise ActionTimeoutError(
                f"{what} did not finish within {self.action_timeout:g}s") from exc

    def overdue(self) -> list[int]:
        """Worker threads stuck in a plug-in call past its deadline (each reported once)."""
        now, found = time.monotonic(), []
        with self._lock:
            for ident, running in self._running.items():
                if not running.reported and now > running.deadline:
                    running.reported = True
                    self._retired.add(ident)
                    found.append(ident)
                    log.emit(logger, logging.ERROR, "action", status="timeout",
                             error=f"{running.what} did not finish within "
                                   f"{self.action_timeout:g}s: a new worker takes over",
                             trace_id=running.trace_id)
        if found:
            self.metrics.overdue.inc(len(found))
        return found

    def stuck(self) -> int:
        """Worker threads in a plug-in call past its deadline now (replaced or not)."""
        now = time.monotonic()
        with self._lock:
            return sum(1 for running in self._running.values() if now > running.deadline)

    def retire(self, ident: int) -> bool:
        """Whether the worker `ident` was replaced and should exit once free."""
        with self._lock:
            if ident in self._retired and ident not in self._running:
                self._retired.discard(ident)
                return True
            return False

    def settled(self, event: Event) -> bool:
        """True when `handle(event)` would do nothing: a usable event no rule matches (in
        the rules in force now). The journal commits such an event done at once."""
        return _usable(event) and not self.rules.current.matcher.match(event)

    def handle(self, event: Event) -> list[tuple[str, str, str]]:
        """Process `event`; returns (rule, action, status) for each action considered."""
        ruleset = self.rules.current
        matched = ruleset.matcher.match(event)
        if not matched:
            if not _usable(event):
                reason = "no_rule" if not event.rule else "unknown_priority"
                self.report(EventOutcome(event=event, status=UNUSABLE, reason=reason))
            return []
        if self.dedup is not None and self.dedup.is_duplicate(event):
            self.report(EventOutcome(event=event, status=DUPLICATE))
            return []
        started, span = time.time_ns(), self.reporter.span_id()
        self.report(EventOutcome(event=event, status=RECEIVED))
        done: list[tuple[str, str, str]] = []
        for rule in matched:
            self._rule(event, rule, done, span)
            if not rule.continues:
                break
        self.report(EventOutcome(event=event, status=DONE, span=Span(
            span, event.parent_span_id, started, time.time_ns()) if span else None))
        return done

    def _rule(self, event: Event, rule: Rule, done: list[tuple[str, str, str]],
              parent: str = "") -> None:
        span = self.reporter.span_id()
        at = time.time_ns() if span else 0
        self.report(MatchOutcome(event=event, rule=rule,
                                 span=Span(span, parent, at, at) if span else None))
        for action in rule.actions:
            outcome = self.run_action(event, rule, action, span)
            done.append((rule.name, action.name, outcome.status))
            if not outcome.ok and not action.ignore_errors:
                break
            if not action.continues:
                break

    # -- one action -------------------------------------------------------------------

    def run_action(self, event: Event, rule: Rule, action: Action,
                   parent: str = "") -> Outcome:
        """Run one action of `rule` for `event` (`parent`: the match's span); never raises."""
        started, started_ns = time.monotonic(), time.time_ns()
        span = self.reporter.span_id()
        if self.dry_run or rule.dry_run:  # only the final parameters are needed
            return self._not_run(event, rule, action,
                                 plan.parameters(event, rule, action, self.registry),
                                 DRY_RUN, DRY_RUN_OUTPUT, (span, parent, started_ns))
        plugin = self.registry.get("actionner", action.actionner)
        step = plan.step(event, rule, action, self.registry)
        # The governor's hook: a disruptive action may be held here (throttled, protected)
        # or turned to dry-run, before its checks and run.
        reads: dict[tuple[str, ...], Any] = {}
        verdict = (self.gate.decide(event, rule, action, plugin.info, reads)
                   if self.gate else None)
        if verdict is not None:
            output = DRY_RUN_OUTPUT if verdict.status == DRY_RUN else verdict.reason
            return self._not_run(event, rule, action, step.parameters, verdict.status,
                                 output, (span, parent, started_ns))
        result, attempts = self._attempts(event, rule, action, plugin, step, started, reads)
        ok = result.status != Status.FAILURE and not result.error
        if not ok and self.dead_letter is not None:
            self.dead_letter(Failure(event=event, rule=rule, action=action,
                                     parameters=params.to_plain(step.parameters),
                                     error=result.error or "failed", attempts=attempts))
        self._report_action(event, rule, action, result, seconds=time.monotonic() - started,
                            span=(span, parent, started_ns), parameters=step.parameters)
        status = str(result.status) if ok else str(Status.FAILURE)
        if ok and result.artifact is not None:
            ok = self._output_stage(event, rule, action, plugin, result, span)
        return Outcome(ok, status)

    def _attempts(self, event: Event, rule: Rule, action: Action, plugin: Plugin,
                  step: plan.Step, started: float,
                  reads: dict[tuple[str, ...], Any]) -> tuple[Result, int]:
        """Run the action; after a transient failure (talon.retry), again, up to
        `action.retries` more times, waiting with backoff and full jitter, never starting
        an attempt or a wait that would end past the action timeout. The worker waits,
        so later events for the same pod keep their order; other pods' events run on
        the other workers. (result, attempts made)."""
        deadline = started + self.action_timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                # the first attempt starts from what the gate read; a retry reads afresh
                failed = self._execute(event, rule, action, plugin, step,
                                       reads if attempt == 1 else {})
                cause = failed.cause
                if failed.status != Status.FAILURE and not failed.error:
                    return failed, attempt
            except KeyboardInterrupt:  # only the main thread gets one: let it stop the process
                raise
            except BaseException as exc:  # noqa: BLE001 - whatever a plug-in raises (SystemExit,
                # a BaseException subclass, RecursionError) is a failed action, not a dead worker
                failed, cause = Result(status=Status.FAILURE, error=_error_text(exc)), exc
            wait = retry.delay(attempt, action.retry_backoff_seconds)
            if attempt > action.retries or not retry.is_transient(cause) \
                    or time.monotonic() + wait >= deadline:
                return failed, attempt
            self.metrics.child(self.metrics.retries, action.actionner).inc()
            log.emit(logger, logging.WARNING, "action", rule=rule.name, action=action.name,
                     actionner=action.actionner, status="retry", error=failed.error,
                     attempt=attempt, retry_in=f"{wait:.3f}s", trace_id=event.trace_id)
            time.sleep(wait)

    def _not_run(self, event: Event, rule: Rule, action: Action,
                 parameters: Mapping[str, Any], status: str, output: str,
                 span: tuple[str, str, int]) -> Outcome:
        """Report an action that did not run: a dry run, or held by the governor
        (`throttled`, `protected`); either counts as done for the rule's sequencing."""
        namespace, pod = _target_names(event)
        span_id, parent, started_ns = span
        self.report(ActionOutcome(
            event=event, rule=rule, action=action, status=status, output=output,
            objects={k: v for k, v in (("namespace", namespace), ("pod", pod)) if v},
            parameters=action.parameters_plain if parameters is action.parameters
            else params.to_plain(parameters),
            span=Span(span_id, parent, started_ns, time.time_ns()) if span_id else None))
        return Outcome(True, status)

    def _execute(self, event: Event, rule: Rule, action: Action, plugin: Plugin,
                 step: plan.Step, reads: dict[tuple[str, ...], Any] | None = None) -> Result:
        info = plugin.info
        missing = _missing_fields(event, info.required_fields)
        if missing:
            raise PluginError(f"missing required field(s) in the event: {', '.join(missing)}")
        extra = self._contexts(event, rule, action, step) if info.use_context else {}
        if extra:
            step = plan.step(event, rule, action, self.registry, extra_context=extra)
        value, problems = action.params, list[params.ParamProblem]()
        if info.params and step.parameters is not action.parameters:  # substituted: re-check
            value, problems = params.coerce(info.params, step.parameters)
        if info.params and value is None:
            raise PluginError("invalid parameters after substitution: " + "; ".join(
                f"{p.field}: {p.message}" for p in problems if p.severity == "error"))
        ctx = ActionContext(event=event, rule=rule, action=action, params=value,
                            context=step.context, env=step.env, clients=self.clients,
                            deadline=time.monotonic() + self.action_timeout,
                            cache=reads if reads is not None else {})
        run = plugin.run
        started = ActionStarted(event=event, rule=rule, action=action)

        def checked_run() -> Any:  # live checks call the API too: one timeout for both
            for check in plugin.checks:
                check(ctx)
            if time.monotonic() > ctx.deadline:  # the checks used it all: do not act late
                raise ActionTimeoutError(f"action '{action.name}' did not finish within "
                                         f"{self.action_timeout:g}s (in its checks)")
            if info.checked_by_run:
                return self._run_then_started(run, ctx, started)
            self.report(started)
            return run(ctx)

        result = self._call(checked_run, f"action '{action.name}'", event.trace_id)
        if not isinstance(result, Result):
            raise PluginError(f"actionner '{action.actionner}' returned {type(result).__name__}")
        return result

    def _run_then_started(self, run: Callable[[ActionContext], Any], ctx: ActionContext,
                          started: ActionStarted) -> Any:
        """`run(ctx)` of an actionner whose run makes its check (PluginInfo.checked_by_run):
        `started` is reported after it, unless it raised CheckFailedError."""
        try:
            result = run(ctx)
        except CheckFailedError:
            raise
        except BaseException:
            self.report(started)
            raise
        self.report(started)
        return result

    def _contexts(self, event: Event, rule: Rule, action: Action,
                  step: plan.Step) -> dict[str, str]:
        found: dict[str, str] = {}
        for name in action.additional_contexts:
            plugin = self.registry.get("context", name)
            ctx = ActionContext(event=event, rule=rule, action=action, params=None,
                                context=step.context, env=step.env, clients=self.clients,
                                deadline=time.monotonic() + self.action_timeout)
            try:
                values = self._call(functools.partial(plugin.run, ctx), f"context '{name}'",
                                    event.trace_id)
                found.update({k: str(v) for k, v in dict(values or {}).items() if v})
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # any context failure, as for actions
                if not action.ignore_errors:
                    raise PluginError(f"context '{name}': {_error_text(exc)}") from exc
                log.emit(logger, logging.WARNING, "context", rule=rule.name, action=action.name,
                         context=name, error=_error_text(exc), trace_id=event.trace_id)
        return found

    def _report_action(self, event: Event, rule: Rule, action: Action, result: Result, *,
                       seconds: float, span: tuple[str, str, int],
                       parameters: Mapping[str, Any] | None = None) -> None:
        status = Status.FAILURE if result.error else result.status
        output = result.output
        if result.artifact is not None and action.output is None and not output:
            output = result.artifact.data.decode("utf-8", "replace")
        span_id, parent, started_ns = span
        self.report(ActionOutcome(
            event=event, rule=rule, action=action, status=str(status), output=output,
            error=result.error, objects=dict(result.objects), seconds=seconds,
            parameters=parameters,
            span=Span(span_id, parent, started_ns, time.time_ns()) if span_id else None))

    # -- output stage -----------------------------------------------------------------

    def _output_stage(self, event: Event, rule: Rule, action: Action, plugin: Plugin,
                      result: Result, parent: str = "") -> bool:
        info = plugin.info
        spec = action.output
        if spec is None or not (info.allow_output or info.require_output):
            return True
        target, started_ns = spec.target, time.time_ns()
        try:
            artifact = result.artifact
            if artifact is None or not artifact.data:
                raise PluginError("empty output")
            out_plugin = self.registry.get("output", target)
            ctx = OutputContext(event=event, rule=rule, action=action, params=spec.params,
                                objects=result.objects, clients=self.clients,
                                deadline=time.monotonic() + self.action_timeout)
            checks, run = out_plugin.checks, out_plugin.run

            def checked_store() -> Any:
                for check in checks:
                    check(ctx)
                return run(ctx, artifact)

            stored = self._call(checked_store, f"output '{target}'", event.trace_id)
            if not isinstance(stored, Result):
                raise PluginError(f"output '{target}' returned {type(stored).__name__}")
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - an output failure is an ordinary failure
            stored = Result(status=Status.FAILURE, error=_error_text(exc))
        status = Status.FAILURE if stored.error else stored.status
        span = self.reporter.span_id()
        self.report(OutputOutcome(
            event=event, rule=rule, action=action, target=target, status=str(status),
            result=stored.output, error=stored.error, objects=stored.objects,
            span=Span(span, parent, started_ns, time.time_ns()) if span else None))
        return status != Status.FAILURE


def _target_names(event: Event) -> tuple[str, str]:
    """(namespace, pod) of the event for logs and metrics; empty when not strings."""
    try:
        return event.namespace(), event.pod_name()
    except EventError:
        return "", ""


def _error_text(exc: BaseException) -> str:
    """The error text of a failed step; never raises, even when `str(exc)` does."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a plug-in's exception whose __str__ fails
        text = ""
    if isinstance(exc, EventError):
        return f"invalid event: {text}"
    if isinstance(exc, PluginError) or not text:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, OSError) else text
