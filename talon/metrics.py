"""Prometheus metrics: the seed's counters plus what operators need.

Layer L1 (prometheus-client). Metric names are Falco Talon's documented ones
(`event_total`, `match_total`, `action_total`, …) so dashboards keep working; Talon's
additions carry a `talon_` prefix. Label values come from rules and plug-in names, not
from raw event text, except `namespace`/`pod` on `action_total`, which the seed shows:
they are kept (bounded by the pods acted on) but can be blanked with `pod_labels=False`;
and the event's rule name, priority and source (`event`, `priority`, `source`), which any
client can choose: each is cut to LABEL_LENGTH characters and, past LABEL_VALUES distinct
values per label, counted under `other`, so /metrics cannot be made to grow without end.
The five counters are also served under the names Falco Talon 0.3+ exposes
(`falcosecurity_falco_talon_events_total`, …), same labels and values: one collector reads
each counter once per scrape and yields it under both names, so events pay nothing for
the second name. Each Metrics has its own CollectorRegistry, so tests get fresh counters.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import exposition as _exposition
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

CONTENT_TYPE = _exposition.CONTENT_TYPE_LATEST

LABEL_LENGTH = 256
"""Longest label value taken from an event; longer ones are cut."""
LABEL_VALUES = 1000
"""Distinct values a label taken from events may have; later new values become OTHER."""
OTHER = "other"
_CAPPED_CACHE = 4096
"""Most (metric, raw label values) → child shortcuts kept for event_total and match_total."""

UPSTREAM_PREFIX = "falcosecurity_falco_talon_"
"""Prefix of the counter names Falco Talon 0.3+ serves (OpenTelemetry meter name)."""


class _BothNames(Collector):
    """Yields each counter under its own name and under `UPSTREAM_PREFIX + alias`, from
    one read of the counter per scrape (both names always show the same values)."""

    def __init__(self, counters: dict[str, Counter]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        for alias, counter in self.counters.items():
            for family in counter.collect():
                yield family
                yield _renamed(family, UPSTREAM_PREFIX + alias)

    def describe(self) -> Iterator[Metric]:
        for alias, counter in self.counters.items():
            for family in counter.describe():
                yield family
                yield _renamed(family, UPSTREAM_PREFIX + alias)


def _renamed(family: Metric, name: str) -> Metric:
    """`family` under another name (its samples' suffixes kept: _total, _created)."""
    out = Metric(name, family.documentation, family.type, family.unit)
    cut = len(family.name)
    out.samples = [Sample(name + s.name[cut:], s.labels, s.value, s.timestamp, s.exemplar,
                          s.native_histogram) for s in family.samples]
    return out


class CappedLabel:
    """Maps a value taken from an event to its label value: cut to `length` characters,
    and `OTHER` once `limit` distinct values have been seen. A known value costs one
    set lookup; the set never holds more than `limit` values of at most `length`."""

    __slots__ = ("_known", "_length", "_limit", "_lock")

    def __init__(self, limit: int = LABEL_VALUES, length: int = LABEL_LENGTH) -> None:
        self._known: set[str] = set()
        self._limit, self._length = limit, length
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if len(value) > self._length:
            value = value[:self._length]
        if value in self._known:
            return value
        if len(self._known) >= self._limit:  # full: no lock for each new value after that
            return OTHER
        with self._lock:
            if len(self._known) >= self._limit:
                return OTHER
            self._known.add(value)
        return value


class Metrics:
    """All of Talon's instruments, registered in one CollectorRegistry."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 pod_labels: bool = True) -> None:
        self.registry = registry or CollectorRegistry()
        self.pod_labels = pod_labels
        r = self.registry
        self.events = Counter("event", "number of received events",
                              ["event", "priority", "source"], registry=None)
        self.matches = Counter("match", "number of matched events",
                               ["rule", "event", "priority", "source"], registry=None)
        self.actions = Counter("action", "number of actions",
                               ["rule", "event", "action", "actionner", "status",
                                "namespace", "pod"], registry=None)
        self.outputs = Counter("output", "number of outputs",
                               ["rule", "action", "target", "status"], registry=None)
        self.notifications = Counter("notification", "number of notifications",
                                     ["notifier", "status"], registry=None)
        r.register(_BothNames({"events": self.events, "matches": self.matches,
                               "actions": self.actions, "outputs": self.outputs,
                               "notifications": self.notifications}))
        self.rejected = Counter("talon_events_rejected", "events refused at ingest",
                                ["reason"], registry=r)
        self.unusable = Counter("talon_events_unusable", "accepted events that can match "
                                "no rule (no rule name, unknown priority)", ["reason"],
                                registry=r)
        self.duplicates = Counter("talon_events_duplicate", "events dropped as duplicates",
                                  registry=r)
        self.queue_depth = Gauge("talon_queue_depth", "events waiting for a worker",
                                 registry=r)
        self.busy_workers = Gauge("talon_workers_busy", "workers handling an event",
                                  registry=r)
        self.action_seconds = Histogram(
            "talon_action_duration_seconds", "time spent running an action", ["actionner"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r)
        self.overdue = Counter("talon_actions_overdue", "plug-in calls that overran their "
                               "timeout (their worker was replaced)", registry=r)
        self.reloads = Counter("talon_rules_reloads", "rule reloads", ["status"], registry=r)
        self.rules_loaded = Gauge("talon_rules_loaded", "rules in force", registry=r)
        self.dedup_claims = Counter("talon_dedup_claims", "dedup decisions through Leases",
                                    ["result"], registry=r)
        self.dedup_fallback = Counter("talon_dedup_fallback", "dedup claims that fell back "
                                      "to this replica's memory", ["reason"], registry=r)
        self.dedup_claim_seconds = Histogram(
            "talon_dedup_claim_seconds", "time to claim a dedup Lease",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
            registry=r)
        self.dropped = Counter("talon_events_dropped", "accepted events never processed "
                               "(still queued when the shutdown deadline passed)", ["reason"],
                               registry=r)
        self.queue_bytes = Gauge("talon_queue_bytes", "bytes of the events waiting for a "
                                 "worker", registry=r)
        self.otel_spans_dropped = Counter(
            "talon_otel_spans_dropped", "spans not exported: the OpenTelemetry export queue "
            "was full (collector slow or unreachable)", registry=r)
        self.retries = Counter("talon_action_retries", "action attempts made again after "
                               "a transient failure", ["actionner"], registry=r)
        self.journal_depth = Gauge("talon_journal_depth", "events in the journal not done "
                                   "(waiting or running)", registry=r)
        self.journal_commit_seconds = Histogram(
            "talon_journal_commit_seconds", "time to commit one group of journal writes",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r)
        self.journal_replayed = Counter("talon_journal_replayed", "events found not done in "
                                        "the journal at start, processed again", registry=r)
        self.dead_letters = Counter("talon_journal_dead_letters", "actions that failed for "
                                    "good, recorded in the journal", registry=r)
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self._capped: dict[tuple[Any, ...], Any] = {}
        self.rule_label, self.priority_label, self.source_label = (
            CappedLabel(), CappedLabel(), CappedLabel())

    def child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)`, remembered: prometheus-client checks the labels and
        takes a lock on every call, which the per-event path does several times.
        Children are never removed, so this holds exactly what the metric holds."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def event(self, rule: str, priority: str, source: str) -> None:
        """Count one received event (`event_total`), its labels capped."""
        self._inc_capped((self.events, rule, priority, source))

    def match(self, rule: str, event: str, priority: str, source: str) -> None:
        """Count one rule matching an event (`match_total`), the event's labels capped."""
        self._inc_capped((self.matches, rule, event, priority, source))

    def _inc_capped(self, key: tuple[Any, ...]) -> None:
        found = self._capped.get(key)
        if found is None:
            found = self._capped_child(key)
        found.inc()

    def _capped_child(self, key: tuple[Any, ...]) -> Any:
        """The child for `key` = (metric, *other labels, event, priority, source), the last
        three capped; remembered (as a one-lookup shortcut) while the cache has room and
        no value is longer than a label may be, so the cache stays bounded too."""
        metric, *fixed, event, priority, source = key
        found = self.child(metric, *fixed, self.rule_label(event),
                           self.priority_label(priority), self.source_label(source))
        if len(self._capped) < _CAPPED_CACHE and all(len(v) <= LABEL_LENGTH
                                                      for v in key[1:]):
            self._capped[key] = found
        return found

    def action(self, *, rule: str, event: str, action: str, actionner: str, status: str,
               namespace: str = "", pod: str = "") -> None:
        """Count one action outcome."""
        if not self.pod_labels:
            namespace = pod = ""
        self.child(self.actions, rule, self.rule_label(event), action, actionner, status,
                   namespace, pod).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return bytes(generate_latest(self.registry))
