"""Kubernetes call timeouts, against a fake API server that answers late.

Behaviours covered:
- one request per call: a GET held past the client's timeout fails the action in about
  that timeout, with one request recorded (urllib3's silent retries used to make a 1 s
  timeout take 4 s and 4 requests); the same for a request whose connection is dropped;
- the client passes explicit (connect, read) timeouts;
- live checks (`pod_exists`) run under the action timeout like the action itself: a check
  still waiting past it fails the action as a timeout, and the action never runs.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

from talon import catalog, config, models, rules
from talon.clients import Clients
from talon.engine import Engine
from talon.metrics import Metrics
from talon.models import Notification
from talon.reloader import RuleStore
from tests.actionners.conftest import event, pod, writes
from tests.fakes.kube_api import FakeKubeAPI

RULES = """
- rule: R
  actions: [{action: A, actionner: kubernetes:terminate}]
"""


def run(kube_config: Path, tmp_path: Path, ev: models.Event, *, kube_timeout: float,
        action_timeout: float = 30.0) -> tuple[list[Notification], float]:
    """Handle `ev` with kubernetes:terminate; (notifications, seconds taken)."""
    registry = catalog.registry()
    settings = config.load(None, env={}, overrides={"kubeconfig": str(kube_config)})
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(RULES))
    notes: list[Notification] = []
    engine = Engine(registry=registry, rules=RuleStore(rules.load([str(path)], registry)),
                    metrics=Metrics(), notify=lambda _names, n: notes.append(n),
                    default_notifiers=("webhook",),
                    clients=Clients(settings, timeout=kube_timeout),
                    action_timeout=action_timeout)
    started = time.monotonic()
    engine.handle(ev)
    return notes, time.monotonic() - started


def test_a_late_answer_fails_in_one_timeout_with_one_request(
        kube_api: FakeKubeAPI, kube_config: Path, tmp_path: Path) -> None:
    kube_api.add(pod())
    kube_api.delay("GET", r"/pods/web-1$", 3.0)
    notes, took = run(kube_config, tmp_path, event(), kube_timeout=0.5)
    [note] = notes
    assert note.status == "failure"
    assert "timed out" in note.error, note.error
    assert took < 1.5, took  # one 0.5 s read timeout, not four
    assert len(kube_api.requests_for("GET", "/api/v1/namespaces/shop/pods/web-1")) == 1
    assert writes(kube_api) == []


def test_a_dropped_connection_is_not_retried(kube_api: FakeKubeAPI, kube_config: Path,
                                             tmp_path: Path) -> None:
    kube_api.add(pod())
    kube_api.hang_up("GET", r"/pods/web-1$")
    notes, _took = run(kube_config, tmp_path, event(), kube_timeout=2)
    assert [n.status for n in notes] == ["failure"]
    assert len(kube_api.requests_for("GET", "/api/v1/namespaces/shop/pods/web-1")) == 1


def test_explicit_connect_and_read_timeouts(kube_config: Path) -> None:
    settings = config.load(None, env={}, overrides={"kubeconfig": str(kube_config)})
    k = Clients(settings, timeout=4).kube()
    assert k.timeout == (4, 4)
    assert k.api_client.configuration.retries is False


def test_checks_run_under_the_action_timeout(kube_api: FakeKubeAPI, kube_config: Path,
                                             tmp_path: Path) -> None:
    kube_api.add(pod())
    kube_api.delay("GET", r"/pods/web-1$", 1.5)
    notes, _took = run(kube_config, tmp_path, event(), kube_timeout=5, action_timeout=0.5)
    [note] = notes
    assert note.status == "failure"
    assert "did not finish within 0.5s" in note.error, note.error
    assert writes(kube_api) == []
    assert kube_api.get("pods", "shop", "web-1") is not None
