"""OpenTelemetry export: traces of each event's stages, and the /metrics counters, over OTLP.

Layer L1. Optional: the OpenTelemetry SDK and exporters (requirements-otel.txt, the `otel`
extra) are imported only when `otel.traces_enabled` or `otel.metrics_enabled` is on;
`require()` turns their absence into a ConfigError naming the install command.

Traces: `SpanSink` is a talon.report sink. Each stage record already holds its span id, its
parent's and its times, so the sink builds each span whole, once the stage has ended, and
hands it to a BatchSpanProcessor (queue of `max_queue_size` spans, exported every 5 s on
the SDK's own thread): an action never waits for the collector. A span that finds the
queue full is dropped and counted in `talon_otel_spans_dropped_total`. Span and attribute
names are Falco Talon's: `event` (the root; its parent is the caller's span when the POST
carried a W3C `traceparent`) → `match` → `action` → `output`, and `notification` under the
action or output it reports.

Metrics: the five Falco Talon counters of /metrics (`falcosecurity_falco_talon_events`,
`_matches`, `_actions`, `_outputs`, `_notifications`) are observable counters that read the
Prometheus counters when the periodic reader exports (every OTEL_METRIC_EXPORT_INTERVAL ms,
60 s by default): events pay nothing for them. Empty labels are left out, as upstream does.
`Telemetry.shutdown()` flushes pending spans and a last metrics export.
"""

from __future__ import annotations

import importlib.util
import json
import random
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from talon import __version__
from talon.config import OtelSettings
from talon.errors import ConfigError
from talon.metrics import Metrics
from talon.outcome import (
    DONE,
    ActionOutcome,
    EventOutcome,
    MatchOutcome,
    NotificationOutcome,
    OutputOutcome,
    Span,
)

INSTALL = "pip install -r requirements-otel.txt (or pip install '.[otel]')"
SCOPE = "github.com/falcosecurity/falco-talon"
"""The meter's name, as Falco Talon's."""
SERVICE = "falco-talon"
"""service.name and tracer name, as Falco Talon's (dashboards and queries keep working)."""
COUNTERS = {"events": "number of received events", "matches": "number of matched events",
            "actions": "number of actions", "outputs": "number of outputs",
            "notifications": "number of notifications"}
MAX_QUEUE_SIZE = 2048
MAX_VALUE = 4096
"""Longest attribute value taken from an event (longer ones are cut)."""
MAX_FIELDS = 128
"""Most output fields of an event made into attributes of its span."""
_MODULES = {"grpc": "opentelemetry.exporter.otlp.proto.grpc",
            "http/protobuf": "opentelemetry.exporter.otlp.proto.http"}


def require(settings: OtelSettings) -> None:
    """ConfigError naming the install command unless the SDK and exporter are importable."""
    wanted = ("opentelemetry.sdk", _MODULES[settings.protocol])
    missing = [name for name in wanted if not _importable(name)]
    if missing:
        raise ConfigError([f"otel: traces_enabled or metrics_enabled needs the OpenTelemetry "
                           f"SDK and OTLP exporter ({', '.join(missing)} not installed): "
                           f"{INSTALL}"])


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent package is missing
        return False


def _endpoint(settings: OtelSettings, path: str) -> str:
    host = settings.collector_endpoint
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    if settings.protocol == "grpc":
        return f"{host}:{settings.port}"
    scheme = "http" if settings.collector_use_insecure_grpc else "https"
    return f"{scheme}://{host}:{settings.port}{path}"


def _span_exporter(settings: OtelSettings) -> Any:
    """The OTLP span exporter of the configured protocol."""
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpans,
        )
        return GrpcSpans(endpoint=_endpoint(settings, ""), timeout=settings.timeout,
                         insecure=settings.collector_use_insecure_grpc)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpans,
    )
    return HttpSpans(endpoint=_endpoint(settings, "/v1/traces"), timeout=settings.timeout)


def _metric_exporter(settings: OtelSettings) -> Any:
    """The OTLP metric exporter of the configured protocol."""
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetrics,
        )
        return GrpcMetrics(endpoint=_endpoint(settings, ""), timeout=settings.timeout,
                           insecure=settings.collector_use_insecure_grpc)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetrics,
    )
    return HttpMetrics(endpoint=_endpoint(settings, "/v1/metrics"), timeout=settings.timeout)


