"""systemd's notify protocol: readiness, reload and stop notices, and the watchdog.

Layer L0: stdlib only. `notify("READY=1")` sends one datagram to `$NOTIFY_SOCKET` (a
path, or `@name` for an abstract socket) and is a no-op returning False when Talon does
not run under a Type=notify unit. `Watchdog` pings `WATCHDOG=1` every half
`$WATCHDOG_USEC` from the thread `talon-watchdog`. The environment is only read (and can
be passed in, for tests); it is never modified.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)


def _log(level: int, error: str) -> None:
    """Log in talon.log's structured shape without importing it (this module is stdlib only)."""
    fields: dict[str, Any] = {"error": error}
    logger.log(level, "sdnotify", extra={"fields": fields})

READY = "READY=1"
STOPPING = "STOPPING=1"
WATCHDOG = "WATCHDOG=1"


def reloading() -> str:
    """The RELOADING=1 notice, with the timestamp systemd ≥ 253 expects."""
    return f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}"


def _address(env: Mapping[str, str]) -> str | None:
    value = env.get("NOTIFY_SOCKET", "")
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # unset, or a kind of socket (vsock) this module does not speak


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `message` to systemd; True when it was sent, False when unset or failing."""
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        _log(logging.DEBUG, f"cannot notify systemd: {exc}")
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when no watchdog is asked.

    A WATCHDOG_PID naming another process means the watchdog is not ours.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2_000_000


class Watchdog:
    """Pings systemd's watchdog while `healthy()` holds; does nothing when not asked."""

    def __init__(self, env: Mapping[str, str] | None = None, *,
                 healthy: Callable[[], bool] = lambda: True) -> None:
        self._env = dict(os.environ if env is None else env)
        self._interval = watchdog_interval(self._env)
        self._healthy = healthy
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def interval(self) -> float | None:
        """Seconds between pings; None when systemd asked for no watchdog."""
        return self._interval

    def start(self) -> None:
        """Start pinging (first ping at once) in the daemon thread `talon-watchdog`."""
        if self._interval is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="talon-watchdog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop pinging and wait for the thread (bounded by `timeout`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        interval = self._interval or 1.0
        while True:
            try:
                if self._healthy():
                    notify(WATCHDOG, self._env)
                else:
                    _log(logging.WARNING, "unhealthy: watchdog ping skipped")
            except Exception as exc:  # noqa: BLE001 - background loop: never die silently
                _log(logging.ERROR, f"watchdog: {exc}")
            if self._stop.wait(interval):
                return
