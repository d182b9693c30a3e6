"""The journal store and queue in process: bounds, full disk, group commit, pruning, views.

Behaviours covered:
- POST answers 503 with Retry-After when the journal holds `max_events` events not done,
  counted as talon_events_rejected_total{reason="journal_full"} (a real server process);
- a disk that fills up (SQLite's "database or disk is full", reached here through
  PRAGMA max_page_count) refuses the event (`disk_full`) and the log says why;
- concurrent inserts share commits (fewer commits than events), each returns its own id;
- an insert returns only once its batch is committed: while another connection holds
  the write lock none returns, then each finds its own row in the file;
- events whose rules ran but whose done marks were not committed yet (a crash then:
  a copy of the files at that moment) run again at the next start; after a stop, not;
- an event `settled` says needs no worker is committed done: no worker takes it and it
  does not count against `max_events`;
- done events are pruned after the retention, events with an unresolved failure stay;
- `journal list --since` and duration parsing.
"""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import threading
import time
from pathlib import Path

import pytest

from talon import journalview
from talon.durable import JournalQueue
from talon.journal import Store, connect
from talon.metrics import Metrics
from talon.models import Event, from_mapping
from tests.support import Launch, start

__all__ = ["start"]


def an_event(n: int, padding: int = 0) -> Event:
    return from_mapping({"rule": "R", "priority": "Warning", "output": f"event {n}" + "x" * padding,
                         "output_fields": {"k8s.pod.name": f"p{n}", "k8s.ns.name": "ns"}})


