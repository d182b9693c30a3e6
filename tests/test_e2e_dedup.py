"""End to end: several Talon replicas (real server processes) share one dedup window.

The replicas run `python -m talon server` against the fake API server (real HTTP, the
Lease semantics of the real one: 409 on create of an existing name, resourceVersion
checked on update). Behaviours covered:
- the start-up log says whether dedup is cluster-wide (Leases, and in which namespace)
  or per process, and why;
- the same event posted to each of three replicas within the window runs its action
  exactly once; after the window it runs again; different keys run independently;
- SIGKILL of one replica during a burst loses no event accepted by the others;
- the API answering 500, or hanging past `deduplication.timeout_seconds`, makes each
  replica act (fallback), counted in /metrics;
- expired dedup Leases are deleted by the background sweep.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.kube_api import FakeKubeAPI, kube_api, kube_config
from tests.support import Launch, Server, recording_rules, records, start, wait_until

__all__ = ["kube_api", "kube_config", "start"]

LEASES = ("leases", "talon", "coordination.k8s.io/v1")


def config(kube_config: Path, window: int = 2, timeout: float = 2.0) -> str:
    return f"""
        kubeconfig: {kube_config}
        deduplication:
          time_window_seconds: {window}
          lease_namespace: talon
          timeout_seconds: {timeout}
        """


def event(output: str = "a shell in web-1") -> dict[str, Any]:
    return {"rule": "Terminal shell in container", "priority": "Warning", "output": output,
            "output_fields": {"k8s.pod.name": "web-1", "k8s.ns.name": "shop"}}


def settle(out: Path, expected: int, quiet: float = 1.0) -> list[dict[str, Any]]:
    """The records once `expected` are there and no more arrive for `quiet` seconds."""
    wait_until(lambda: len(records(out, 0)) >= expected)
    time.sleep(quiet)
    return records(out, 0)


def post_all(servers: list[Server], body: dict[str, Any]) -> list[int]:
    """Post `body` to every replica at about the same time."""
    codes: list[int] = [0] * len(servers)

    def post(i: int) -> None:
        codes[i] = servers[i].post(body)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(servers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes


def metric(server: Server, name: str) -> float:
    _status, body = server.request("GET", "/metrics")
    found = re.search(rf"^{re.escape(name)} (\S+)$", body.decode(), re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def replicas(start: Launch, kube_config: Path, tmp_path: Path) -> Callable[..., list[Server]]:
    def launch(n: int, **kw: Any) -> list[Server]:
        return [start(recording_rules(tmp_path / "out.jsonl"), config(kube_config, **kw))
                for _ in range(n)]
    return launch


def test_start_up_log_names_the_mode(start: Launch, kube_config: Path, tmp_path: Path,
                                     kube_api: FakeKubeAPI) -> None:
    server = start(recording_rules(tmp_path / "out.jsonl"), config(kube_config))
    server.wait_log(r"cluster-wide through Leases in the namespace 'talon'")
    local = start(recording_rules(tmp_path / "out.jsonl"),
                  "deduplication: {leader_election: false}")
    local.wait_log(r"per process \(leader_election is false\)")


def test_three_replicas_act_once_per_window(replicas: Callable[..., list[Server]],
                                            kube_api: FakeKubeAPI, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    servers = replicas(3)
    assert post_all(servers, event()) == [200, 200, 200]
    assert len(settle(out, 1)) == 1
    [lease] = kube_api.list(LEASES[0], LEASES[1], api_version=LEASES[2])
    assert lease["spec"]["leaseDurationSeconds"] == 2
    time.sleep(2.2)                                   # the window is over
    assert post_all(servers, event()) == [200, 200, 200]
    assert len(settle(out, 2)) == 2
    for i in range(4):                                # other keys are independent
        assert post_all(servers, event(f"a shell in web-{i + 10}")) == [200, 200, 200]
    assert len(settle(out, 6)) == 6
    claims = sum(metric(s, 'talon_dedup_claims_total{result="first"}') for s in servers)
    assert claims == 6


def test_killing_a_replica_loses_nothing_accepted_by_the_others(
        replicas: Callable[..., list[Server]], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    first, second, doomed = replicas(3, window=30)
    accepted: list[str] = []
    for i in range(60):
        body = event(f"burst {i}")
        target = (first, second, doomed)[i % 3]
        if i == 30:
            doomed.proc.kill()
            doomed.proc.wait(5)
        if target is doomed and doomed.proc.poll() is not None:
            continue
        if target.post(body) == 200 and target is not doomed:
            accepted.append(body["output"])
    assert len(accepted) >= 38                        # of the 40 posts to the survivors
    wait_until(lambda: set(accepted) <= {r["output"] for r in records(out, 0)})
    outputs = [r["output"] for r in records(out, 0)]
    assert set(accepted) <= set(outputs)
    assert len(outputs) == len(set(outputs))          # nothing ran twice


@pytest.mark.parametrize("fault", ["error", "hang"])
def test_a_failing_api_makes_every_replica_act(replicas: Callable[..., list[Server]],
                                               kube_api: FakeKubeAPI, tmp_path: Path,
                                               fault: str) -> None:
    out = tmp_path / "out.jsonl"
    servers = replicas(2, timeout=0.5)
    if fault == "error":
        kube_api.fail("POST", "/leases", 500, times=None)
    else:
        kube_api.delay("POST", "/leases", 5)
    started = time.monotonic()
    assert post_all(servers, event()) == [200, 200]
    assert len(settle(out, 2, quiet=0.2)) == 2       # at least once: both acted
    if fault == "hang":
        assert time.monotonic() - started < 4         # not the 5 s the API takes
    reason = "error" if fault == "error" else "timeout"
    for server in servers:
        assert metric(server, f'talon_dedup_fallback_total{{reason="{reason}"}}') == 1
        server.wait_log(r'"result": "fallback"')


def test_expired_leases_are_swept(replicas: Callable[..., list[Server]],
                                  kube_api: FakeKubeAPI, tmp_path: Path) -> None:
    [server] = replicas(1, window=1)
    assert server.post(event()) == 200
    wait_until(lambda: bool(kube_api.list(LEASES[0], LEASES[1], api_version=LEASES[2])))
    wait_until(lambda: not kube_api.list(LEASES[0], LEASES[1], api_version=LEASES[2]),
               timeout=20)
