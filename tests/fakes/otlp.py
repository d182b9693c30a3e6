"""OTLP receivers for tests: a gRPC one (TraceService/MetricsService Export, built from
opentelemetry-proto's service definitions and grpcio) and an HTTP one (POST /v1/traces and
/v1/metrics with protobuf bodies, as a collector's OTLP/HTTP receiver). Both decode what
arrives into plain dicts: `spans` (name, ids in hex, attributes, status, events, resource
and scope) and `points` (metric name, scope, attributes, value; the latest export wins).
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as metrics_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as trace_grpc


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


class Collected:
    """What a receiver got, decoded; thread-safe; `wait` polls for a condition."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.points: dict[tuple[str, tuple[tuple[str, Any], ...]], dict[str, Any]] = {}
        self.requests = 0
        self._lock = threading.RLock()

    def add_traces(self, request: Any) -> None:
        with self._lock:
            self.requests += 1
            for rs in request.resource_spans:
                resource = _attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append({
                            "name": s.name, "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(), "parent": s.parent_span_id.hex(),
                            "attributes": _attributes(s.attributes),
                            "status": s.status.code, "message": s.status.message,
                            "events": [e.name for e in s.events],
                            "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                            "resource": resource, "scope": ss.scope.name})

    def add_metrics(self, request: Any) -> None:
        with self._lock:
            self.requests += 1
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.WhichOneof("data") != "sum":
                            continue
                        for p in m.sum.data_points:
                            attrs = _attributes(p.attributes)
                            value = p.as_int if p.WhichOneof("value") == "as_int" \
                                else p.as_double
                            self.points[(m.name, tuple(sorted(attrs.items())))] = {
                                "name": m.name, "scope": sm.scope.name, "attributes": attrs,
                                "value": value, "monotonic": m.sum.is_monotonic}

    def wait(self, ready: Callable[[Collected], bool], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if ready(self):
                    return
            time.sleep(0.02)
        raise AssertionError(f"not received in {timeout}s: spans={self.spans} "
                             f"points={list(self.points.values())}")

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [s for s in self.spans if s["name"] == name]

    def metric(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [p for p in self.points.values() if p["name"] == name]


class _Traces(trace_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, got: Collected) -> None:
        self.got = got

    def Export(self, request: Any, context: Any) -> Any:
        self.got.add_traces(request)
        return trace_pb.ExportTraceServiceResponse()


class _Metrics(metrics_grpc.MetricsServiceServicer):  # type: ignore[misc]
    def __init__(self, got: Collected) -> None:
        self.got = got

    def Export(self, request: Any, context: Any) -> Any:
        self.got.add_metrics(request)
        return metrics_pb.ExportMetricsServiceResponse()


class GrpcReceiver(Collected):
    """An OTLP/gRPC receiver on 127.0.0.1 (plain text); `port` once started."""

    def __enter__(self) -> GrpcReceiver:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_grpc.add_TraceServiceServicer_to_server(_Traces(self), self._server)
        metrics_grpc.add_MetricsServiceServicer_to_server(_Metrics(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None)


class HttpReceiver(Collected):
    """An OTLP/HTTP receiver on 127.0.0.1 (plain http); `port` once started."""

    def __enter__(self) -> HttpReceiver:
        got = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    got.add_traces(trace_pb.ExportTraceServiceRequest.FromString(body))
                    reply = trace_pb.ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    got.add_metrics(metrics_pb.ExportMetricsServiceRequest.FromString(body))
                    reply = metrics_pb.ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
