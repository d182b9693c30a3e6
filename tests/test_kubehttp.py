"""The Kubernetes HTTP transport (talon/clients/kubehttp.py), through Talon's client.

Every test talks over real sockets: to the fake API server (plain or TLS with a throwaway
CA from trustme), or, for framing the fake never sends (chunked bodies, bodies ended by
closing the connection, interim 100 answers), to a small scripted socket server.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from talon.clients import kube, kubehttp
from tests.fakes.kube_api import FakeKubeAPI, kube_api, kube_config

__all__ = ["kube_api", "kube_config"]

POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
       "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "nginx"}]}}


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def client(kube_api: FakeKubeAPI, kube_config: Path) -> Iterator[kube.Kube]:
    kube_api.add(POD)
    k = kube.connect(str(kube_config), timeout=5, pool_size=2)
    yield k
    k.close()


def read_pod(k: kube.Kube, name: str = "web-1", **kwargs: Any) -> dict[str, Any]:
    response = k.core.read_namespaced_pod(name, "shop", _preload_content=False,
                                          _request_timeout=kwargs.pop("timeout", k.timeout))
    return dict(json.loads(response.data))


# --- requests and answers -------------------------------------------------------------------

def test_talon_client_uses_the_transport(client: kube.Kube) -> None:
    assert isinstance(client.api_client.rest_client, kubehttp.Transport)


def test_read_patch_delete_reach_the_api_server(client: kube.Kube,
                                                kube_api: FakeKubeAPI) -> None:
    assert read_pod(client)["metadata"]["labels"] == {"app": "web"}
    client.core.patch_namespaced_pod(
        "web-1", "shop", [{"op": "add", "path": "/metadata/labels/x", "value": "y"}],
        _request_timeout=client.timeout)
    typed = client.core.read_namespaced_pod("web-1", "shop", _request_timeout=client.timeout)
    assert typed.metadata.labels == {"app": "web", "x": "y"}  # typed models still work
    client.core.delete_namespaced_pod("web-1", "shop", grace_period_seconds=0,
                                      _request_timeout=client.timeout)
    get, patch, _, delete = kube_api.requests
    assert get.headers["authorization"] == f"Bearer {kube_api.token}"
    assert patch.content_type == "application/json-patch+json"
    assert patch.body == [{"op": "add", "path": "/metadata/labels/x", "value": "y"}]
    assert (delete.method, delete.path, delete.query) == (
        "DELETE", "/api/v1/namespaces/shop/pods/web-1", {"gracePeriodSeconds": ["0"]})
    from kubernetes.client.exceptions import NotFoundException

    with pytest.raises(NotFoundException):
        read_pod(client)


def test_a_merge_patch_body_is_sent_as_strategic_merge(client: kube.Kube,
                                                       kube_api: FakeKubeAPI) -> None:
    client.core.patch_namespaced_pod("web-1", "shop", {"metadata": {"labels": {"a": "b"}}},
                                     _request_timeout=client.timeout)
    assert kube_api.requests[-1].content_type == "application/strategic-merge-patch+json"
    assert read_pod(client)["metadata"]["labels"] == {"app": "web", "a": "b"}


def test_call_picks_up_a_rotated_token_within_a_second(client: kube.Kube,
                                                       kube_api: FakeKubeAPI) -> None:
    from kubernetes.client.exceptions import UnauthorizedException

    path = kube.pod_path("shop", "web-1")
    assert client.call("GET", path).status == 200
    kube_api.token = "rotated"  # the API server now wants the new token
    client.api_client.configuration.refresh_api_key_hook = \
        lambda c: c.api_key.update(BearerToken="Bearer rotated")  # what a refresh reads
    with pytest.raises(UnauthorizedException):
        client.call("GET", path)  # the headers asked for less than a second ago
    stamp, headers = client._auth
    client._auth = (stamp - kube.AUTH_REFRESH_SECONDS, headers)  # a second later
    assert client.call("GET", path).status == 200
    assert kube_api.requests[-1].headers["authorization"] == "Bearer rotated"


def test_api_errors_keep_the_clients_exceptions(client: kube.Kube,
                                                kube_api: FakeKubeAPI) -> None:
    from kubernetes.client.exceptions import ApiException, NotFoundException, ServiceException

    with pytest.raises(NotFoundException) as missing:
        read_pod(client, "gone")
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["message"] == 'pods "gone" not found'
    assert kube.api_error(missing.value) == 'pods "gone" not found (404)'
    kube_api.fail("GET", "/pods/web-1$", 500, message="etcd is sad")
    with pytest.raises(ServiceException) as sad:
        read_pod(client)
    assert kube.api_error(sad.value) == "etcd is sad (500)"
    kube_api.fail("PATCH", "/pods/web-1$", 409, message="the object has been modified")
    with pytest.raises(ApiException) as conflict:
        client.core.patch_namespaced_pod("web-1", "shop", {"metadata": {}},
                                         _request_timeout=client.timeout)
    assert conflict.value.status == 409
    assert read_pod(client)["metadata"]["name"] == "web-1"  # the connection is still good


# --- connections ----------------------------------------------------------------------------

def test_requests_share_one_keep_alive_connection(client: kube.Kube,
                                                  kube_api: FakeKubeAPI) -> None:
    for _ in range(30):
        read_pod(client)
    assert kube_api.open_connections == 1


def test_concurrent_callers_all_answered_and_at_most_maxsize_kept(
        client: kube.Kube, kube_api: FakeKubeAPI) -> None:
    kube_api.delay("GET", "/pods/web-1$", 0.2, times=8)
    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(
        read_pod(client)["metadata"]["name"])) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert answers == ["web-1"] * 8
    assert wait_for(lambda: kube_api.open_connections <= 2)  # pool_size=2


def test_a_connection_the_server_closed_is_replaced(client: kube.Kube,
                                                    kube_api: FakeKubeAPI) -> None:
    read_pod(client)
    kube_api._server.close_connections()  # type: ignore[union-attr] # the server restarts
    assert wait_for(lambda: kube_api.open_connections == 0)
    assert read_pod(client)["metadata"]["name"] == "web-1"
    assert len(kube_api.requests) == 2  # no request sent twice


def test_read_timeout_is_one_request_bounded_by_the_timeout(client: kube.Kube,
                                                            kube_api: FakeKubeAPI) -> None:
    kube_api.delay("GET", "/pods/web-1$", 2.0, times=1)
    started = time.monotonic()
    with pytest.raises(kubehttp.KubeTimeoutError) as info:
        read_pod(client, timeout=(1.0, 0.3))
    assert time.monotonic() - started < 1.5
    assert "GET /api/v1/namespaces/shop/pods/web-1" in str(info.value)
    assert len(kube_api.requests_for("GET")) == 1
    started = time.monotonic()
    with pytest.raises(TimeoutError):  # one number bounds the whole request
        kube_api.delay("GET", "/pods/web-1$", 2.0, times=1)
        read_pod(client, timeout=0.3)
    assert time.monotonic() - started < 1.5


def test_refused_connection_names_the_server(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "kc"  # a server address nothing listens on
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    k = kube.connect(str(path), timeout=2)
    with pytest.raises(kubehttp.KubeConnectionError) as info:
        read_pod(k)
    assert f"cannot connect to 127.0.0.1:{port}" in str(info.value)
    assert isinstance(info.value, ConnectionError)


def test_header_injection_is_refused_before_sending(client: kube.Kube,
                                                    kube_api: FakeKubeAPI) -> None:
    from kubernetes.client.exceptions import ApiValueError

    transport = client.api_client.rest_client
    with pytest.raises(ApiValueError, match="invalid character"):
        transport.GET(f"{kube_api.url}/api/v1/namespaces/shop/pods/web-1",
                      headers={"X-Note": "a\r\nAuthorization: Bearer stolen"})
    with pytest.raises(ApiValueError, match="unsafe characters"):
        transport.GET(f"{kube_api.url}/api/v1/namespaces/shop/pods/web 1 HTTP/1.1\r\nX: y")
    assert kube_api.requests == []


# --- framing the fake never sends -----------------------------------------------------------

SERVERS: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_scripted() -> Iterator[None]:
    yield
    while SERVERS:
        SERVERS.pop().close()


class Scripted:
    """Accepts connections and answers each request with the next canned reply."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies, self.requests = list(replies), []
        self.sock = socket.create_server(("127.0.0.1", 0))
        SERVERS.append(self.sock)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.replies:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn, conn.makefile("rb") as reader:
                while self.replies:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = reader.readline()
                        if not line:
                            break
                        head += line
                    if not head:
                        break
                    self.requests.append(head)
                    reply = self.replies.pop(0)
                    conn.sendall(reply)
                    if b"Connection: close" in reply or (b"Content-Length" not in reply \
                            and b"chunked" not in reply):
                        break

    def transport(self) -> kubehttp.Transport:
        from kubernetes import client

        configuration = client.Configuration(host=f"http://127.0.0.1:{self.port}")
        return kubehttp.Transport(configuration, maxsize=2)


