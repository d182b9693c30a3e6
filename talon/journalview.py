"""Reading and tidying a journal from outside the server (the `journal` CLI verbs).

Layer L1: stdlib plus talon.journal and talon.models. A `View` opens the file without the
server's lock: SQLite's WAL lets it read while the server writes, and its few writes
(marking a failed action resolved) are short transactions that wait for the server's.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talon import params
from talon.journal import JournalError, connect
from talon.models import Event, decode


def parse_since(text: str) -> float:
    """`90s`, `15m`, `1h`, `2d` (or plain seconds) → seconds; ValueError otherwise."""
    return params.duration_seconds(text.strip())


def when(stamp: float | None) -> str:
    """A wall-clock time as ISO 8601 UTC (seconds), or '-'."""
    if stamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Failed:
    """A failed action recorded in the journal."""

    id: int
    event_id: int
    rule: str
    action: str
    actionner: str
    parameters: Any
    error: str
    attempts: int
    at: float
    resolved: float | None
    resolution: str | None


_FAILURE_COLUMNS = ("id, event_id, rule, action, actionner, parameters, error, attempts, at, "
                    "resolved, resolution")
_STATE = ("CASE WHEN EXISTS (SELECT 1 FROM failures f WHERE f.event_id = e.id AND "
          "f.resolved IS NULL) THEN 'failed' WHEN e.done IS NULL THEN 'pending' "
          "ELSE 'done' END")


def _failed(row: tuple[Any, ...]) -> Failed:
    ident, event_id, rule, action, actionner, parameters, error, attempts, at, resolved, \
        resolution = row
    return Failed(ident, event_id, rule, action, actionner, json.loads(parameters), error,
                  attempts, at, resolved, resolution)


class View:
    """A journal opened by a CLI verb (no lock; the server may be running)."""

    def __init__(self, path: str) -> None:
        if not Path(path).exists():
            raise JournalError(f"no journal at {path}")
        self.path = path
        self._conn = connect(path)
        try:
            self._conn.execute("SELECT 1 FROM events LIMIT 1")
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {path} cannot be read: {exc}") from exc

    def close(self) -> None:
        self._conn.close()

    def events(self, *, failed: bool = False, since: float | None = None
               ) -> list[dict[str, Any]]:
        """Events (oldest first) with their state: pending, done or failed."""
        where = [f"{_STATE} = 'failed'"] if failed else []
        args: list[Any] = []
        if since is not None:
            where.append("e.accepted >= ?")
            args.append(time.time() - since)
        sql = (f"SELECT e.id, {_STATE}, e.accepted, e.done, e.rule, e.trace_id, e.replays "  # noqa: S608 - constant clauses, values bound
               "FROM events e" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY e.id")
        keys = ("id", "state", "accepted", "done", "rule", "trace_id", "replays")
        return [dict(zip(keys, row, strict=True))
                for row in self._conn.execute(sql, args)]

    def event(self, ident: int) -> Event | None:
        row = self._conn.execute("SELECT event, trace_id FROM events WHERE id = ?",
                                 (ident,)).fetchone()
        return None if row is None else decode(row[0], trace_id=row[1])

    def event_text(self, *, failed: bool = False, since: float | None = None
                   ) -> Iterator[str]:
        """The JSON of each event (as `events` selects them), one string per event."""
        for found in self.events(failed=failed, since=since):
            row = self._conn.execute("SELECT event FROM events WHERE id = ?",
                                     (found["id"],)).fetchone()
            if row is not None:
                yield row[0]

    def failures(self, event_id: int | None = None, *, unresolved: bool = True
                 ) -> list[Failed]:
        where, args = [], []
        if event_id is not None:
            where.append("event_id = ?")
            args.append(event_id)
        if unresolved:
            where.append("resolved IS NULL")
        sql = (f"SELECT {_FAILURE_COLUMNS} FROM failures"  # noqa: S608 - constant clauses
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id")
        return [_failed(row) for row in self._conn.execute(sql, args)]

    def resolve(self, failure_id: int, resolution: str) -> None:
        self._conn.execute("UPDATE failures SET resolved = ?, resolution = ? WHERE id = ?",
                           (time.time(), resolution, failure_id))

    def failed_again(self, failure_id: int, error: str, attempts: int) -> None:
        self._conn.execute("UPDATE failures SET error = ?, attempts = attempts + ?, at = ? "
                           "WHERE id = ?", (error, attempts, time.time(), failure_id))
