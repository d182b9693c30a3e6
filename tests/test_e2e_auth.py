"""End to end: the real server process with TLS, tokens and signatures configured.

Covers: over HTTPS, an event with a Basic password (as Falcosidekick sends the token from
its URL's user info) and a signed event run their action; events without credentials get
401 and run nothing; the rejections are counted on /metrics (which needs credentials);
neither the token, the secret nor a URL password ever shows in the server's log; a
missing tokens file stops the start with the file named; without authentication, a
non-loopback listener warns at start-up, and with it the warning is gone.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
from pathlib import Path

import trustme

from talon import auth
from tests.support import Launch, recording_rules, records, start

__all__ = ["start"]

TOKEN = "e2e-token-7f3a9c1d5b2e8f4a6c0d"
SECRET = b"e2e-hmac-secret-91b7c3d5e2f4a6b8"
WARNING = "anyone who can reach this port can trigger actions"


def event(output: str) -> bytes:
    return json.dumps({"rule": "Terminal shell in container", "priority": "Warning",
                       "output": output, "output_fields": {"k8s.pod.name": "web",
                                                           "k8s.ns.name": "shop"}}).encode()


def outputs(path: Path, n: int, timeout: float = 10) -> list[str]:
    return [line["output"] for line in records(path, n, timeout)]


def test_tls_tokens_and_signatures_through_the_real_server(start: Launch, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    (tmp_path / "tokens").write_text(f"{TOKEN}\n")
    (tmp_path / "secret").write_bytes(SECRET + b"\n")
    out = tmp_path / "actions.jsonl"
    server = start(recording_rules(out), f"""
        tls:
          cert_file: {tmp_path / "tls.crt"}
          key_file: {tmp_path / "tls.key"}
        auth:
          bearer_tokens_file: {tmp_path / "tokens"}
          hmac_secret_file: {tmp_path / "secret"}
        workers: 1
        default_notifiers: [webhook]
        notifiers:
          webhook:
            url: http://talon:url-password-1234@127.0.0.1:9/hook
        """)
    context = ssl.create_default_context()
    ca.configure_trust(context)

    def send(method: str, path: str, body: bytes | None,
             headers: dict[str, str]) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10,
                                           context=context)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    # Falcosidekick's Talon output with address https://falcosidekick:<token>@talon:2803/
    userinfo = base64.b64encode(f"falcosidekick:{TOKEN}".encode()).decode()
    assert send("POST", "/", event("basic"), {"Authorization": f"Basic {userinfo}"})[0] == 200
    body = event("signed")
    signed = {auth.SIGNATURE_HEADER: auth.sign(SECRET, body, int(time.time()))}
    assert send("POST", "/", body, signed)[0] == 200
    assert send("POST", "/", event("anonymous"), {})[0] == 401
    assert send("POST", "/", event("wrong"), {"Authorization": "Bearer " + "x" * 32})[0] == 401
    assert send("POST", "/", body, signed)[0] == 401  # replayed
    assert send("GET", "/metrics", None, {})[0] == 401
    status, metrics = send("GET", "/metrics", None, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert b'talon_events_rejected_total{reason="unauthenticated"} 4.0' in metrics
    assert send("POST", "/", event("last"), {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert outputs(out, 3) == ["basic", "signed", "last"]  # one worker: in order, none between
    log = server.wait_log(r'"reason": "unauthenticated"')
    assert TOKEN not in log and userinfo not in log
    assert SECRET.decode() not in log and "url-password-1234" not in log
    assert WARNING not in log


def test_missing_tokens_file_stops_the_start(start: Launch, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-tokens"
    server_log = tmp_path / "server0.log"
    try:
        start(recording_rules(tmp_path / "out"), f"auth: {{bearer_tokens_file: {missing}}}\n")
    except AssertionError as exc:
        assert "server exited 1" in str(exc)
    else:
        raise AssertionError("the server started without its tokens file")
    assert f"auth.bearer_tokens_file {missing}: cannot read the file" in server_log.read_text()


def test_open_listener_warns_at_start_up(start: Launch, tmp_path: Path) -> None:
    server = start(recording_rules(tmp_path / "out"), "", "--listen-address", "0.0.0.0")
    line = next(line for line in server.wait_log(WARNING).splitlines() if WARNING in line)
    assert json.loads(line)["level"] == "warning"
    (tmp_path / "tokens").write_text(TOKEN + "\n")
    secured = start(recording_rules(tmp_path / "out"),
                    f"auth: {{bearer_tokens_file: {tmp_path}/tokens}}\n",
                    "--listen-address", "0.0.0.0")
    assert WARNING not in secured.wait_log("listening on")
    assert secured.request("POST", "/", event("x"))[0] == 401
