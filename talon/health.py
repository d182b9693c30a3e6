"""Liveness of a running Talon, for the systemd watchdog.

Layer L1 (stdlib and talon.log). `Liveness` answers whether Talon still does its job:
the HTTP accept loop answers a `GET /healthz` on the bound address (a request queued
behind a stalled loop times out), and at least one worker thread is alive and not stuck
in a plug-in call past its action timeout. The watchdog pings systemd only while it
holds, so systemd restarts a Talon that is wedged, not only one that crashed.
"""

from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Callable

from talon import log

logger = logging.getLogger(__name__)

WORKER_PREFIX = "talon-worker-"
"""Name prefix of the event worker threads (talon.pool names them)."""


def live_workers(prefix: str = WORKER_PREFIX) -> int:
    """Worker threads alive in this process."""
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))


def _probe_host(host: str) -> str:
    """Where to reach a server bound to `host` (a wildcard bind answers on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104


class Liveness:
    """Callable health check: True while the accept loop answers and a worker is free."""

    def __init__(self, address: tuple[str, int], stuck: Callable[[], int], *,
                 workers: Callable[[], int] = live_workers, timeout: float = 2.0) -> None:
        self.host, self.port = _probe_host(address[0]), address[1]
        self.stuck, self.workers, self.timeout = stuck, workers, timeout

    def __call__(self) -> bool:
        why = self._http() or self._pool()
        if why:
            log.emit(logger, logging.WARNING, "health", error=why)
        return not why

    def _http(self) -> str:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", "/healthz")
            conn.getresponse().read()
        except (OSError, http.client.HTTPException) as exc:
            return f"the HTTP listener does not answer: {exc or type(exc).__name__}"
        finally:
            conn.close()
        return ""

    def _pool(self) -> str:
        alive, stuck = self.workers(), self.stuck()
        if alive - stuck < 1:
            return (f"no worker free: {alive} alive, {stuck} stuck past the action "
                    "timeout")
        return ""
