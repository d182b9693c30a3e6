"""What the reporter and the OpenTelemetry export cost per acted-on event.

Runs `Engine.handle` in-process (no HTTP) on one event that matches one rule with two
cheap actions and one notifier, N times, and prints the CPU time (process_time) and the
wall time per event, the slowest event, and spans dropped, in four set-ups:
- `off`: the standard sinks only (OTel off);
- `traces`: plus the span sink, exporting to a live OTLP/gRPC receiver;
- `traces+metrics`: plus the metrics export every 0.5 s;
- `dead`: traces and metrics to a port where nothing listens.
Run with the OTel venv: `python tests/bench/bench_otel.py [N]` from the repository root.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from talon import config, models, notify, otel, report, rules  # noqa: E402
from talon.engine import Engine  # noqa: E402
from talon.metrics import Metrics  # noqa: E402
from talon.models import Notification, Result  # noqa: E402
from talon.registry import Registry, actionner  # noqa: E402
from talon.reloader import RuleStore  # noqa: E402
from tests.fakes.otlp import GrpcReceiver  # noqa: E402
from tests.notifiers.sinks import free_port  # noqa: E402

RULES = """
- rule: R
  match: {rules: [Terminal shell in container]}
  actions:
    - {action: first, actionner: b:noop}
    - {action: second, actionner: b:noop}
"""


class Quiet:
    def send(self, n: Notification) -> None:
        pass


def build(folder: Path, otel_settings: config.OtelSettings | None) -> tuple[Engine, Any, Any]:
    registry, metrics = Registry(), Metrics()
    actionner("b", "noop", registry=registry, description="noop")(
        lambda ctx: Result(output="ok", objects={"pod": "web", "namespace": "shop"}))
    (folder / "rules.yaml").write_text(RULES)
    reporter = report.Reporter.standard(metrics)
    dispatcher = notify.Dispatcher({"webhook": Quiet()}, metrics=metrics, workers=1,
                                   queue_size=100_000, reporter=reporter)
    reporter.add(report.NotifySink(dispatcher.submit, ("webhook",)))
    telemetry = None
    if otel_settings is not None:
        telemetry = otel.Telemetry(otel_settings, metrics, metrics_interval=0.5)
        if telemetry.spans is not None:
            reporter.add(telemetry.spans, tracing=True)
    engine = Engine(registry=registry, rules=RuleStore(rules.load([str(folder / "rules.yaml")],
                                                                  registry)),
                    metrics=metrics, notify=dispatcher.submit, reporter=reporter)
    dispatcher.start()
    return engine, dispatcher, telemetry


def run(name: str, n: int, otel_settings: config.OtelSettings | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine, dispatcher, telemetry = build(Path(tmp), otel_settings)
        events = [models.from_mapping(
            {"rule": "Terminal shell in container", "priority": "Warning", "output": "x",
             "output_fields": {"k8s.pod.name": "web", "k8s.ns.name": "shop"}},
            trace_id=f"{i + 1:032x}") for i in range(n)]
        for e in events[:200]:  # warm-up
            engine.handle(e)
        slowest, cpu, wall = 0.0, time.process_time(), time.perf_counter()
        for e in events:
            began = time.perf_counter()
            engine.handle(e)
            slowest = max(slowest, time.perf_counter() - began)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        dispatcher.drain(10)
        dropped = engine.metrics.registry.get_sample_value("talon_otel_spans_dropped_total")
        if telemetry is not None:
            telemetry.shutdown()
        print(f"{name:15} {cpu / n * 1e6:8.1f} µs CPU/event {wall / n * 1e6:8.1f} µs wall/event "
              f"slowest {slowest * 1e3:6.2f} ms  spans dropped {dropped:.0f}")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    logging.disable(logging.CRITICAL)  # logging's cost is the same in every set-up
    base: dict[str, Any] = {"collector_endpoint": "127.0.0.1",
                            "collector_use_insecure_grpc": True, "timeout": 2}
    run("off", n, None)
    with GrpcReceiver() as receiver:
        run("traces", n, config.OtelSettings(traces_enabled=True, collector_port=receiver.port,
                                             **base))
        run("traces+metrics", n, config.OtelSettings(
            traces_enabled=True, metrics_enabled=True, collector_port=receiver.port, **base))
        print(f"{'':15} receiver got {len(receiver.spans)} spans")
    run("dead", n, config.OtelSettings(traces_enabled=True, metrics_enabled=True,
                                       collector_port=free_port(), **base))


if __name__ == "__main__":
    main()
