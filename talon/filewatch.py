"""Values read from files and read again when the files change (certificates, tokens).

Layer L1: stdlib only. `Watched.get()` stats the files at most once per `interval`, on
use, so a rotation (cert-manager, a Secret volume's symlink swap) is seen within about a
second without a thread of its own. The identity of each file (device, inode, mtime,
size, after symlinks) is compared, so replacing a file by a rename is seen as well as
rewriting it. A load that fails keeps the last good value and is tried again at the next
check (a certificate written before its key fails once, then loads); each distinct
failure is reported once through `on_error`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

Signature = tuple[tuple[int, int, int, int] | None, ...]


def signature(paths: Sequence[str]) -> Signature:
    """What identifies the current content of each file (None: cannot be stat'ed)."""
    found: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = Path(path).stat()
        except OSError:
            found.append(None)
        else:
            found.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(found)


class Watched(Generic[T]):
    """`load()`'s result, loaded again when one of `paths` changes.

    The first load happens in the constructor and its exceptions propagate (a start-up
    error); later ones go to `on_error` and leave the previous value in place.
    """

    def __init__(self, paths: Sequence[str], load: Callable[[], T], *,
                 on_error: Callable[[Exception], None], on_load: Callable[[T], None] | None = None,
                 interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = tuple(paths)
        self._load, self._on_error, self._on_load = load, on_error, on_load
        self._interval, self._clock = interval, clock
        self._lock = threading.Lock()
        self._signature = signature(self.paths)
        self._failed: Signature | None = None
        self._value = load()
        self._next = clock() + interval
        if on_load is not None:
            on_load(self._value)

    def get(self) -> T:
        """The current value; checks the files when `interval` has passed since the last
        check. Never waits: while another thread checks, the current value is returned."""
        if self._clock() >= self._next and self._lock.acquire(blocking=False):
            try:
                self._check()
            finally:
                self._lock.release()
        return self._value

    def _check(self) -> None:
        self._next = self._clock() + self._interval
        now = signature(self.paths)
        if now == self._signature:
            return
        try:
            value = self._load()
        except Exception as exc:  # noqa: BLE001 - the caller's loader decides what fails
            if now != self._failed:
                self._failed = now
                self._on_error(exc)
            return
        self._value, self._signature, self._failed = value, now, None
        if self._on_load is not None:
            self._on_load(value)
