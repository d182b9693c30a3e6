"""End to end: the journal keeps every acknowledged event through a SIGKILL.

Real `python -m talon server` processes with `journal.path` set. Behaviours covered:
- N events acknowledged (200) while slow actions run, then SIGKILL: after a restart on
  the same journal every action runs (recorded) and `journal list` shows them done;
- a kill after the commit and before the action started (one worker, held by a first
  event), and a kill while an action runs: both run after the restart (at least once);
- an event no rule matches is committed already done: no worker takes it (depth 0),
  `journal list` shows it done and `journal export` gives it, and after a SIGKILL it is
  not run again, while an event a rule matches and that never ran is;
- a dedup key outlives the restart: a new copy of an event that already ran in its
  window is a duplicate; the replayed event itself is not its own duplicate;
- a second server on the same journal, a corrupt journal file, a folder that does not
  exist: start-up fails (exit 1) with a message naming the file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, Launch, records, start, wait_until

__all__ = ["start"]


def event(pod: str, output: str | None = None) -> dict[str, Any]:
    return {"rule": "Terminal shell in container", "priority": "Warning",
            "output": output or f"a shell in {pod}",
            "output_fields": {"k8s.pod.name": pod, "k8s.ns.name": "shop"}}


def rules(out: Path, sleep: float = 0.0) -> str:
    return f"""
        - rule: React
          match: {{rules: [Terminal shell in container]}}
          actions:
            - {{action: record, actionner: test:record,
               parameters: {{file: "{out}", sleep: {sleep}}}}}
        """


def config(journal: Path, workers: int = 2, window: int = 0) -> str:
    return f"""
        workers: {workers}
        deduplication: {{time_window_seconds: {window}, leader_election: false}}
        journal: {{path: "{journal}"}}
        """


def journal_cli(journal: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "talon", "journal", "--journal",
                           str(journal), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)


def states(journal: Path) -> list[str]:
    lines = journal_cli(journal, "list").stdout.splitlines()[1:]
    return [line.split()[1] for line in lines]


def test_acknowledged_events_survive_sigkill(start: Launch, tmp_path: Path) -> None:
    out, journal = tmp_path / "calls.jsonl", tmp_path / "talon.db"
    server = start(rules(out, sleep=1.0), config(journal))
    pods = [f"web-{i}" for i in range(8)]
    assert [server.post(event(pod)) for pod in pods] == [200] * 8
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(5)
    ran_before = len(records(out, 0))
    assert ran_before < 8  # most of them never ran
    restarted = start(rules(out), config(journal))
    wait_until(lambda: {r["pod"] for r in records(out, 0)} >= set(pods), timeout=20)
    wait_until(lambda: states(journal) == ["done"] * 8, timeout=20)
    assert "not done at the last stop run again" in restarted.log()
    body = restarted.request("GET", "/metrics")[1].decode()
    replayed = float(body.split("\ntalon_journal_replayed_total ")[1].split()[0])
    assert 8 - ran_before <= replayed <= 8


def test_kill_before_the_action_started_and_during_it(start: Launch, tmp_path: Path) -> None:
    out, journal = tmp_path / "calls.jsonl", tmp_path / "talon.db"
    server = start(rules(out, sleep=60), config(journal, workers=1))
    assert server.post(event("busy")) == 200  # its action starts and sleeps
    assert server.post(event("waiting")) == 200  # committed, never started
    server.wait_log('"status": "in_progress"')
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(5)
    assert records(out, 0) == []
    start(rules(out), config(journal, workers=1))
    wait_until(lambda: len(records(out, 0)) == 2, timeout=20)
    assert [r["pod"] for r in records(out, 0)] == ["busy", "waiting"]  # in arrival order
    wait_until(lambda: states(journal) == ["done", "done"], timeout=20)


def test_unmatched_events_are_committed_done(start: Launch, tmp_path: Path) -> None:
    out, journal = tmp_path / "calls.jsonl", tmp_path / "talon.db"
    server = start(rules(out, sleep=60), config(journal, workers=1))
    unmatched = [{**event(f"web-{i}"), "rule": "Some rule Talon ignores"} for i in range(3)]
    assert server.post(event("busy")) == 200  # its action sleeps: the worker stays busy
    assert server.post(event("waiting")) == 200  # never started
    assert [server.post(e) for e in unmatched] == [200] * 3
    assert states(journal) == ["pending", "pending", "done", "done", "done"]
    assert "\ntalon_journal_depth 2.0" in server.request("GET", "/metrics")[1].decode()
    exported = journal_cli(journal, "export").stdout.splitlines()
    assert [json.loads(line)["output"] for line in exported] == \
        ["a shell in busy", "a shell in waiting"] + [e["output"] for e in unmatched]
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(5)
    restarted = start(rules(out), config(journal, workers=1))
    wait_until(lambda: len(records(out, 0)) == 2, timeout=20)
    assert [r["pod"] for r in records(out, 0)] == ["busy", "waiting"]
    body = restarted.request("GET", "/metrics")[1].decode()
    assert "\ntalon_journal_replayed_total 2.0" in body


def test_dedup_keys_outlive_a_restart(start: Launch, tmp_path: Path) -> None:
    out, journal = tmp_path / "calls.jsonl", tmp_path / "talon.db"
    server = start(rules(out), config(journal, window=300))
    assert server.post(event("web-1")) == 200
    wait_until(lambda: len(records(out, 0)) == 1, timeout=20)
    wait_until(lambda: states(journal) == ["done"], timeout=20)
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(10)
    restarted = start(rules(out), config(journal, window=300))
    assert restarted.post(event("web-1")) == 200  # the same output: the same key
    assert restarted.post(event("web-2")) == 200
    wait_until(lambda: len(records(out, 0)) == 2, timeout=20)
    restarted.wait_log('"status": "duplicate"')
    assert [r["pod"] for r in records(out, 0)] == ["web-1", "web-2"]


def test_second_server_on_the_same_journal_is_refused(start: Launch, tmp_path: Path) -> None:
    out, journal = tmp_path / "calls.jsonl", tmp_path / "talon.db"
    first = start(rules(out), config(journal))
    with pytest.raises(AssertionError, match="in use by another Talon process"):
        start(rules(out), config(journal))
    assert first.post(event("web-1")) == 200  # the first one is unharmed
    wait_until(lambda: len(records(out, 0)) == 1, timeout=20)
    listing = journal_cli(journal, "list")  # the CLI never takes the server's lock
    assert listing.returncode == 0, listing.stderr


@pytest.mark.parametrize(("prepare", "message"), [
    (lambda p: p.write_bytes(b"this is not a database" * 400), "is corrupt or not a journal"),
    (lambda p: None, "cannot open"),
])
def test_unusable_journal_is_a_start_up_error(start: Launch, tmp_path: Path,
                                              prepare: Callable[[Path], None],
                                              message: str) -> None:
    journal = tmp_path / "talon.db" if message != "cannot open" \
        else tmp_path / "missing" / "talon.db"
    prepare(journal)
    with pytest.raises(AssertionError, match="server exited 1") as failed:
        start(rules(tmp_path / "calls.jsonl"), config(journal))
    assert message in str(failed.value)
    assert str(journal) in str(failed.value)
