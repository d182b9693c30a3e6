"""A fake Kubernetes API server that the real `kubernetes` client talks to over HTTP.

`FakeKubeAPI` is a stdlib `ThreadingHTTPServer` on 127.0.0.1 (free port) in a daemon thread.
Point the client at it with `fake.kubeconfig(path)` (http, bearer token) and
`kubernetes.config.new_client_from_config(config_file=...)`. Seed objects with `add()`, script
containers with `on_exec()` / `set_pod_logs()`, inject faults with `fail()` / `forbid()` /
`delay()`, then assert on `get()`/`list()`, `requests`, `execs`, `evictions`, `deletions`.

Faithful (checked against the apiserver's behaviour and the 36.x client):
- URL shapes for core (/api/v1) and group APIs (/apis/<g>/<v>), namespaced, cluster-scoped and
  all-namespaces lists; List kinds, list items without apiVersion/kind (custom ones keep them),
  limit/continue; one global resourceVersion; uid, creationTimestamp, generateName suffix.
- `Status` bodies of NotFound (also for unknown paths), AlreadyExists, Conflict (stale
  resourceVersion, failed delete preconditions), Invalid, Forbidden, Unauthorized (wrong token),
  BadRequest, UnsupportedMediaType, TooManyRequests (eviction vs. PodDisruptionBudget) and
  InternalError; the client raises `ApiException` with `.status`, the HTTP reason phrase in
  `.reason` and the Status JSON in `.body`.
- A JSON patch that does not apply answers 422 with only "the server rejected our request due
  to an error in our request" (the library's own text is dropped by the server); replace of an
  absent key in an existing map succeeds, as with the server's JSON-patch library.
- Custom resources (cilium.io, projectcalico.org): strategic merge patch → 415, PUT without
  metadata.resourceVersion → 422. Status subresources: writes to the main resource keep the
  stored status; a create resets it (a pod starts as Pending).
- DELETE answers the object for pods, services and namespaces, a success Status otherwise.
- pods/log: plain text, `container` required for multi-container pods (same 400 message),
  `tailLines`, `limitBytes`. pods/eviction: 201 Status, 404, 429 with the DisruptionBudget cause.
  pods/ephemeralcontainers: only spec.ephemeralContainers changes; removing or changing one is
  422. pods/exec and attach: see tests/fakes/kube_ws.py (v5/v4 channel protocols, status JSON on
  channel 3 with NonZeroExitCode/ExitCode causes, 404/400 before the upgrade).

Simplified (keep in mind when a test passes here):
- No defaulting or schema validation beyond names, no admission, no RBAC (use `forbid()`), no
  watch (400), no server-side apply (415), no field managers, no `generation`.
- Deletion is immediate: graceful pods, namespace finalization and garbage collection of owned
  objects do not happen (the returned pod/namespace still shows deletionTimestamp/Terminating).
- Strategic merge picks list strategies by field name (see kube_patch.MERGE_KEYS).
- Namespaces need not exist unless `FakeKubeAPI(require_namespaces=True)`.
- Added ephemeral containers are reported running at once (`run_ephemeral_containers`).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import re
import secrets
import socket
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from tests.fakes import kube_store as ks
from tests.fakes import kube_ws
from tests.fakes.kube_store import JSON, ResourceDef
from tests.fakes.kube_ws import ExecCall, ExecHandler

DEFAULT_TOKEN = "fake-token"
DEFAULT_USER = "system:serviceaccount:falco-talon:falco-talon"
VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fake", "platform": "linux/amd64"}
WriteHook = Callable[[str, str, JSON], None]
"""(verb, qualified resource such as "pods" or "deployments.apps", object) after a write."""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as received (the path without its query)."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    content_type: str
    body: Any
    raw: bytes
    headers: Mapping[str, str]

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass(frozen=True, slots=True)
class Route:
    rd: ResourceDef
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass(frozen=True, slots=True)
class Eviction:
    namespace: str
    pod: str
    grace_period_seconds: int | None


@dataclass(frozen=True, slots=True)
class Deletion:
    resource: str
    namespace: str | None
    name: str
    grace_period_seconds: int | None
    propagation_policy: str | None


@dataclass(slots=True)
class _Fault:
    method: str
    pattern: re.Pattern[str]
    remaining: int | None
    status: JSON | None = None
    user: str | None = None
    seconds: float = 0.0

    def take(self, request: RecordedRequest) -> bool:
        """Match the request and use up one of the remaining times."""
        if self.method not in ("*", request.method) or not self.pattern.search(request.path):
            return False
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"


def _json(status: int, body: Any) -> _Response:
    return _Response(status, json.dumps(body, separators=(",", ":")).encode())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 60
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self.server.fake.serve(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, fake: FakeKubeAPI) -> None:
        self.fake = fake
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class FakeKubeAPI:
    """The fake server plus its seeding, scripting and inspection helpers."""

    def __init__(self, *, token: str | None = DEFAULT_TOKEN,
                 require_namespaces: bool = False) -> None:
        self.token = token
        self.store = ks.Store(require_namespaces=require_namespaces)
        self.run_ephemeral_containers = True
        self.execs: list[ExecCall] = []
        self.evictions: list[Eviction] = []
        self.deletions: list[Deletion] = []
        self.errors: list[str] = []
        """Tracebacks of bugs in the fake or in hooks/handlers; tests may assert it is empty."""
        self._resources = {(rd.group_version, rd.resource): rd for rd in ks.CATALOG}
        self._logs: dict[tuple[str, str, str], bytes] = {}
        self._exec_routes: list[kube_ws.ExecRoute] = []
        self._faults: list[_Fault] = []
        self._delays: list[_Fault] = []
        self._blocked: dict[tuple[str, str], _Fault] = {}
        self._hooks: list[WriteHook] = []
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeKubeAPI:
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="fake-kube-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def __enter__(self) -> FakeKubeAPI:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the fake first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: str | Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig (plain http, bearer token) pointing at this server."""
        user: JSON = {"token": self.token} if self.token else {}
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": "fake", "context": {
                "cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        }
        target = Path(path)
        target.write_text(json.dumps(config, indent=2))
        return target

    # --- seeding and inspection --------------------------------------------------------------

    def register_resource(self, api_version: str, resource: str, kind: str, *,
                          namespaced: bool = True, custom: bool = True) -> ResourceDef:
        """Serve one more resource (a CRD by default)."""
        group, _, version = api_version.rpartition("/")
        rd = ResourceDef(group, version, resource, kind, namespaced=namespaced, custom=custom)
        self._resources[(rd.group_version, resource)] = rd
        return rd

    def resource(self, kind_or_resource: str, api_version: str | None = None) -> ResourceDef:
        """Find a resource by kind (`Pod`), plural (`pods`) or `plural.group`."""
        for rd in self._resources.values():
            if api_version and rd.group_version != api_version:
                continue
            if kind_or_resource in (rd.kind, rd.resource, rd.qualified, rd.kind.lower()):
                return rd
        raise KeyError(f"no served resource matches {kind_or_resource!r} ({api_version})")

    def add(self, obj: Mapping[str, Any]) -> JSON:
        """Store a plain-dict object as is (resourceVersion, uid, timestamps filled in)."""
        if not obj.get("kind") or not (obj.get("metadata") or {}).get("name"):
            raise ValueError("add() needs kind and metadata.name")
        rd = self.resource(obj["kind"], obj.get("apiVersion"))
        return self.store.seed(rd, dict(obj))

    def get(self, kind_or_resource: str, namespace: str | None, name: str, *,
            api_version: str | None = None) -> JSON | None:
        rd = self.resource(kind_or_resource, api_version)
        return self.store.find(rd, namespace if rd.namespaced else None, name)

    def list(self, kind_or_resource: str, namespace: str | None = None, *,
             label_selector: str | None = None, field_selector: str | None = None,
             api_version: str | None = None) -> list[JSON]:
        rd = self.resource(kind_or_resource, api_version)
        return ks.select(self.store.items(rd, namespace), label_selector, field_selector, rd)

    def remove(self, kind_or_resource: str, namespace: str | None, name: str, *,
               api_version: str | None = None) -> bool:
        rd = self.resource(kind_or_resource, api_version)
        try:
            self.store.delete(rd, namespace if rd.namespaced else None, name)
        except ks.ApiError:
            return False
        return True

    def set_pod_logs(self, namespace: str, pod: str, container: str, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else bytes(text)
        with self._lock:
            self._logs[(namespace, pod, container)] = data

    def on_exec(self, handler: ExecHandler, *, namespace: str | None = None,
                pod: str | None = None, container: str | None = None,
                argv0: str | None = None, wait_stdin: bool = True) -> None:
        """Answer execs/attaches (the last matching registration wins). With `wait_stdin`
        and stdin=true the handler runs once the client has ended stdin."""
        route = kube_ws.ExecRoute(handler, namespace, pod, container, argv0, wait_stdin)
        with self._lock:
            self._exec_routes.append(route)

    def on_write(self, hook: WriteHook) -> None:
        """Call `hook(verb, resource, obj)` after each successful write (before the reply)."""
        self._hooks.append(hook)

    # --- faults --------------------------------------------------------------------------------

    def fail(self, method: str, path_regex: str, status: int, reason: str | None = None,
             message: str | None = None, *, times: int | None = 1,
             details: JSON | None = None) -> None:
        """Answer matching requests with a failure Status (`times=None`: forever)."""
        body = ks.status_body(status, reason or _REASONS.get(status, "Unknown"),
                              message or f"fake failure {status}", details)
        self._add_fault(_Fault(method.upper(), re.compile(path_regex), times, status=body))

    def forbid(self, method: str, path_regex: str, *, times: int | None = None,
               user: str = DEFAULT_USER) -> None:
        """Answer matching requests with the RBAC 403 the apiserver would send."""
        self._add_fault(_Fault(method.upper(), re.compile(path_regex), times, user=user))

    def delay(self, method: str, path_regex: str, seconds: float, *,
              times: int | None = None) -> None:
        with self._lock:
            self._delays.append(_Fault(method.upper(), re.compile(path_regex), times,
                                       seconds=seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._delays.clear()
            self._blocked.clear()

    def block_eviction(self, namespace: str, pod: str, *, pdb: str = "talon-pdb",
                       times: int | None = None) -> None:
        """Refuse evictions of this pod with 429 as if `pdb` allowed no disruption."""
        with self._lock:
            self._blocked[(namespace, pod)] = _Fault("POST", re.compile(pdb), times)

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    # --- recorded requests -------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, method: str = "*", path_prefix: str = "") -> list[RecordedRequest]:
        method = method.upper()
        return [r for r in self.requests
                if method in ("*", r.method) and r.path.startswith(path_prefix)]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # --- serving -------------------------------------------------------------------------------

    def serve(self, handler: _Handler) -> None:
        request = _read_request(handler)
        with self._lock:
            self._requests.append(request)
        try:
            self._pause(request)
            response = self._respond(handler, request)
        except ks.ApiError as exc:
            response = _json(exc.code, exc.status)
        except Exception:  # noqa: BLE001 - boundary: a bug here must answer 500, not hang
            self.errors.append(traceback.format_exc())
            response = _json(500, ks.internal_error("fake API server bug: see .errors").status)
        if response is not None:
            _send(handler, response)

    def _pause(self, request: RecordedRequest) -> None:
        with self._lock:
            seconds = sum(d.seconds for d in self._delays if d.take(request))
        if seconds:
            self._stopping.wait(seconds)

    def _respond(self, handler: _Handler, request: RecordedRequest) -> _Response | None:
        if request.path == "/version":
            return _json(200, VERSION)
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            raise ks.ApiError(ks.status_body(401, "Unauthorized", "Unauthorized"))
        route: Route | None = None
        route_error: ks.ApiError | None = None
        try:
            route = _route(request.path, self._resources)
        except ks.ApiError as exc:
            route_error = exc
        self._inject(request, route)
        if route is None:
            raise route_error or ks.unknown_path()
        if route.subresource in ("exec", "attach"):
            self._exec(handler, request, route)
            return None
        return self._dispatch(request, route)

    def _inject(self, request: RecordedRequest, route: Route | None) -> None:
        with self._lock:
            fault = next((f for f in self._faults if f.take(request)), None)
        if fault is None:
            return
        if fault.status is not None:
            raise ks.ApiError(copy.deepcopy(fault.status))
        if route is None:
            raise ks.ApiError(ks.status_body(403, "Forbidden", f'forbidden: User "{fault.user}" '
                                             f'cannot {request.method.lower()} path '
                                             f'"{request.path}"', {}))
        raise ks.forbidden(route.rd, route.name or "", verb=_verb(request, route),
                           user=fault.user or DEFAULT_USER, namespace=route.namespace,
                           subresource=route.subresource)

    def _dispatch(self, request: RecordedRequest, route: Route) -> _Response:
        sub, method = route.subresource, request.method
        if sub == "log" and method == "GET":
            return self._log(request, route)
        if sub == "eviction" and method == "POST":
            return self._evict(request, route)
        if sub is None and route.name is None:
            return self._collection(request, route)
        if sub in (None, "status", "ephemeralcontainers"):
            return self._object(request, route)
        raise _not_allowed()

    def _collection(self, request: RecordedRequest, route: Route) -> _Response:
        if request.method == "GET":
            if _truthy(request.param("watch")):
                raise ks.bad_request("watch is not supported by the fake API server")
            return self._list(request, route)
        if request.method == "POST":
            obj = self.store.create(route.rd, route.namespace, _body(request),
                                    dry_run=_dry_run(request))
            self._fire("create", route.rd, obj)
            return _json(201, obj)
        if request.method == "DELETE":
            return self._delete_collection(request, route)
        raise _not_allowed()

    def _list(self, request: RecordedRequest, route: Route) -> _Response:
        rd = route.rd
        items = ks.select(self.store.items(rd, route.namespace), request.param("labelSelector"),
                          request.param("fieldSelector"), rd)
        meta: JSON = {"resourceVersion": self.store.resource_version()}
        items = _paginate(items, request, meta)
        if not rd.custom:
            for item in items:
                item.pop("apiVersion", None)
                item.pop("kind", None)
        return _json(200, {"kind": f"{rd.kind}List", "apiVersion": rd.group_version,
                           "metadata": meta, "items": items})

    def _delete_collection(self, request: RecordedRequest, route: Route) -> _Response:
        chosen = ks.select(self.store.items(route.rd, route.namespace),
                           request.param("labelSelector"), request.param("fieldSelector"),
                           route.rd)
        for obj in chosen:
            meta = obj["metadata"]
            self._delete_one(request, Route(route.rd, meta.get("namespace"), meta["name"], None))
        return _json(200, {"kind": f"{route.rd.kind}List", "apiVersion": route.rd.group_version,
                           "metadata": {"resourceVersion": self.store.resource_version()},
                           "items": chosen})

    def _object(self, request: RecordedRequest, route: Route) -> _Response:
        rd, ns, name, sub = route.rd, route.namespace, route.name or "", route.subresource
        method, dry_run = request.method, _dry_run(request)
        if method == "GET":
            return _json(200, self.store.get(rd, ns, name))
        if method == "DELETE" and sub is None:
            return self._delete_one(request, route)
        if method == "PUT":
            existed = self.store.find(rd, ns, name) is not None
            obj = self.store.replace(rd, ns, name, _body(request), subresource=sub,
                                     dry_run=dry_run)
            status, verb = (200, "update") if existed else (201, "create")
        elif method == "PATCH":
            obj = self.store.patch(rd, ns, name, request.content_type, _body(request),
                                   subresource=sub, dry_run=dry_run)
            status, verb = 200, "patch"
        else:
            raise _not_allowed()
        self._fire(verb, rd, obj)
        if sub == "ephemeralcontainers" and self.run_ephemeral_containers and not dry_run:
            self._start_ephemeral(ns or "", name)
        return _json(status, obj)

    def _delete_one(self, request: RecordedRequest, route: Route) -> _Response:
        rd, name = route.rd, route.name or ""
        options = request.body if isinstance(request.body, dict) else {}
        grace = _int(request.param("gracePeriodSeconds"), options.get("gracePeriodSeconds"))
        policy = request.param("propagationPolicy") or options.get("propagationPolicy")
        obj = self.store.delete(rd, route.namespace, name, dry_run=_dry_run(request),
                                preconditions=options.get("preconditions"))
        if not _dry_run(request):
            with self._lock:
                self.deletions.append(Deletion(rd.qualified, route.namespace, name, grace,
                                               policy))
            self._fire("delete", rd, obj)
        if rd.returns_deleted:
            return _json(200, _deleted_view(rd, obj, grace))
        details = ks.details_for(rd, name) | {"uid": obj["metadata"]["uid"]}
        return _json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Success", "details": details})

    def _fire(self, verb: str, rd: ResourceDef, obj: JSON) -> None:
        for hook in list(self._hooks):
            try:
                hook(verb, rd.qualified, copy.deepcopy(obj))
            except Exception:  # noqa: BLE001 - a broken hook is reported, not fatal
                self.errors.append(traceback.format_exc())

    # --- pod subresources ----------------------------------------------------------------------

    def _log(self, request: RecordedRequest, route: Route) -> _Response:
        ns, name = route.namespace or "", route.name or ""
        pod = self.store.get(ks.PODS, ns, name)
        container = _container(pod, request.param("container"))
        with self._lock:
            data = self._logs.get((ns, name, container), b"")
        tail = _int(request.param("tailLines"), None)
        if tail is not None:
            data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail > 0 else b""
        limit = _int(request.param("limitBytes"), None)
        if limit is not None:
            data = data[:limit]
        return _Response(200, data, "text/plain")

    def _evict(self, request: RecordedRequest, route: Route) -> _Response:
        ns, name = route.namespace or "", route.name or ""
        body = request.body if isinstance(request.body, dict) else {}
        if (body.get("metadata") or {}).get("name") not in (None, "", name):
            raise ks.bad_request("name in URL does not match name in Eviction object")
        options = body.get("deleteOptions") or {}
        with self.store.lock:
            pod = self.store.get(ks.PODS, ns, name)
            self._check_disruption(pod)
            self.store.delete(ks.PODS, ns, name, preconditions=options.get("preconditions"))
        grace = options.get("gracePeriodSeconds")
        with self._lock:
            self.evictions.append(Eviction(ns, name, grace))
            self.deletions.append(Deletion("pods", ns, name, grace,
                                           options.get("propagationPolicy")))
        self._fire("evict", ks.PODS, pod)
        return _json(201, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Success", "code": 201})

    def _check_disruption(self, pod: JSON) -> None:
        meta = pod["metadata"]
        with self._lock:
            block = self._blocked.get((meta["namespace"], meta["name"]))
            if block is not None and block.remaining is not None:
                block.remaining -= 1
                if block.remaining < 0:
                    block = None
        if block is not None:
            raise _pdb_refusal(block.pattern.pattern, 1, 1)
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Pending"):
            return
        pdb_rd = self._resources[("policy/v1", "poddisruptionbudgets")]
        labels = meta.get("labels") or {}
        budgets = [b for b in self.store.items(pdb_rd, meta["namespace"])
                   if ks.selector_matches((b.get("spec") or {}).get("selector"), labels)]
        if len(budgets) > 1:
            raise ks.internal_error("This pod has more than one PodDisruptionBudget, which the "
                                    "eviction subresource does not support.")
        if budgets:
            self._use_budget(pdb_rd, budgets[0])

    def _use_budget(self, pdb_rd: ResourceDef, budget: JSON) -> None:
        status = budget.setdefault("status", {})
        if int(status.get("disruptionsAllowed") or 0) < 1:
            raise _pdb_refusal(budget["metadata"]["name"], int(status.get("desiredHealthy", 0)),
                               int(status.get("currentHealthy", 0)))
        status["disruptionsAllowed"] = int(status["disruptionsAllowed"]) - 1
        self.store.put(pdb_rd, budget)

    def _start_ephemeral(self, namespace: str, name: str) -> None:
        with self.store.lock:
            pod = self.store.find(ks.PODS, namespace, name)
            if pod is None:
                return
            statuses = pod.setdefault("status", {}).setdefault("ephemeralContainerStatuses", [])
            known = {s.get("name") for s in statuses}
            fresh = [c for c in (pod.get("spec") or {}).get("ephemeralContainers") or []
                     if c.get("name") not in known]
            if not fresh:
                return
            statuses.extend(_running_status(c) for c in fresh)
            self.store.put(ks.PODS, pod)

    def _exec(self, handler: _Handler, request: RecordedRequest, route: Route) -> None:
        pod = self.store.get(ks.PODS, route.namespace or "", route.name or "")
        exec_request = _exec_request(request, route, pod)
        if not kube_ws.is_upgrade(handler):
            raise ks.bad_request("Upgrade request required")
        handler.close_connection = True
        protocol = kube_ws.handshake(handler)
        if protocol is None:
            return
        with self._lock:
            chosen = next((r for r in reversed(self._exec_routes) if r.matches(exec_request)),
                          None)
        kube_ws.serve(handler, protocol, exec_request, chosen, self._record_exec)

    def _record_exec(self, call: ExecCall) -> None:
        with self._lock:
            self.execs.append(call)


_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType",
            422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
            503: "ServiceUnavailable", 504: "Timeout"}


def _read_request(handler: _Handler) -> RecordedRequest:
    url = urlsplit(handler.path)
    length = int(handler.headers.get("Content-Length") or 0)
    raw = handler.rfile.read(length) if length else b""
    content_type = handler.headers.get("Content-Type", "")
    body: Any = None
    if raw:
        with contextlib.suppress(ValueError):
            body = json.loads(raw)
    headers = {k.lower(): v for k, v in handler.headers.items()}
    return RecordedRequest(handler.command, url.path, parse_qs(url.query, keep_blank_values=True),
                           content_type, body, raw, headers)


def _send(handler: _Handler, response: _Response) -> None:
    try:
        handler.send_response(response.status)
        handler.send_header("Content-Type", response.content_type)
        handler.send_header("Content-Length", str(len(response.body)))
        handler.end_headers()
        handler.wfile.write(response.body)
    except OSError:  # the client gave up (timeouts in tests)
        handler.close_connection = True


def _route(path: str, resources: Mapping[tuple[str, str], ResourceDef]) -> Route:
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts[:2] == ["api", "v1"]:
        group_version, rest = "v1", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        raise ks.unknown_path()
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    rd = resources.get((group_version, rest[0])) if 1 <= len(rest) <= 3 else None
    if rd is None or (namespace is not None and not rd.namespaced):
        raise ks.unknown_path()
    if namespace is None and rd.namespaced and len(rest) > 1:
        raise ks.unknown_path()
    subresource = rest[2] if len(rest) == 3 else None
    if subresource is not None and subresource not in rd.subresources:
        raise ks.unknown_path()
    return Route(rd, namespace, rest[1] if len(rest) > 1 else None, subresource)


def _verb(request: RecordedRequest, route: Route) -> str:
    if route.subresource in ("exec", "attach", "eviction"):
        return "create"
    if request.method == "GET":
        if _truthy(request.param("watch")):
            return "watch"
        return "get" if route.name else "list"
    if request.method == "DELETE":
        return "delete" if route.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(request.method,
                                                                     request.method.lower())


def _body(request: RecordedRequest) -> Any:
    if request.body is None:
        reason = "empty body" if not request.raw else "invalid JSON"
        raise ks.bad_request(f"the request body could not be decoded: {reason}")
    return request.body


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "t", "true")


def _dry_run(request: RecordedRequest) -> bool:
    return "All" in request.query.get("dryRun", [])


def _int(value: str | None, default: Any) -> Any:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ks.bad_request(f"invalid integer {value!r}") from None


def _paginate(items: list[JSON], request: RecordedRequest, meta: JSON) -> list[JSON]:
    token = request.param("continue")
    start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
    limit = _int(request.param("limit"), 0)
    if not limit or start + limit >= len(items):
        return items[start:]
    end = start + limit
    meta["continue"] = base64.urlsafe_b64encode(str(end).encode()).decode()
    meta["remainingItemCount"] = len(items) - end
    return items[start:end]


def _not_allowed() -> ks.ApiError:
    return ks.ApiError(ks.status_body(
        405, "MethodNotAllowed", "the server does not allow this method on the requested "
        "resource", {}))


def _pdb_refusal(budget: str, desired: int, current: int) -> ks.ApiError:
    return ks.ApiError(ks.status_body(
        429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption "
        "budget.", {"causes": [{"reason": "DisruptionBudget", "message":
                                f"The disruption budget {budget} needs {desired} healthy pods "
                                f"and has {current} currently"}]}))


def _deleted_view(rd: ResourceDef, obj: JSON, grace: int | None) -> JSON:
    view = copy.deepcopy(obj)
    meta = view["metadata"]
    if rd.resource == "pods":
        if grace is None:
            grace = int((view.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        if grace > 0:
            meta["deletionTimestamp"] = ks.now()
            meta["deletionGracePeriodSeconds"] = grace
    elif rd.resource == "namespaces":
        meta["deletionTimestamp"] = ks.now()
        view.setdefault("status", {})["phase"] = "Terminating"
    return view


def _running_status(container: JSON) -> JSON:
    return {"name": container.get("name"), "image": container.get("image", ""), "imageID": "",
            "containerID": f"containerd://{secrets.token_hex(32)}", "ready": False,
            "restartCount": 0, "state": {"running": {"startedAt": ks.now()}}}


def _container(pod: JSON, requested: str | None) -> str:
    """The container a log/exec request targets, with the apiserver's 400 messages."""
    spec = pod.get("spec") or {}
    names = [c.get("name") for c in spec.get("containers") or []]
    init = [c.get("name") for c in spec.get("initContainers") or []]
    ephemeral = [c.get("name") for c in spec.get("ephemeralContainers") or []]
    pod_name = pod["metadata"]["name"]
    if requested:
        if requested not in names + init + ephemeral:
            raise ks.bad_request(f"container {requested} is not valid for pod {pod_name}")
        return requested
    if len(names) == 1:
        return str(names[0])
    message = (f"a container name must be specified for pod {pod_name}, choose one of: "
               f"[{' '.join(map(str, names))}]")
    if init:
        message += f" or one of the init containers: [{' '.join(map(str, init))}]"
    if ephemeral:
        message += f" or one of the ephemeral containers: [{' '.join(map(str, ephemeral))}]"
    raise ks.bad_request(message)


def _exec_request(request: RecordedRequest, route: Route, pod: JSON) -> kube_ws.ExecRequest:
    kind = route.subresource or "exec"
    flags = {name: _truthy(request.param(name)) for name in ("stdin", "stdout", "stderr", "tty")}
    argv = tuple(request.query.get("command", [])) if kind == "exec" else ()
    if kind == "exec" and not argv:
        raise ks.bad_request("you must specify at least 1 command")
    if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
        raise ks.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise ks.bad_request(f"cannot {kind} into a container in a completed pod; current "
                             f"phase is {phase}")
    container = _container(pod, request.param("container"))
    return kube_ws.ExecRequest(kind, route.namespace or "", route.name or "", container, argv,
                               **flags)


# --- entry points ---------------------------------------------------------------------------


def start(**kwargs: Any) -> FakeKubeAPI:
    """Start a fake API server; call `.stop()` (or use it as a context manager)."""
    return FakeKubeAPI(**kwargs).start()


@pytest.fixture
def kube_api() -> Iterator[FakeKubeAPI]:
    """A running FakeKubeAPI, stopped after the test."""
    with start() as fake:
        yield fake


@pytest.fixture
def kube_config(kube_api: FakeKubeAPI, tmp_path: Path) -> Path:
    """Path of a kubeconfig pointing at `kube_api`."""
    return kube_api.kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def kube_client(kube_config: Path) -> Iterator[Any]:
    """A real `kubernetes.client.ApiClient` bound to `kube_api` (closed after the test)."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(kube_config))
    try:
        yield client
    finally:
        client.close()
