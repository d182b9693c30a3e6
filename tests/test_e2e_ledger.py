"""End to end: a running server writes the action ledger; `talon ledger verify` checks it.

Covers: events posted to a server (subprocess, test:record plug-in) with `ledger.path` and
`ledger.hmac_key_file` produce one ledger line per action outcome (success, failure with
ignore_errors, dry-run), in the order the actions ran, with time, trace id, rule, action,
actionner, target objects, final parameters (the configured AWS secret key, used as a
parameter, appears as ***), status, output or error, prev and mac; after SIGTERM
everything is written and `python -m talon ledger verify --key` passes. After a SIGKILL,
what was written verifies, and a restarted server continues the same chain.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import ROOT, Launch, Server, start

__all__ = ["start"]

SECRET = "AKIA-secret-value-4242"


def rules(tmp_path: Path) -> str:
    calls = tmp_path / "calls.jsonl"
    return f"""
        - rule: Shell
          match:
            rules: [Terminal shell in container]
          actions:
            - action: Record
              actionner: test:record
              parameters: {{file: "{calls}"}}
            - action: Record and fail
              actionner: test:record
              ignore_errors: true
              parameters: {{file: "{calls}", fail: true}}
        - rule: Capture
          match:
            rules: [Read sensitive file untrusted]
          actions:
            - action: Make artifact
              actionner: test:artifact
              parameters: {{name: proof.txt}}
              output:
                target: local:file
                parameters: {{destination: "{tmp_path}"}}
        - rule: Audit only
          dry_run: true
          match:
            rules: [Write below etc]
          actions:
            - action: Would record
              actionner: test:record
              parameters: {{file: "{SECRET}"}}
        """


def config(tmp_path: Path) -> str:
    key = tmp_path / "ledger.key"
    key.write_text("a-ledger-key-for-tests\n")
    return f"""
        aws:
          secret_key: {SECRET}
        ledger:
          path: {tmp_path / "audit" / "ledger.jsonl"}
          hmac_key_file: {key}
        """


def event(rule: str, pod: str) -> dict[str, object]:
    return {"rule": rule, "priority": "Warning", "output": f"something in {pod}",
            "output_fields": {"k8s.ns.name": "shop", "k8s.pod.name": pod}}


def ledger_lines(tmp_path: Path, count: int, timeout: float = 10) -> list[dict[str, object]]:
    path = tmp_path / "audit" / "ledger.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.count("\n") >= count:
            return [json.loads(line) for line in text.splitlines()]
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} ledger lines: {text!r}")


def verify(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "talon", "ledger", "verify",
         str(tmp_path / "audit" / "ledger.jsonl"), "--key", str(tmp_path / "ledger.key")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def post_all(server: Server) -> None:
    assert server.post(event("Terminal shell in container", "web-1")) == 200
    assert server.post(event("Write below etc", "web-2")) == 200
    assert server.post(event("Terminal shell in container", "web-3")) == 200


def test_every_action_outcome_is_in_the_ledger(start: Launch, tmp_path: Path) -> None:
    server = start(rules(tmp_path), config(tmp_path))
    post_all(server)
    assert server.post(event("Read sensitive file untrusted", "api-1")) == 200
    lines = ledger_lines(tmp_path, 7)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0
    # two workers may interleave the two events; each event's actions stay in order
    shells = sorted((ln for ln in lines if ln["rule"] == "Shell"),
                    key=lambda ln: str(ln["objects"]["pod"]))  # type: ignore[index]
    assert [(ln["action"], ln["status"], ln["objects"]) for ln in shells] == [
        ("Record", "success", {"pod": "web-1"}),
        ("Record and fail", "failure", {"namespace": "shop", "pod": "web-1"}),
        ("Record", "success", {"pod": "web-3"}),
        ("Record and fail", "failure", {"namespace": "shop", "pod": "web-3"})]
    ok, failed = shells[0], shells[1]
    assert (ok["actionner"], ok["stage"], ok["output"], ok["error"]) == (
        "test:record", "action", "recorded", "")
    assert ok["parameters"] == {"file": str(tmp_path / "calls.jsonl")}
    assert failed["parameters"] == {"file": str(tmp_path / "calls.jsonl"), "fail": True}
    assert failed["error"] == "asked to fail"
    assert ok["trace_id"] and ok["trace_id"] == failed["trace_id"]
    assert str(ok["time"]).endswith("Z") and str(ok["time"])[10] == "T"
    dry = next(ln for ln in lines if ln["rule"] == "Audit only")
    assert (dry["status"], dry["objects"], dry["parameters"]) == (
        "dry_run", {"namespace": "shop", "pod": "web-2"}, {"file": "***"})
    made, stored = [ln for ln in lines if ln["rule"] == "Capture"]
    assert (made["stage"], made["status"], made["output"]) == ("action", "success", "made")
    assert (stored["stage"], stored["output_target"], stored["status"]) == (
        "output", "local:file", "success")
    assert stored["parameters"] == {"destination": str(tmp_path)}
    assert all(len(str(ln["mac"])) == 64 for ln in lines)
    assert SECRET not in (tmp_path / "audit" / "ledger.jsonl").read_text()
    result = verify(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: 7 entries in 1 file(s), MACs checked")


def test_after_sigkill_the_ledger_verifies_and_continues(start: Launch,
                                                         tmp_path: Path) -> None:
    server = start(rules(tmp_path), config(tmp_path))
    post_all(server)
    ledger_lines(tmp_path, 5)
    server.proc.kill()
    server.proc.wait(10)
    assert verify(tmp_path).returncode == 0
    again = start(rules(tmp_path), config(tmp_path))
    assert again.post(event("Terminal shell in container", "web-4")) == 200
    lines = ledger_lines(tmp_path, 7)
    again.proc.send_signal(signal.SIGTERM)
    assert again.proc.wait(20) == 0
    assert [(ln["action"], ln["objects"]) for ln in lines[5:]] == [
        ("Record", {"pod": "web-4"}), ("Record and fail", {"namespace": "shop", "pod": "web-4"})]
    result = verify(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: 7 entries")
