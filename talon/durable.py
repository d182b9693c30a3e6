"""The journal as the worker pool's queue, as the dedup memory and as the dead-letter sink.

Layer L5 (wiring, beside talon.app): it joins talon.pool's `EventQueue` protocol (L4) to
the SQLite store of talon.journal (L1). `put` returns only once the event is committed;
the events stay in memory too, so that workers never read the file. An event counts
against `max_events` / `max_bytes` from its commit until it is done (waiting or running).
At start, every event the journal holds not done is queued again, first.

An event no rule matches (the usual case) has nothing left to run once it is committed:
it is committed already done, and no worker takes it. Handing each event to a worker and
marking it done afterwards cost more than the commit itself (two more thread wake-ups
and a second write of its row); the row is kept all the same (export, what-if replay).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from talon import dedup
from talon.engine import Failure
from talon.journal import Store
from talon.metrics import Metrics
from talon.models import Event
from talon.pool import Item, WaitingItems, never_settled


@dataclass(frozen=True, slots=True)
class JournalItem(Item):
    """An event and its row in the journal."""

    id: int = 0


class JournalQueue(WaitingItems[JournalItem]):
    """talon.pool.EventQueue over a journal `Store`."""

    def __init__(self, store: Store, *, max_events: int, max_bytes: int,
                 metrics: Metrics | None = None) -> None:
        self.store = store
        self._max_events, self._max_bytes = max_events, max_bytes
        self._items: deque[JournalItem] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._held = 0
        self._bytes = 0
        self._closed = False
        self._current = threading.local()
        self._metrics = metrics
        self.settled = never_settled
        for found in store.pending():
            self._items.append(JournalItem(found.event, found.size, found.id))
            self._held += 1
            self._bytes += found.size
        self.replayed = len(self._items)
        if metrics is not None:
            metrics.journal_replayed.inc(self.replayed)
            metrics.journal_depth.set_function(self.depth)

    def put(self, event: Event, size: int = 0) -> bool:
        return self.offer(event, size) is True

    def offer(self, event: Event, size: int = 0) -> bool | str:
        """True once committed; else why not (`journal_full`, `disk_full`, ...). An event
        `settled` says needs no worker is committed done: no worker takes it, and it does
        not count against the bounds (it is kept, for export and replay, like any other)."""
        if self._closed:
            return False
        if self._settled(event):
            found = self.store.insert(event, size, done=True)
            return found if isinstance(found, str) else True
        with self._cond:
            if self._closed:
                return False
            if self._held >= self._max_events or self._bytes + size > self._max_bytes:
                return "journal_full"
            self._held += 1
            self._bytes += size
        ident = self.store.insert(event, size)
        with self._cond:
            if isinstance(ident, str):
                self._held -= 1
                self._bytes -= size
                return ident
            self._items.append(JournalItem(event, size, ident))
            self._cond.notify()
        return True

    def release(self, item: Item) -> None:
        """Nothing: an event counts against the bounds until it is done."""

    def done(self, item: Item) -> None:
        with self._cond:
            self._held -= 1
            self._bytes -= item.size
        if isinstance(item, JournalItem):
            self.store.done(item.id)

    def depth(self) -> int:
        """Events committed and not done: waiting, held behind their pod, or running."""
        return self._held

    def bytes_held(self) -> int:
        return self._bytes

    def close(self) -> list[Item]:
        """Refuse every later `put`; the items never taken (still in the journal, not done:
        they run at the next start)."""
        with self._cond:
            self._closed = True
            left: list[Item] = list(self._items)
            self._items.clear()
            self._cond.notify_all()
        return left

    def handler(self, handle: Callable[[Event], object]) -> Callable[[Item], object]:
        """The pool's `handle`: `handle(item.event)`, with the item's journal id known to
        `dead_letter` on this thread while it runs."""
        def run(item: Item) -> object:
            self._current.id = item.id if isinstance(item, JournalItem) else 0
            try:
                return handle(item.event)
            finally:
                self._current.id = 0
        return run

    def dead_letter(self, failure: Failure) -> None:
        """Record an action that failed for good against the event being handled."""
        self.store.fail(getattr(self._current, "id", 0), failure.rule.name,
                        failure.action.name, failure.action.actionner, failure.parameters,
                        failure.error, failure.attempts)
        if self._metrics is not None:
            self._metrics.dead_letters.inc()


class JournalDedup:
    """Deduplication whose keys survive a restart: kept in memory (bounded) and in the
    journal. The copy of an event that claimed a key (same trace id: an event replayed
    at start) is not its own duplicate."""

    def __init__(self, store: Store, window_seconds: float, fields: Sequence[str] = (),
                 max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.store, self.window, self.fields = store, window_seconds, tuple(fields)
        self._max, self._clock = max_entries, clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, tuple[float, str]] = OrderedDict(
            (key, (expires, owner)) for key, expires, owner in store.dedup_keys(clock()))
        self._trim()

    def is_duplicate(self, event: Event) -> bool:
        if self.window <= 0:
            return False
        key = dedup.key_of(event, self.fields)
        now = self._clock()
        with self._lock:
            found = self._seen.get(key)
            if found is not None and found[0] > now and found[1] != event.trace_id:
                return True
            expires = now + self.window
            self._seen[key] = (expires, event.trace_id)
            self._seen.move_to_end(key)
            self._trim()
        self.store.remember(key, expires, event.trace_id)
        return False

    def _trim(self) -> None:
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
