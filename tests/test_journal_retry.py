"""Action retries and dead letters, against the fake Kubernetes API server (real HTTP).

Behaviours covered:
- kubernetes:label with `retries: 3`: the API answers 503 twice, the third PATCH lands;
  the pod carries the label, and the retries are logged and counted;
- a 403 is final: one PATCH, no retry;
- an action that still fails after its retries is recorded in the journal: `journal list
  --failed` and `journal show` name it (rule, action, parameters, error, attempts); once
  the API recovers, `journal retry ID` runs it again (the pod gets its label) and marks it
  resolved; `journal drop` gives up another; `journal export` feeds `rules test`;
- `journal retry`'s engine is wired as the server's: the safety governor holds a
  disruptive action on a protected namespace (`protected`);
- which exceptions are transient (talon.retry), with the real SDK exception classes;
- the engine's loop in process: success after two failures, a dead letter (attempts,
  error) after the last retry, and no attempt or wait past the action timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from talon import retry
from talon.errors import ActionError
from tests.actionners.conftest import pod
from tests.fakes.kube_api import FakeKubeAPI, kube_api, kube_config
from tests.support import ROOT, Launch, start, wait_until

__all__ = ["kube_api", "kube_config", "start"]

PATCH = r"/namespaces/shop/pods/web-1$"


def rules(retries: int) -> str:
    return f"""
        - rule: Label
          match: {{rules: [Terminal shell in container]}}
          actions:
            - {{action: mark, actionner: kubernetes:label, retries: {retries},
               retry_backoff_seconds: 0.05, parameters: {{labels: {{suspicious: "true"}}}}}}
        """


def config(kube_config: Path, journal: Path) -> str:
    return f"""
        kubeconfig: {kube_config}
        deduplication: {{time_window_seconds: 0}}
        journal: {{path: "{journal}"}}
        """


def event(pod_name: str = "web-1") -> dict[str, Any]:
    return {"rule": "Terminal shell in container", "priority": "Warning",
            "output": f"a shell in {pod_name}",
            "output_fields": {"k8s.pod.name": pod_name, "k8s.ns.name": "shop"}}


def labels(kube_api: FakeKubeAPI, name: str = "web-1") -> dict[str, str]:
    return dict(kube_api.get("pods", "shop", name)["metadata"].get("labels") or {})


def patches(kube_api: FakeKubeAPI) -> int:
    return len(kube_api.requests_for("PATCH", "/api/v1/namespaces/shop/pods/"))


def talon(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "talon", *args, "-c",
                           str(tmp_path / "config.yaml"), "-r", str(tmp_path / "rules.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_transient_failures_are_retried(start: Launch, kube_api: FakeKubeAPI,
                                        kube_config: Path, tmp_path: Path) -> None:
    kube_api.add(pod())
    kube_api.fail("PATCH", PATCH, 503, times=2)
    server = start(rules(3), config(kube_config, tmp_path / "j.db"))
    assert server.post(event()) == 200
    wait_until(lambda: labels(kube_api).get("suspicious") == "true", timeout=20)
    assert patches(kube_api) == 3
    text = server.wait_log('"status": "success"')
    assert text.count('"status": "retry"') == 2
    body = server.request("GET", "/metrics")[1]
    assert b'talon_action_retries_total{actionner="kubernetes:label"} 2.0' in body


def test_a_forbidden_patch_is_not_retried(start: Launch, kube_api: FakeKubeAPI,
                                          kube_config: Path, tmp_path: Path) -> None:
    kube_api.add(pod())
    kube_api.forbid("PATCH", PATCH)
    server = start(rules(3), config(kube_config, tmp_path / "j.db"))
    assert server.post(event()) == 200
    server.wait_log('"status": "failure"')
    assert patches(kube_api) == 1
    assert '"status": "retry"' not in server.log()


def test_dead_letter_then_journal_retry(start: Launch, kube_api: FakeKubeAPI,
                                        kube_config: Path, tmp_path: Path) -> None:
    kube_api.add(pod())
    kube_api.add(pod("web-2"))
    kube_api.fail("PATCH", r"/namespaces/shop/pods/web-[12]$", 500, times=None)
    journal = tmp_path / "j.db"
    server = start(rules(1), config(kube_config, journal))
    assert server.post(event("web-1")) == 200
    assert server.post(event("web-2")) == 200
    wait_until(lambda: len(talon(tmp_path, "journal", "list", "--failed").stdout
                           .splitlines()) == 3, timeout=20)
    assert patches(kube_api) == 4  # two attempts each
    shown = json.loads(talon(tmp_path, "journal", "show", "1").stdout)
    failure = shown["failures"][0]
    assert (failure["rule"], failure["action"], failure["actionner"]) == (
        "Label", "mark", "kubernetes:label")
    assert failure["parameters"] == {"labels": {"suspicious": "true"}}
    assert failure["attempts"] == 2 and "500" in failure["error"]
    assert shown["event"]["output_fields"]["k8s.pod.name"] == "web-1"
    assert "talon_journal_dead_letters_total 2.0" in server.request(
        "GET", "/metrics")[1].decode()

    assert talon(tmp_path, "journal", "retry", "1").returncode == 1  # still failing
    kube_api.clear_faults()
    retried = talon(tmp_path, "journal", "retry", "1")
    assert retried.returncode == 0, retried.stderr
    assert "resolved: event 1" in retried.stdout
    assert labels(kube_api).get("suspicious") == "true"
    assert "suspicious" not in labels(kube_api, "web-2")
    dropped = talon(tmp_path, "journal", "drop", "2")
    assert dropped.returncode == 0 and "dropped: event 2" in dropped.stdout
    listing = talon(tmp_path, "journal", "list", "--failed").stdout.splitlines()
    assert listing[1:] == []
    exported = tmp_path / "events.jsonl"
    exported.write_text(talon(tmp_path, "journal", "export").stdout)
    assert len(exported.read_text().splitlines()) == 2
    tested = talon(tmp_path, "rules", "test", str(exported))
    assert tested.returncode == 0, tested.stderr
    assert tested.stdout.count("action: mark") == 2


def _api_exception(status: int, reason: str) -> BaseException:
    from kubernetes.client.exceptions import ApiException

    exc = ApiException(status=status, reason="Conflict")
    exc.body = json.dumps({"kind": "Status", "reason": reason, "code": status})
    return exc


@pytest.mark.parametrize(("cause", "transient"), [
    (_api_exception(409, "Conflict"), True),
    (_api_exception(409, "AlreadyExists"), False),
    (_api_exception(429, "TooManyRequests"), True),
    (_api_exception(503, "ServiceUnavailable"), True),
    (_api_exception(403, "Forbidden"), False),
    (_api_exception(404, "NotFound"), False),
    (urllib.error.HTTPError("http://x", 502, "Bad Gateway", {}, None), True),  # type: ignore[arg-type]
    (ConnectionRefusedError(111, "refused"), True),
    (TimeoutError("timed out"), True),
    (ValueError("bad"), False),
])
def test_which_failures_are_transient(cause: BaseException, transient: bool) -> None:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise ActionError("cannot patch the pod") from exc
    except ActionError as wrapped:
        assert retry.is_transient(wrapped) is transient


def test_a_plug_in_decides_with_the_transient_attribute() -> None:
    err = ActionError("the queue is busy")
    err.transient = True
    assert retry.is_transient(err)
    final = ActionError("never")
    final.transient = False
    final.__cause__ = TimeoutError()
    assert not retry.is_transient(final)


def test_backoff_is_full_jitter_and_capped() -> None:
    assert retry.delay(1, 1.0, rng=lambda: 1.0) == 1.0
    assert retry.delay(3, 1.0, rng=lambda: 0.5) == 2.0
    assert retry.delay(40, 1.0, rng=lambda: 1.0) == retry.MAX_DELAY_SECONDS
    assert retry.delay(2, 1.0, rng=lambda: 0.0) == 0.0


# --- the engine's retry loop, in process ---------------------------------------------------

def _engine(tmp_path: Path, failures: int, retries: int, backoff: float, timeout: float,
            dead: list[Any]) -> tuple[Any, list[float]]:
    from talon import models, rules
    from talon.engine import Engine
    from talon.metrics import Metrics
    from talon.registry import Registry, actionner
    from talon.reloader import RuleStore

    registry, calls = Registry(), []

    def flaky(ctx: Any) -> models.Result:
        calls.append(time.monotonic())
        if len(calls) <= failures:
            try:
                raise ConnectionResetError(104, "reset by peer")
            except ConnectionResetError as exc:
                raise ActionError("cannot reach the API") from exc
        return models.Result(output="done")

    actionner("t", "flaky", registry=registry, description="flaky")(flaky)
    path = tmp_path / "r.yaml"
    path.write_text(f"- rule: R\n  match: {{rules: [F]}}\n  actions:\n"
                    f"    - {{action: a, actionner: t:flaky, retries: {retries}, "
                    f"retry_backoff_seconds: {backoff}}}\n")
    engine = Engine(registry=registry, rules=RuleStore(rules.load([str(path)], registry)),
                    metrics=Metrics(), notify=lambda names, n: None, action_timeout=timeout,
                    dead_letter=dead.append)
    return engine, calls


def _event() -> Any:
    from talon import models

    return models.from_mapping({"rule": "F", "priority": "Warning", "output": "o"})


def test_engine_retries_until_success(tmp_path: Path) -> None:
    dead: list[Any] = []
    engine, calls = _engine(tmp_path, failures=2, retries=3, backoff=0.01, timeout=10,
                            dead=dead)
    assert engine.handle(_event()) == [("R", "a", "success")]
    assert len(calls) == 3 and dead == []


def test_engine_gives_up_after_retries_and_records_a_dead_letter(tmp_path: Path) -> None:
    dead: list[Any] = []
    engine, calls = _engine(tmp_path, failures=5, retries=2, backoff=0.01, timeout=10,
                            dead=dead)
    assert engine.handle(_event()) == [("R", "a", "failure")]
    assert len(calls) == 3
    (failure,) = dead
    assert (failure.rule.name, failure.action.name, failure.attempts) == ("R", "a", 3)
    assert failure.error == "cannot reach the API"


def test_engine_never_waits_past_the_action_timeout(tmp_path: Path) -> None:
    dead: list[Any] = []
    # failing every time: with fewer failures, jittered waits that happen to be short
    # would let an attempt succeed within the timeout (about 1 run in 100)
    engine, calls = _engine(tmp_path, failures=1000, retries=50, backoff=0.2, timeout=1.0,
                            dead=dead)
    started = time.monotonic()
    assert engine.handle(_event()) == [("R", "a", "failure")]
    assert time.monotonic() - started < 1.5  # stopped at the 1 s timeout, not after 50 tries
    assert 1 <= len(calls) < 50 and dead[0].attempts == len(calls)


def test_retry_engine_keeps_the_governor(kube_api: FakeKubeAPI, kube_config: Path,
                                         tmp_path: Path) -> None:
    """`journal retry` runs through the server's wiring: a disruptive action on a pod of
    a protected namespace is held (`protected`) and the pod survives."""
    from talon import app, catalog
    from talon import config as talon_config
    from tests.actionners.conftest import event as falco_event

    kube_api.add(pod("dns-1", namespace="kube-system"))
    (tmp_path / "config.yaml").write_text(f"kubeconfig: {kube_config}\n")
    (tmp_path / "rules.yaml").write_text(
        "- rule: Kill\n  match: {rules: [Terminal shell in container]}\n"
        "  actions:\n    - {action: kill, actionner: kubernetes:terminate}\n")
    settings = talon_config.load(str(tmp_path / "config.yaml"), env={})
    wired = app.action_engine(settings, catalog.registry(), [str(tmp_path / "rules.yaml")])
    wired.start()
    try:
        rule = wired.engine.rules.current.rules[0]
        ev = falco_event("dns-1", "kube-system", rule="Terminal shell in container")
        outcome = wired.engine.run_action(ev, rule, rule.actions[0])
    finally:
        wired.stop(1.0)
    assert outcome.status == "protected"
    assert kube_api.get("pods", "kube-system", "dns-1")
