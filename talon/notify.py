"""Notification dispatch: a bounded queue and a small pool, so notifiers never block actions.

Layer L3. `build()` constructs, once, each notifier a rule set or `default_notifiers` names
and each one configured in a `notifiers.<name>` section, so that a rule reload which starts
using a configured notifier delivers to it. `Dispatcher.submit()` never blocks (a full queue
drops the notification, logs and counts it); a name with no built notifier is a counted
failure, logged at most once a minute. Each delivery's outcome is one record
(talon.outcome.NotificationOutcome) handed to the reporter, whose sinks log it, count it per
notifier and status, and trace it. A notifier failing or hanging costs at most one pool
thread for its own timeout.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from talon import log, params, report
from talon.errors import ConfigError
from talon.metrics import Metrics
from talon.models import Delivery, Notification
from talon.outcome import NotificationOutcome
from talon.registry import Registry

logger = logging.getLogger(__name__)

_STOP = object()


def build(names: Iterable[str], configured: Mapping[str, Mapping[str, Any]],
          registry: Registry, delivery: Delivery, *, clients: Any = None) -> dict[str, Any]:
    """Instantiate the named notifiers and every configured one; ConfigError lists every
    invalid setting and every unknown name among `names`. A configured section of an
    unknown notifier that nothing names is only a warning (Falco Talon ignores it).

    A notifier that talks to an API Talon already has a client for (k8sevents) defines
    `bind_clients(clients)`; it receives the process's shared `talon.clients.Clients`.
    """
    from talon.notifiers import normalise as _normalise  # env values arrive as text

    built: dict[str, Any] = {}
    problems: list[str] = []
    wanted = dict.fromkeys(names)
    for name in configured:
        if name in wanted:
            continue
        if registry.has("notifier", name):
            wanted[name] = None
        else:
            log.emit(logger, logging.WARNING, "init", notifier=name,
                     error=f"notifiers.{name}: unknown notifier; section ignored")
    for name in wanted:
        if not registry.has("notifier", name):
            problems.append(f"notifiers: unknown notifier '{name}'")
            continue
        plugin = registry.get("notifier", name)
        raw = configured.get(name, {})
        settings = None
        if plugin.info.params is not None:
            settings, found = params.coerce(plugin.info.params,
                                            _normalise(plugin.info.params, raw))
            problems += [f"notifiers.{name}.{p.field}: {p.message}" for p in found
                         if p.severity == "error"]
            if settings is None:
                continue
        built[name] = plugin.run(settings, delivery)
        if clients is not None and hasattr(built[name], "bind_clients"):
            built[name].bind_clients(clients)
    if problems:
        raise ConfigError(problems)
    return built


class Dispatcher:
    """Delivers notifications on `workers` threads from a bounded queue."""

    def __init__(self, notifiers: Mapping[str, Any], *, metrics: Metrics, workers: int = 4,
                 queue_size: int = 1000, clock: Callable[[], float] = time.monotonic,
                 reporter: report.Reporter | None = None) -> None:
        """`reporter` replaces the standard log and metrics sinks built from `metrics`."""
        self.notifiers = dict(notifiers)
        self.metrics = metrics
        self.report = (reporter or report.Reporter.standard(metrics, clock=clock)).report
        self._q: queue.Queue[Any] = queue.Queue(queue_size)
        self._threads = [threading.Thread(target=self._loop, name=f"talon-notifier-{i + 1}",
                                          daemon=True) for i in range(workers)]

    def start(self) -> None:
        for name, notifier in self.notifiers.items():
            starter = getattr(notifier, "start", None)
            if starter is None:
                continue
            try:
                starter()
            except Exception as exc:  # noqa: BLE001 - a notifier's init must not stop Talon
                log.emit(logger, logging.ERROR, "init", notifier=name, error=str(exc))
        for t in self._threads:
            t.start()

    def submit(self, names: tuple[str, ...], notification: Notification) -> None:
        """Queue one delivery per configured notifier in `names`; never blocks."""
        for name in names:
            if name not in self.notifiers:
                self._not_built(name, notification)
                continue
            try:
                self._q.put_nowait((name, notification))
            except queue.Full:
                self.report(NotificationOutcome(notifier=name, status="dropped",
                                                notification=notification,
                                                error=report.QUEUE_FULL_ERROR))

    def _not_built(self, name: str, n: Notification) -> None:
        """A rule names a notifier that was not built (not configured, or it failed)."""
        self.report(NotificationOutcome(
            notifier=name, status="failure", notification=n, missing=True,
            error=f"notifier '{name}' is not configured or could not be started: "
                  f"add notifiers.{name} to the configuration and restart"))

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is _STOP:
                    return
                self._deliver(*item)
            finally:
                self._q.task_done()

    def _deliver(self, name: str, n: Notification) -> None:
        started = time.time_ns()
        try:
            self.notifiers[name].send(n)
        except Exception as exc:  # noqa: BLE001 - delivery failures are logged and counted
            self.report(NotificationOutcome(notifier=name, status="failure", notification=n,
                                            error=str(exc), started_ns=started,
                                            ended_ns=time.time_ns()))
            return
        self.report(NotificationOutcome(notifier=name, status="success", notification=n,
                                        started_ns=started, ended_ns=time.time_ns()))

    def drain(self, timeout: float) -> None:
        """Deliver what is queued (bounded by `timeout`), then stop the threads."""
        deadline = time.monotonic() + timeout
        while self._q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        for _ in self._threads:
            try:
                self._q.put(_STOP, timeout=max(0.0, deadline - time.monotonic()) or 0.1)
            except queue.Full:
                break
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
