"""Notification dispatch: a bounded queue and a small pool, so notifiers never block actions.

Layer L3. `build()` constructs each notifier a rule set or `default_notifiers` names, once,
from its `notifiers.<name>` settings; `Dispatcher.submit()` never blocks (a full queue
drops the notification, logs and counts it), and each delivery's outcome is logged and
counted per notifier and status. A notifier failing or hanging costs at most one pool
thread for its own timeout.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from talon import log, params
from talon.errors import ConfigError
from talon.metrics import Metrics
from talon.models import Delivery, Notification
from talon.registry import Registry

logger = logging.getLogger(__name__)

_STOP = object()


def build(names: Iterable[str], configured: Mapping[str, Mapping[str, Any]],
          registry: Registry, delivery: Delivery, *, clients: Any = None) -> dict[str, Any]:
    """Instantiate the named notifiers; ConfigError lists every invalid setting.

    A notifier that talks to an API Talon already has a client for (k8sevents) defines
    `bind_clients(clients)`; it receives the process's shared `talon.clients.Clients`.
    """
    from talon.notifiers import normalise as _normalise  # env values arrive as text

    built: dict[str, Any] = {}
    problems: list[str] = []
    for name in dict.fromkeys(names):
        if not registry.has("notifier", name):
            problems.append(f"notifiers: unknown notifier '{name}'")
            continue
        plugin = registry.get("notifier", name)
        if plugin.run is None:
            log.emit(logger, logging.WARNING, "init", notifier=name,
                     error="this notifier is not available in this build; skipped")
            continue
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
                 queue_size: int = 1000) -> None:
        self.notifiers = dict(notifiers)
        self.metrics = metrics
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
                continue
            try:
                self._q.put_nowait((name, notification))
            except queue.Full:
                self.metrics.child(self.metrics.notifications, name, "dropped").inc()
                log.emit(logger, logging.ERROR, "notification", notifier=name,
                         status="dropped", error="notification queue full",
                         trace_id=notification.trace_id)

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
        try:
            self.notifiers[name].send(n)
        except Exception as exc:  # noqa: BLE001 - delivery failures are logged and counted
            self.metrics.child(self.metrics.notifications, name, "failure").inc()
            log.emit(logger, logging.ERROR, "notification", notifier=name, status="failure",
                     rule=n.rule, action=n.action, stage=n.message, error=str(exc),
                     trace_id=n.trace_id)
            return
        self.metrics.child(self.metrics.notifications, name, "success").inc()
        log.emit(logger, logging.INFO, "notification", notifier=name, status="success",
                 rule=n.rule, action=n.action, stage=n.message, trace_id=n.trace_id)

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
