"""Deduplication: run the actions of identical events once per time window.

Layer L4: stdlib only. The key is upstream's by default (the trimmed output text, hashed)
or a list of event fields (`rule`, `output_fields.k8s.pod.name`, …). Memory is bounded:
at most `max_entries` keys are remembered (oldest forgotten first). The `Backend`
interface lets a cluster-wide store (a Kubernetes Lease holder) replace the local one.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from talon.models import Event, value_text


def key_of(event: Event, fields: Sequence[str]) -> str:
    """The dedup key of `event`: md5 of the output, or of the named fields' values."""
    if not fields:
        text = event.output
    else:
        parts = []
        for name in fields:
            if name.startswith("output_fields."):
                raw = event.output_fields.get(name.removeprefix("output_fields."))
                parts.append("" if raw is None else value_text(raw))
            else:
                parts.append(str(getattr(event, name, "")))
        text = "\x1f".join(parts)
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class Backend(Protocol):
    """Remembers keys for a window; `first_seen` is True for the first sighting only."""

    def first_seen(self, key: str, window: float) -> bool: ...


class LocalBackend:
    """In-process, bounded memory of recent keys."""

    def __init__(self, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def first_seen(self, key: str, window: float) -> bool:
        now = self._clock()
        with self._lock:
            expiry = self._seen.get(key)
            if expiry is not None and expiry > now:
                return False
            self._seen[key] = now + window
            self._seen.move_to_end(key)
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
            return True

    def __len__(self) -> int:
        return len(self._seen)


class Deduplicator:
    """`is_duplicate(event)`: True when an event with the same key ran within the window."""

    def __init__(self, window_seconds: float, fields: Sequence[str] = (),
                 backend: Backend | None = None) -> None:
        self.window = window_seconds
        self.fields = tuple(fields)
        self.backend = backend if backend is not None else LocalBackend()

    def is_duplicate(self, event: Event) -> bool:
        if self.window <= 0:
            return False
        return not self.backend.first_seen(key_of(event, self.fields), self.window)
