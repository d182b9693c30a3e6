"""Cluster-wide dedup claims through Leases, against the fake API server.

The real `kubernetes` client talks to the fake API server (tests/fakes/kube_api.py), which
answers like the real one: 409 AlreadyExists on create, resourceVersion checked on update,
delete preconditions. Behaviours covered:
- the first claim creates `<prefix>-<key>` in the namespace with holder, duration (the
  window, rounded up), acquire and renew times and Talon's labels: first;
- another replica's claim of the same key while the Lease holds: duplicate (one GET);
- a key this replica claimed or saw is a duplicate again without any request;
- an expired Lease is taken over with a PUT carrying its resourceVersion: first; a 409 on
  that PUT (another replica won): duplicate;
- the API answering 500 or 403, hanging past the timeout, or unreachable: the event acts
  (fallback), counted per reason, within the timeout, with one WARNING per reason a minute;
- a wait for a client rate-limit token longer than the claim's timeout: fallback
  (reason timeout) without sending the claim late;
- claims and their results are counted, and their latency observed;
- the sweeper deletes expired dedup Leases only (live ones and others' objects stay), with
  a resourceVersion precondition, ignoring 404/409, in bounded batches;
- settings: the lease name prefix and namespace are checked; the timeout is configurable.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from talon import config, dedup
from talon.clients import kube as kube_client
from talon.errors import ConfigError
from talon.leases import LABEL, LeaseBackend, LeaseSweeper, expiry_of, micro_time
from talon.metrics import Metrics
from tests.fakes.kube_api import FakeKubeAPI, kube_api, kube_config

__all__ = ["kube_api", "kube_config"]

NS = "falco"
PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def api(kube_config: Path) -> Iterator[Any]:
    kube = kube_client.connect(str(kube_config), timeout=5)
    yield kube


def backend(api: Any, *, identity: str = "replica-a", timeout: float = 2.0,
            metrics: Metrics | None = None, skew: float = 0.0) -> LeaseBackend:
    return LeaseBackend(api, namespace=NS, prefix="falco-talon", identity=identity,
                        timeout=timeout, metrics=metrics or Metrics(),
                        wall=lambda: time.time() + skew)


def lease(kube_api: FakeKubeAPI, key: str = KEY) -> dict[str, Any]:
    found = kube_api.get("leases", NS, f"falco-talon-{key}",
                         api_version="coordination.k8s.io/v1")
    assert found is not None
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_first_claim_creates_the_lease(kube_api: FakeKubeAPI, api: Any) -> None:
    metrics = Metrics()
    before = time.time()
    assert backend(api, metrics=metrics).first_seen(KEY, 4.5) is True
    found = lease(kube_api)
    assert found["metadata"]["labels"] == {LABEL: "true",
                                           "app.kubernetes.io/managed-by": "falco-talon"}
    spec = found["spec"]
    assert spec["holderIdentity"] == "replica-a"
    assert spec["leaseDurationSeconds"] == 5
    assert spec["acquireTime"] == spec["renewTime"]
    assert before - 1 <= expiry_of(found) - 5 <= time.time()
    assert [(r.method, r.path) for r in kube_api.requests] == [("POST", PATH)]
    assert value(metrics, "talon_dedup_claims_total", result="first") == 1
    assert value(metrics, "talon_dedup_claim_seconds_count") == 1


def test_another_replica_sees_a_duplicate(kube_api: FakeKubeAPI, api: Any) -> None:
    assert backend(api).first_seen(KEY, 5) is True
    metrics = Metrics()
    other = backend(api, identity="replica-b", metrics=metrics)
    kube_api.clear_requests()
    assert other.first_seen(KEY, 5) is False
    assert [(r.method, r.path) for r in kube_api.requests] == [
        ("POST", PATH), ("GET", f"{PATH}/falco-talon-{KEY}")]
    assert lease(kube_api)["spec"]["holderIdentity"] == "replica-a"
    assert value(metrics, "talon_dedup_claims_total", result="duplicate") == 1
    kube_api.clear_requests()
    assert other.first_seen(KEY, 5) is False   # remembered until the Lease expires
    assert kube_api.requests == []


def test_a_claimed_key_is_a_duplicate_without_a_call(kube_api: FakeKubeAPI, api: Any) -> None:
    mine = backend(api)
    assert mine.first_seen(KEY, 5) is True
    kube_api.clear_requests()
    assert mine.first_seen(KEY, 5) is False
    assert kube_api.requests == []
    assert mine.first_seen("f" * 32, 5) is True   # another key is independent


def test_an_expired_lease_is_taken_over(kube_api: FakeKubeAPI, api: Any) -> None:
    assert backend(api).first_seen(KEY, 2) is True
    version = lease(kube_api)["metadata"]["resourceVersion"]
    later = backend(api, identity="replica-b", skew=3)
    kube_api.clear_requests()
    assert later.first_seen(KEY, 2) is True
    put = kube_api.requests_for("PUT")
    assert len(put) == 1
    assert put[0].body["metadata"]["resourceVersion"] == version
    assert lease(kube_api)["spec"]["holderIdentity"] == "replica-b"


def test_losing_the_takeover_race_is_a_duplicate(kube_api: FakeKubeAPI, api: Any) -> None:
    assert backend(api).first_seen(KEY, 2) is True
    kube_api.fail("PUT", "/leases/", 409, "Conflict")
    metrics = Metrics()
    assert backend(api, identity="b", skew=3, metrics=metrics).first_seen(KEY, 2) is False
    assert value(metrics, "talon_dedup_claims_total", result="duplicate") == 1


@pytest.mark.parametrize(("status", "reason"), [(500, "error"), (403, "forbidden"),
                                                 (503, "error")])
def test_api_errors_fall_back_to_acting(kube_api: FakeKubeAPI, api: Any, status: int,
                                        reason: str, caplog: pytest.LogCaptureFixture) -> None:
    if status == 403:
        kube_api.forbid("POST", "/leases")
    else:
        kube_api.fail("POST", "/leases", status, times=None)
    metrics = Metrics()
    mine = backend(api, metrics=metrics)
    with caplog.at_level(logging.WARNING, logger="talon.leases"):
        assert mine.first_seen(KEY, 5) is True
        assert mine.first_seen("e" * 32, 5) is True
    assert value(metrics, "talon_dedup_fallback_total", reason=reason) == 2
    assert value(metrics, "talon_dedup_claims_total", result="fallback") == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1          # at most one a minute per reason
    assert mine.first_seen(KEY, 5) is False   # still deduplicated locally


def test_a_hanging_api_falls_back_within_the_timeout(kube_api: FakeKubeAPI, api: Any) -> None:
    kube_api.delay("POST", "/leases", 5)
    metrics = Metrics()
    started = time.monotonic()
    assert backend(api, timeout=0.5, metrics=metrics).first_seen(KEY, 5) is True
    assert time.monotonic() - started < 2   # not the 5 s the API takes
    assert value(metrics, "talon_dedup_fallback_total", reason="timeout") == 1


def test_an_unreachable_api_falls_back(tmp_path: Path) -> None:
    with FakeKubeAPI() as gone:
        path = gone.kubeconfig(tmp_path / "kubeconfig")
    api = kube_client.connect(str(path), timeout=5)
    metrics = Metrics()
    assert backend(api, metrics=metrics).first_seen(KEY, 5) is True
    assert value(metrics, "talon_dedup_fallback_total", reason="unreachable") == 1


def stored_lease(kube_api: FakeKubeAPI, name: str, renewed: float, duration: int = 2,
                 labels: dict[str, str] | None = None) -> None:
    kube_api.add({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                  "metadata": {"name": name, "namespace": NS,
                               "labels": {LABEL: "true"} if labels is None else labels},
                  "spec": {"holderIdentity": "x", "leaseDurationSeconds": duration,
                           "renewTime": micro_time(renewed)}})


def test_the_sweeper_deletes_expired_dedup_leases(kube_api: FakeKubeAPI, api: Any) -> None:
    now = time.time()
    for i in range(7):
        stored_lease(kube_api, f"old-{i}", now - 60)
    stored_lease(kube_api, "live", now)
    stored_lease(kube_api, "leader", now - 60, labels={})   # not a dedup Lease
    sweeper = LeaseSweeper(api, NS, batch=3, max_batches=2)
    assert sweeper.sweep() == 5        # two pages of three, one of them the live Lease
    assert sweeper.sweep() == 2
    names = {o["metadata"]["name"] for o in kube_api.list("leases", NS,
                                                          api_version="coordination.k8s.io/v1")}
    assert names == {"live", "leader"}
    deletes = kube_api.requests_for("DELETE")
    assert all(r.body["preconditions"]["resourceVersion"] for r in deletes)


def test_the_sweeper_ignores_conflicts_and_gone_leases(kube_api: FakeKubeAPI, api: Any) -> None:
    stored_lease(kube_api, "renewed", time.time() - 60)
    stored_lease(kube_api, "gone", time.time() - 60)
    kube_api.fail("DELETE", "/renewed", 409, "Conflict")
    kube_api.fail("DELETE", "/gone", 404, "NotFound")
    assert LeaseSweeper(api, NS).sweep() == 0
    assert len(kube_api.requests_for("DELETE")) == 2
    assert kube_api.get("leases", NS, "renewed", api_version="coordination.k8s.io/v1")


def test_held_leases_are_deleted_once_expired_without_listing(kube_api: FakeKubeAPI,
                                                              api: Any) -> None:
    mine = backend(api)
    assert mine.first_seen(KEY, 2) is True
    version = lease(kube_api)["metadata"]["resourceVersion"]
    sweeper = LeaseSweeper(api, NS, owned=mine.owned)
    assert sweeper.sweep_owned() == 0  # not expired yet
    sweeper = LeaseSweeper(api, NS, owned=mine.owned, wall=lambda: time.time() + 60)
    assert sweeper.sweep_owned() == 1
    [delete] = kube_api.requests_for("DELETE")
    assert delete.path == f"{PATH}/falco-talon-{KEY}"
    assert delete.body["preconditions"] == {"resourceVersion": version}
    assert kube_api.requests_for("GET", PATH) == []  # no list
    assert not kube_api.list("leases", NS, api_version="coordination.k8s.io/v1")
    assert sweeper.sweep_owned() == 0 and len(mine.owned) == 0


def test_a_held_lease_taken_over_meanwhile_survives(kube_api: FakeKubeAPI, api: Any) -> None:
    mine = backend(api)
    assert mine.first_seen(KEY, 2) is True
    written = lease(kube_api)["metadata"]["resourceVersion"]
    other = backend(api, identity="replica-b", skew=30)  # its clock: after the expiry
    assert other.first_seen(KEY, 2) is True  # an update taking the expired Lease over
    sweeper = LeaseSweeper(api, NS, owned=mine.owned, wall=lambda: time.time() + 10)
    assert sweeper.sweep_owned() == 0  # 409: the resourceVersion moved on
    [delete] = kube_api.requests_for("DELETE")  # tried, with the version this replica wrote
    assert delete.body["preconditions"] == {"resourceVersion": written}
    assert lease(kube_api)["spec"]["holderIdentity"] == "replica-b"


def test_the_listing_sweep_lists_once_a_pass(kube_api: FakeKubeAPI, api: Any) -> None:
    stored_lease(kube_api, "live", time.time())
    sweeper = LeaseSweeper(api, NS, interval=0.5, max_batches=5)  # a page every 0.1 s
    sweeper.start()
    try:
        time.sleep(1.2)
    finally:
        sweeper.stop()
    lists = kube_api.requests_for("GET", PATH)
    assert 2 <= len(lists) <= 4  # one page holds them all: a pass every 0.5 s, not 12


def test_the_background_sweeper_spreads_a_pages_deletions(kube_api: FakeKubeAPI,
                                                           api: Any) -> None:
    for i in range(4):
        stored_lease(kube_api, f"old-{i}", time.time() - 60)
    sweeper = LeaseSweeper(api, NS, interval=0.5, batch=5, max_batches=1)  # 0.1 s apart
    sweeper.start()
    try:
        deadline = time.monotonic() + 5
        while len(kube_api.requests_for("DELETE")) < 4:
            assert time.monotonic() < deadline, "the expired Leases were not swept"
            time.sleep(0.02)
    finally:
        sweeper.stop()
    stamps = [r.received for r in kube_api.requests_for("DELETE")]
    assert all(b - a >= 0.09 for a, b in itertools.pairwise(stamps)), stamps


def test_the_sweeper_runs_in_the_background(kube_api: FakeKubeAPI, api: Any) -> None:
    stored_lease(kube_api, "old", time.time() - 60)
    sweeper = LeaseSweeper(api, NS, interval=0.05)
    sweeper.start()
    try:
        deadline = time.monotonic() + 5
        while kube_api.list("leases", NS, api_version="coordination.k8s.io/v1"):
            assert time.monotonic() < deadline, "the expired Lease was not swept"
            time.sleep(0.05)
    finally:
        sweeper.stop()


def test_the_deduplicator_uses_the_lease_backend(kube_api: FakeKubeAPI, api: Any) -> None:
    from talon import models

    event = models.from_mapping({"rule": "R", "output": "same", "output_fields": {}})
    first = dedup.Deduplicator(5, backend=backend(api))
    second = dedup.Deduplicator(5, backend=backend(api, identity="b"))
    assert first.is_duplicate(event) is False
    assert second.is_duplicate(event) is True
    assert lease(kube_api, dedup.key_of(event, ()))


@pytest.mark.parametrize(("section", "problem"), [
    ({"deduplication.lease_name": "Falco_Talon"}, "deduplication.lease_name"),
    ({"deduplication.lease_namespace": "-bad"}, "deduplication.lease_namespace"),
    ({"deduplication.timeout_seconds": 0}, "deduplication.timeout_seconds"),
])
def test_lease_settings_are_checked(section: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(None, env={}, overrides=section)
    assert problem in str(caught.value.problems)


def test_lease_settings_defaults() -> None:
    dd = config.load(None, env={}).deduplication
    assert (dd.leader_election, dd.lease_name, dd.lease_namespace, dd.timeout_seconds) == (
        True, "falco-talon", "", 2.0)


def test_the_lease_role_grants_exactly_what_dedup_calls(kube_api: FakeKubeAPI, api: Any) -> None:
    from talon.render import LEASE_VERBS
    from tests.fakes import kube_rbac

    assert backend(api).first_seen(KEY, 1) is True
    assert backend(api, identity="b").first_seen(KEY, 1) is False
    assert backend(api, identity="c", skew=2).first_seen(KEY, 1) is True
    stored_lease(kube_api, "old", time.time() - 60)
    assert LeaseSweeper(api, NS).sweep() == 1
    assert kube_rbac.needed(kube_api.requests) == {
        ("coordination.k8s.io", "leases", verb) for verb in LEASE_VERBS}


def test_rate_limit_wait_counts_against_the_claim_timeout(kube_api: FakeKubeAPI,
                                                          kube_config: Path) -> None:
    from talon.clients import ratelimit

    limiter = ratelimit.TokenBucket(0.5, 1)  # one request, then the next in 2 s
    api = kube_client.connect(str(kube_config), timeout=5, limiter=limiter)
    metrics = Metrics()
    limiter.acquire()  # someone else took the only token
    assert backend(api, timeout=0.3, metrics=metrics).first_seen(KEY, 5) is True
    assert value(metrics, "talon_dedup_fallback_total", reason="timeout") == 1
    assert kube_api.requests_for("*", PATH) == []  # no claim request went out late