def test_chunked_and_close_delimited_bodies() -> None:
    pod = json.dumps(POD).encode()
    chunked = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"%x;ext=1\r\n%s\r\n" % (len(pod[i:i + 7]), pod[i:i + 7])
                          for i in range(0, len(pod), 7))
               + b"0\r\nX-Trailer: 1\r\n\r\n")
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + chunked
    until_close = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + pod
    server = Scripted([chunked, interim, until_close, chunked])
    transport = server.transport()
    url = f"http://127.0.0.1:{server.port}/api/v1/namespaces/shop/pods/web-1"
    for _ in range(4):
        assert json.loads(transport.GET(url, _request_timeout=(2, 2)).data) == POD
    assert server.connections == 2  # reused after chunked answers; a new one after a close
    head = server.requests[0].decode("latin-1").split("\r\n")
    assert head[0] == "GET /api/v1/namespaces/shop/pods/web-1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in head
    assert "Content-Length: 0" not in head  # a GET carries no body


def test_a_head_longer_than_one_read_is_read_line_by_line() -> None:
    pod = json.dumps(POD).encode()
    big = b"X-Audit: " + b"a" * 20000 + b"\r\n"
    server = Scripted([b"HTTP/1.1 200 OK\r\n" + big + b"Content-Length: %d\r\n\r\n%s"
                       % (len(pod), pod)])
    answer = server.transport().GET(f"http://127.0.0.1:{server.port}/api/v1/pods/x",
                                    _request_timeout=(2, 2))
    assert json.loads(answer.data) == POD
    assert answer.getheader("X-Audit") == "a" * 20000


