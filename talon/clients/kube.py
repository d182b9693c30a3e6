"""The Kubernetes client: configuration loading, typed API handles, request timeouts.

Layer L1. Configuration, in order: in-cluster (service account) when running in a pod,
else the `kubeconfig` setting, else `KUBECONFIG` / `~/.kube/config`. One `Kube` is built
per process and shared by all threads (the official client's ApiClient is thread-safe
for requests). Every call made through `Kube` helpers carries `request_timeout`.
Requests are never retried behind the caller's back (urllib3 retries 3 times by default,
so a 4 s timeout could take 16 s): one call is one request, bounded by its timeouts.
The connection pool holds `pool_size` connections (one per thread that may call at once).
Requests go through talon.clients.kubehttp (a lean keep-alive HTTP/1.1 transport in place
of the client's urllib3 one, which costs several times the CPU of the request), except
through a proxy, which keeps the client's own transport.
With a `limiter` (the `kubernetes.qps`/`burst` settings), every request made through the
ApiClient, typed, custom or streamed, first takes a token from it (see
talon.clients.ratelimit): the wrap sits on `ApiClient.call_api`, which all of them use;
`Kube.call` (the hot paths' direct requests, without the generated methods) takes one too.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from talon.clients import kubehttp
from talon.clients.ratelimit import TokenBucket
from talon.errors import ActionError, TalonError
from talon.names import DNS1035 as DNS1035  # re-exported for the plug-ins
from talon.names import LABEL as LABEL
from talon.names import RBAC as RBAC
from talon.names import SUBDOMAIN as SUBDOMAIN
from talon.names import check_name as check_name
from talon.names import is_name as is_name

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
AUTH_REFRESH_SECONDS = 1.0


class KubeConfigError(TalonError):
    """No usable Kubernetes configuration, or the cluster cannot be reached."""


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SERVICE_ACCOUNT / "token").exists()


def own_namespace() -> str:
    """The namespace of the pod Talon runs in (service account), else "default"."""
    try:
        return (SERVICE_ACCOUNT / "namespace").read_text().strip() or "default"
    except OSError:
        return "default"


def identity() -> str:
    """Who this replica is: the pod name in a pod (its host name), else host name and pid."""
    host = socket.gethostname()
    return host if in_cluster() else f"{host}-{os.getpid()}"


@dataclass
class Kube:
    """API handles on one ApiClient; `timeout` is passed as `_request_timeout`."""

    api_client: Any
    timeout: tuple[float, float]
    """(connect, read) seconds: each bounds one step of one request (never retried)."""
    source: str
    limiter: TokenBucket | None = None
    """The client rate limit (`kubernetes.qps`), also applied to `call`."""
    _apis: dict[str, Any] = field(default_factory=dict)
    _auth: tuple[float, dict[str, str]] = (-AUTH_REFRESH_SECONDS, {})

    def call(self, method: str, path: str, *, body: Any = None, query: Any = None,
             content_type: str = "application/json", timeout: Any = None) -> Any:
        """One request to `path` (the API path; the names in it already checked) without
        the generated API methods, whose parameter handling costs about as much CPU as the
        request itself. Authentication, default headers, the client rate limit, timeouts
        and errors (ApiException with the Status body as text) are those of every other
        call; the answer is returned undecoded (`.data`: bytes)."""
        from kubernetes.client.exceptions import ApiException

        api = self.api_client
        headers = {**api.default_headers, "Accept": "application/json",
                   "Content-Type": content_type, **self._auth_headers()}
        if self.limiter is not None:
            self.limiter.acquire()
        try:
            return api.rest_client.request(
                method, api.configuration.host + path, query_params=query, headers=headers,
                body=body, _preload_content=False,
                _request_timeout=self.timeout if timeout is None else timeout)
        except ApiException as exc:
            if isinstance(exc.body, bytes):
                exc.body = exc.body.decode("utf-8", "replace")
            raise

    def _api(self, name: str) -> Any:
        if name not in self._apis:
            from kubernetes import client

            self._apis[name] = getattr(client, name)(self.api_client)
        return self._apis[name]

    def _auth_headers(self) -> dict[str, str]:
        """The authentication headers of `call`, from the client's settings, which run its
        refresh hook (expiring tokens, exec plug-ins, the rotated service account token):
        asked again at most every AUTH_REFRESH_SECONDS rather than on every request."""
        stamp, headers = self._auth
        now = time.monotonic()
        if now - stamp >= AUTH_REFRESH_SECONDS:
            headers = {}
            self.api_client.update_params_for_auth(headers, [], ["BearerToken"])
            self._auth = (now, headers)
        return headers

    @property
    def core(self) -> Any:
        return self._api("CoreV1Api")

    @property
    def apps(self) -> Any:
        return self._api("AppsV1Api")

    @property
    def networking(self) -> Any:
        return self._api("NetworkingV1Api")

    @property
    def batch(self) -> Any:
        return self._api("BatchV1Api")

    @property
    def coordination(self) -> Any:
        return self._api("CoordinationV1Api")

    @property
    def custom(self) -> Any:
        return self._api("CustomObjectsApi")

    @property
    def rbac(self) -> Any:
        return self._api("RbacAuthorizationV1Api")

    @property
    def version(self) -> Any:
        return self._api("VersionApi")

    def close(self) -> None:
        """Close the connections kept to the API server."""
        close = getattr(self.api_client.rest_client, "close", None)
        if close is not None:
            close()

    def ping(self, timeout: float | None = None) -> str:
        """The server's git version (one try, `timeout` or the client's); raises
        KubeConfigError when unreachable."""
        try:
            info = self.version.get_code(
                _request_timeout=(timeout, timeout) if timeout else self.timeout)
        except Exception as exc:
            raise KubeConfigError(f"cannot reach the Kubernetes API ({self.source}): "
                                  f"{_short(exc)}") from exc
        return str(getattr(info, "git_version", ""))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def connect(kubeconfig: str = "", *, timeout: float = 10.0, pool_size: int = 4,
            limiter: TokenBucket | None = None) -> Kube:
    """Load the configuration (in-cluster, `kubeconfig`, KUBECONFIG, ~/.kube/config)."""
    from kubernetes import client, config

    tried = []
    timeouts = (timeout, timeout)
    build = functools.partial(_api_client, pool_size=pool_size, limiter=limiter)
    if in_cluster() and not kubeconfig:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
            return Kube(build(configuration), timeouts, "in-cluster service account", limiter)
        except config.ConfigException as exc:
            tried.append(f"in-cluster: {exc}")
    path = kubeconfig or os.environ.get("KUBECONFIG", "") or str(Path.home() / ".kube/config")
    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=path.split(os.pathsep)[0],
                                client_configuration=configuration)
    except (config.ConfigException, OSError, TypeError, ValueError) as exc:
        tried.append(f"kubeconfig {path}: {_short(exc)}")
        raise KubeConfigError("no usable Kubernetes configuration; tried " + "; ".join(tried)
                              ) from exc
    return Kube(build(configuration), timeouts, f"kubeconfig {path}", limiter)


def _api_client(configuration: Any, *, pool_size: int, limiter: TokenBucket | None) -> Any:
    """An ApiClient whose connection pool never retries and keeps `pool_size` connections
    (both set before the pool is built), its requests paced by `limiter`."""
    from kubernetes import client

    configuration.retries = False
    configuration.connection_pool_maxsize = max(1, pool_size)
    api_client = client.ApiClient(configuration)
    if kubehttp.usable(configuration):
        api_client.rest_client = kubehttp.Transport(configuration, max(1, pool_size))
    if limiter is not None:
        call_api = api_client.call_api

        def limited_call_api(*args: Any, **kwargs: Any) -> Any:
            limiter.acquire()
            return call_api(*args, **kwargs)

        api_client.call_api = limited_call_api
    return api_client


def api_error(exc: BaseException) -> str:
    """The API server's own message for an ApiException (its Status body), else str(exc)."""
    body = getattr(exc, "body", None)
    status = getattr(exc, "status", None)
    if body:
        try:
            data = json.loads(body)
        except (TypeError, ValueError):
            data = None
        if isinstance(data, dict) and data.get("message"):
            return f"{data['message']} ({status})" if status else str(data["message"])
    reason = getattr(exc, "reason", None)
    if status and reason:
        return f"{reason} ({status})"
    return _short(exc)


def _namespaced_path(api: str, resource: str, namespace: str, name: str) -> str:
    base = f"{api}/namespaces/{quote(namespace, safe='')}/{resource}"
    return f"{base}/{quote(name, safe='')}" if name else base


def pod_path(namespace: str, name: str = "") -> str:
    """The API path of a pod (of the pods of `namespace` without `name`); the names are
    checked (talon.names) before they reach a path."""
    return _namespaced_path("/api/v1", "pods", namespace, name)


def lease_path(namespace: str, name: str = "") -> str:
    """The API path of a Lease (of the Leases of `namespace` without `name`)."""
    return _namespaced_path("/apis/coordination.k8s.io/v1", "leases", namespace, name)


def node_of(pod: Any) -> str:
    """The node a pod (a V1Pod) runs on; ActionError when it is not scheduled yet."""
    node = getattr(pod.spec, "node_name", None) if pod.spec else None
    if not node:
        meta = pod.metadata
        raise ActionError(f"the pod '{meta.name}' in the namespace '{meta.namespace}' is "
                          "not scheduled on a node")
    return str(node)
