"""The safety governor: budgets for disruptive actions, and protected workloads.

Layer L4 (a sibling of dedup and leases; the engine sees it only through its `Gate`
protocol, called once per disruptive action just before the action's checks). In order:
- protected: the event's namespace is in `protected.namespaces` (or is Talon's own), or the
  pod, its namespace or its node carries `protected.selector` → `protected`, unless the rule
  sets `allow_protected: true`;
- tripped: after a budget was exceeded with `trip_to_dry_run`, every disruptive action is
  dry-run until `talon governor reset` writes the reset file (or a restart);
- budgets: `scope:max/per_seconds` for the cluster, the namespace, the owner (the pod's
  Deployment, StatefulSet, DaemonSet or Job; a ReplicaSet's Deployment is its name less the
  `pod-template-hash` suffix, as the Deployment controller names it; else the pod). An
  action over any budget does not run: `throttled`. Windows are fixed (`per_seconds` long,
  aligned on the epoch) so replicas agree on them; the count is kept by a `Counter`
  (`LocalCounter`, or `LeaseCounter`, which shares it across replicas through one
  Kubernetes Lease per budget key and window, and counts locally when the API fails).
An action counts against the budgets when the governor lets it through, whatever its
checks and run then do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from talon import log
from talon.config import GovernorSettings, ProtectedSettings, Settings
from talon.errors import EventError
from talon.models import Event, Notification, Verdict
from talon.registry import PluginInfo
from talon.rules.model import Action, Rule

logger = logging.getLogger(__name__)

Notify = Callable[[tuple[str, ...], Notification], None]
TEMPLATE_HASH = "pod-template-hash"
OWNER_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


@dataclass(frozen=True, slots=True)
class Budget:
    """At most `max` disruptive actions per `per_seconds` within one `scope`."""

    scope: str
    max: int
    per_seconds: int

    @classmethod
    def parse(cls, text: str) -> Budget:
        scope, _, rest = text.partition(":")
        most, _, per = rest.partition("/")
        return cls(scope, int(most), int(per))

    def __str__(self) -> str:
        return f"{self.scope}:{self.max}/{self.per_seconds}s"


class Counter(Protocol):
    """Takes one unit from the budget `key` in `window`; False when none is left."""

    def take(self, key: str, window: int, budget: Budget) -> bool: ...


class LocalCounter:
    """Counts in this process (windows older than the current ones are forgotten)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def take(self, key: str, window: int, budget: Budget) -> bool:
        with self._lock:
            for stale in [k for k in self._counts if k[0] == key and k[1] < window]:
                del self._counts[stale]
            used = self._counts.get((key, window), 0)
            if used >= budget.max:
                return False
            self._counts[(key, window)] = used + 1
            return True


COUNT_ANNOTATION = "talon.falco.org/count"
LEASE_LABELS = {"talon.falco.org/dedup": "true", "app.kubernetes.io/managed-by": "falco-talon"}
"""The dedup Leases' labels, so that the dedup sweeper deletes expired budget Leases too."""
WARN_EVERY = 60.0
ATTEMPTS = 5


class LeaseCounter:
    """Counts in a Lease per budget key and window (`<prefix>-budget-<hash>-<window>`): the
    count is an annotation, each increment a replace carrying the resourceVersion read, so
    two replicas never both take the last unit. On an API failure the local count decides,
    with a warning at most once a minute."""

    def __init__(self, api: Any, *, namespace: str, prefix: str, identity: str,
                 timeout: float = 2.0, wall: Callable[[], float] = time.time) -> None:
        self.api, self.namespace, self.prefix = api, namespace, prefix
        self.identity, self.timeout, self._wall = identity, timeout, wall
        self.local = LocalCounter()
        self._warned = -WARN_EVERY

    def take(self, key: str, window: int, budget: Budget) -> bool:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        name = f"{self.prefix}-budget-{digest}-{window}"
        try:
            for _ in range(ATTEMPTS):
                taken = self._try(name, budget)
                if taken is not None:
                    return taken
            raise TimeoutError(f"the Lease '{name}' kept changing")
        except Exception as exc:  # noqa: BLE001 - any API failure: count locally
            self._warn(exc)
            return self.local.take(key, window, budget)

    def _try(self, name: str, budget: Budget) -> bool | None:
        """True/False when decided, None when another replica wrote first (try again)."""
        opts = {"_request_timeout": self.timeout, "_preload_content": False}
        try:
            lease = json.loads(self.api.read_namespaced_lease(name, self.namespace,
                                                              **opts).data)
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise
            return self._write(name, budget, 1, None)
        used = _count(lease)
        if used >= budget.max:
            return False
        return self._write(name, budget, used + 1, lease["metadata"]["resourceVersion"])

    def _write(self, name: str, budget: Budget, count: int, version: str | None) -> bool | None:
        if count > budget.max:
            return False
        stamp = datetime.fromtimestamp(self._wall(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace,
                                "labels": LEASE_LABELS,
                                "annotations": {COUNT_ANNOTATION: str(count)}}
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {"holderIdentity": self.identity, "acquireTime": stamp,
                         "renewTime": stamp, "leaseDurationSeconds": budget.per_seconds}}
        opts = {"_request_timeout": self.timeout, "_preload_content": False}
        try:
            if version is None:
                self.api.create_namespaced_lease(self.namespace, body, **opts)
            else:
                meta["resourceVersion"] = version
                self.api.replace_namespaced_lease(name, self.namespace, body, **opts)
        except Exception as exc:
            if getattr(exc, "status", None) == 409:
                return None
            raise
        return True

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned < WARN_EVERY:
            return
        self._warned = now
        log.emit(logger, logging.WARNING, "governor", result="budget counted in this "
                 "replica only: the budget Lease could not be used",
                 error=str(getattr(exc, "reason", "") or exc).splitlines()[0],
                 namespace=self.namespace)