def test_a_full_journal_answers_503(start: Launch, tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    server = start(f"""
        - rule: React
          match: {{rules: [R]}}
          actions:
            - {{action: wait, actionner: test:record, parameters: {{file: "{out}", sleep: 30}}}}
        """, f"""
        workers: 1
        shutdown_timeout_seconds: 0
        journal: {{path: "{tmp_path / 'j.db'}", max_events: 2}}
        """)
    body = json.dumps({"rule": "R", "priority": "Warning", "output": "o",
                       "output_fields": {"k8s.pod.name": "p", "k8s.ns.name": "n"}}).encode()
    assert server.request("POST", "/", body)[0] == 200
    assert server.request("POST", "/", body)[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 503 and resp.getheader("Retry-After")
    assert b"journal is full" in resp.read()
    conn.close()
    metrics = server.request("GET", "/metrics")[1].decode()
    assert 'talon_events_rejected_total{reason="journal_full"} 1.0' in metrics
    assert "\ntalon_journal_depth 2.0" in metrics


def test_a_full_disk_refuses_the_event_and_says_why(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    store = Store(str(tmp_path / "j.db"))
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages + 8}")  # a tiny disk
    queue = JournalQueue(store, max_events=100, max_bytes=1 << 30)
    store.start()
    try:
        with caplog.at_level(logging.ERROR, logger="talon.journal"):
            results = [queue.offer(an_event(n, padding=3000), 3000) for n in range(40)]
        assert results[0] is True
        assert "disk_full" in results
        assert queue.depth() == results.count(True)
        assert any("database or disk is full" in r.getMessage() or
                   "disk is full" in str(r.__dict__) for r in caplog.records)
    finally:
        store.close()


def test_concurrent_inserts_share_commits(tmp_path: Path) -> None:
    metrics = Metrics()
    store = Store(str(tmp_path / "j.db"), metrics=metrics)
    queue = JournalQueue(store, max_events=10_000, max_bytes=1 << 30, metrics=metrics)
    store.start()
    ids: list[int] = []

    def post(base: int) -> None:
        for n in range(50):
            assert queue.offer(an_event(base + n), 100) is True

    threads = [threading.Thread(target=post, args=(i * 100,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while (item := queue.take(0.01)) is not None:
        ids.append(item.id)  # type: ignore[attr-defined]
    store.close()
    assert sorted(ids) == list(range(1, 401))
    commits = metrics.registry.get_sample_value("talon_journal_commit_seconds_count")
    assert commits is not None and commits < 400
    view = journalview.View(str(tmp_path / "j.db"))
    assert len(view.events()) == 400 and {e["state"] for e in view.events()} == {"pending"}
    view.close()


def test_done_events_are_pruned_after_retention(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    store = Store(path, retention=0.0, prune_interval=0.05)
    queue = JournalQueue(store, max_events=100, max_bytes=1 << 30)
    store.start()
    assert queue.offer(an_event(1), 10) is True
    assert queue.offer(an_event(2), 10) is True
    first, second = queue.take(0.1), queue.take(0.1)
    assert first is not None and second is not None
    store.fail(second.id, "R", "a", "test:record", {"x": 1}, "boom", 1)  # type: ignore[attr-defined]
    queue.done(first)
    queue.done(second)
    view = journalview.View(path)
    deadline = time.monotonic() + 10
    while [e["id"] for e in view.events()] != [2]:
        assert time.monotonic() < deadline, view.events()
        time.sleep(0.05)
    assert view.events(failed=True)[0]["state"] == "failed"
    view.close()
    store.close()


def test_durations() -> None:
    assert journalview.parse_since("90s") == 90
    assert journalview.parse_since("1h") == 3600
    assert journalview.parse_since("2d") == 172800
    with pytest.raises(ValueError, match="not a duration"):
        journalview.parse_since("yesterday")


def test_an_insert_returns_only_once_its_batch_is_committed(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    metrics = Metrics()
    store = Store(path, metrics=metrics)
    store.start()
    blocker = connect(path)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the writer's commit waits
    seen: dict[int, set[int]] = {}

    def post(n: int) -> None:
        ident = store.insert(an_event(n), 10)
        assert isinstance(ident, int)
        view = journalview.View(path)  # the file as a crash would leave it
        seen[ident] = {e["id"] for e in view.events()}
        view.close()

    threads = [threading.Thread(target=post, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    threads[0].join(0.3)
    assert all(t.is_alive() for t in threads) and not seen  # nobody answered yet
    blocker.execute("COMMIT")
    blocker.close()
    for t in threads:
        t.join(10)
    store.close()
    assert sorted(seen) == list(range(1, 9))
    assert all(ident in visible for ident, visible in seen.items())
    commits = metrics.registry.get_sample_value("talon_journal_commit_seconds_count")
    assert commits is not None and commits < 8


def test_events_run_but_not_yet_marked_done_are_replayed(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    store = Store(str(path))
    queue = JournalQueue(store, max_events=100, max_bytes=1 << 30)
    store.start()
    assert [queue.offer(an_event(n), 10) for n in range(3)] == [True] * 3
    blocker = connect(str(path))
    blocker.execute("BEGIN IMMEDIATE")  # the done marks cannot be committed yet
    for _ in range(3):
        item = queue.take(1.0)
        assert item is not None
        queue.done(item)
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in ("j.db", "j.db-wal"):  # what is on disk at this moment
        shutil.copyfile(tmp_path / name, crashed / name)
    blocker.execute("ROLLBACK")
    blocker.close()
    store.close()  # commits the done marks
    after_crash = Store(str(crashed / "j.db"))
    replayed = JournalQueue(after_crash, max_events=100, max_bytes=1 << 30)
    outputs = [replayed.take(0) for _ in range(3)]
    after_crash.close()
    assert replayed.replayed == 3
    assert [i.event.output for i in outputs if i is not None] == \
        ["event 0", "event 1", "event 2"]
    after_stop = Store(str(path))
    assert JournalQueue(after_stop, max_events=100, max_bytes=1 << 30).replayed == 0
    after_stop.close()


def test_settled_events_are_committed_done_outside_the_bounds(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    store = Store(path)
    queue = JournalQueue(store, max_events=1, max_bytes=1 << 30)
    queue.settled = lambda event: event.output != "event 0"
    store.start()
    assert queue.offer(an_event(0), 10) is True  # needs a worker: fills the journal
    assert queue.offer(an_event(1), 10) is True  # needs none: committed done
    assert queue.offer(an_event(0), 10) == "journal_full"
    assert queue.depth() == 1
    first = queue.take(0.1)
    assert first is not None and first.event.output == "event 0"
    assert queue.take(0) is None
    view = journalview.View(path)
    assert [(e["id"], e["state"]) for e in view.events()] == [(1, "pending"), (2, "done")]
    view.close()
    store.close()
