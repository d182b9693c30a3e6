"""Wiring and lifecycle of the server: rules → engine → pool → HTTP, reloader, signals.

Layer L5. Start order: logging, rules (invalid → exit 1), notifiers, engine, workers,
HTTP listener, reloader; then READY=1 to systemd. One talon.report Reporter takes every
stage's outcome (engine and notification dispatcher) to the log, metrics, notification
and, with `otel.traces_enabled`, span sinks. SIGHUP reloads the rules; SIGTERM and
SIGINT stop accepting, drain the queue (bounded by `shutdown_timeout_seconds`) so that
nothing accepted is lost, then exit 0; past that deadline, each event not processed is
logged and counted (talon.pool), and the exit code is 1.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from talon import (
    auth,
    containment,
    durable,
    governor,
    health,
    journal,
    ledger,
    log,
    notify,
    otel,
    report,
    rules,
    sdnotify,
    tls,
)
from talon.clients import Clients
from talon.clients import kube as kube_client
from talon.clients.kube import KubeConfigError
from talon.config import Settings
from talon.dedup import Backend, Deduplicator, LocalBackend
from talon.engine import DeadLetter, DuplicateFilter, Engine
from talon.errors import ConfigError, RulesError
from talon.leases import LeaseBackend, LeaseSweeper
from talon.ledger import Ledger
from talon.metrics import Metrics
from talon.models import Delivery, Notification
from talon.pool import MemoryQueue, WorkerPool
from talon.registry import Registry
from talon.reloader import Reloader, RuleStore
from talon.rules.model import RuleSet
from talon.server import IngestServer

logger = logging.getLogger(__name__)

LOG_FLUSH_SECONDS = 0.05
"""INFO and DEBUG lines reach the log at most this late (WARNING and worse at once)."""


@dataclass
class App:
    """The running parts, so that tests and `run` stop them in the right order."""

    settings: Settings
    metrics: Metrics
    store: RuleStore
    engine: Engine
    pool: WorkerPool
    queue: MemoryQueue | durable.JournalQueue
    server: IngestServer
    dispatcher: notify.Dispatcher
    reloader: Reloader
    sweeper: LeaseSweeper | None = None
    reconciler: containment.Reconciler | None = None
    ledger: Ledger | None = None
    telemetry: otel.Telemetry | None = None
    journal: journal.Store | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    hup: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        if self.journal is not None:
            self.journal.start()
        if self.ledger is not None:
            self.ledger.start()
        self.dispatcher.start()
        self.pool.start()
        self.server.start()
        if self.settings.watch_rules:
            self.reloader.start()
        if self.sweeper is not None:
            self.sweeper.start()
        if self.reconciler is not None:
            self.reconciler.start()

    def shutdown(self) -> bool:
        """Stop accepting, process what was accepted, stop every thread."""
        sdnotify.notify("STOPPING=1")
        log.emit(logger, logging.INFO, "shutdown", result="stopping: draining the queue",
                 queued=self.queue.depth())
        self.server.stop()
        self.reloader.stop()
        if self.sweeper is not None:
            self.sweeper.stop()
        if self.reconciler is not None:
            self.reconciler.stop()
        drained = self.pool.drain(self.settings.shutdown_timeout_seconds)
        self.dispatcher.drain(min(10.0, self.settings.notifier_timeout_seconds + 1))
        if self.ledger is not None:
            self.ledger.stop()  # after the workers: every outcome they reported is written
        if self.telemetry is not None:  # after the last notification span
            self.telemetry.shutdown()
        if self.journal is not None:
            self.journal.close()
        log.emit(logger, logging.INFO, "shutdown", result="stopped")
        return drained


def _rule_loader(settings: Settings, registry: Registry,
                 paths: Sequence[str]) -> Callable[[], RuleSet]:
    configured = set(settings.notifiers)
    return lambda: rules.load(paths, registry, notifiers=configured)


@dataclass
class _Wiring:
    """What the server and `journal retry` share: the rules, the clients, one reporter
    (log, metrics, notifications, ledger, spans) and the notification dispatcher."""

    settings: Settings
    registry: Registry
    load: Callable[[], RuleSet]
    store: RuleStore
    metrics: Metrics
    clients: Clients
    kube: Callable[[], Any] | None
    no_cluster: KubeConfigError | None
    reporter: report.Reporter
    dispatcher: notify.Dispatcher
    ledger: Ledger | None
    telemetry: otel.Telemetry | None

    def engine(self, dedup: DuplicateFilter | None,
               dead_letter: DeadLetter | None) -> Engine:
        """The engine, its disruptive actions gated by the safety governor."""
        s = self.settings
        return Engine(registry=self.registry, rules=self.store, metrics=self.metrics,
                      notify=self.dispatcher.submit, default_notifiers=s.default_notifiers,
                      dedup=dedup, dead_letter=dead_letter, clients=self.clients,
                      dry_run=s.dry_run, notify_dry_run=s.notify_dry_run,
                      action_timeout=s.action_timeout_seconds,
                      print_all_events=s.print_all_events, reporter=self.reporter,
                      gate=_governor(s, self.kube, self.dispatcher))


def _wire(settings: Settings, registry: Registry, rules_paths: Sequence[str], *,
          notifier_workers: int, connect: bool, with_ledger: bool) -> _Wiring:
    """Rules, clients, reporter and dispatcher (nothing started). `connect`: ping the
    cluster (KubeConfigError when the rules need it and it does not answer)."""
    load = _rule_loader(settings, registry, rules_paths)
    ruleset = load()
    log.problems(logger, ruleset.warnings)
    metrics = Metrics()
    metrics.rules_loaded.set(len(ruleset.rules))
    names = list(settings.default_notifiers) + [n for r in ruleset.rules for n in r.notifiers]
    delivery = Delivery(timeout=settings.notifier_timeout_seconds,
                        retries=settings.notifier_retries)
    clients = Clients(settings, timeout=min(30.0, settings.action_timeout_seconds))
    reporter = report.Reporter.standard(metrics, print_all_events=settings.print_all_events)
    dispatcher = notify.Dispatcher(
        notify.build(names, settings.notifiers, registry, delivery, clients=clients),
        metrics=metrics, workers=notifier_workers,
        queue_size=settings.notifier_queue_size, reporter=reporter)
    reporter.add(report.NotifySink(dispatcher.submit, settings.default_notifiers,
                                   settings.notify_dry_run))
    kube, no_cluster = _kube(clients)
    if connect:
        no_cluster = _ping(settings, kube, no_cluster, needed=not settings.dry_run
                           and _needs_kubernetes(ruleset, registry, names))
    action_ledger = _ledger(settings, registry) if with_ledger else None
    if action_ledger is not None:
        reporter.add(ledger.LedgerSink(action_ledger))
    telemetry = _telemetry(settings, metrics, reporter)
    return _Wiring(settings, registry, load, RuleStore(ruleset), metrics, clients, kube,
                   no_cluster, reporter, dispatcher, action_ledger, telemetry)


def build(settings: Settings, registry: Registry, rules_paths: Sequence[str]) -> App:
    """Assemble every part (nothing started); raises RulesError or ConfigError."""
    w = _wire(settings, registry, rules_paths, notifier_workers=settings.notifier_workers,
              connect=True, with_ledger=True)
    metrics, store, dispatcher, load = w.metrics, w.store, w.dispatcher, w.load
    dd = settings.deduplication
    backend, sweeper = _dedup_backend(settings, w.kube, w.no_cluster, metrics)
    queue, duplicates, dead_letter = _queue(settings, metrics, sweeper is None,
                                            Deduplicator(dd.time_window_seconds, dd.key, backend))
    engine = w.engine(duplicates, dead_letter)
    queue.settled = engine.settled  # events no rule matches need no worker
    metrics.queue_depth.set_function(queue.depth)
    metrics.queue_bytes.set_function(queue.bytes_held)
    handle = queue.handler(engine.handle) if isinstance(queue, durable.JournalQueue) \
        else (lambda item: engine.handle(item.event))
    pool = WorkerPool(queue, handle, workers=settings.workers,
                      overdue=engine.overdue, retire=engine.retire, metrics=metrics)
    metrics.busy_workers.set_function(pool.busy)

    def on_reload(ok: bool) -> None:
        metrics.reloads.labels("ok" if ok else "failed").inc()
        metrics.rules_loaded.set(len(store.current.rules))

    reloader = Reloader(rules_paths, load, store.swap, interval=settings.reload_interval_seconds,
                        on_result=on_reload)
    server_tls, guard = _ingest_security(settings)
    server = IngestServer(
        address=settings.listen_address, port=settings.listen_port,
        accept=queue.offer if isinstance(queue, durable.JournalQueue) else queue.put,
        metrics=metrics, max_body_bytes=settings.max_body_bytes,
        max_connections=settings.max_connections, read_timeout=settings.read_timeout_seconds,
        idle_timeout=settings.idle_timeout_seconds, print_all_events=settings.print_all_events,
        tls=server_tls, auth=guard)
    return App(settings=settings, metrics=metrics, store=store, engine=engine, pool=pool,
               queue=queue, server=server, dispatcher=dispatcher, reloader=reloader,
               sweeper=sweeper, reconciler=_reconciler(settings, w.kube, metrics, dispatcher),
               ledger=w.ledger, telemetry=w.telemetry,
               journal=queue.store if isinstance(queue, durable.JournalQueue) else None)


def _kube(clients: Clients) -> tuple[Callable[[], Any] | None, KubeConfigError | None]:
    """The shared client's getter when a cluster is configured, else None and why not.
    Called once: `Clients` does not remember a failed kubeconfig load."""
    try:
        clients.kube()
    except KubeConfigError as exc:
        return None, exc
    return clients.kube, None


def _ping(settings: Settings, kube: Callable[[], Any] | None,
          no_cluster: KubeConfigError | None, *, needed: bool) -> KubeConfigError | None:
    """Ask the API server its version once, when the rules need Kubernetes (`needed`: an
    unreachable cluster raises KubeConfigError) or Lease dedup may use it. Returns why the
    cluster cannot be used (`no_cluster`, or the failed ping), None when it answered."""
    if not needed and _dedup_local(settings):
        return no_cluster
    try:
        if kube is None:
            raise no_cluster or KubeConfigError("no Kubernetes configuration")
        client = kube()
        version = client.ping(None if needed else settings.deduplication.timeout_seconds)
    except KubeConfigError as exc:
        if needed:
            raise
        return exc
    if needed:
        log.emit(logger, logging.INFO, "init", category="kubernetes",
                 result=f"connected to {version} ({client.source})")
    return None


def _governor(settings: Settings, kube: Callable[[], Any] | None,
              dispatcher: notify.Dispatcher) -> governor.Governor:
    gov = settings.governor
    counter: governor.Counter | None = None
    if kube is not None and gov.budgets and gov.cluster_wide and not settings.dry_run:
        namespace = (gov.lease_namespace or settings.deduplication.lease_namespace
                     or kube_client.own_namespace())
        counter = governor.LeaseCounter(
            kube().coordination, namespace=namespace,
            prefix=settings.deduplication.lease_name, identity=kube_client.identity(),
            timeout=settings.deduplication.timeout_seconds)
        log.emit(logger, logging.INFO, "init", category="governor",
                 result=f"budgets counted cluster-wide through Leases in the namespace "
                        f"'{namespace}'", budgets=", ".join(gov.budgets))
    return governor.Governor(
        gov, settings.protected, notify=dispatcher.submit,
        default_notifiers=settings.default_notifiers, kube=kube, counter=counter,
        own_namespace=kube_client.own_namespace() if kube_client.in_cluster() else "",
        reset_file=governor.reset_path(settings))


def _reconciler(settings: Settings, kube: Callable[[], Any] | None, metrics: Metrics,
                dispatcher: notify.Dispatcher) -> containment.Reconciler | None:
    """The expiry loop, when enabled and a cluster is configured (never in dry-run)."""
    if not settings.containment.enabled or settings.dry_run or kube is None:
        return None

    def report(item: containment.Contained, status: str, text: str) -> None:
        mark = item.mark
        level = logging.ERROR if status == "failure" else logging.INFO
        log.emit(logger, level, "containment", status=status, object=item.ref,
                 rule=mark.rule, action=mark.action, actionner=mark.actionner,
                 output=text if status != "failure" else None,
                 error=text if status == "failure" else None, trace_id=mark.trace_id)
        metrics.action(rule=mark.rule, event="", action=mark.action, actionner=mark.actionner,
                       status=status, namespace=item.namespace,
                       pod=item.name if item.kind.name == "pod" else "")
        if settings.default_notifiers:
            dispatcher.submit(settings.default_notifiers, Notification(
                message="action", status=status, trace_id=mark.trace_id, rule=mark.rule,
                action=mark.action, actionner=mark.actionner,
                output=text if status != "failure" else "",
                error=text if status == "failure" else "", objects=item.objects()))

    return containment.Reconciler(kube, report, interval=settings.containment.reconcile_seconds)


def _ledger(settings: Settings, registry: Registry) -> Ledger | None:
    """The action ledger, its files opened (ConfigError naming a bad path or key file)."""
    conf = settings.ledger
    if not conf.path:
        return None
    try:
        key = ledger.read_key(conf.hmac_key_file) if conf.hmac_key_file else None
        found = Ledger(conf.path, key=key, max_bytes=conf.max_bytes,
                       secrets=settings.secrets(registry))
        found.open()
    except (OSError, ValueError) as exc:
        raise ConfigError([f"ledger: {exc}"]) from exc
    log.emit(logger, logging.INFO, "init", category="ledger", result=f"appending to {conf.path}",
             mac=bool(key) or None)
    return found


def _telemetry(settings: Settings, metrics: Metrics,
               reporter: report.Reporter) -> otel.Telemetry | None:
    """The OTLP export when `otel.*` asks for it (ConfigError if the SDK is missing)."""
    o = settings.otel
    if not (o.traces_enabled or o.metrics_enabled):
        return None
    telemetry = otel.Telemetry(o, metrics)
    if telemetry.spans is not None:
        reporter.add(telemetry.spans, tracing=True)
    what = " and ".join(k for k, on in (("traces", o.traces_enabled),
                                         ("metrics", o.metrics_enabled)) if on)
    log.emit(logger, logging.INFO, "init", category="opentelemetry",
             result=f"exporting {what} over OTLP/{o.protocol}",
             collector=f"{o.collector_endpoint}:{o.port}")
    return telemetry


def _queue(settings: Settings, metrics: Metrics, per_process: bool, dedup: Deduplicator
           ) -> tuple[MemoryQueue | durable.JournalQueue, DuplicateFilter,
                      DeadLetter | None]:
    """The event queue, the duplicate filter and the dead-letter sink: in memory, or in
    the journal when `journal.path` is set (per-process dedup keys then live there too;
    Lease dedup stays as it is). Raises journal.JournalError naming the file."""
    js = settings.journal
    if not js.path:
        return MemoryQueue(settings.queue_size, settings.queue_max_bytes), dedup, None
    store = journal.Store(js.path, fsync=js.fsync, retention=js.retention_seconds,
                          metrics=metrics)
    try:
        queue = durable.JournalQueue(store, max_events=js.max_events,
                                     max_bytes=js.max_bytes, metrics=metrics)
        dd = settings.deduplication
        duplicates: DuplicateFilter = dedup
        if per_process:
            duplicates = durable.JournalDedup(store, dd.time_window_seconds, dd.key,
                                              dd.max_entries)
    except BaseException:
        store.close()
        raise
    log.emit(logger, logging.INFO, "init", category="journal", file=js.path,
             result=f"events are committed before 200; {queue.replayed} not done at the "
                    "last stop run again" if queue.replayed else
                    "events are committed before 200", fsync=js.fsync)
    return queue, duplicates, queue.dead_letter


@dataclass
class ActionEngine:
    """The engine `journal retry` runs recorded actions through, and what it reports to."""

    engine: Engine
    dispatcher: notify.Dispatcher
    telemetry: otel.Telemetry | None = None

    def start(self) -> None:
        self.dispatcher.start()

    def stop(self, timeout: float) -> None:
        """Deliver the notifications (bounded by `timeout`), then export the spans."""
        self.dispatcher.drain(timeout)
        if self.telemetry is not None:
            self.telemetry.shutdown()


def action_engine(settings: Settings, registry: Registry, rules_paths: Sequence[str],
                  dead_letter: DeadLetter | None = None) -> ActionEngine:
    """An engine wired as `build` wires the server's (rules, clients, notifiers, reporter,
    spans, safety governor), without dedup, queue or listener, and one notifier worker.
    The ledger is left to the server: a second writer would fork its hash chain."""
    w = _wire(settings, registry, rules_paths, notifier_workers=1, connect=False,
              with_ledger=False)
    return ActionEngine(w.engine(None, dead_letter), w.dispatcher, w.telemetry)


def _ingest_security(settings: Settings) -> tuple[tls.ServerTLS | None,
                                                  auth.Authenticator | None]:
    """TLS on the listener and the credentials required; ConfigError names a bad file."""
    problems = tls.settings_problems(settings.tls)
    if problems:
        raise ConfigError(problems)
    guard = auth.Authenticator(settings.auth) if auth.configured(settings.auth) else None
    server_tls = None
    if settings.tls.cert_file:
        server_tls = tls.ServerTLS(settings.tls, optional_client_cert=guard is not None)
    return server_tls, guard


def _warn_if_open(settings: Settings) -> None:
    """Say loudly when anyone who reaches the port can make Talon act."""
    if auth.configured(settings.auth) or settings.tls.client_ca_file \
            or auth.is_loopback(settings.listen_address):
        return
    log.emit(logger, logging.WARNING, "http", result="no authentication configured: anyone "
             "who can reach this port can trigger actions (set auth.bearer_tokens_file, "
             "auth.hmac_secret_file or tls.client_ca_file)",
             address=f"{settings.listen_address}:{settings.listen_port}")


def _dedup_local(settings: Settings) -> str:
    """Why deduplication stays in this process whatever the cluster ("" when Leases may
    carry it)."""
    dd = settings.deduplication
    if dd.time_window_seconds <= 0:
        return "off (time_window_seconds is 0)"
    if not dd.leader_election:
        return "per process (leader_election is false)"
    if settings.dry_run:
        return "per process (dry-run writes nothing to the cluster)"
    return ""


def _dedup_backend(settings: Settings, kube: Callable[[], Any] | None,
                   no_cluster: KubeConfigError | None,
                   metrics: Metrics) -> tuple[Backend, LeaseSweeper | None]:
    """Leases when asked for and a cluster answers (never in dry-run), else local memory.
    `no_cluster`: why the cluster cannot be used, from `_ping` (None: it answered)."""
    dd = settings.deduplication
    local = LocalBackend(dd.max_entries)
    why = _dedup_local(settings)
    if why:
        log.emit(logger, logging.INFO, "init", category="deduplication", result=why)
        return local, None
    if kube is None or no_cluster is not None:
        log.emit(logger, logging.INFO, "init", category="deduplication",
                 result=f"per process (no cluster: {no_cluster})")
        return local, None
    namespace = dd.lease_namespace or kube_client.own_namespace()
    api = kube()
    backend = LeaseBackend(api, namespace=namespace, prefix=dd.lease_name,
                           identity=kube_client.identity(), timeout=dd.timeout_seconds,
                           metrics=metrics, max_entries=dd.max_entries)
    log.emit(logger, logging.INFO, "init", category="deduplication",
             result=f"cluster-wide through Leases in the namespace '{namespace}'",
             holder=backend.identity, window=dd.time_window_seconds)
    return backend, LeaseSweeper(api, namespace, interval=min(10.0, dd.time_window_seconds),
                                 owned=backend.owned, pass_interval=60.0)


def _needs_kubernetes(ruleset: RuleSet, registry: Registry, notifiers: list[str]) -> bool:
    """Whether a rule (or a notifier in use) calls the Kubernetes API."""
    infos = [registry.get("actionner", a.actionner).info for r in ruleset.rules
             for a in r.actions if not r.dry_run]
    infos += [registry.get("context", c).info for r in ruleset.rules for a in r.actions
              for c in a.additional_contexts]
    infos += [registry.get("notifier", n).info for n in notifiers
              if registry.has("notifier", n)]
    return any("kubernetes" in i.requires for i in infos)


def _signals(app: App) -> None:
    def on_stop(signum: int, _frame: Any) -> None:
        app.stop.set()

    def on_hup(signum: int, _frame: Any) -> None:
        app.hup.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)


def run(settings: Settings, registry: Registry, *, rules_paths: Sequence[str]) -> int:
    """Run the server until SIGTERM/SIGINT; the process exit code."""
    log.setup(settings.log_format, secrets=settings.secrets(registry),
              flush_interval=LOG_FLUSH_SECONDS)
    try:
        app = build(settings, registry, rules_paths)
    except RulesError as exc:
        log.problems(logger, exc.problems)
        log.emit(logger, logging.CRITICAL, "rules", error="invalid rules")
        return 1
    except ConfigError as exc:
        for problem in exc.problems:
            log.emit(logger, logging.CRITICAL, "config", error=problem)
        return 1
    except journal.JournalError as exc:
        log.emit(logger, logging.CRITICAL, "journal", error=str(exc))
        return 1
    except KubeConfigError as exc:
        log.emit(logger, logging.CRITICAL, "init", category="kubernetes", error=str(exc),
                 hint="the rules use Kubernetes actionners: set kubeconfig (or KUBECONFIG), "
                      "run in a pod, or start with --dry-run to audit without a cluster")
        return 1
    except OSError as exc:
        log.emit(logger, logging.CRITICAL, "http", error=f"cannot listen: {exc}")
        return 1
    n = len(app.store.current.rules)
    log.emit(logger, logging.INFO, "rules", result=f"{n} rule(s) loaded",
             files=", ".join(app.store.current.files))
    _signals(app)
    app.start()
    host, port = app.server.address
    log.emit(logger, logging.INFO, "http", result=f"Talon is up and listening on {host}:{port}",
             dry_run=settings.dry_run or None, workers=settings.workers,
             tls=("mutual" if settings.tls.client_ca_file else "on")
             if settings.tls.cert_file else None)
    _warn_if_open(settings)
    sdnotify.notify("READY=1")
    watchdog = sdnotify.Watchdog(healthy=health.Liveness(app.server, app.engine.stuck))
    watchdog.start()
    while not app.stop.wait(0.25):
        if app.hup.is_set():
            app.hup.clear()
            app.reloader.reload("signal")
    watchdog.stop()
    return 0 if app.shutdown() else 1
