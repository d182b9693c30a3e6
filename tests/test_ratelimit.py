"""talon.clients.ratelimit: the token bucket and the per-thread action deadline.

Time is injected (a fake clock whose `sleep` advances it), so nothing here waits.

Behaviours covered:
- `burst` requests go at once, then one every 1/qps; idle time refills up to `burst` only;
- callers arriving together are served in order (each reserves the next slot);
- a wait that would end past the deadline raises RateLimitError (an ActionError) naming
  the limit and the time left, and takes no token; a wait ending exactly at it is allowed;
- the deadline comes from the innermost `deadline_scope` of the calling thread, is restored
  when the scope ends and is not seen by other threads;
- qps <= 0 or burst < 1 is refused.
"""

from __future__ import annotations

import threading

import pytest

from talon.clients import ratelimit
from talon.errors import ActionError


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def bucket(qps: float, burst: int, t: FakeTime) -> ratelimit.TokenBucket:
    return ratelimit.TokenBucket(qps, burst, what="Kubernetes API", clock=t.clock, sleep=t.sleep)


def test_burst_then_paced() -> None:
    t = FakeTime()
    b = bucket(10, 3, t)
    waits = [round(b.acquire(), 6) for _ in range(6)]
    assert waits == [0, 0, 0, 0.1, 0.1, 0.1]
    assert t.now == pytest.approx(100.3)


def test_idle_time_refills_up_to_burst_only() -> None:
    t = FakeTime()
    b = bucket(10, 2, t)
    b.acquire()
    b.acquire()
    t.now += 60
    assert [round(b.acquire(), 6) for _ in range(3)] == [0, 0, 0.1]


def test_simultaneous_callers_reserve_successive_slots() -> None:
    t = FakeTime()
    waits: list[float] = []  # callers all arrive before any of them wakes up: no time passes
    b = ratelimit.TokenBucket(4, 1, clock=t.clock, sleep=lambda s: waits.append(round(s, 6)))
    for _ in range(4):
        b.acquire()
    assert waits == [0.25, 0.5, 0.75]


def test_wait_past_the_deadline_fails_and_takes_nothing() -> None:
    t = FakeTime()
    b = bucket(2, 1, t)
    b.acquire()
    with pytest.raises(ratelimit.RateLimitError) as caught:
        b.acquire(deadline=t.now + 0.2)
    assert isinstance(caught.value, ActionError)
    assert str(caught.value) == (
        "the Kubernetes API client rate limit (2 requests/s, burst 1) gives the next request "
        "a slot in 0.50s, after the action's deadline (0.20s left)")
    assert b.acquire(deadline=t.now + 0.5) == pytest.approx(0.5)  # exactly at it: allowed


def test_deadline_comes_from_the_threads_scope() -> None:
    t = FakeTime()
    b = bucket(1, 1, t)
    b.acquire()
    assert ratelimit.current_deadline() is None
    with ratelimit.deadline_scope(t.now + 5):
        with ratelimit.deadline_scope(t.now + 0.1), pytest.raises(ratelimit.RateLimitError):
            b.acquire()
        assert ratelimit.current_deadline() == t.now + 5
        seen: list[float | None] = []
        other = threading.Thread(target=lambda: seen.append(ratelimit.current_deadline()))
        other.start()
        other.join()
        assert seen == [None]
        assert b.acquire() == pytest.approx(1.0)
    assert ratelimit.current_deadline() is None


@pytest.mark.parametrize(("qps", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_bad_limits_are_refused(qps: float, burst: int) -> None:
    with pytest.raises(ValueError, match="qps > 0 and burst >= 1"):
        ratelimit.TokenBucket(qps, burst)
