"""Cluster-wide deduplication: one Kubernetes Lease per dedup key and window.

Layer L4. Several replicas behind one Service each receive copies of the same alert; the
API server (etcd) decides which one acts. `LeaseBackend.first_seen(key, window)`:
- a key this replica claimed or saw within the window is a duplicate, without a call;
- else it creates the Lease `<prefix>-<key>` (holder, duration = the window, acquire and
  renew times): created means first, act; 409 AlreadyExists: read it; expired, take it over
  with an update carrying its resourceVersion (a 409 there: another replica won), else it
  is a duplicate;
- an error, a 403, or no decision within `timeout` falls back to local dedup and acts (at
  least once, never zero times), counted and warned about at most once a minute per reason;
  a wait under the client rate limit (`kubernetes.qps`) counts against `timeout` too.
`LeaseSweeper` deletes expired dedup Leases in the background, in bounded batches, each
with a resourceVersion precondition so that a Lease renewed meanwhile survives: those this
replica holds one by one as they expire (checked 10 times a second, without listing, so
the sweep keeps up with any claim rate), the others (of replicas gone) through a listing
pass every minute.
Expiry compares the Lease's renewTime (wall clock) with this host's clock: keep the
replicas' clocks in sync (NTP), as for any Lease holder.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from talon import log
from talon.clients import ratelimit
from talon.clients.kube import Kube, api_error, lease_path
from talon.metrics import Metrics

logger = logging.getLogger(__name__)

LABEL = "talon.falco.org/dedup"
LABELS = {LABEL: "true", "app.kubernetes.io/managed-by": "falco-talon"}
WARN_EVERY = 60.0
SWEEP_GRACE = 5.0
"""Seconds past its expiry before a Lease is swept (margin for clock skew)."""


class ClaimTimeoutError(Exception):
    """No decision within the dedup timeout."""


@dataclass(frozen=True, slots=True)
class Claim:
    """The decision for one key: first, duplicate or fallback (with the reason)."""

    result: str
    reason: str = ""
    expires_in: float = 0.0


def micro_time(seconds: float) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expiry_of(lease: dict[str, Any]) -> float:
    """Unix time at which `lease` expires (renewTime or acquireTime + duration); 0 if unknown."""
    spec = lease.get("spec") or {}
    stamp = spec.get("renewTime") or spec.get("acquireTime")
    duration = spec.get("leaseDurationSeconds")
    if not stamp or not isinstance(duration, int):
        return 0.0
    try:
        renewed = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
    return renewed + duration


def _reason(exc: BaseException) -> str:
    """The fallback reason for a failed claim."""
    if isinstance(exc, ClaimTimeoutError | ratelimit.RateLimitError) or (
            "timeout" in type(exc).__name__.lower()):
        return "timeout"
    status = getattr(exc, "status", None)
    if status == 403:
        return "forbidden"
    if isinstance(status, int) and status:
        return "error"
    return "unreachable"


class OwnedLeases:
    """The Leases this replica created or took over, by expiry (Unix time), with the
    resourceVersion it wrote: the sweeper deletes each one once it has expired, without
    listing the namespace. Bounded: past `max_entries`, a Lease is left to the listing
    sweep."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._heap: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()
        self._max = max_entries

    def add(self, expires: float, name: str, response: Any) -> None:
        """Track the Lease an API answer (`response.data`, the stored Lease) describes."""
        try:
            version = str(json.loads(response.data)["metadata"]["resourceVersion"])
        except (ValueError, TypeError, KeyError):
            return  # left to the listing sweep
        with self._lock:
            if len(self._heap) < self._max:
                heapq.heappush(self._heap, (expires, name, version))

    def due(self, before: float, limit: int) -> list[tuple[str, str]]:
        """Up to `limit` (name, resourceVersion) of Leases expired before `before`."""
        found: list[tuple[str, str]] = []
        with self._lock:
            while self._heap and self._heap[0][0] <= before and len(found) < limit:
                _, name, version = heapq.heappop(self._heap)
                found.append((name, version))
        return found

    def __len__(self) -> int:
        return len(self._heap)


