"""gcp:function and gcp:gcs end to end: the real server as a subprocess.

Behaviours covered:
- one Falco event POSTed to the server calls the function (payload with the rule's context,
  ID token) and stores an artifact in the emulator's bucket (exact bytes); the log lines
  carry the function's answer and the object's gs:// location; `gcp.credentials_path`
  comes from the config file, the endpoints from the environment;
- a failing function is logged as a failure naming it, and the server goes on with the
  next event;
- `rules check` validates gcp rules with no credentials and no reachable endpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from talon.clients.gcp import API_ENV
from tests.fakes.gcp_api import PROJECT, FakeGcp, gcp_api
from tests.notifiers.sinks import free_port
from tests.support import RECORDER, ROOT, Launch, start

__all__ = ["gcp_api", "start"]

BUCKET = "falco-talon"
PLUGIN = '''
from talon.plugin import Artifact, Result, actionner

@actionner("e2e", "grab", require_output=True, description="grab",
           required_fields=("fd.name",))
def grab(ctx):
    return Result(output="grabbed", objects={"pod": ctx.event.pod_name(),
                                             "namespace": ctx.event.namespace()},
                  artifact=Artifact(name=ctx.event.output_fields["fd.name"],
                                    data=bytes(range(256))))
'''
RULES = f"""
    - rule: Respond
      match: {{rules: [Read sensitive file]}}
      actions:
        - action: Tell the responder
          actionner: gcp:function
          ignore_errors: true
          parameters:
            gcp_function_name: responder
            gcp_function_location: europe-west1
            gcp_function_timeout: 5
        - action: Keep the file
          actionner: e2e:grab
          output:
            target: gcp:gcs
            parameters: {{bucket: {BUCKET}, prefix: /evidence/}}
    """


@pytest.fixture
def emulator() -> Iterator[str]:
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", 0, in_memory=True, default_bucket=BUCKET)
    server.start()
    try:
        yield f"http://127.0.0.1:{server._api._httpd.server_address[1]}"
    finally:
        server.stop()


def stored(host: str) -> dict[str, bytes]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": host})
    return {b.name: b.download_as_bytes() for b in client.list_blobs(BUCKET)}


def falco_event(pod: str) -> dict[str, object]:
    return {"rule": "Read sensitive file", "priority": "Warning",
            "output": f"read /etc/shadow in {pod}", "source": "syscall",
            "output_fields": {"k8s.pod.name": pod, "k8s.ns.name": "shop",
                              "fd.name": "/etc/shadow"}}


def test_event_calls_function_and_stores_artifact(start: Launch, gcp_api: FakeGcp,
                                                  emulator: str, tmp_path: Path) -> None:
    fn = gcp_api.add("europe-west1", "responder", body=b"contained")
    plugin = tmp_path / "grab_plugin.py"
    plugin.write_text(PLUGIN)
    creds = gcp_api.credentials_file(tmp_path / "sa.json")
    server = start(RULES, f"gcp:\n  credentials_path: {creds}\n", env={
        "PLUGINS": f"{RECORDER},{plugin}", API_ENV: gcp_api.base,
        "STORAGE_EMULATOR_HOST": emulator, "GOOGLE_APPLICATION_CREDENTIALS": "",
        "GCE_METADATA_HOST": f"127.0.0.1:{free_port()}"})
    assert server.post(falco_event("web-1")) == 200
    log = server.wait_log(r"has been uploaded")
    (call,) = gcp_api.calls("responder")
    assert gcp_api.id_tokens[call.headers["authorization"].removeprefix("Bearer ")] == fn.uri
    payload = json.loads(call.body)
    assert payload["output_fields"]["k8s.pod.name"] == "web-1"
    assert payload["context"]["falco-talon.rule"] == "Respond"
    assert payload["context"]["falco-talon.action"] == "Tell the responder"
    (key,) = stored(emulator)
    assert key.startswith("evidence/") and key.endswith("_shop_web-1__etc_shadow")
    assert stored(emulator)[key] == bytes(range(256))
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    action = next(x for x in lines if x.get("action") == "Tell the responder"
                  and x.get("status") == "success")
    assert action["output"] == "contained"
    output = next(x for x in lines if x.get("output_target") == "gcp:gcs")
    assert output["location"] == f"gs://{BUCKET}/{key}"
    assert gcp_api.api_calls()[0].path == (
        f"/v2/projects/{PROJECT}/locations/europe-west1/functions/responder")

    fn.status, fn.body = 503, b"overloaded"
    assert server.post(falco_event("web-2")) == 200
    log = server.wait_log(r"_shop_web-2__etc_shadow")
    assert "answered with status 503: overloaded" in log
    assert len(stored(emulator)) == 2


def test_rules_check_needs_no_credentials(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(textwrap.dedent("""
        - rule: Respond
          actions:
            - action: Tell the responder
              actionner: gcp:function
              parameters: {gcp_function_name: responder, gcp_function_location: eu}
        - rule: Keep
          actions:
            - action: Keep the logs
              actionner: kubernetes:log
              output: {target: gcp:gcs, parameters: {bucket: falco-talon}}
        """))
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"PATH": "/usr/bin:/bin", "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent.json",
           API_ENV: dead, "STORAGE_EMULATOR_HOST": dead,
           "GCE_METADATA_HOST": dead.removeprefix("http://")}
    done = subprocess.run([sys.executable, "-m", "talon", "rules", "check", "-r", str(rules)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