def _count(lease: Mapping[str, Any]) -> int:
    text = ((lease.get("metadata") or {}).get("annotations") or {}).get(COUNT_ANNOTATION)
    try:
        return max(0, int(str(text)))
    except ValueError:
        return 0


def reset_path(settings: Settings) -> Path:
    """The file `talon governor reset` writes and the server watches."""
    if settings.governor.reset_file:
        return Path(settings.governor.reset_file)
    return Path(tempfile.gettempdir()) / f"talon-governor-reset-{settings.listen_port}"


@dataclass(frozen=True, slots=True)
class Target:
    """What a disruptive action is about, as far as the governor needs it."""

    namespace: str
    pod: str
    pod_object: Mapping[str, Any]

    @property
    def owner(self) -> str:
        """`Kind/name` of the pod's workload, else `Pod/name`."""
        meta = self.pod_object.get("metadata") or {}
        for ref in meta.get("ownerReferences") or []:
            kind, name = str(ref.get("kind")), str(ref.get("name"))
            template = (meta.get("labels") or {}).get(TEMPLATE_HASH)
            if kind == "ReplicaSet" and template and name.endswith(f"-{template}"):
                return f"Deployment/{name.removesuffix(f'-{template}')}"
            if kind in (*OWNER_KINDS, "ReplicaSet"):
                return f"{kind}/{name}"
        return f"Pod/{self.pod}"

    @property
    def node(self) -> str:
        return str((self.pod_object.get("spec") or {}).get("nodeName") or "")


def _matches(labels: Mapping[str, Any], selector: str) -> bool:
    terms = [t.strip().partition("=") for t in selector.split(",") if t.strip()]
    return bool(terms) and all(labels.get(k.strip()) == v.strip() for k, _, v in terms)


LABELS_TTL = 30.0
"""Seconds a namespace's or node's labels are reused by the protection check."""
LABELS_KEPT = 4096
"""Most namespaces and nodes whose labels are kept (all forgotten past it)."""


