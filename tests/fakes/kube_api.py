"""A fake Kubernetes API server that the real `kubernetes` client talks to over HTTP.

`FakeKubeAPI` is a stdlib `ThreadingHTTPServer` on 127.0.0.1 (free port) in a daemon thread.
Point the client at it with `fake.kubeconfig(path)` (http, bearer token) and
`kubernetes.config.new_client_from_config(config_file=...)`. Seed objects with `add()`, script
containers with `on_exec()` / `set_pod_logs()`, inject faults with `fail()` / `forbid()` /
`delay()` / `hang_up()`, then assert on `get()`/`list()`, `requests`, `execs`, `evictions`,
`deletions`:

    with kube_api.start() as fake:
        fake.add({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"},
                  "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running"}})
        fake.on_exec(lambda ns, pod, container, argv, stdin: (0, b"ok", b""))
        run_the_code_under_test(kubeconfig=fake.kubeconfig(tmp_path / "kubeconfig"))
        assert fake.execs[0].argv == ["/bin/sh", "-c", "id"]

The fixtures `kube_api`, `kube_config` and `kube_client` (an ApiClient) are defined here too.

Faithful (checked against the apiserver's behaviour and the 36.x client):
- URL shapes for core (/api/v1) and group APIs (/apis/<g>/<v>), namespaced, cluster-scoped and
  all-namespaces lists; List kinds, list items without apiVersion/kind (custom ones keep them),
  limit/continue; one global resourceVersion (a write that changes nothing keeps it); uid,
  creationTimestamp, generateName suffix.
- `Status` bodies of NotFound (also for unknown paths), AlreadyExists, Conflict (stale
  resourceVersion, failed delete preconditions), Invalid, Forbidden, Unauthorized (wrong token),
  BadRequest, UnsupportedMediaType, TooManyRequests (eviction vs. PodDisruptionBudget) and
  InternalError; the client raises `ApiException` with `.status`, the HTTP reason phrase in
  `.reason` and the Status JSON in `.body`.
- A JSON patch that does not apply answers 422 with only "the server rejected our request due
  to an error in our request" (the library's own text is dropped by the server); replace of an
  absent key in an existing map succeeds, as with the server's JSON-patch library.
- Custom resources (cilium.io, projectcalico.org): `uninstall(group)` answers the generic
  404 for the whole group (CRD not installed); strategic merge patch → 415, PUT without
  metadata.resourceVersion → 422 (Calico's projectcalico.org/v3 is really served by Calico's
  aggregated API server; it is modelled like a CRD). Status subresources: writes to the main
  resource keep the stored status; a create resets it (a pod starts as Pending).
- DELETE answers the object for pods, services, serviceaccounts and namespaces (the 36.x client
  types `delete_namespace` as V1Status anyway), a success Status otherwise.
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

Client quirks these fakes made visible (kubernetes 36.x, websocket-client 1.9):
- `stream()` turns a failed WebSocket handshake (404 pod, 400 container) into
  ApiException(status=0, body=None) and then fails on `e.body.decode()`: callers get an
  AttributeError whose `__context__` is the ApiException (reason holds the status and body).
- The server closes an exec stream first; websocket-client then marks itself disconnected and
  `WSClient.close()` no longer closes the socket: call `ws.sock.shutdown()` as well, or the
  socket leaks (a ResourceWarning, an error under this project's pytest settings).
- `read_namespaced_pod_log` returns the repr of bytes unless `_preload_content=False`.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import kube_http, kube_pods, kube_ws
from tests.fakes import kube_resources as kr
from tests.fakes import kube_store as ks
from tests.fakes.kube_http import RecordedRequest, Response, Route, json_response
from tests.fakes.kube_resources import JSON, ResourceDef, clone
from tests.fakes.kube_ws import ExecCall, ExecHandler

__all__ = ["Deletion", "Eviction", "ExecCall", "FakeKubeAPI", "RecordedRequest", "kube_api",
           "kube_client", "kube_config", "start"]

DEFAULT_TOKEN = "fake-token"
DEFAULT_USER = "system:serviceaccount:falco-talon:falco-talon"
VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fake",
           "gitCommit": "0000000000000000000000000000000000000000",
           "gitTreeState": "clean", "buildDate": "2024-08-13T07:28:49Z",
           "goVersion": "go1.22.5", "compiler": "gc", "platform": "linux/amd64"}
"""What GET /version answers: every field the real server sends (the client needs them)."""
WriteHook = Callable[[str, str, JSON], None]
"""(verb, qualified resource such as "pods" or "deployments.apps", object) after a write;
verbs: create, update, patch, delete, evict."""
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType",
            422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
            503: "ServiceUnavailable", 504: "Timeout"}


@dataclass(frozen=True, slots=True)
class Eviction:
    namespace: str
    pod: str
    grace_period_seconds: int | None


@dataclass(frozen=True, slots=True)
class Deletion:
    resource: str
    """Qualified resource: "pods", "deployments.apps", "ciliumnetworkpolicies.cilium.io"."""
    namespace: str | None
    name: str
    grace_period_seconds: int | None
    propagation_policy: str | None


@dataclass(slots=True)
class _Rule:
    """A fault, delay or eviction block, used up after `remaining` matches (None: never)."""

    method: str
    pattern: re.Pattern[str]
    remaining: int | None
    status: JSON | None = None
    user: str | None = None
    seconds: float = 0.0

    def take(self, request: RecordedRequest | None = None) -> bool:
        """Match (when a request is given) and use up one of the remaining times."""
        if request is not None and (self.method not in ("*", request.method)
                                    or not self.pattern.search(request.path)):
            return False
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


class FakeKubeAPI:
    """The fake server plus its seeding, scripting and inspection helpers."""

    def __init__(self, *, token: str | None = DEFAULT_TOKEN,
                 require_namespaces: bool = False, tls: ssl.SSLContext | None = None,
                 keep_requests: bool = True) -> None:
        self.token = token
        self.keep_requests = keep_requests
        """Record every request for `requests` (benchmarks that run for long turn it off:
        the record grows without bound and the collector walks it)."""
        self.tls = tls
        """A server-side TLS context: serve https (handshake on accept) instead of http."""
        """Bearer token the requests must carry (None: no authentication)."""
        self.store = ks.Store(require_namespaces=require_namespaces)
        self.run_ephemeral_containers = True
        self.execs: list[ExecCall] = []
        self.evictions: list[Eviction] = []
        self.deletions: list[Deletion] = []
        self.errors: list[str] = []
        """Tracebacks of bugs in the fake or in hooks; tests may assert it stays empty."""
        self._resources = {(rd.group_version, rd.resource): rd for rd in kr.CATALOG}
        self._logs: dict[tuple[str, str, str], bytes] = {}
        self._exec_routes: list[kube_ws.ExecRoute] = []
        self._faults: list[_Rule] = []
        self._delays: list[_Rule] = []
        self._hangups: list[_Rule] = []
        self._blocked: dict[tuple[str, str], tuple[str, _Rule]] = {}
        self._hooks: list[WriteHook] = []
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: kube_http.Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeKubeAPI:
        self._server = kube_http.Server(self.serve)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        name="fake-kube-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and end open connections (idle keep-alives, exec sessions)."""
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
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        """Client connections open right now (closed ones leave once the server sees EOF)."""
        assert self._server is not None, "start() the fake first"
        return self._server.open_count()

    def kubeconfig(self, path: str | Path, *, namespace: str = "default",
                   cluster: JSON | None = None, user: JSON | None = None) -> Path:
        """Write a kubeconfig (bearer token) pointing at this server; `cluster` and `user`
        add to those entries (certificate-authority-data, client-certificate-data...)."""
        user = {**({"token": self.token} if self.token else {}), **(user or {})}
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "fake", "cluster": {"server": self.url, **(cluster or {})}}],
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
        """Serve one more resource (a CRD unless `custom=False`)."""
        group, _, version = api_version.rpartition("/")
        rd = ResourceDef(group, version, resource, kind, namespaced=namespaced, custom=custom)
        self._resources[(rd.group_version, resource)] = rd
        return rd

    def uninstall(self, group: str) -> list[ResourceDef]:
        """Stop serving every resource of API `group`, as on a cluster where its CRDs (or
        aggregated API server) are not installed: any request under /apis/<group>/ then gets
        the server's generic 404 ("the server could not find the requested resource").
        Stored objects stay; `register_resource()` serves one again. Returns what was
        removed."""
        with self._lock:  # a new table, so a request being routed sees the old one whole
            removed = [rd for rd in self._resources.values() if rd.group == group]
            self._resources = {key: rd for key, rd in self._resources.items()
                               if rd.group != group}
        if not removed:
            raise KeyError(f"no served resource in the API group {group!r}")
        return removed

    def resource(self, kind_or_resource: str, api_version: str | None = None) -> ResourceDef:
        """Find a resource by kind (`Pod`, `pod`), plural (`pods`) or `plural.group`; the
        Kubernetes resource wins over a CRD of the same name unless `api_version` says."""
        for rd in self._resources.values():
            if api_version and rd.group_version != api_version:
                continue
            if kind_or_resource in (rd.kind, rd.resource, rd.qualified, rd.kind.lower()):
                return rd
        raise KeyError(f"no served resource matches {kind_or_resource!r} ({api_version})")

    def add(self, obj: Mapping[str, Any]) -> JSON:
        """Store a plain-dict object as given, overwriting; uid, creationTimestamp,
        resourceVersion and (namespaced) namespace "default" are filled in when absent."""
        if not obj.get("kind") or not (obj.get("metadata") or {}).get("name"):
            raise ValueError("add() needs kind and metadata.name")
        rd = self.resource(obj["kind"], obj.get("apiVersion"))
        return self.store.seed(rd, dict(obj))

    def get(self, kind_or_resource: str, namespace: str | None, name: str, *,
            api_version: str | None = None) -> JSON | None:
        """A copy of the stored object, or None."""
        rd = self.resource(kind_or_resource, api_version)
        return self.store.find(rd, namespace if rd.namespaced else None, name)

    def list(self, kind_or_resource: str, namespace: str | None = None, *,
             label_selector: str | None = None, field_selector: str | None = None,
             api_version: str | None = None) -> list[JSON]:
        """Copies of the stored objects (all namespaces when `namespace` is None)."""
        rd = self.resource(kind_or_resource, api_version)
        return ks.select(self.store.items(rd, namespace), label_selector, field_selector, rd)

    def remove(self, kind_or_resource: str, namespace: str | None, name: str, *,
               api_version: str | None = None) -> bool:
        """Delete behind the client's back; False when there was nothing to delete."""
        rd = self.resource(kind_or_resource, api_version)
        try:
            self.store.delete(rd, namespace if rd.namespaced else None, name)
        except kr.ApiError:
            return False
        return True

    def set_pod_logs(self, namespace: str, pod: str, container: str, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else bytes(text)
        with self._lock:
            self._logs[(namespace, pod, container)] = data

    def on_exec(self, handler: ExecHandler, *, namespace: str | None = None,
                pod: str | None = None, container: str | None = None,
                argv0: str | None = None, wait_stdin: bool = True) -> None:
        """Answer execs/attaches; the last matching registration wins. With stdin=true and
        `wait_stdin`, the handler runs once the client has ended stdin."""
        route = kube_ws.ExecRoute(handler, namespace, pod, container, argv0, wait_stdin)
        with self._lock:
            self._exec_routes.append(route)

    def on_write(self, hook: WriteHook) -> None:
        """Call `hook(verb, resource, obj)` after each successful write, before the reply."""
        self._hooks.append(hook)

    # --- faults --------------------------------------------------------------------------------

    def fail(self, method: str, path_regex: str, status: int, reason: str | None = None,
             message: str | None = None, *, times: int | None = 1,
             details: JSON | None = None) -> None:
        """Answer matching requests (method or "*", `re.search` on the path) with a failure
        Status; `times=None` means forever."""
        body = kr.status_body(status, reason or _REASONS.get(status, "Unknown"),
                              message or f"injected failure {status}", details)
        self._add(self._faults, _Rule(method.upper(), re.compile(path_regex), times, body))

    def forbid(self, method: str, path_regex: str, *, times: int | None = None,
               user: str = DEFAULT_USER) -> None:
        """Answer matching requests with the RBAC 403 the apiserver would send."""
        self._add(self._faults, _Rule(method.upper(), re.compile(path_regex), times, user=user))

    def delay(self, method: str, path_regex: str, seconds: float, *,
              times: int | None = None) -> None:
        """Hold matching requests for `seconds` before answering them normally."""
        self._add(self._delays, _Rule(method.upper(), re.compile(path_regex), times,
                                      seconds=seconds))

    def hang_up(self, method: str, path_regex: str, *, times: int | None = None) -> None:
        """Close the connection of matching requests without answering (a server that went
        away mid-request; a client with retries sends idempotent requests again)."""
        self._add(self._hangups, _Rule(method.upper(), re.compile(path_regex), times))

    def block_eviction(self, namespace: str, pod: str, *, pdb: str = "talon-pdb",
                       times: int | None = None) -> None:
        """Refuse evictions of this pod with 429 as if `pdb` allowed no disruption."""
        with self._lock:
            self._blocked[(namespace, pod)] = (pdb, _Rule("POST", re.compile(""), times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._delays.clear()
            self._hangups.clear()
            self._blocked.clear()

    def _add(self, rules: list[_Rule], rule: _Rule) -> None:
        with self._lock:
            rules.append(rule)

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

    def serve(self, handler: kube_http.Handler) -> None:
        """Answer one request (called on the server's handler thread)."""
        request = kube_http.read_request(handler)
        with self._lock:
            if self.keep_requests:
                self._requests.append(request)
            seconds = sum(d.seconds for d in self._delays if d.take(request))
            hang_up = any(h.take(request) for h in self._hangups)
        if hang_up:
            handler.close_connection = True
            return
        if seconds:
            self._stopping.wait(seconds)
        try:
            response = self._respond(handler, request)
        except kr.ApiError as exc:
            response = json_response(exc.code, exc.status)
        except Exception:  # noqa: BLE001 - boundary: a bug here must answer 500, not hang
            self.errors.append(traceback.format_exc())
            response = json_response(500, kr.internal_error("fake API server bug").status)
        if response is not None:
            kube_http.send(handler, response)

    def _respond(self, handler: kube_http.Handler, request: RecordedRequest) -> Response | None:
        if request.path in ("/version", "/version/"):
            return json_response(200, VERSION)
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            raise kr.unauthorized()
        try:
            route: Route | None = kube_http.parse_route(request.path, self._resources)
        except kr.ApiError:
            route = None
        self._inject(request, route)
        if route is None:
            raise kr.unknown_path()
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
            raise kr.ApiError(clone(fault.status))
        user = fault.user or DEFAULT_USER
        if route is None:
            raise kr.ApiError(kr.status_body(
                403, "Forbidden", f'forbidden: User "{user}" cannot '
                f'{request.method.lower()} path "{request.path}"', {}))
        raise kr.forbidden(route.rd, route.name or "", verb=kube_http.verb_of(request, route),
                           user=user, namespace=route.namespace,
                           subresource=route.subresource)

    def _dispatch(self, request: RecordedRequest, route: Route) -> Response:
        sub, method = route.subresource, request.method
        if sub == "log" and method == "GET":
            return self._log(request, route)
        if sub == "eviction" and method == "POST":
            return self._evict(request, route)
        if sub is None and route.name is None:
            return self._collection(request, route)
        if sub in (None, "status", "ephemeralcontainers"):
            return self._object(request, route)
        raise kr.not_allowed()

    def _collection(self, request: RecordedRequest, route: Route) -> Response:
        if request.method == "GET":
            if kube_http.truthy(request.param("watch")):
                raise kr.bad_request("watch is not supported by the fake API server")
            return self._list(request, route)
        if request.method == "POST":
            obj = self.store.create(route.rd, route.namespace, kube_http.body_of(request),
                                    dry_run=kube_http.is_dry_run(request))
            self._fire("create", route.rd, obj)
            return json_response(201, obj)
        if request.method == "DELETE":
            return self._delete_collection(request, route)
        raise kr.not_allowed()

    def _select(self, request: RecordedRequest, route: Route) -> list[JSON]:
        return ks.select(self.store.items(route.rd, route.namespace),
                         request.param("labelSelector"), request.param("fieldSelector"),
                         route.rd)

    def _list(self, request: RecordedRequest, route: Route) -> Response:
        rd = route.rd
        meta: JSON = {"resourceVersion": self.store.resource_version()}
        with self.store.lock:  # select and page the stored objects, copy only the page
            stored = ks.select(self.store.items(rd, route.namespace, copies=False),
                               request.param("labelSelector"), request.param("fieldSelector"),
                               rd)
            items = [clone(o) for o in kube_http.paginate(stored, request, meta)]
        if not rd.custom:  # typed lists do not repeat apiVersion/kind per item
            for item in items:
                item.pop("apiVersion", None)
                item.pop("kind", None)
        return json_response(200, {"kind": f"{rd.kind}List", "apiVersion": rd.group_version,
                                   "metadata": meta, "items": items})

    def _delete_collection(self, request: RecordedRequest, route: Route) -> Response:
        chosen = self._select(request, route)
        for obj in chosen:
            meta = obj["metadata"]
            self._delete_one(request, Route(route.rd, meta.get("namespace"), meta["name"], None))
        return json_response(200, {"kind": f"{route.rd.kind}List",
                                   "apiVersion": route.rd.group_version, "items": chosen,
                                   "metadata": {"resourceVersion":
                                                self.store.resource_version()}})

    def _object(self, request: RecordedRequest, route: Route) -> Response:
        rd, ns, name, sub = route.rd, route.namespace, route.name or "", route.subresource
        method, dry_run = request.method, kube_http.is_dry_run(request)
        if method == "GET":
            return Response(200, self.store.get_bytes(rd, ns, name))
        if method == "DELETE" and sub is None:
            return self._delete_one(request, route)
        if method == "PUT":
            existed = self.store.find(rd, ns, name) is not None
            obj = self.store.replace(rd, ns, name, kube_http.body_of(request), subresource=sub,
                                     dry_run=dry_run)
            status, verb = (200, "update") if existed else (201, "create")
        elif method == "PATCH":
            obj = self.store.patch(rd, ns, name, request.content_type,
                                   kube_http.body_of(request), subresource=sub, dry_run=dry_run)
            status, verb = 200, "patch"
        else:
            raise kr.not_allowed()
        self._fire(verb, rd, obj)
        if sub == "ephemeralcontainers" and self.run_ephemeral_containers and not dry_run:
            kube_pods.start_ephemeral(self.store, ns or "", name)
        return json_response(status, obj)

    def _delete_one(self, request: RecordedRequest, route: Route) -> Response:
        rd, name, dry_run = route.rd, route.name or "", kube_http.is_dry_run(request)
        options = request.body if isinstance(request.body, dict) else {}
        grace = kube_http.int_param(request, "gracePeriodSeconds")
        grace = options.get("gracePeriodSeconds") if grace is None else grace
        policy = request.param("propagationPolicy") or options.get("propagationPolicy")
        obj = self.store.delete(rd, route.namespace, name, dry_run=dry_run,
                                preconditions=options.get("preconditions"))
        if not dry_run:
            with self._lock:
                self.deletions.append(Deletion(rd.qualified, route.namespace, name, grace,
                                               policy))
            self._fire("delete", rd, obj)
        if rd.returns_deleted:
            return json_response(200, kube_pods.deleted_view(rd, obj, grace))
        details = kr.details_for(rd, name) | {"uid": obj["metadata"]["uid"]}
        return json_response(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                   "status": "Success", "details": details})

    def _fire(self, verb: str, rd: ResourceDef, obj: JSON) -> None:
        for hook in list(self._hooks):
            try:
                hook(verb, rd.qualified, clone(obj))
            except Exception:  # noqa: BLE001 - a broken hook is reported, not fatal
                self.errors.append(traceback.format_exc())

    # --- pod subresources ----------------------------------------------------------------------

    def _log(self, request: RecordedRequest, route: Route) -> Response:
        ns, name = route.namespace or "", route.name or ""
        pod = self.store.get(kr.PODS, ns, name)
        container = kube_pods.container_for(pod, request.param("container"))
        with self._lock:
            data = self._logs.get((ns, name, container), b"")
        data = kube_pods.log_slice(data, kube_http.int_param(request, "tailLines"),
                                   kube_http.int_param(request, "limitBytes"))
        return Response(200, data, "text/plain")

    def _evict(self, request: RecordedRequest, route: Route) -> Response:
        ns, name = route.namespace or "", route.name or ""
        body = request.body if isinstance(request.body, dict) else {}
        if (body.get("metadata") or {}).get("name") not in (None, "", name):
            raise kr.bad_request("name in URL does not match name in Eviction object")
        options = body.get("deleteOptions") or {}
        with self.store.lock:
            pod = self.store.get(kr.PODS, ns, name)
            self._check_blocked(ns, name)
            kube_pods.check_budgets(self.store, self.resource("poddisruptionbudgets"), pod)
            self.store.delete(kr.PODS, ns, name, preconditions=options.get("preconditions"))
        grace = options.get("gracePeriodSeconds")
        with self._lock:
            self.evictions.append(Eviction(ns, name, grace))
            self.deletions.append(Deletion("pods", ns, name, grace,
                                           options.get("propagationPolicy")))
        self._fire("evict", kr.PODS, pod)
        return json_response(201, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                   "status": "Success", "code": 201})

    def _check_blocked(self, namespace: str, pod: str) -> None:
        with self._lock:
            budget, rule = self._blocked.get((namespace, pod), ("", None))
            blocked = rule is not None and rule.take()
        if blocked:
            raise kr.pdb_refusal(budget, 1, 1)

    def _exec(self, handler: kube_http.Handler, request: RecordedRequest, route: Route) -> None:
        pod = self.store.get(kr.PODS, route.namespace or "", route.name or "")
        wanted = kube_pods.exec_request(request, route, pod)
        if not kube_ws.is_upgrade(handler):
            raise kr.bad_request("Upgrade request required")
        handler.close_connection = True
        protocol = kube_ws.handshake(handler)
        if protocol is None:
            return
        with self._lock:
            chosen = next((r for r in reversed(self._exec_routes) if r.matches(wanted)), None)
        kube_ws.serve(handler, protocol, wanted, chosen, self._record_exec)

    def _record_exec(self, call: ExecCall) -> None:
        with self._lock:
            self.execs.append(call)


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
    """A real `kubernetes.client.ApiClient` bound to `kube_api`, closed after the test."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(kube_config))
    try:
        yield client
    finally:
        client.close()
        client.rest_client.pool_manager.clear()
