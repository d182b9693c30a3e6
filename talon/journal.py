"""The journal: a SQLite file in which every accepted event is committed before POST
answers 200, marked done once its rules have run, and where failed actions are kept.

Layer L1: stdlib (sqlite3, fcntl) plus talon.models, talon.log and talon.metrics. Only
the server opens a journal with `Store`, which holds an exclusive `fcntl` lock on the
side file `<path>.lock` for its life, so that two Talon processes never share one
journal; the `journal` CLI verbs open the same file without that lock (talon.journalview):
in WAL mode a reader and a short writer go alongside the server.

All of the server's writes go through one writer thread, which commits whatever is
queued at that moment in one transaction (group commit): many HTTP threads each wait
for the commit of the batch holding their event, so one fsync serves them all. Marking
an event done, remembering a dedup key and recording a failed action are queued too,
and nobody waits for them: lost in a crash, they only mean an event runs again (at
least once). The cost per event is mostly threads waking each other, not SQLite: an
insert appends a row to the open batch under one lock (the writer is woken once per
batch, done marks wake it at most once per LAZY_SECONDS), and the HTTP threads of a
batch wait at one gate that lets them through one after the other (the writer waits
up to GATHER_SECONDS for as many rows as its last batch held). `fsync` true is
`synchronous=FULL` (a commit survives power loss); false is `synchronous=NORMAL` (it
survives a crash of the process, not of the machine). Done events (and resolved
failures) older than `retention` are deleted in the background; an event with a failure
not yet resolved is kept.
"""

from __future__ import annotations

import _thread
import contextlib
import fcntl
import json
import logging
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

from talon import log
from talon.errors import TalonError
from talon.metrics import Metrics
from talon.models import Event, decode

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, accepted REAL NOT NULL, trace_id TEXT NOT NULL,
    rule TEXT NOT NULL, size INTEGER NOT NULL, event TEXT NOT NULL, done REAL,
    replays INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS events_pending ON events(id) WHERE done IS NULL;
CREATE INDEX IF NOT EXISTS events_done ON events(done);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY, event_id INTEGER NOT NULL, at REAL NOT NULL, rule TEXT NOT NULL,
    action TEXT NOT NULL, actionner TEXT NOT NULL, parameters TEXT NOT NULL,
    error TEXT NOT NULL, attempts INTEGER NOT NULL, resolved REAL, resolution TEXT);
CREATE INDEX IF NOT EXISTS failures_event ON failures(event_id);
CREATE TABLE IF NOT EXISTS dedup (key TEXT PRIMARY KEY, expires REAL NOT NULL,
    owner TEXT NOT NULL);
"""
LAZY_SECONDS = 0.05
"""Longest a write nobody waits for (a done mark, a dedup key) waits for company."""
GATHER_SECONDS = 0.001
"""Longest the writer waits for the requests in flight to join a batch."""
BUSY_TIMEOUT_MS = 5000
"""How long a writer waits for another connection's write (a CLI verb) to end."""
DISK_FULL = "database or disk is full"


class JournalError(TalonError):
    """The journal cannot be used: missing folder, locked, corrupt, unreadable."""


@dataclass(frozen=True, slots=True)
class Pending:
    """An event found not done in the journal."""

    id: int
    event: Event
    size: int


class _Batch:
    """The inserts of one commit, and the gate their HTTP threads wait at: a bare lock,
    held until the commit ends; each thread let through lets the next one through, so
    that they wake one after the other instead of all at once fighting for the GIL."""

    __slots__ = ("error", "gate", "rows")

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.gate = _thread.allocate_lock()
        self.gate.acquire()
        self.error: sqlite3.Error | None = None


class _Lazy:
    """The writes nobody waits for, queued since the last commit."""

    __slots__ = ("dedup", "done", "fail")

    def __init__(self) -> None:
        self.done: list[tuple[float, int]] = []
        self.dedup: list[tuple[str, float, str]] = []
        self.fail: list[tuple[Any, ...]] = []