class Governor:
    """The engine's Gate: protection, the trip to dry-run, then the budgets."""

    def __init__(self, governor: GovernorSettings, protected: ProtectedSettings, *,
                 notify: Notify, default_notifiers: tuple[str, ...] = (),
                 kube: Callable[[], Any] | None = None, own_namespace: str = "",
                 reset_file: Path | None = None, counter: Counter | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.budgets = tuple(Budget.parse(b) for b in governor.budgets)
        self.trip_to_dry_run = governor.trip_to_dry_run
        self.namespaces = frozenset((*protected.namespaces, own_namespace)) - {""}
        self.selector = protected.selector
        self.notify, self.default_notifiers = notify, default_notifiers
        self.kube, self.reset_file = kube, reset_file
        self.counter: Counter = counter or LocalCounter()
        self._wall = wall
        self._lock = threading.Lock()
        self._tripped_at: float | None = None
        self._labels: dict[tuple[str, str], tuple[float, Mapping[str, Any]]] = {}
        """(kind, name) of a namespace or node → (when read, its labels), for LABELS_TTL."""

    def decide(self, event: Event, rule: Rule, action: Action, info: PluginInfo,
               cache: dict[tuple[str, ...], Any]) -> Verdict | None:
        if not info.disruptive:
            return None
        target = self._target(event, cache)
        if not rule.allow_protected:
            why = self._protection(target)
            if why:
                return Verdict("protected", f"not run: {why} is protected")
        if self.tripped():
            return Verdict("dry_run", "the governor tripped to dry-run")
        over = self._spend(target)
        if over is None:
            return None
        if self.trip_to_dry_run:
            self._trip(event, rule, action, over)
        return Verdict("throttled", f"not run: the {over} budget is spent")

    # -- the target -------------------------------------------------------------------

    def _target(self, event: Event, cache: dict[tuple[str, ...], Any]) -> Target:
        """The event's target; the pod read goes into the action's read cache, under the
        key the Kubernetes plug-ins use, so that their checks do not read it again."""
        try:
            namespace, pod = event.namespace(), event.pod_name()
        except EventError:
            namespace, pod = "", ""
        needs_pod = bool(pod and namespace and (self.selector or self._owner_scoped()))
        found = self._read("pod", namespace, pod) if needs_pod else {}
        if found:
            cache[("Pod", namespace, pod)] = found
        return Target(namespace, pod, found)

    def _labels_of(self, kind: str, name: str) -> Mapping[str, Any]:
        """The labels of a namespace or node, read at most once per LABELS_TTL: they hold
        the protection label, which changes rarely, and every disruptive action asks."""
        now = time.monotonic()
        with self._lock:
            known = self._labels.get((kind, name))
        if known is not None and now - known[0] < LABELS_TTL:
            return known[1]
        labels = (self._read(kind, "", name).get("metadata") or {}).get("labels") or {}
        with self._lock:
            if len(self._labels) >= LABELS_KEPT:
                self._labels.clear()
            self._labels[(kind, name)] = (now, labels)
        return labels

    def _owner_scoped(self) -> bool:
        return any(b.scope == "owner" for b in self.budgets)

    def _read(self, kind: str, namespace: str, name: str) -> Mapping[str, Any]:
        """The object as plain data; {} when there is no cluster or it cannot be read."""
        if self.kube is None or not name:
            return {}
        try:
            k = self.kube()
            core, opts = k.core, {"_request_timeout": k.timeout, "_preload_content": False}
            if kind == "pod":
                response = core.read_namespaced_pod(name, namespace, **opts)
            elif kind == "namespace":
                response = core.read_namespace(name, **opts)
            else:
                response = core.read_node(name, **opts)
            data = json.loads(response.data)
        except Exception as exc:  # noqa: BLE001 - an unreadable object carries no label
            log.emit(logger, logging.DEBUG, "governor", result=f"cannot read the {kind} "
                     f"'{name}'", error=str(getattr(exc, "reason", "") or exc))
            return {}
        return data if isinstance(data, dict) else {}

    def _protection(self, target: Target) -> str:
        """What makes the target protected ("" when nothing does)."""
        if target.namespace in self.namespaces:
            return f"the namespace '{target.namespace}'"
        if not self.selector or not target.pod:
            return ""
        sources: tuple[tuple[str, Callable[[], Mapping[str, Any]]], ...] = (
            (f"the pod '{target.pod}'",
             lambda: (target.pod_object.get("metadata") or {}).get("labels") or {}),
            (f"the namespace '{target.namespace}'",
             lambda: self._labels_of("namespace", target.namespace)),
            (f"the node '{target.node}'", lambda: self._labels_of("node", target.node)))
        for what, labels_of in sources:
            if _matches(labels_of(), self.selector):
                return f"{what} ({self.selector})"
        return ""

    # -- budgets ----------------------------------------------------------------------

    def _key(self, budget: Budget, target: Target) -> str:
        if budget.scope == "namespace":
            return f"namespace/{target.namespace}"
        if budget.scope == "owner":
            return f"owner/{target.namespace}/{target.owner}"
        return "cluster"

    def _spend(self, target: Target) -> str | None:
        """Take one unit from each budget in turn; the first one found spent, or None (the
        units already taken from the budgets before it stay taken)."""
        now = self._wall()
        for budget in self.budgets:
            key = self._key(budget, target)
            if not self.counter.take(key, int(now // budget.per_seconds), budget):
                return f"{budget} ({key})"
        return None

    # -- the trip to dry-run ----------------------------------------------------------

    def tripped(self) -> bool:
        """Whether disruptive actions are dry-run; a reset file newer than the trip resets."""
        with self._lock:
            since = self._tripped_at
        if since is None:
            return False
        try:
            reset = self.reset_file is not None and self.reset_file.stat().st_mtime > since
        except OSError:
            reset = False
        if reset:
            with self._lock:
                self._tripped_at = None
            log.emit(logger, logging.WARNING, "governor", result="reset: disruptive actions "
                     "run again")
        return not reset

    def _trip(self, event: Event, rule: Rule, action: Action, over: str) -> None:
        with self._lock:
            if self._tripped_at is not None:
                return
            self._tripped_at = self._wall()
        text = (f"the {over} budget is spent: every disruptive action is now dry-run "
                f"until `talon governor reset`")
        log.emit(logger, logging.WARNING, "governor", status="tripped", result=text,
                 rule=rule.name, action=action.name, trace_id=event.trace_id)
        names = tuple(dict.fromkeys(self.default_notifiers + rule.notifiers))
        if names:
            self.notify(names, Notification(
                message="governor", status="tripped", trace_id=event.trace_id,
                rule=rule.name, action=action.name, actionner=action.actionner,
                event=event.output, priority=event.priority, source=event.source,
                output=text))