def test_a_truncated_body_is_a_connection_error() -> None:
    server = Scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"
                       b"{\"kind\":"])
    transport = server.transport()
    with pytest.raises(kubehttp.KubeConnectionError, match="after 8 of 100 bytes"):
        transport.GET(f"http://127.0.0.1:{server.port}/api/v1/pods", _request_timeout=(2, 2))


def test_a_garbage_answer_is_a_connection_error() -> None:
    server = Scripted([b"SSH-2.0-OpenSSH_9.6\r\n\r\n"])
    with pytest.raises(kubehttp.KubeConnectionError, match="not an HTTP status line"):
        server.transport().GET(f"http://127.0.0.1:{server.port}/api/v1/pods",
                               _request_timeout=(2, 2))


# --- TLS ------------------------------------------------------------------------------------

@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_api(ca: trustme.CA) -> Iterator[FakeKubeAPI]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED  # the API server asks for a client certificate
    with FakeKubeAPI(token=None, tls=context) as fake:
        fake.add(POD)
        yield fake


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tls_kubeconfig(fake: FakeKubeAPI, path: Path, ca: trustme.CA, *,
                   client: trustme.LeafCert | None = None, **cluster: Any) -> str:
    user = {}
    if client is not None:
        user = {"client-certificate-data": b64(client.cert_chain_pems[0].bytes()),
                "client-key-data": b64(client.private_key_pem.bytes())}
    cluster.setdefault("certificate-authority-data", b64(ca.cert_pem.bytes()))
    cluster = {k: v for k, v in cluster.items() if v is not None}
    return str(fake.kubeconfig(path, cluster=cluster, user=user))


