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
- an event that matches nothing and that Falco could not have sent (no rule, a priority
  Falco does not have) is counted by reason and logged at most once a minute per reason.
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

from talon import log, params, plan
from talon.clients import ratelimit
from talon.errors import EventError, PluginError
from talon.metrics import Metrics
from talon.models import Event, Notification, Result, Status
from talon.plugin import ActionContext, OutputContext
from talon.registry import Plugin, Registry
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


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one action ended, for the sequencing logic."""

    ok: bool
    status: str


class ActionTimeoutError(PluginError):
    """The action did not finish within its timeout."""


@dataclass(slots=True)
class _Running:
    """A plug-in call in progress on one worker thread."""

    deadline: float
    what: str
    trace_id: str
    reported: bool = False


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
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry, self.rules, self.metrics = registry, rules, metrics
        self.notify_sink, self.default_notifiers = notify, default_notifiers
        self.dedup, self.clients = dedup, clients
        self.dry_run, self.action_timeout = dry_run, action_timeout
        self.notify_dry_run = notify_dry_run
        self.print_all_events = print_all_events
        self._unusable = log.Throttle(60.0, clock)
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

    def handle(self, event: Event) -> list[tuple[str, str, str]]:
        """Process `event`; returns (rule, action, status) for each action considered."""
        ruleset = self.rules.current
        matched = ruleset.matcher.match(event)
        if not matched:
            if not event.rule or event.priority.lower() not in PRIORITIES:
                self._count_unusable(event)
            return []
        if self.dedup is not None and self.dedup.is_duplicate(event):
            self.metrics.duplicates.inc()
            log.emit(logger, logging.INFO, "event", status="duplicate", rule=event.rule,
                     output=event.output, trace_id=event.trace_id)
            return []
        if not self.print_all_events:
            log.emit(logger, logging.INFO, "event", rule=event.rule, priority=event.priority,
                     source=event.source, output=event.output, trace_id=event.trace_id)
        done: list[tuple[str, str, str]] = []
        for rule in matched:
            self._rule(event, rule, done)
            if not rule.continues:
                break
        return done

    def _count_unusable(self, event: Event) -> None:
        """Count (and now and then log) an event no Falco rule could have produced."""
        reason = "no_rule" if not event.rule else "unknown_priority"
        self.metrics.child(self.metrics.unusable, reason).inc()
        held = self._unusable.allow(reason)
        if held is not None:
            log.emit(logger, logging.WARNING, "event", status="unusable", reason=reason,
                     error="the event can match no rule: Falco events carry a rule name and "
                           "one of Falco's priorities", rule=event.rule,
                     priority=event.priority, source=event.source, output=event.output,
                     trace_id=event.trace_id, suppressed=held or None)

    def _rule(self, event: Event, rule: Rule, done: list[tuple[str, str, str]]) -> None:
        self.metrics.child(self.metrics.matches, rule.name, event.rule, event.priority,
                           event.source).inc()
        log.emit(logger, logging.INFO, "match", rule=rule.name, event=event.rule,
                 priority=event.priority, source=event.source, trace_id=event.trace_id)
        for action in rule.actions:
            outcome = self.run_action(event, rule, action)
            done.append((rule.name, action.name, outcome.status))
            if not outcome.ok and not action.ignore_errors:
                break
            if not action.continues:
                break

    # -- one action -------------------------------------------------------------------

    def run_action(self, event: Event, rule: Rule, action: Action) -> Outcome:
        """Run one action of `rule` for `event`; never raises."""
        started = time.monotonic()
        plugin = self.registry.get("actionner", action.actionner)
        step = plan.step(event, rule, action, self.registry)
        if self.dry_run or rule.dry_run:
            self._dry_run(event, rule, action, step)
            return Outcome(True, "dry_run")
        try:
            result = self._execute(event, rule, action, plugin, step)
        except KeyboardInterrupt:  # only the main thread gets one: let it stop the process
            raise
        except BaseException as exc:  # noqa: BLE001 - whatever a plug-in raises (SystemExit,
            # a BaseException subclass, RecursionError) is a failed action, not a dead worker
            result = Result(status=Status.FAILURE, error=_error_text(exc))
        self._report_action(event, rule, action, result)
        self.metrics.child(self.metrics.action_seconds, action.actionner).observe(
            time.monotonic() - started)
        ok = result.status != Status.FAILURE and not result.error
        status = str(result.status) if ok else str(Status.FAILURE)
        if ok and result.artifact is not None:
            ok = self._output_stage(event, rule, action, plugin, result)
        return Outcome(ok, status)

    def _dry_run(self, event: Event, rule: Rule, action: Action, step: plan.Step) -> None:
        """Log (and count, and with notify_dry_run notify) the action not taken."""
        namespace, pod = _target_names(event)
        shown = action.parameters_plain if step.parameters is action.parameters else \
            params.to_plain(step.parameters)
        self._log_action(event, rule, action, Status.SUCCESS, dry_run=True,
                         parameters=shown, output=DRY_RUN_OUTPUT, namespace=namespace, pod=pod)
        self.metrics.action(rule=rule.name, event=event.rule, action=action.name,
                            actionner=action.actionner, status="dry_run",
                            namespace=namespace, pod=pod)
        names = self._notifiers(rule) if self.notify_dry_run else ()
        if names:
            objects = {k: v for k, v in (("namespace", namespace), ("pod", pod)) if v}
            self.notify_sink(names, Notification(
                message="action", status="dry_run", trace_id=event.trace_id, rule=rule.name,
                action=action.name, actionner=action.actionner, event=event.output,
                priority=event.priority, source=event.source, output=DRY_RUN_OUTPUT,
                objects=objects))

    def _execute(self, event: Event, rule: Rule, action: Action, plugin: Plugin,
                 step: plan.Step) -> Result:
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
                            deadline=time.monotonic() + self.action_timeout)
        run = plugin.run

        def checked_run() -> Any:  # live checks call the API too: one timeout for both
            for check in plugin.checks:
                check(ctx)
            if time.monotonic() > ctx.deadline:  # the checks used it all: do not act late
                raise ActionTimeoutError(f"action '{action.name}' did not finish within "
                                         f"{self.action_timeout:g}s (in its checks)")
            self._log_action(event, rule, action, Status.IN_PROGRESS)
            return run(ctx)

        result = self._call(checked_run, f"action '{action.name}'", event.trace_id)
        if not isinstance(result, Result):
            raise PluginError(f"actionner '{action.actionner}' returned {type(result).__name__}")
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

    def _report_action(self, event: Event, rule: Rule, action: Action, result: Result) -> None:
        status = Status.FAILURE if result.error else result.status
        output = result.output
        if result.artifact is not None and action.output is None and not output:
            output = result.artifact.data.decode("utf-8", "replace")
        self._finish(event, rule, action, status, output=output, error=result.error,
                     objects=result.objects)

    def _finish(self, event: Event, rule: Rule, action: Action, status: Status, *,
                output: str = "", error: str = "", objects: Mapping[str, str] | None = None
                ) -> None:
        objects = dict(objects or {})
        self.metrics.action(rule=rule.name, event=event.rule, action=action.name,
                            actionner=action.actionner, status=str(status),
                            namespace=objects.get("namespace", ""), pod=objects.get("pod", ""))
        self._log_action(event, rule, action, status, output=output, error=error,
                         objects=objects)
        names = self._notifiers(rule)
        if names:  # a Notification is only built for someone to receive it
            self.notify_sink(names, Notification(
                message="action", status=str(status), trace_id=event.trace_id, rule=rule.name,
                action=action.name, actionner=action.actionner, event=event.output,
                priority=event.priority, source=event.source, output=output, error=error,
                objects=objects))

    def _log_action(self, event: Event, rule: Rule, action: Action, status: Status, *,
                    dry_run: bool = False, **fields: Any) -> None:
        level = logging.ERROR if status == Status.FAILURE else logging.INFO
        objects = fields.pop("objects", None) or {}
        log.emit(logger, level, "action", rule=rule.name, action=action.name,
                 actionner=action.actionner, status=str(status), trace_id=event.trace_id,
                 dry_run=dry_run or None, event=event.rule,
                 **{k.lower(): v for k, v in objects.items()}, **fields)

    def _notifiers(self, rule: Rule) -> tuple[str, ...]:
        """Who hears about `rule`'s results: the default notifiers, then the rule's own."""
        return tuple(dict.fromkeys(self.default_notifiers + rule.notifiers))

    # -- output stage -----------------------------------------------------------------

    def _output_stage(self, event: Event, rule: Rule, action: Action, plugin: Plugin,
                      result: Result) -> bool:
        info = plugin.info
        spec = action.output
        if spec is None or not (info.allow_output or info.require_output):
            return True
        target = spec.target
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
        self.metrics.child(self.metrics.outputs, rule.name, action.name, target,
                           str(status)).inc()
        level = logging.ERROR if status == Status.FAILURE else logging.INFO
        log.emit(logger, level, "output", rule=rule.name, action=action.name,
                 actionner=action.actionner, output_target=target, status=str(status),
                 result=stored.output, error=stored.error, trace_id=event.trace_id,
                 **{k.lower(): v for k, v in stored.objects.items()})
        names = self._notifiers(rule)
        if names:
            self.notify_sink(names, Notification(
                message="output", status=str(status), trace_id=event.trace_id, rule=rule.name,
                action=action.name, actionner=action.actionner, event=event.output,
                output_target=target, category=target.split(":", 1)[0], result=stored.output,
                error=stored.error, objects=dict(stored.objects)))
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