class Telemetry:
    """The span pipeline and the metrics reader built from `otel.*`; `shutdown()` flushes."""

    def __init__(self, settings: OtelSettings, metrics: Metrics, *,
                 max_queue_size: int = MAX_QUEUE_SIZE, schedule_delay: float = 5.0,
                 metrics_interval: float | None = None) -> None:
        require(settings)
        from opentelemetry.sdk.resources import Resource

        self.settings = settings
        self.resource = Resource.create({"service.name": SERVICE,
                                         "service.version": __version__,
                                         "service.instance.id": socket.gethostname()})
        self.spans: SpanSink | None = None
        self._meters: Any = None
        if settings.traces_enabled:  # each exporter (a gRPC channel) only when it is used
            self.spans = SpanSink(_span_exporter(settings), self.resource, metrics,
                                  max_queue_size=max_queue_size, schedule_delay=schedule_delay,
                                  timeout=settings.timeout)
        if settings.metrics_enabled:
            self._meters = _meter_provider(_metric_exporter(settings), self.resource, metrics,
                                           interval=metrics_interval, timeout=settings.timeout)

    def shutdown(self) -> None:
        """Export what is pending (each bounded by `otel.timeout`), then stop."""
        if self.spans is not None:
            self.spans.shutdown()
        if self._meters is not None:
            self._meters.shutdown(timeout_millis=self.settings.timeout * 1000)


def _meter_provider(exporter: Any, resource: Any, metrics: Metrics, *,
                    interval: float | None, timeout: int) -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(
        exporter, export_interval_millis=None if interval is None else interval * 1000,
        export_timeout_millis=timeout * 1000)
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    meter = provider.get_meter(SCOPE, __version__)
    counters = {"events": metrics.events, "matches": metrics.matches,
                "actions": metrics.actions, "outputs": metrics.outputs,
                "notifications": metrics.notifications}
    for alias, counter in counters.items():
        meter.create_observable_counter(f"falcosecurity_falco_talon_{alias}",
                                        callbacks=[_observer(counter)],
                                        description=COUNTERS[alias])
    return provider


def _observer(counter: Any) -> Callable[[Any], Iterator[Any]]:
    """An OTel callback yielding the Prometheus counter's series, empty labels left out."""
    from opentelemetry.metrics import Observation

    def observe(_options: Any) -> Iterator[Any]:
        for family in counter.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    yield Observation(int(sample.value),
                                      {k: v for k, v in sample.labels.items() if v})
    return observe


class SpanSink:
    """A talon.report sink: each finished stage becomes one span in the batch queue."""

    name = "spans"

    def __init__(self, exporter: Any, resource: Any, metrics: Metrics, *,
                 max_queue_size: int, schedule_delay: float, timeout: int) -> None:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self._processor = BatchSpanProcessor(
            exporter, max_queue_size=max_queue_size,
            max_export_batch_size=min(512, max_queue_size),
            schedule_delay_millis=schedule_delay * 1000, export_timeout_millis=timeout * 1000)
        self._queue = _queue_of(self._processor)
        self._max = max_queue_size
        self._dropped = metrics.otel_spans_dropped
        self._build = _Builder(resource)

    def __call__(self, o: Any) -> None:
        kind = type(o)
        if kind is ActionOutcome:
            span = self._build.action(o)
        elif kind is MatchOutcome:
            span = self._build.match(o)
        elif kind is OutputOutcome:
            span = self._build.output(o)
        elif kind is NotificationOutcome:
            span = self._build.notification(o)
        elif kind is EventOutcome and o.status == DONE:
            span = self._build.event(o)
        else:
            return
        if span is None:  # tracing was off when the stage ran, or not a W3C trace id
            return
        if self._queue is not None and len(self._queue) >= self._max:
            self._dropped.inc()  # the SDK would drop one too, and log a warning per span
            return
        self._processor.on_end(span)

    def shutdown(self) -> None:
        self._processor.shutdown()  # type: ignore[no-untyped-call,unused-ignore]


def _queue_of(processor: Any) -> Any:
    """The batch processor's queue (a bounded deque), to see that it is full before
    adding: the SDK does not say when it drops. None if a later SDK moved it."""
    inner = getattr(processor, "_batch_processor", None)
    found = getattr(inner, "_queue", None)
    return found if hasattr(found, "__len__") else None


_RANDOM = random.Random()  # noqa: S311 - span ids identify spans, they guard nothing


def _new_span_id() -> str:
    return f"{_RANDOM.getrandbits(64) or 1:016x}"


