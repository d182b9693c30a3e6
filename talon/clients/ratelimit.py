"""Client-side rate limit of API requests: a token bucket shared by the worker threads.

Layer L1 (stdlib and talon.errors only). `TokenBucket(qps, burst)` hands out one token per
request; tokens refill at `qps` per second up to `burst`. A request that finds no token
reserves the next one and waits for it (as Go's `rate.Limiter.Wait`), so concurrent callers
are served in arrival order and the rate holds whatever the number of threads.

The wait counts against the deadline of the action running on the calling thread: the
engine sets it with `deadline_scope(deadline)` around each plug-in call, and a wait that
would end past it fails at once with `RateLimitError` (the token is not taken).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from talon.errors import ActionError

_local = threading.local()


class RateLimitError(ActionError):
    """No request slot under the client rate limit before the action's deadline."""


class deadline_scope:  # lower case: used like a function, `with deadline_scope(t):`
    """Requests made by this thread inside the block must start by `deadline`
    (a `time.monotonic()` value); scopes nest, the inner one wins until it ends.
    A class rather than a generator: it runs around every plug-in call."""

    __slots__ = ("_deadline", "_outer")

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline
        self._outer: float | None = None

    def __enter__(self) -> None:
        self._outer = getattr(_local, "deadline", None)
        _local.deadline = self._deadline

    def __exit__(self, *exc: object) -> None:
        _local.deadline = self._outer


def current_deadline() -> float | None:
    """The deadline set by the innermost `deadline_scope` of this thread, if any."""
    deadline: float | None = getattr(_local, "deadline", None)
    return deadline


class TokenBucket:
    """`qps` requests per second on average, at most `burst` at once; thread-safe."""

    def __init__(self, qps: float, burst: int, *, what: str = "API",
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("a token bucket needs qps > 0 and burst >= 1")
        self.qps, self.burst, self.what = qps, burst, what
        self._clock, self._sleep = clock, sleep
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self, deadline: float | None = None) -> float:
        """Take a token, waiting for it when none is left; returns the seconds waited.

        RateLimitError (nothing taken) when the token would come after `deadline`
        (default: the thread's `current_deadline()`).
        """
        if deadline is None:
            deadline = current_deadline()
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.qps)
            self._stamp = now
            wait = 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.qps
            if deadline is not None and now + wait > deadline:
                raise RateLimitError(
                    f"the {self.what} client rate limit ({self.qps:g} requests/s, burst "
                    f"{self.burst}) gives the next request a slot in {wait:.2f}s, after the "
                    f"action's deadline ({max(0.0, deadline - now):.2f}s left)")
            self._tokens -= 1.0
        if wait > 0:
            self._sleep(wait)
        return wait