class LeaseBackend:
    """The dedup backend shared by all workers: Lease claims with a local memory."""

    def __init__(self, kube: Kube, *, namespace: str, prefix: str, identity: str,
                 timeout: float, metrics: Metrics, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.kube, self.namespace, self.prefix = kube, namespace, prefix
        self.identity, self.timeout, self.metrics = identity, timeout, metrics
        self._max, self._clock, self._wall = max_entries, clock, wall
        self._known: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._warned: dict[str, float] = {}
        self.owned = OwnedLeases(max_entries)
        """The Leases this replica holds, for `LeaseSweeper` to delete once expired."""

    def name_of(self, key: str) -> str:
        return f"{self.prefix}-{key}"

    def first_seen(self, key: str, window: float) -> bool:
        """True when this event should act (first in the window, or the API failed)."""
        if self._remembered(key):
            self.metrics.child(self.metrics.dedup_claims, "duplicate").inc()
            return False
        started = self._clock()
        try:  # waits under a client rate limit count against the claim's timeout too
            with ratelimit.deadline_scope(time.monotonic() + self.timeout):
                claim = self._claim(key, window, started + self.timeout)
        except Exception as exc:  # noqa: BLE001 - any API failure falls back to acting
            claim = Claim("fallback", _reason(exc), window)
            self._warn(claim.reason, exc)
            self.metrics.child(self.metrics.dedup_fallback, claim.reason).inc()
        self.metrics.dedup_claim_seconds.observe(self._clock() - started)
        self.metrics.child(self.metrics.dedup_claims, claim.result).inc()
        self._remember(key, claim.expires_in)
        if claim.result == "duplicate":
            return False
        log.emit(logger, logging.DEBUG, "dedup", result=claim.result, lease=self.name_of(key),
                 reason=claim.reason or None)
        return True

    # -- local memory -------------------------------------------------------------------

    def _remembered(self, key: str) -> bool:
        with self._lock:
            expiry = self._known.get(key)
            return expiry is not None and expiry > self._clock()

    def _remember(self, key: str, seconds: float) -> None:
        with self._lock:
            self._known[key] = self._clock() + max(seconds, 0.0)
            self._known.move_to_end(key)
            while len(self._known) > self._max:
                self._known.popitem(last=False)

    # -- the claim ----------------------------------------------------------------------

    def _left(self, deadline: float) -> float:
        left = deadline - self._clock()
        if left <= 0:
            raise ClaimTimeoutError(f"no decision within {self.timeout:g}s")
        return left

    def _body(self, name: str, window: float, now: float) -> dict[str, Any]:
        stamp = micro_time(now)
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": self.namespace, "labels": LABELS},
                "spec": {"holderIdentity": self.identity,
                         "leaseDurationSeconds": max(1, math.ceil(window)),
                         "acquireTime": stamp, "renewTime": stamp}}

    def _claim(self, key: str, window: float, deadline: float) -> Claim:
        name, now = self.name_of(key), self._wall()
        body = self._body(name, window, now)
        expires = now + body["spec"]["leaseDurationSeconds"]
        try:
            created = self.kube.call("POST", lease_path(self.namespace), body=body,
                                     timeout=self._left(deadline))
            self.owned.add(expires, name, created)
            return Claim("first", expires_in=window)
        except Exception as exc:
            if getattr(exc, "status", None) != 409:
                raise
        response = self.kube.call("GET", lease_path(self.namespace, name),
                                  timeout=self._left(deadline))
        current = json.loads(response.data)
        held_until = expiry_of(current)
        if held_until > now:
            return Claim("duplicate", expires_in=held_until - now)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        try:
            taken = self.kube.call("PUT", lease_path(self.namespace, name), body=body,
                                   timeout=self._left(deadline))
        except Exception as exc:
            if getattr(exc, "status", None) == 409:
                return Claim("duplicate", expires_in=window)
            raise
        self.owned.add(expires, name, taken)
        return Claim("first", expires_in=window)

    def _warn(self, reason: str, exc: BaseException) -> None:
        now = self._clock()
        with self._lock:
            if now - self._warned.get(reason, -WARN_EVERY) < WARN_EVERY:
                return
            self._warned[reason] = now
        log.emit(logger, logging.WARNING, "dedup", result="fallback", reason=reason,
                 error=api_error(exc), namespace=self.namespace,
                 hint="acting on this event; deduplicated within this replica only "
                      f"(this warning repeats at most every {WARN_EVERY:g}s)")


