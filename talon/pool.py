"""The bounded event queue and the worker pool that drains it.

Layer L4: stdlib plus talon.log and talon.metrics. The HTTP handler `put`s events (never
blocking: a full queue is a 503); N named workers `take` them and call the engine. Events
for the same pod are handed to the worker already busy with that pod, so they run in
arrival order, while events for other pods go on in parallel: a 10-second capture never
delays another pod's response. An event held back behind its pod's earlier one still
counts against the queue's bounds (`queue_size` events, `queue_max_bytes` bytes) until a
worker starts it, so one busy pod cannot make the queue grow past them. The queue sits
behind a small interface (put / take / release / done / close) so that a durable journal
can replace the in-memory one. At a drain deadline, every event not started is logged
(one line each, up to a cap) and counted as dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from talon import errors, log
from talon.errors import EventError
from talon.metrics import Metrics
from talon.models import Event

logger = logging.getLogger(__name__)

LOGGED_AT_SHUTDOWN = 200
"""Most events named one line each when the drain deadline passes (the rest are counted)."""


@dataclass(frozen=True, slots=True)
class Item:
    """One accepted event and its size in bytes (its request body); a durable queue may
    subclass it to carry its own record id."""

    event: Event
    size: int = 0


class EventQueue(Protocol):
    """What the pool needs from a queue. An item counts against the queue's bounds from
    `put` until `release` (a worker started it, or gave it up); `done` acknowledges a
    processed item; `close` ends `take` and returns the items never taken."""

    def put(self, event: Event, size: int = 0) -> bool: ...
    def take(self, timeout: float) -> Item | None: ...
    def release(self, item: Item) -> None: ...
    def done(self, item: Item) -> None: ...
    def depth(self) -> int: ...
    def close(self) -> list[Item]: ...


T = TypeVar("T")


def never_settled(_event: Event) -> bool:
    """The default `settled`: every event goes to a worker."""
    return False


class WaitingItems(Generic[T]):
    """What the queues share: the taking side (`_items` under `_cond`, until `_closed`),
    and `settled`, whether an event needs no worker (the app sets `Engine.settled`)."""

    _items: deque[T]
    _cond: threading.Condition
    _closed: bool
    settled: Callable[[Event], bool]

    def _settled(self, event: Event) -> bool:
        try:
            return self.settled(event)
        except Exception:  # noqa: BLE001 - hostile event data: a worker handles (and logs) it
            return False

    def take(self, timeout: float) -> T | None:
        """The oldest item, waiting up to `timeout`; None when closed or still empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._closed or not self._items:
                return None
            return self._items.popleft()


class MemoryQueue(WaitingItems[Item]):
    """A queue bounded in events and in bytes: `put` returns False instead of blocking.

    An event `settled` says needs no worker (no rule matches it: the app sets
    `Engine.settled`) is accepted without being queued, so the most common event costs
    no worker hand-off and never takes a place that an event to act on needs."""

    def __init__(self, maxsize: int, max_bytes: int = 256 << 20) -> None:
        self._items: deque[Item] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._maxsize, self._max_bytes = maxsize, max_bytes
        self._held = 0
        self._bytes = 0
        self._closed = False
        self.settled = never_settled

    def put(self, event: Event, size: int = 0) -> bool:
        if not self._closed and self._settled(event):
            return True
        with self._cond:
            if (self._closed or self._held >= self._maxsize
                    or self._bytes + size > self._max_bytes):
                return False
            self._held += 1
            self._bytes += size
            self._items.append(Item(event, size))
            self._cond.notify()
        return True

    def release(self, item: Item) -> None:
        with self._cond:
            self._held -= 1
            self._bytes -= item.size

    def done(self, item: Item) -> None:
        """Nothing to acknowledge: the memory went with `release`."""

    def depth(self) -> int:
        """Events accepted and not started: queued, or held behind their pod."""
        return self._held

    def bytes_held(self) -> int:
        """Bytes of the events `depth` counts."""
        return self._bytes

    def close(self) -> list[Item]:
        """Refuse every later `put`, wake the takers; the items never taken."""
        with self._cond:
            self._closed = True
            left = list(self._items)
            self._items.clear()
            self._held -= len(left)
            self._bytes -= sum(i.size for i in left)
            self._cond.notify_all()
        return left


def pod_key(event: Event) -> str:
    """Events with the same key run in order; events without a pod (or with a pod field
    that is not a string: their actions fail) are independent."""
    try:
        pod = event.pod_name()
        return f"{event.namespace()}/{pod}" if pod else ""
    except EventError:
        return ""


