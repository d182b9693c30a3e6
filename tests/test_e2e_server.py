"""End to end: the real server as a subprocess, driven over HTTP.

Covers: a matched event runs a plug-in actionner (loaded through `plugins:`) with the
sequencing rules; dry-run runs nothing and logs the final parameters; duplicates run
once; hot reload swaps valid rules and keeps the old ones when the new ones are invalid;
SIGHUP reloads; bad requests get 4xx and the server keeps serving; SIGTERM with queued
events processes all of them before exiting 0, and past the shutdown deadline names each
event left (trace id, rule, pod) and exits 1; metrics move; `server --dry-run` starts
with no config file, using rules.d/, and logs what it would do for a sample event; a
reload that names a configured notifier delivers to it; `notify_dry_run` sends dry-run
notifications (and nothing is sent without it); the counters are served under the seed's
and Falco Talon's names alike, and an unusable event is counted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import RECORDER, ROOT, Launch, Server, records, start

__all__ = ["start"]

SHELL_EVENT = ROOT / "tests" / "fixtures" / "events" / "falco_shell.json"


def event(rule: str = "Terminal shell in container", pod: str = "web",
          output: str = "shell") -> dict[str, Any]:
    return {"rule": rule, "priority": "Warning", "output": output,
            "output_fields": {"k8s.pod.name": pod, "k8s.ns.name": "shop"}}


def rules_for(out: Path, extra: str = "") -> str:
    return f"""
        - rule: React
          match: {{rules: [Terminal shell in container]}}
          actions:
            - {{action: first, actionner: test:record, parameters: {{file: "{out}"}}}}
            - {{action: second, actionner: test:record,
               parameters: {{file: "{out}", fail: true}}, ignore_errors: true}}
            - {{action: third, actionner: test:record, parameters: {{file: "{out}"}},
               continue: false}}
            - {{action: never, actionner: test:record, parameters: {{file: "{out}"}}}}
        {extra}"""


def test_matched_event_runs_actions_in_sequence(start: Launch,
                                                tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    server = start(rules_for(out))
    assert server.post(event()) == 200
    calls = records(out, 3)
    assert [c["action"] for c in calls] == ["first", "second", "third"]
    assert re.fullmatch(r"[0-9a-f]{32}", calls[0]["trace_id"])
    text = server.wait_log('"status": "failure"')
    assert "asked to fail" in text
    time.sleep(0.3)
    assert len(records(out, 3)) == 3  # "never" stays unreached
    status, body = server.request("GET", "/metrics")
    assert status == 200
    metrics = body.decode()
    assert 'event_total{event="Terminal shell in container"' in metrics
    assert re.search(r'action_total\{action="second".*status="failure".*\} 1.0', metrics)


def test_dry_run_runs_nothing(start: Launch, tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    server = start(rules_for(out), "", "--dry-run")
    assert server.post(event()) == 200
    text = server.wait_log(r'"action": "third".*"dry_run": true')
    assert "no action, dry-run is enabled" in text
    assert not out.exists()


def test_duplicates_run_once(start: Launch, tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    server = start(f"""
        - rule: React
          actions: [{{action: a, actionner: test:record, parameters: {{file: "{out}"}}}}]
        """, "deduplication: {time_window_seconds: 30}\n")
    for _ in range(3):
        assert server.post(event()) == 200
    assert server.post(event(output="other text")) == 200
    calls = records(out, 2)
    time.sleep(0.5)
    assert len(records(out, 2)) == 2
    assert calls[0]["output"] != calls[1]["output"]
    _, body = server.request("GET", "/metrics")
    assert "talon_events_duplicate_total 2.0" in body.decode()


def test_hot_reload_and_invalid_rules_keep_the_old_set(start: Launch,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    server = start(f"""
        - rule: Old
          actions: [{{action: old, actionner: test:record, parameters: {{file: "{out}"}}}}]
        """)
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(textwrap.dedent(f"""
        - rule: New
          notes: a key Talon does not know
          actions: [{{action: new, actionner: test:record, parameters: {{file: "{out}"}}}}]
        """))
    server.wait_log("1 rule\\(s\\) have been successfully loaded")
    assert "unknown key 'notes' is ignored" in server.log()  # warnings of a reload are shown
    assert server.post(event()) == 200
    assert [c["action"] for c in records(out, 1)] == ["new"]
    rules_path.write_text("- rule: Broken\n  actions: [{action: x, actionner: test:nope}]\n")
    server.wait_log("the rules in force are kept")
    assert "unknown actionner 'test:nope'" in server.log()
    assert server.post(event(output="again")) == 200
    assert [c["action"] for c in records(out, 2)] == ["new", "new"]
    _, body = server.request("GET", "/metrics")
    assert 'talon_rules_reloads_total{status="failed"} 1.0' in body.decode()


def test_sighup_reloads(start: Launch, tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    server = start(f"""
        - rule: Old
          actions: [{{action: old, actionner: test:record, parameters: {{file: "{out}"}}}}]
        """, "watch_rules: false\n")
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(f"""
        - rule: New
          actions: [{{action: new, actionner: test:record, parameters: {{file: "{out}"}}}}]
        """))
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log("successfully loaded")
    assert server.post(event()) == 200
    assert [c["action"] for c in records(out, 1)] == ["new"]


def test_bad_input_gets_4xx_and_the_server_keeps_serving(start: Launch,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    server = start(rules_for(out))
    status, body = server.request("POST", "/", b'{"priority": 3}')
    assert status == 400 and b"priority" in body
    assert server.request("POST", "/", b"not json")[0] == 400
    assert server.request("GET", "/")[0] == 405
    assert server.request("GET", "/healthz") == (200, b'{"status": "ok"}')
    assert server.post(event()) == 200
    assert len(records(out, 3)) == 3



def slow_rule(out: Path, sleep: float) -> str:
    """One rule whose action records the call in `out` after sleeping `sleep` seconds."""
    return f"""
        - rule: Slow
          actions:
            - {{action: slow, actionner: test:record,
               parameters: {{file: "{out}", sleep: {sleep}}}}}
        """

def test_sigterm_processes_every_queued_event(start: Launch,
                                              tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    server = start(slow_rule(out, 0.1), "workers: 1\n")
    for i in range(10):
        assert server.post(event(pod=f"p{i}", output=f"o{i}")) == 200
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    assert len(records(out, 10, timeout=1)) == 10
    assert "stopped" in server.log()


def test_sigterm_past_the_deadline_names_every_event_left(start: Launch,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    server = start(slow_rule(out, 3), "queue_size: 3\nshutdown_timeout_seconds: 0.3\n")
    statuses = [server.post(event(output=f"o{i}")) for i in range(8)]
    accepted = statuses.count(200)
    assert statuses == [200] * accepted + [503] * (8 - accepted)  # one pod: its backlog
    assert accepted in (3, 4)  # is bounded by queue_size (the first may still be queued)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 1
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    dropped = [x for x in lines if x.get("status") == "dropped"]
    assert len(dropped) == accepted - 1 and all(x["level"] == "warning" for x in dropped)
    assert {(x["rule"], x["pod"]) for x in dropped} == {
        ("Terminal shell in container", "shop/web")}
    assert len({x["trace_id"] for x in dropped}) == accepted - 1
    assert [x["status"] for x in lines if x.get("status") == "unfinished"] == ["unfinished"]
    [summary] = [x for x in lines if x.get("error") == "drain timeout: events left"]
    assert summary["dropped"] == accepted - 1 and summary["running"] == 1

def test_an_event_no_rule_matches_is_accepted_when_the_queue_is_full(
        start: Launch, tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    server = start(f"""
        - rule: Slow
          match: {{rules: ["Terminal shell in container"]}}
          actions:
            - {{action: slow, actionner: test:record,
               parameters: {{file: "{out}", sleep: 3}}}}
        """, "queue_size: 1\nshutdown_timeout_seconds: 0.3\n")
    statuses = [server.post(event(output=f"o{i}")) for i in range(4)]
    assert statuses[-1] == 503  # the matched events filled the queue
    other = event(rule="Read sensitive file untrusted", output="cat /etc/shadow")
    assert [server.post(other) for _ in range(3)] == [200] * 3  # nothing to run: no place
    _, text = server.request("GET", "/metrics")
    assert re.search(rb'event_total\{event="Read sensitive file untrusted",'
                     rb'priority="Warning",source="syscall"\} 3\.0', text)


def test_invalid_rules_exit_1(start: Launch, tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="server exited 1"):
        start("- rule: R\n  actions: [{action: a, actionner: nope:x}]\n")


def test_dry_run_server_without_config_uses_rules_d(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "talon", "server", "--dry-run", "--listen-address",
             "127.0.0.1", "--listen-port", "0"], cwd=tmp_path, stdout=fh,
            stderr=subprocess.STDOUT, text=True,
            env={**{k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
                 "PYTHONPATH": str(ROOT), "LOG_FORMAT": "text"})
    try:
        server = Server(proc, log)
        assert server.request("POST", "/", SHELL_EVENT.read_bytes())[0] == 200
        text = server.wait_log("dry-run is enabled")
        assert "rules.d" in text
        assert "kubernetes:label" in text and "talon.falco.org/suspicious" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_notifications_reach_the_webhook_and_a_dead_notifier_delays_nothing(
        start: Launch, tmp_path: Path) -> None:
    from tests.notifiers.sinks import HttpSink, Reply, free_port

    out = tmp_path / "calls.jsonl"
    dead = free_port()  # nothing listens there
    with HttpSink() as hook, HttpSink() as slow:
        slow.script("/hook", then=Reply(delay=3.0))
        server = start(f"""
            - rule: React
              notifiers: [slack, loki]
              actions: [{{action: a, actionner: test:record, parameters: {{file: "{out}"}}}}]
            """, f"""
            default_notifiers: [webhook]
            notifier_timeout_seconds: 1
            notifier_retries: 1
            notifiers:
              webhook: {{url: "{hook.url}/talon", custom_headers: {{X-Team: secops}}}}
              slack: {{webhook_url: "http://127.0.0.1:{dead}/services/T000/B000/SECRETTOKEN"}}
              loki: {{url: "{slow.url}/hook"}}
            """)
        sent = time.monotonic()
        for i in range(5):
            assert server.post(event(pod=f"p{i}", output=f"o{i}")) == 200
        calls = records(out, 5)
        assert len(calls) == 5
        assert max(c["started"] for c in calls) - min(c["started"] for c in calls) < 1.0
        assert time.monotonic() - sent < 3
        deadline = time.monotonic() + 10
        while len(hook.requests) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        bodies = [r.json() for r in hook.requests]
        assert len(bodies) == 5
        assert {b["status"] for b in bodies} == {"success"}
        assert {b["rule"] for b in bodies} == {"React"}
        assert hook.requests[0].header("X-Team") == "secops"
        text = server.wait_log(r'"notifier": "slack".*"status": "failure"')
        assert "SECRETTOKEN" not in text
        counted = 'notification_total{notifier="webhook",status="success"} 5.0'
        deadline = time.monotonic() + 5  # counted once each send has returned
        while counted not in (text := server.request("GET", "/metrics")[1].decode()) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counted in text


def test_plugin_import_error_is_a_clear_start_error(start: Launch, tmp_path: Path) -> None:
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("raise ImportError('missing dependency acme_sdk')\n")
    with pytest.raises(AssertionError, match="server exited 1") as info:
        start("- rule: R\n  actions: [{action: a, actionner: test:record, "
              "parameters: {file: /dev/null}}]\n", f'plugins: ["{RECORDER}", "{broken}"]\n')
    assert "broken_plugin.py" in str(info.value) and "acme_sdk" in str(info.value)


def test_unreachable_cluster_is_a_clear_start_error(start: Launch, tmp_path: Path) -> None:
    from tests.notifiers.sinks import free_port

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(textwrap.dedent(f"""
        apiVersion: v1
        kind: Config
        clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{free_port()}"}}}}]
        users: [{{name: u, user: {{token: t}}}}]
        contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
        current-context: x
        """))
    label = ("- rule: R\n  actions: [{action: a, actionner: kubernetes:label, "
             "parameters: {labels: {suspicious: \"true\"}}}]\n")
    with pytest.raises(AssertionError, match="server exited 1") as info:
        start(label, f"kubeconfig: {kubeconfig}\naction_timeout_seconds: 2\n")
    text = str(info.value)
    assert "cannot reach the Kubernetes API" in text and str(kubeconfig) in text
    assert "--dry-run" in text
    server = start(label, f"kubeconfig: {kubeconfig}\n", "--dry-run")  # audits without it
    assert server.post(event()) == 200
    server.wait_log("dry-run is enabled")


def test_metrics_show_busy_workers(start: Launch, tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    server = start(slow_rule(out, 1.5), "workers: 2\n")
    for pod in ("a", "a", "b"):  # a's second event waits for a's first: same pod, in order
        assert server.post(event(pod=pod, output=f"o-{pod}-{time.monotonic()}")) == 200
    time.sleep(0.5)
    _, body = server.request("GET", "/metrics")
    assert re.search(r"^talon_workers_busy 2\.0$", body.decode(), re.MULTILINE)
    assert len(records(out, 3, timeout=10)) == 3
    _, body = server.request("GET", "/metrics")
    assert re.search(r"^talon_workers_busy 0\.0$", body.decode(), re.MULTILINE)


def wait_requests(sink: Any, n: int, timeout: float = 10) -> list[Any]:
    deadline = time.monotonic() + timeout
    while len(sink.requests) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(sink.requests)


def test_a_reload_that_adds_a_configured_notifier_delivers_to_it(
        start: Launch, tmp_path: Path) -> None:
    from tests.notifiers.sinks import HttpSink

    out = tmp_path / "calls.jsonl"
    action = f'{{action: a, actionner: test:record, parameters: {{file: "{out}"}}}}'
    with HttpSink() as hook:
        server = start(f"- rule: React\n  actions: [{action}]\n",
                       f'notifiers:\n  webhook: {{url: "{hook.url}/talon"}}\n')
        (tmp_path / "rules.yaml").write_text(
            f"- rule: React\n  notifiers: [webhook]\n  actions: [{action}]\n")
        server.wait_log("successfully loaded")
        assert server.post(event()) == 200
        [req] = wait_requests(hook, 1)
        body = req.json()
        assert (body["rule"], body["action"], body["status"]) == ("React", "a", "success")
        assert req.path == "/talon"


def test_notify_dry_run_sends_marked_notifications(start: Launch, tmp_path: Path) -> None:
    from tests.notifiers.sinks import HttpSink

    with HttpSink() as hook:
        server = start(rules_for(tmp_path / "calls.jsonl"),
                       f'notify_dry_run: true\ndefault_notifiers: [webhook]\n'
                       f'notifiers:\n  webhook: {{url: "{hook.url}/talon"}}\n', "--dry-run")
        assert server.post(event()) == 200
        bodies = [r.json() for r in wait_requests(hook, 3)]
    assert sorted(b["action"] for b in bodies) == ["first", "second", "third"]
    assert {b["status"] for b in bodies} == {"dry_run"}
    assert {b["output"] for b in bodies} == {"no action, dry-run is enabled"}
    assert bodies[0]["objects"] == {"namespace": "shop", "pod": "web"}
    assert not (tmp_path / "calls.jsonl").exists()


def test_dry_run_sends_no_notification_by_default(start: Launch, tmp_path: Path) -> None:
    from tests.notifiers.sinks import HttpSink

    out = tmp_path / "calls.jsonl"
    with HttpSink() as hook:
        server = start(f"""
            - rule: Audit
              dry_run: true
              actions: [{{action: audited, actionner: test:record, parameters: {{file: "{out}"}}}}]
            - rule: Real
              actions: [{{action: real, actionner: test:record, parameters: {{file: "{out}"}}}}]
            """, f'default_notifiers: [webhook]\nnotifier_workers: 1\n'
                 f'notifiers:\n  webhook: {{url: "{hook.url}/talon"}}\n')
        assert server.post(event()) == 200
        # one notifier thread delivers in order: a dry-run notification would come first
        wait_requests(hook, 1)
        assert [r.json()["action"] for r in hook.requests] == ["real"]


def test_metrics_under_both_names(start: Launch, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    server = start(rules_for(tmp_path / "calls.jsonl"))
    assert server.post(event()) == 200
    records(tmp_path / "calls.jsonl", 3)
    assert server.request("POST", "/", b"{}")[0] == 200  # accepted, as before, and counted
    names = {"event": "events", "match": "matches", "action": "actions",
             "output": "outputs", "notification": "notifications"}
    deadline = time.monotonic() + 10
    while True:
        families = {f.name: f for f in text_string_to_metric_families(
            server.request("GET", "/metrics")[1].decode())}
        unusable = families.get("talon_events_unusable")
        if (unusable and unusable.samples) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for seed, upstream in names.items():
        alias = f"falcosecurity_falco_talon_{upstream}"
        assert alias in families, alias
        assert families[alias].type == families[seed].type == "counter"
        ours = sorted((s.name.removeprefix(seed), sorted(s.labels.items()), s.value)
                      for s in families[seed].samples if s.name.endswith("_total"))
        theirs = sorted((s.name.removeprefix(alias), sorted(s.labels.items()), s.value)
                        for s in families[alias].samples if s.name.endswith("_total"))
        assert ours == theirs
    actions = [s for s in families["falcosecurity_falco_talon_actions"].samples
               if s.name.endswith("_total")]
    assert {s.labels["action"] for s in actions} == {"first", "second", "third"}
    assert [(s.labels, s.value) for s in unusable.samples  # type: ignore[union-attr]
            if s.name.endswith("_total")] == [({"reason": "no_rule"}, 1.0)]