class LeaseSweeper:
    """Deletes expired dedup Leases, in the background:

    - the Leases this replica holds (`owned`), each once it has expired, every `tick`
      seconds, at most `batch` at a time: one DELETE per Lease and no listing, whatever
      the rate of claims;
    - the others (those of replicas gone, or held past `owned`'s bound) by listing: a full
      pass every `pass_interval` seconds (default 60: only replicas gone leave such Leases
      behind, and a pass reads every live Lease too), one page of `batch` Leases at a
      time, the pages `interval / max_batches` s apart and the deletions of a page spread
      over that time, so that neither the API server nor the claims waiting on it get a
      burst.
    Each DELETE carries the resourceVersion last seen (a Lease renewed or taken over
    meanwhile survives: 404 and 409 are ignored)."""

    def __init__(self, kube: Kube, namespace: str, *, interval: float = 10.0,
                 batch: int = 100, max_batches: int = 10, timeout: float = 10.0,
                 owned: OwnedLeases | None = None, tick: float = 0.1,
                 pass_interval: float | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.kube, self.namespace, self.interval = kube, namespace, interval
        self.batch, self.max_batches, self.timeout, self._wall = batch, max_batches, timeout, wall
        self.owned, self.tick = owned, tick
        self.pass_interval = interval if pass_interval is None else pass_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="talon-lease-sweeper",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 1)

    def _loop(self) -> None:
        every = self.interval / self.max_batches
        token: str | None = None
        pass_started = next_page = time.monotonic()  # the first pass one pass_interval in:
        # replicas restarting together do not all list at once, and nothing is urgent
        while not self._stop.wait(min(self.tick, every)):
            now = time.monotonic()
            try:
                self.sweep_owned()
                if now >= next_page and (token or now - pass_started >= self.pass_interval):
                    pass_started = pass_started if token else now
                    next_page = now + every
                    _deleted, token = self.sweep_page(token, pace=every / self.batch)
            except Exception as exc:  # noqa: BLE001 - tried again next time
                token = None
                log.emit(logger, logging.WARNING, "dedup", result="sweep failed",
                         namespace=self.namespace, error=api_error(exc))

    def sweep_owned(self) -> int:
        """Delete the expired Leases of `owned` (at most `batch`); how many."""
        if self.owned is None:
            return 0
        due = self.owned.due(self._wall() - SWEEP_GRACE, self.batch)
        return sum(self._delete(name, version) for name, version in due)

    def sweep_page(self, token: str | None = None, *,
                   pace: float = 0.0) -> tuple[int, str | None]:
        """Delete the expired Leases of one page (`token` continues a pass), `pace` seconds
        apart; (how many, the token of the next page, None once the pass is over)."""
        query = [("labelSelector", f"{LABEL}=true"), ("limit", self.batch)]
        if token:
            query.append(("continue", token))
        response = self.kube.call("GET", lease_path(self.namespace), query=query,
                                  timeout=self.timeout)
        page = json.loads(response.data)
        deleted = 0
        for lease in page.get("items", []):
            if self._delete_if_expired(lease):
                deleted += 1
                if pace and self._stop.wait(pace):
                    break
        return deleted, (page.get("metadata") or {}).get("continue") or None

    def sweep(self) -> int:
        """Delete the expired dedup Leases (at most batch × max_batches); how many."""
        deleted, token = 0, None
        for _ in range(self.max_batches):
            found, token = self.sweep_page(token)
            deleted += found
            if not token or self._stop.is_set():
                break
        return deleted

    def _delete_if_expired(self, lease: dict[str, Any]) -> bool:
        if expiry_of(lease) + SWEEP_GRACE > self._wall():
            return False
        meta = lease["metadata"]
        return self._delete(meta["name"], meta["resourceVersion"])

    def _delete(self, name: str, version: str) -> bool:
        body = {"preconditions": {"resourceVersion": version}}
        try:
            self.kube.call("DELETE", lease_path(self.namespace, name), body=body,
                           timeout=self.timeout).release_conn()
        except Exception as exc:
            if getattr(exc, "status", None) in (404, 409):
                return False
            raise
        return True
