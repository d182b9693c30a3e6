"""End to end: secrets never reach the log file of a real server.

Covers: a server (subprocess, JSON and text logs) configured with a webhook notifier whose
URL carries user info and a token query parameter, a custom header token, and an
Elasticsearch password holding a quote and non-ASCII characters; an event whose output
repeats all of them (and an unrelated URL with a password and an api_key) is logged and
notified, the webhook answers 500 so the failure is logged too: the log file holds none
of the secrets in any encoding, and the webhook still received the real URL and header.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

from tests.notifiers.sinks import HttpSink, Reply
from tests.support import Launch, start

__all__ = ["start"]

ES_PASSWORD = 'es-pa"ss\\wörd✓'
HOOK_PASSWORD = "hook-pw-8812"
HOOK_TOKEN = "hooktoken77"
HEADER_TOKEN = "header-token-5150"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_the_log_file_holds_no_secret(start: Launch, tmp_path: Path, log_format: str) -> None:
    out = tmp_path / "calls.jsonl"
    with HttpSink() as hook, HttpSink() as es:
        hook.script("/hook", then=Reply(status=500, body=b"nope"))
        host = hook.url.removeprefix("http://")
        hook_url = f"http://talon:{HOOK_PASSWORD}@{host}/hook?token={HOOK_TOKEN}"
        config = (f"log_format: {log_format}\n"
                  "notifiers:\n"
                  f"  webhook: {{url: {json.dumps(hook_url)},"
                  f" custom_headers: {{X-Api-Token: {HEADER_TOKEN}}}}}\n"
                  f"  elasticsearch: {{url: {json.dumps(es.url)}, user: elastic,"
                  f" password: {json.dumps(ES_PASSWORD)}, create_index_template: false}}\n"
                  "default_notifiers: [webhook, elasticsearch]\n"
                  "notifier_retries: 0\n")
        rules = f"""
            - rule: React
              match: {{rules: [Terminal shell in container]}}
              actions:
                - {{action: record, actionner: test:record, parameters: {{file: "{out}"}}}}
            """
        server = start(rules, config)  # the later log_format wins
        output = (f"curl {hook_url} -H 'X-Api-Token: {HEADER_TOKEN}' -u elastic:{ES_PASSWORD}"
                  " https://bob:hunter2@db.example/?api_key=zz9plural")
        assert server.post({"rule": "Terminal shell in container", "priority": "Warning",
                            "output": output,
                            "output_fields": {"k8s.pod.name": "web", "k8s.ns.name": "shop"}}) == 200
        server.wait_log(r"notification.*webhook.*(failure|500)|500.*webhook")
        server.wait_log(r"elasticsearch")
        assert hook.requests and es.requests
        assert hook.requests[0].path == f"/hook?token={HOOK_TOKEN}"
        assert hook.requests[0].header("X-Api-Token") == HEADER_TOKEN
    text = server.log()  # the whole log, including what was written after the first wait
    leaks = {HOOK_PASSWORD, HOOK_TOKEN, HEADER_TOKEN, "hunter2", "zz9plural",
             ES_PASSWORD, json.dumps(ES_PASSWORD)[1:-1], "wörd", "w\\u00f6rd", "\\u2713",
             urllib.parse.quote(ES_PASSWORD, safe="")}
    assert not {leak for leak in leaks if leak in text}, text
    assert "***" in text
    assert text.lstrip().startswith("{") == (log_format == "json")
    assert "Terminal shell in container" in text