def connect(path: str, *, fsync: bool = True) -> sqlite3.Connection:
    """An autocommit connection in WAL mode; raises JournalError naming the file."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")
    except sqlite3.OperationalError as exc:
        raise JournalError(f"journal {path}: cannot open: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"journal {path} is corrupt or not a journal ({exc}): move it "
                           "aside to start with an empty journal") from exc
    return conn


def check(conn: sqlite3.Connection, path: str) -> None:
    """PRAGMA quick_check, then the schema; JournalError when the file is damaged."""
    try:
        found = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if found != ["ok"]:
            raise JournalError(f"journal {path} is corrupt ({'; '.join(map(str, found[:3]))}): "
                               "move it aside to start with an empty journal")
        conn.executescript(SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"journal {path} is corrupt or not a journal ({exc}): move it "
                           "aside to start with an empty journal") from exc


def lock(path: str) -> int:
    """An exclusive lock on `<path>.lock` (held until the descriptor is closed)."""
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise JournalError(f"journal {path}: cannot open its lock file: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise JournalError(f"journal {path} is in use by another Talon process "
                           f"(it holds {lock_path})") from exc
    return fd


class Store:
    """The server's journal: lock, checks, replay list, and the group-commit writer."""

    def __init__(self, path: str, *, fsync: bool = True, retention: float = 86400.0,
                 metrics: Metrics | None = None, prune_interval: float = 60.0) -> None:
        self.path, self.retention, self.metrics = path, retention, metrics
        self._prune_interval = prune_interval
        self._lock_fd = lock(path)
        try:
            self._conn = connect(path, fsync=fsync)
            check(self._conn, path)
            row = self._conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._next_id = int(row[0]) + 1
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._open = _Batch()
        self._lazy = _Lazy()
        self._lazy_at = math.inf  # when the lazy writes are committed without company
        self._idle = False  # the writer waits on _wake
        self._want = 1  # inserts in the open batch that wake the writer
        self._stopping = False
        self._full_log = log.Throttle(10.0)
        self._writer = threading.Thread(target=self._write_loop, name="talon-journal",
                                        daemon=True)

    # -- start-up ---------------------------------------------------------------------

    def pending(self) -> list[Pending]:
        """Every event not done, oldest first (each counted as replayed once more)."""
        rows = self._conn.execute(
            "SELECT id, event, size, trace_id FROM events WHERE done IS NULL ORDER BY id"
        ).fetchall()
        found = []
        for ident, text, size, trace_id in rows:
            try:
                found.append(Pending(ident, decode(text, trace_id=trace_id), size))
            except (ValueError, TalonError) as exc:  # written by us: should never happen
                log.emit(logger, logging.ERROR, "journal", error=f"event {ident} cannot be "
                         f"read back, skipped: {exc}")
        if rows:
            self._conn.execute("UPDATE events SET replays = replays + 1 WHERE done IS NULL")
        return found

    def dedup_keys(self, now: float) -> list[tuple[str, float, str]]:
        """(key, expiry, owner trace id) of every dedup key still in its window."""
        return self._conn.execute("SELECT key, expires, owner FROM dedup WHERE expires > ? "
                                  "ORDER BY expires", (now,)).fetchall()

    def start(self) -> None:
        self._writer.start()

    # -- writes -----------------------------------------------------------------------

    def insert(self, event: Event, size: int, *, done: bool = False) -> int | str:
        """Commit `event` (already `done`: nothing is left to run for it); its id, or why
        it could not be stored (`disk_full`, `journal_error`). Blocks until the commit of
        the batch holding it."""
        now = time.time()
        row = (now, event.trace_id, event.rule, size, event.raw or event.to_json(),
               now if done else None)
        with self._lock:
            if self._stopping:
                return "journal_error"
            ident = self._next_id
            self._next_id += 1
            batch = self._open
            batch.rows.append((ident, *row))
            if self._idle and len(batch.rows) >= self._want:
                self._wake.notify()
        while not batch.gate.acquire(timeout=1.0):
            if not self._writer.is_alive():  # failed: never committed
                return "journal_error"
        batch.gate.release()  # the next thread waiting for this batch
        if batch.error is None:
            return ident
        return "disk_full" if DISK_FULL in str(batch.error) else "journal_error"

    def done(self, ident: int) -> None:
        """Mark an event done (queued: nobody waits for this commit)."""
        with self._lock:
            self._lazy.done.append((time.time(), ident))
            self._lazy_soon()

    def remember(self, key: str, expires: float, owner: str) -> None:
        """Keep a dedup key until `expires` (wall clock), claimed by trace id `owner`."""
        with self._lock:
            self._lazy.dedup.append((key, expires, owner))
            self._lazy_soon()

    def fail(self, event_id: int, rule: str, action: str, actionner: str,
             parameters: Any, error: str, attempts: int) -> None:
        """Record an action that failed for good (a dead letter)."""
        row = (event_id, time.time(), rule, action, actionner,
               json.dumps(parameters, default=str), error, attempts)
        with self._lock:
            self._lazy.fail.append(row)
            self._lazy_soon()

    def _lazy_soon(self) -> None:
        """(Under _lock.) The first lazy write since the last commit sets when they go
        (and wakes the writer to know it); the others ride along without a wake-up."""
        if self._lazy_at == math.inf:
            self._lazy_at = time.monotonic() + LAZY_SECONDS
            if self._idle:
                self._wake.notify()

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the file, release the lock."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._writer.is_alive():
            self._writer.join(timeout=30)
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    # -- the writer thread --------------------------------------------------------------

    def _write_loop(self) -> None:
        """Commit each batch: every insert queued at that moment, with the writes nobody
        waits for (done marks, dedup keys, failures), which are held up to LAZY_SECONDS
        to ride along with inserts, so that one event costs one commit (one fsync), not
        two. Inserts that arrive during a commit make the next batch."""
        next_prune = time.monotonic()
        stopping = False
        last = _Batch()
        while not stopping:
            with self._lock:
                now = self._wait_for_work(next_prune)
                if self._open.rows:
                    self._gather(len(last.rows))
                batch, self._open = self._open, _Batch()
                lazy, self._lazy, self._lazy_at = self._lazy, _Lazy(), math.inf
                stopping = self._stopping
            pruning = now >= next_prune
            if pruning:
                next_prune = now + self._prune_interval
            self._commit(batch, lazy, pruning)
            last = batch

    def _gather(self, expected: int) -> None:
        """(Under _lock.) Wait up to GATHER_SECONDS for as many inserts as the last batch
        held (the requests in flight): one commit then serves them all."""
        deadline = time.monotonic() + GATHER_SECONDS
        self._want = expected
        while len(self._open.rows) < expected and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._sleep(left)
        self._want = 1

    def _wait_for_work(self, next_prune: float) -> float:
        """(Under _lock.) Wait for inserts, a stop, held lazy writes or pruning to be due;
        the monotonic time then."""
        while True:
            now = time.monotonic()
            due = min(next_prune, self._lazy_at)
            if self._open.rows or self._stopping or now >= due:
                return now
            self._sleep(due - now)

    def _sleep(self, seconds: float) -> None:
        """(Under _lock.) Wait on _wake up to `seconds`, marked idle so that writers
        know a wake-up is needed."""
        self._idle = True
        try:
            self._wake.wait(seconds)
        finally:
            self._idle = False

    def _commit(self, batch: _Batch, lazy: _Lazy, pruning: bool) -> None:
        if not (batch.rows or lazy.done or lazy.dedup or lazy.fail or pruning):
            return  # stopping with nothing queued
        started = time.perf_counter()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._apply(batch.rows, lazy, pruning)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            batch.error = exc
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            self._report(exc, len(batch.rows))
        if self.metrics is not None:
            self.metrics.journal_commit_seconds.observe(time.perf_counter() - started)
        batch.gate.release()

    def _apply(self, rows: list[tuple[Any, ...]], lazy: _Lazy, pruning: bool) -> None:
        run = self._conn.executemany
        if rows:
            run("INSERT INTO events (id, accepted, trace_id, rule, size, event, done) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        if lazy.done:
            run("UPDATE events SET done = ? WHERE id = ?", lazy.done)
        if lazy.dedup:
            run("INSERT OR REPLACE INTO dedup (key, expires, owner) VALUES (?, ?, ?)",
                lazy.dedup)
        if lazy.fail:
            run("INSERT INTO failures (event_id, at, rule, action, actionner, parameters, "
                "error, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", lazy.fail)
        if pruning:
            self._prune(time.time())

    def _prune(self, now: float) -> None:
        cutoff = now - self.retention
        self._conn.execute(
            "DELETE FROM events WHERE done IS NOT NULL AND done < ? AND id NOT IN "
            "(SELECT event_id FROM failures WHERE resolved IS NULL)", (cutoff,))
        self._conn.execute("DELETE FROM failures WHERE resolved IS NOT NULL AND resolved < ?",
                           (cutoff,))
        self._conn.execute("DELETE FROM dedup WHERE expires < ?", (now,))

    def _report(self, exc: sqlite3.Error, inserts: int) -> None:
        """Say why writes failed (at most one line every 10 s per reason)."""
        full = DISK_FULL in str(exc)
        reason = "disk_full" if full else "error"
        held = self._full_log.allow(reason)
        if held is None:
            return
        log.emit(logger, logging.ERROR, "journal", status="write_failed", file=self.path,
                 error=f"{exc}: {'the disk is full, ' if full else ''}"
                       f"new events are refused (503) until the journal can be written",
                 refused=inserts or None, suppressed=held or None)
