"""The bounded event queue and the worker pool that drains it.

Layer L4: stdlib only. The HTTP handler `put`s events (never blocking: a full queue is a
503); N named workers `take` them and call the engine. Events for the same pod are handed
to the worker already busy with that pod, so they run in arrival order, while events for
other pods go on in parallel: a 10-second capture never delays another pod's response.
The queue sits behind a small interface (put / take / done) so that a durable journal can
replace the in-memory one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from talon import log
from talon.errors import EventError
from talon.models import Event

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Item:
    """One accepted event; a durable queue may subclass it to carry its own record id."""

    event: Event


class EventQueue(Protocol):
    """What the pool needs from a queue; `done` acknowledges a processed item."""

    def put(self, event: Event) -> bool: ...
    def take(self, timeout: float) -> Item | None: ...
    def done(self, item: Item) -> None: ...
    def depth(self) -> int: ...


class MemoryQueue:
    """A bounded in-memory queue: `put` returns False instead of blocking when full."""

    def __init__(self, maxsize: int) -> None:
        self._q: queue.Queue[Item] = queue.Queue(maxsize)

    def put(self, event: Event) -> bool:
        try:
            self._q.put_nowait(Item(event))
        except queue.Full:
            return False
        return True

    def take(self, timeout: float) -> Item | None:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def done(self, item: Item) -> None:
        self._q.task_done()

    def depth(self) -> int:
        return self._q.qsize()


def pod_key(event: Event) -> str:
    """Events with the same key run in order; events without a pod (or with a pod field
    that is not a string: their actions fail) are independent."""
    try:
        pod = event.pod_name()
        return f"{event.namespace()}/{pod}" if pod else ""
    except EventError:
        return ""


def _describe(exc: BaseException) -> str:
    """`Type: text` of an exception, even when its `str()` fails."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a hostile __str__
        text = "<no text>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class WorkerPool:
    """N worker threads draining `source`, calling `handle(item)` for each item."""

    def __init__(self, source: EventQueue, handle: Callable[[Item], object], *, workers: int,
                 key: Callable[[Event], str] = pod_key,
                 overdue: Callable[[], list[int]] | None = None,
                 retire: Callable[[int], bool] | None = None) -> None:
        self._source, self._handle, self._key = source, handle, key
        self._size = workers
        self._lock = threading.Lock()
        self._active: dict[str, deque[Item]] = {}
        self._busy = 0
        self._in_flight = 0
        self._overdue = overdue or (list)
        self._retire = retire or (lambda _ident: False)
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
                self._in_flight += 1
                if key and key in self._active:
                    self._active[key].append(item)  # the worker owning this pod runs it next
                    continue
                if key:
                    self._active[key] = deque()
            try:
                self._run_key(key, item)
            except Exception as exc:  # noqa: BLE001 - e.g. the queue failed to acknowledge
                log.emit(logger, logging.ERROR, "event", status="failure",
                         error=f"worker error: {_describe(exc)}")

    def _key_of(self, item: Item) -> str:
        try:
            return self._key(item.event)
        except Exception:  # noqa: BLE001 - no ordering key: the event runs on its own
            return ""

    def _run_key(self, key: str, item: Item | None) -> None:
        """Run `item`, then every item queued behind it for the same pod; the key is
        released in all cases, so a pod is never left waiting on a worker that failed."""
        try:
            while item is not None:
                self._run(item)
                item = self._next(key)
        finally:
            if item is not None:
                self._abandon(key, item)

    def _next(self, key: str) -> Item | None:
        with self._lock:
            pending = self._active.get(key) if key else None
            if pending:
                return pending.popleft()
            if key:
                del self._active[key]
            return None

    def _abandon(self, key: str, item: Item) -> None:
        """After an unexpected failure: free the key; the items still waiting are lost
        (logged), so that drain() does not wait for them forever."""
        with self._lock:
            lost = [item, *self._active.pop(key, ())] if key else [item]
            self._in_flight -= len(lost) - 1  # `item` itself was already counted down
        for dropped in lost[1:]:
            log.emit(logger, logging.ERROR, "event", status="dropped",
                     error="the worker handling this pod failed", trace_id=dropped.event.trace_id)

    def busy(self) -> int:
        """Workers handling an event now (read by the metrics gauge when scraped)."""
        return self._busy

    def _run(self, item: Item) -> None:
        with self._lock:
            self._busy += 1
        try:
            self._handle(item)
        except BaseException as exc:  # noqa: BLE001 - boundary: the worker outlives any event
            log.emit(logger, logging.ERROR, "event", status="failure",
                     error=f"event handling failed: {_describe(exc)}",
                     trace_id=item.event.trace_id)
        finally:
            with self._lock:
                self._busy -= 1
                self._in_flight -= 1
            self._source.done(item)

    def idle(self) -> bool:
        """No item waiting in the queue and none being handled."""
        with self._lock:
            return self._in_flight == 0 and self._source.depth() == 0

    def drain(self, timeout: float) -> bool:
        """Wait until every accepted item is handled (or `timeout`); then stop the workers."""
        deadline = time.monotonic() + timeout
        while not self.idle() and time.monotonic() < deadline:
            time.sleep(0.02)
        drained = self.idle()
        if not drained:
            log.emit(logger, logging.ERROR, "shutdown", error="drain timeout: events left",
                     queued=self._source.depth())
        self.stop()
        return drained

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=1.0)
