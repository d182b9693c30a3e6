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
least once). `fsync` true is `synchronous=FULL` (a commit survives power loss); false
is `synchronous=NORMAL` (it survives a crash of the process, not of the machine).
Done events (and resolved failures) older than `retention` are deleted in the
background; an event with a failure not yet resolved is kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable
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
MAX_BATCH = 1000
"""Most writes committed in one transaction."""
LAZY_SECONDS = 0.05
"""Longest a write nobody waits for (a done mark, a dedup key) waits for company."""
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


class _Waiter:
    """One insert waiting for its batch's commit."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: sqlite3.Error | None = None


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
        self._id_lock = threading.Lock()
        self._ops: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
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

    def insert(self, event: Event, size: int) -> int | str:
        """Commit `event`; its id, or why it could not be stored (`disk_full`,
        `journal_error`). Blocks until the commit of the batch holding it."""
        with self._id_lock:
            ident = self._next_id
            self._next_id += 1
        waiter = _Waiter()
        self._ops.put(("insert", (ident, time.time(), event.trace_id, event.rule, size,
                                  event.raw or event.to_json()), waiter))
        while not waiter.done.wait(1.0):
            if not self._writer.is_alive():  # stopped (shutdown) or failed: never committed
                return "journal_error"
        if waiter.error is None:
            return ident
        return "disk_full" if DISK_FULL in str(waiter.error) else "journal_error"

    def done(self, ident: int) -> None:
        """Mark an event done (queued: nobody waits for this commit)."""
        self._ops.put(("done", (time.time(), ident), None))

    def remember(self, key: str, expires: float, owner: str) -> None:
        """Keep a dedup key until `expires` (wall clock), claimed by trace id `owner`."""
        self._ops.put(("dedup", (key, expires, owner), None))

    def fail(self, event_id: int, rule: str, action: str, actionner: str,
             parameters: Any, error: str, attempts: int) -> None:
        """Record an action that failed for good (a dead letter)."""
        self._ops.put(("fail", (event_id, time.time(), rule, action, actionner,
                                json.dumps(parameters, default=str), error, attempts), None))

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the file, release the lock."""
        if self._writer.is_alive():
            self._ops.put(("stop", (), None))
            self._writer.join(timeout=30)
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    # -- the writer thread --------------------------------------------------------------

    def _write_loop(self) -> None:
        """Commit each batch of queued writes. Writes nobody waits for (done marks, dedup
        keys, failures) are held up to LAZY_SECONDS and ride along with the next batch of
        inserts, so that one event costs one commit (one fsync), not two."""
        next_prune = time.monotonic()
        held: list[tuple[Any, ...]] = []
        flush_at = math.inf
        stopping = False
        while not stopping:
            timeout = max(0.005, min(next_prune, flush_at) - time.monotonic())
            batch = held + self._take(timeout)
            stopping = any(op[0] == "stop" for op in batch)
            now = time.monotonic()
            pruning = now >= next_prune
            if pruning:
                batch.append(("prune", (), None))
                next_prune = now + self._prune_interval
            waited_for = any(op[2] is not None for op in batch)
            if waited_for or stopping or pruning or now >= flush_at \
                    or len(batch) >= MAX_BATCH:
                held, flush_at = [], math.inf
                if batch:
                    self._commit(batch)
            else:
                held = batch
                flush_at = min(flush_at, now + LAZY_SECONDS)

    def _take(self, timeout: float) -> list[tuple[Any, ...]]:
        """The queued writes: waits `timeout` for the first, then takes what is there."""
        try:
            batch = [self._ops.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self._ops.get_nowait())
            except queue.Empty:
                break
        return batch

    def _commit(self, batch: list[tuple[Any, ...]]) -> None:
        started = time.perf_counter()
        error: sqlite3.Error | None = None
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._apply(batch)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            error = exc
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            self._report(exc, batch)
        if self.metrics is not None:
            self.metrics.journal_commit_seconds.observe(time.perf_counter() - started)
        for op in batch:
            if op[2] is not None:
                op[2].error = error
                op[2].done.set()

    def _apply(self, batch: Iterable[tuple[Any, ...]]) -> None:
        grouped: dict[str, list[Any]] = {}
        for kind, row, _waiter in batch:
            grouped.setdefault(kind, []).append(row)
        run = self._conn.executemany
        if "insert" in grouped:
            run("INSERT INTO events (id, accepted, trace_id, rule, size, event) "
                "VALUES (?, ?, ?, ?, ?, ?)", grouped["insert"])
        if "done" in grouped:
            run("UPDATE events SET done = ? WHERE id = ?", grouped["done"])
        if "dedup" in grouped:
            run("INSERT OR REPLACE INTO dedup (key, expires, owner) VALUES (?, ?, ?)",
                grouped["dedup"])
        if "fail" in grouped:
            run("INSERT INTO failures (event_id, at, rule, action, actionner, parameters, "
                "error, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", grouped["fail"])
        if "prune" in grouped:
            self._prune(time.time())

    def _prune(self, now: float) -> None:
        cutoff = now - self.retention
        self._conn.execute(
            "DELETE FROM events WHERE done IS NOT NULL AND done < ? AND id NOT IN "
            "(SELECT event_id FROM failures WHERE resolved IS NULL)", (cutoff,))
        self._conn.execute("DELETE FROM failures WHERE resolved IS NOT NULL AND resolved < ?",
                           (cutoff,))
        self._conn.execute("DELETE FROM dedup WHERE expires < ?", (now,))

    def _report(self, exc: sqlite3.Error, batch: list[tuple[Any, ...]]) -> None:
        """Say why writes failed (at most one line every 10 s per reason)."""
        full = DISK_FULL in str(exc)
        reason = "disk_full" if full else "error"
        held = self._full_log.allow(reason)
        if held is None:
            return
        inserts = sum(1 for op in batch if op[0] == "insert")
        log.emit(logger, logging.ERROR, "journal", status="write_failed", file=self.path,
                 error=f"{exc}: {'the disk is full, ' if full else ''}"
                       f"new events are refused (503) until the journal can be written",
                 refused=inserts or None, suppressed=held or None)