class WorkerPool:
    """N worker threads draining `source`, calling `handle(item)` for each item."""

    def __init__(self, source: EventQueue, handle: Callable[[Item], object], *, workers: int,
                 key: Callable[[Event], str] = pod_key,
                 overdue: Callable[[], list[int]] | None = None,
                 retire: Callable[[int], bool] | None = None,
                 metrics: Metrics | None = None) -> None:
        self._source, self._handle, self._key = source, handle, key
        self._size = workers
        self._lock = threading.Lock()
        self._active: dict[str, deque[Item]] = {}
        self._running: dict[int, Item] = {}
        self._in_flight = 0
        self._overdue = overdue or (list)
        self._retire = retire or (lambda _ident: False)
        self._metrics = metrics
        self._logged = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for _ in range(self._size):
            self._add_worker()
        threading.Thread(target=self._watch, name="talon-pool-watchdog", daemon=True).start()

    def _add_worker(self) -> None:
        t = threading.Thread(target=self._loop, name=f"talon-worker-{len(self._threads) + 1}",
                             daemon=True)
        self._threads.append(t)
        t.start()

    def _watch(self) -> None:
        """Replace each worker stuck past its action timeout, so capacity never shrinks."""
        while not self._stop.wait(0.25):
            for _ident in self._overdue():
                self._add_worker()

    def _loop(self) -> None:
        me = threading.get_ident()
        while not self._stop.is_set():
            if self._retire(me):
                return
            item = self._source.take(timeout=0.2)
            if item is None:
                continue
            key = self._key_of(item)
            with self._lock:
                late = self._stop.is_set()  # taken just as the drain deadline passed
                held = not late and bool(key) and key in self._active
                if held:
                    self._active[key].append(item)  # the worker owning this pod runs it next
                elif not late:
                    if key:
                        self._active[key] = deque()
                    self._running[me] = item
                if not late:
                    self._in_flight += 1
            if late:  # logged outside the lock: workers never wait on log I/O
                self._source.release(item)
                self._give_up([item], [])
                return
            if held:
                continue
            try:
                self._run_key(me, key, item)
            except Exception as exc:  # noqa: BLE001 - e.g. the queue failed to acknowledge
                log.emit(logger, logging.ERROR, "event", status="failure",
                         error=f"worker error: {errors.describe(exc)}")

    def _key_of(self, item: Item) -> str:
        try:
            return self._key(item.event)
        except Exception:  # noqa: BLE001 - no ordering key: the event runs on its own
            return ""

    def _run_key(self, me: int, key: str, item: Item | None) -> None:
        """Run `item`, then every item queued behind it for the same pod; the key is
        released in all cases, so a pod is never left waiting on a worker that failed."""
        try:
            while item is not None:
                self._run(item)
                item = self._next(me, key)
        finally:
            if item is not None:
                self._abandon(me, key, item)

    def _next(self, me: int, key: str) -> Item | None:
        """Count the item just run as done; the next one held for the same pod, if any."""
        with self._lock:
            self._in_flight -= 1
            self._running.pop(me, None)
            pending = self._active.get(key) if key else None
            if pending:
                item = self._running[me] = pending.popleft()
                return item
            if key:
                del self._active[key]
            return None

    def _abandon(self, me: int, key: str, item: Item) -> None:
        """After an unexpected failure running `item`: free the key; the items still
        waiting for that pod are lost (logged), so that drain() does not wait forever."""
        with self._lock:
            self._running.pop(me, None)
            lost = [item, *self._active.pop(key, ())] if key else [item]
            self._in_flight -= len(lost)
        for dropped in lost[1:]:
            self._source.release(dropped)
            log.emit(logger, logging.ERROR, "event", status="dropped",
                     error="the worker handling this pod failed",
                     trace_id=dropped.event.trace_id)

    def busy(self) -> int:
        """Workers handling an event now (read by the metrics gauge when scraped)."""
        return len(self._running)

    def backlog(self) -> int:
        """Events held behind an earlier event for the same pod."""
        with self._lock:
            return sum(len(pending) for pending in self._active.values())

    def _run(self, item: Item) -> None:
        self._source.release(item)
        try:
            self._handle(item)
        except BaseException as exc:  # noqa: BLE001 - boundary: the worker outlives any event
            log.emit(logger, logging.ERROR, "event", status="failure",
                     error=f"event handling failed: {errors.describe(exc)}",
                     trace_id=item.event.trace_id)
        finally:
            self._source.done(item)

    def idle(self) -> bool:
        """No item waiting in the queue and none being handled."""
        with self._lock:
            return self._in_flight == 0 and self._source.depth() == 0

    def drain(self, timeout: float) -> bool:
        """Wait until every accepted item is handled (or `timeout`); then stop the workers.

        Past `timeout`, the items not started are given up: each is logged (up to
        LOGGED_AT_SHUTDOWN lines) and counted as dropped; the ones running are logged.
        """
        deadline = time.monotonic() + timeout
        while not self.idle() and time.monotonic() < deadline:
            time.sleep(0.02)
        drained = self.idle()
        if not drained:
            self._stop.set()
            left = self._source.close()
            with self._lock:
                for pending in self._active.values():
                    for item in pending:  # held behind their pod: still counted as queued
                        self._source.release(item)
                    left.extend(pending)
                    pending.clear()
                running = list(self._running.values())
            log.emit(logger, logging.ERROR, "shutdown", error="drain timeout: events left",
                     dropped=len(left), running=len(running),
                     not_logged=max(0, len(left) + len(running) - LOGGED_AT_SHUTDOWN))
            self._give_up(left, running)  # outside the lock: workers never wait on log I/O
        self.stop()
        return drained

    def _give_up(self, left: list[Item], running: list[Item]) -> None:
        """Log each item (up to the cap) and count the ones never started."""
        if self._metrics is not None and left:
            self._metrics.dropped.labels("shutdown").inc(len(left))
        with self._lock:  # reserve this call's share of the lines, then log unlocked
            quota = max(0, LOGGED_AT_SHUTDOWN - self._logged)
            self._logged += min(quota, len(left) + len(running))
        for status, items, error in (
                ("dropped", left, "not processed: the shutdown deadline passed"),
                ("unfinished", running, "still running when the shutdown deadline passed")):
            for item in items:
                if quota <= 0:
                    return
                quota -= 1
                event = item.event
                log.emit(logger, logging.WARNING, "shutdown", status=status, error=error,
                         trace_id=event.trace_id, rule=event.rule, pod=self._key_of(item))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=1.0)