def test_tls_with_a_client_certificate(tls_api: FakeKubeAPI, ca: trustme.CA,
                                       tmp_path: Path) -> None:
    client = ca.issue_cert("talon")
    k = kube.connect(tls_kubeconfig(tls_api, tmp_path / "kc", ca, client=client), timeout=5)
    assert isinstance(k.api_client.rest_client, kubehttp.Transport)
    assert read_pod(k)["metadata"]["name"] == "web-1"
    assert read_pod(k)["metadata"]["name"] == "web-1"
    assert tls_api.open_connections == 1
    k.close()


def test_a_tls_request_times_out_and_the_next_one_is_answered(
        tls_api: FakeKubeAPI, ca: trustme.CA, tmp_path: Path) -> None:
    client = ca.issue_cert("talon")
    k = kube.connect(tls_kubeconfig(tls_api, tmp_path / "kc", ca, client=client), timeout=5)
    read_pod(k)
    tls_api.delay("GET", "/pods/web-1$", 2.0, times=1)
    started = time.monotonic()
    with pytest.raises(kubehttp.KubeTimeoutError):
        read_pod(k, timeout=(1.0, 0.3))
    assert time.monotonic() - started < 1.5
    assert read_pod(k)["metadata"]["name"] == "web-1"  # on a new connection
    k.close()


def test_tls_refuses_a_server_from_another_ca(tls_api: FakeKubeAPI, ca: trustme.CA,
                                              tmp_path: Path) -> None:
    from talon import retry

    other = trustme.CA()
    path = tls_kubeconfig(tls_api, tmp_path / "kc", ca, client=ca.issue_cert("talon"),
                          **{"certificate-authority-data": b64(other.cert_pem.bytes())})
    with pytest.raises(kubehttp.KubeTLSError) as info:
        read_pod(kube.connect(path, timeout=5))
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert f"TLS with 127.0.0.1:{tls_api.port} failed" in str(info.value)
    assert not retry.is_transient(info.value)  # another attempt fails the same way
    assert tls_api.requests == []


def test_tls_skip_verify_accepts_an_unknown_server(tls_api: FakeKubeAPI, ca: trustme.CA,
                                                   tmp_path: Path) -> None:
    path = tls_kubeconfig(tls_api, tmp_path / "kc", ca, client=ca.issue_cert("talon"),
                          **{"certificate-authority-data": None,
                             "insecure-skip-tls-verify": True})
    assert read_pod(kube.connect(path, timeout=5))["metadata"]["name"] == "web-1"


def test_tls_without_the_client_certificate_fails(tls_api: FakeKubeAPI, ca: trustme.CA,
                                                  tmp_path: Path) -> None:
    k = kube.connect(tls_kubeconfig(tls_api, tmp_path / "kc", ca), timeout=5)
    with pytest.raises(kubehttp.KubeConnectionError):  # refused in or right after the handshake
        read_pod(k)
    assert tls_api.requests == []


def test_tls_server_name_is_checked(tls_api: FakeKubeAPI, ca: trustme.CA,
                                    tmp_path: Path) -> None:
    path = tls_kubeconfig(tls_api, tmp_path / "kc", ca, client=ca.issue_cert("talon"),
                          **{"tls-server-name": "api.elsewhere.example"})
    with pytest.raises(kubehttp.KubeTLSError, match=r"not valid for 'api\.elsewhere\.example'"):
        read_pod(kube.connect(path, timeout=5))


# --- what stays on the client's own transport -----------------------------------------------

def test_a_proxy_keeps_the_clients_transport(kube_api: FakeKubeAPI, kube_config: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes.client.rest import RESTClientObject

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    k = kube.connect(str(kube_config), timeout=5)
    assert isinstance(k.api_client.rest_client, RESTClientObject)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    k = kube.connect(str(kube_config), timeout=5)
    assert isinstance(k.api_client.rest_client, kubehttp.Transport)
