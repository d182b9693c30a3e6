"""Liveness of a running Talon, for the systemd watchdog.

Layer L1 (stdlib and talon.log). `Liveness` answers whether Talon still does its job:
the HTTP accept loop is serving and has polled recently (its heartbeat, recorded by
talon.server on every poll, is younger than `max_age`), and at least one worker thread
is alive and not stuck in a plug-in call past its action timeout. The check reads that
heartbeat rather than connecting to Talon, so it holds with TLS on and takes no
connection slot. The watchdog pings systemd only while it holds, so systemd restarts a
Talon that is wedged, not only one that crashed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from talon import log

logger = logging.getLogger(__name__)

WORKER_PREFIX = "talon-worker-"
"""Name prefix of the event worker threads (talon.pool names them)."""


class Listener(Protocol):
    """What the check reads from the HTTP listener (talon.server.IngestServer)."""

    @property
    def last_loop(self) -> float | None:
        """time.monotonic() of the accept loop's last poll; None when not serving."""
        ...


def live_workers(prefix: str = WORKER_PREFIX) -> int:
    """Worker threads alive in this process."""
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))


class Liveness:
    """Callable health check: True while the accept loop polls and a worker is free."""

    def __init__(self, listener: Listener, stuck: Callable[[], int], *,
                 workers: Callable[[], int] = live_workers, max_age: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.listener, self.stuck, self.workers = listener, stuck, workers
        self.max_age, self.clock = max_age, clock

    def __call__(self) -> bool:
        why = self._loop() or self._pool()
        if why:
            log.emit(logger, logging.WARNING, "health", error=why)
        return not why

    def _loop(self) -> str:
        last = self.listener.last_loop
        if last is None:
            return "the HTTP accept loop is not running"
        age = self.clock() - last
        if age > self.max_age:
            return f"the HTTP accept loop has not polled for {age:.1f} s"
        return ""

    def _pool(self) -> str:
        alive, stuck = self.workers(), self.stuck()
        if alive - stuck < 1:
            return (f"no worker free: {alive} alive, {stuck} stuck past the action "
                    "timeout")
        return ""
