"""OpenTelemetry through the real server (`python -m talon server`, sys.executable).

Covers: a POST carrying a W3C `traceparent` gives one trace with that id, whose `event`
span's parent is the caller's span; the log lines carry that trace id; a POST without one
gets a fresh trace; the spans still pending and a last metrics export are flushed on
SIGTERM (the batch delay is 5 s, the test stops the server at once); the /metrics counters
arrive as `falcosecurity_falco_talon_*`.
"""

from __future__ import annotations

import http.client
import json
import signal
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs requirements-otel.txt")
pytest.importorskip("grpc", reason="needs grpcio (tests/requirements.txt)")

from tests.fakes.otlp import GrpcReceiver
from tests.support import Launch, start
from tests.test_e2e_server import event, records

__all__ = ["start"]

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


def post(port: int, body: dict[str, object], traceparent: str | None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if traceparent:
        headers["traceparent"] = traceparent
    try:
        conn.request("POST", "/", body=json.dumps(body).encode(), headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_server_exports_traces_and_metrics_and_flushes_on_stop(start: Launch,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    with GrpcReceiver() as receiver:
        server = start(f"""
            - rule: React
              match: {{rules: [Terminal shell in container]}}
              actions:
                - {{action: record, actionner: test:record, parameters: {{file: "{out}"}}}}
            """, f"""
            otel:
              traces_enabled: true
              metrics_enabled: true
              collector_endpoint: 127.0.0.1
              collector_port: {receiver.port}
              collector_use_insecure_grpc: true
              timeout: 5
            """)
        assert post(server.port, event(pod="a"), f"00-{TRACE_ID}-{CALLER_SPAN}-01") == 200
        assert post(server.port, event(pod="b", output="other"), None) == 200
        calls = records(out, 2)
        assert len(calls) == 2
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        receiver.wait(lambda g: len(g.named("event")) == 2
                      and bool(g.metric("falcosecurity_falco_talon_actions")), timeout=5)
    roots = {s["trace_id"]: s for s in receiver.named("event")}
    assert roots[TRACE_ID]["parent"] == CALLER_SPAN
    (other,) = set(roots) - {TRACE_ID}
    assert roots[other]["parent"] == ""  # no traceparent: a trace of its own
    assert {c["trace_id"] for c in calls} == {TRACE_ID, other}
    logged = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    actions = [line for line in logged if line.get("msg", line.get("message")) == "action"
               and line.get("status") == "success"]
    assert {a["trace_id"] for a in actions} == {TRACE_ID, other}
    spans = {s["span_id"]: s for s in receiver.spans if s["trace_id"] == TRACE_ID}
    action = next(s for s in spans.values() if s["name"] == "action")
    assert spans[action["parent"]]["name"] == "match"
    assert spans[spans[action["parent"]]["parent"]]["name"] == "event"
    assert action["attributes"]["object.pod"] == "a"
    assert action["attributes"]["action.actionner"] == "test:record"
    (events,) = receiver.metric("falcosecurity_falco_talon_events")
    assert events["value"] == 2
    assert events["attributes"] == {"event": "Terminal shell in container",
                                    "priority": "Warning", "source": "syscall"}
    assert sum(p["value"] for p in receiver.metric("falcosecurity_falco_talon_actions")) == 2