class _Builder:
    """Makes finished SDK spans (ReadableSpan) from stage records, with Falco Talon's span
    and attribute names. A record whose trace id is not a W3C one (an event given to the
    engine by hand) makes no span."""

    def __init__(self, resource: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self._trace, self._readable, self._event = trace, ReadableSpan, Event
        self._resource = resource
        self._scope = InstrumentationScope(SERVICE, __version__)
        self._sampled = trace.TraceFlags(trace.TraceFlags.SAMPLED)

    def _span(self, name: str, trace_id: str, where: Span | None, *,
              attributes: Mapping[str, Any], error: str = "", remote_parent: bool = False,
              events: tuple[Any, ...] = ()) -> Any:
        if where is None or len(trace_id) != 32 or not where.span_id:
            return None
        span_id, parent_id, start, end = where
        t = self._trace
        try:
            tid = int(trace_id, 16)
            context = t.SpanContext(tid, int(span_id, 16), False, self._sampled)
            parent = t.SpanContext(tid, int(parent_id, 16), remote_parent, self._sampled) \
                if parent_id else None
        except ValueError:
            return None
        status = t.Status(t.StatusCode.ERROR, error) if error else t.Status(t.StatusCode.OK)
        return self._readable(
            name, context=context, parent=parent, resource=self._resource,
            attributes=attributes, events=events, kind=t.SpanKind.INTERNAL, status=status,
            start_time=start, end_time=max(start, end), instrumentation_scope=self._scope)

    def event(self, o: EventOutcome) -> Any:
        e = o.event
        attributes: dict[str, Any] = {
            "event.rule": e.rule, "event.source": e.source, "event.priority": e.priority,
            "event.output": e.output[:MAX_VALUE], "event.traceid": e.trace_id,
            "event.tags": [str(t)[:MAX_VALUE] for t in e.tags[:MAX_FIELDS]]}
        for key in list(e.output_fields)[:MAX_FIELDS]:
            attributes[f'event.output_fields["{key}"]'] = (e.field_text(key) or "")[:MAX_VALUE]
        body = json.dumps(e.to_dict(), default=str)[:MAX_VALUE]
        events = (self._event("event", {"event": body}, o.span.start_ns if o.span else 0),)
        return self._span("event", e.trace_id, o.span, attributes=attributes,
                          remote_parent=True, events=events)

    def match(self, o: MatchOutcome) -> Any:
        e, rule = o.event, o.rule
        attributes = {"event.rule": e.rule, "event.output": e.output[:MAX_VALUE],
                      "event.source": e.source, "event.trace_id": e.trace_id,
                      "rule.name": rule.name, "rule.description": rule.description}
        return self._span("match", e.trace_id, o.span, attributes=attributes)

    def action(self, o: ActionOutcome) -> Any:
        action, objects = o.action, o.objects
        attributes: dict[str, Any] = {
            "rule.name": o.rule.name, "action.name": action.name,
            "action.actionner": action.actionner, "actionner.name": action.actionner,
            "action.description": action.description, "action.continue": action.continues,
            "action.ignore_errors": bool(action.ignore_errors), "action.status": o.status,
            "action.result": o.status, "action.output": o.output[:MAX_VALUE],
            "action.error": o.error, "action.dry_run": o.dry_run,
            **{f"object.{k.lower()}": v for k, v in objects.items()}}
        return self._span("action", o.event.trace_id, o.span, attributes=attributes,
                          error=o.error or ("failure" if not o.ok else ""))

    def output(self, o: OutputOutcome) -> Any:
        attributes: dict[str, Any] = {
            "rule.name": o.rule.name, "action.name": o.action.name, "output.name": o.target,
            "output.category": o.target.split(":", 1)[0], "output.target": o.target,
            "output.status": o.status, "output.message": o.result[:MAX_VALUE],
            "output.error": o.error,
            **{f"object.{k.lower()}": v for k, v in o.objects.items()}}
        return self._span("output", o.event.trace_id, o.span, attributes=attributes,
                          error=o.error or ("failure" if o.status == "failure" else ""))

    def notification(self, o: NotificationOutcome) -> Any:
        n = o.notification
        if not n.span_id:  # the action it reports has no span: no trace to join
            return None
        attributes = {"notifier.name": o.notifier, "notification.status": o.status,
                      "notification.stage": n.message, "notification.error": o.error,
                      "rule.name": n.rule, "action.name": n.action}
        start = o.started_ns or time.time_ns()
        where = Span(_new_span_id(), n.span_id, start, o.ended_ns or start)
        return self._span("notification", n.trace_id, where, attributes=attributes,
                          error=o.error or ("failure" if o.status != "success" else ""))
