"""Shared test helpers: run `python -m talon server` as a subprocess and talk to it."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORDER = ROOT / "tests" / "plugins" / "recorder.py"


class Server:
    """A `python -m talon server` subprocess and a client for it."""

    def __init__(self, proc: subprocess.Popen[str], log: Path) -> None:
        self.proc, self.log_path = proc, log
        self.port = self._wait_port()

    def _wait_port(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = re.search(r"listening on [\d.]+:(\d+)", self.log())
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError("server did not start:\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body,
                         headers={"Content-Type": "application/json"} if body else {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def post(self, event: dict[str, Any]) -> int:
        return self.request("POST", "/", json.dumps(event).encode())[0]

    def wait_log(self, pattern: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if re.search(pattern, text):
                return text
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in log:\n{self.log()}")



Launch = Callable[..., Server]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Launch]:
    """`start(rules_yaml, config_yaml="", *extra_args, env={...})` → a running Server;
    `env` adds to (or overrides) the environment the server inherits."""
    procs: list[subprocess.Popen[str]] = []

    def launch(rules: str | None, config: str = "", *args: str,
               env: Mapping[str, str] | None = None) -> Server:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(textwrap.dedent(f"""
            listen_address: 127.0.0.1
            listen_port: 0
            log_format: json
            plugins: ["{RECORDER}"]
            reload_interval_seconds: 0.2
            """) + textwrap.dedent(config))
        cmd = [sys.executable, "-m", "talon", "server", "-c", str(cfg)]
        if rules is not None:
            path = tmp_path / "rules.yaml"
            path.write_text(textwrap.dedent(rules))
            cmd += ["-r", str(path)]
        log = tmp_path / f"server{len(procs)}.log"
        environ = {k: v for k, v in os.environ.items()
                   if k not in ("NOTIFY_SOCKET", "KUBECONFIG")} | dict(env or {})
        with log.open("w") as fh:
            proc = subprocess.Popen([*cmd, *args], cwd=ROOT, stdout=fh,
                                    stderr=subprocess.STDOUT, text=True, env=environ)
        procs.append(proc)
        return Server(proc, log)

    yield launch
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def recording_rules(out: Path) -> str:
    """One rule reacting to "Terminal shell in container" by recording into `out`."""
    return f"""
        - rule: React
          match: {{rules: [Terminal shell in container]}}
          actions:
            - {{action: record, actionner: test:record, parameters: {{file: "{out}"}}}}
        """


def wait_until(condition: Callable[[], bool], timeout: float = 15,
               interval: float = 0.05) -> None:
    """Return once `condition()` is true; AssertionError if it is not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def records(path: Path, n: int, timeout: float = 10) -> list[dict[str, Any]]:
    """The test:record lines in `path`, once there are `n` (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= n:
            break
        time.sleep(0.05)
    return [json.loads(line) for line in lines]
