"""gcp:function against a fake Google (token endpoint, Cloud Functions v2 API, the function).

Behaviours covered:
- the function is looked up in the credentials' project at the given location with an
  access token the token endpoint issued, then receives one POST: the event and its
  context (`falco-talon.*` keys) as JSON, `Authorization: Bearer <ID token issued for the
  function's URL>`; its answer is the action's output, its status in the objects;
- credentials are loaded once and tokens reused across events;
- `gcp.credentials_path` is a path (not JSON text); with none, the Application Default
  Credentials (GOOGLE_APPLICATION_CREDENTIALS) are used;
- failures name the function: a non-2xx answer, a function that hangs past
  `gcp_function_timeout` (fails in about that time), a missing function, a refused or wrong
  key, a missing credentials file, an unreachable API or function; the next event is
  processed normally;
- parameter validation (`/` refused).
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from talon import catalog, config, models, params, rules
from talon.actionners import gcp
from talon.clients import Clients
from talon.clients.gcp import API_ENV as API_ENV_GCP
from talon.engine import Engine
from talon.metrics import Metrics
from talon.reloader import RuleStore
from tests.actionners.conftest import Acted, event
from tests.fakes.gcp_api import EMAIL, PROJECT, FakeGcp, gcp_api, new_key
from tests.notifiers.sinks import free_port

__all__ = ["gcp_api"]

Act = Callable[..., Acted]
FN = f"projects/{PROJECT}/locations/europe-west1/functions/responder"


def rules_yaml(name: str = "responder", location: str = "europe-west1",
               timeout: int = 5) -> str:
    return f"""
        - rule: R
          actions:
            - action: A
              actionner: gcp:function
              parameters:
                gcp_function_name: {name}
                gcp_function_location: {location}
                gcp_function_timeout: {timeout}
        """


@pytest.fixture(autouse=True)
def _google_env(monkeypatch: pytest.MonkeyPatch, gcp_api: FakeGcp) -> None:
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT",
                 "CLOUDSDK_CORE_PROJECT", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv(API_ENV_GCP, gcp_api.base)


@pytest.fixture
def creds(gcp_api: FakeGcp, tmp_path: Path) -> Path:
    return gcp_api.credentials_file(tmp_path / "sa.json")


@pytest.fixture
def make_act(tmp_path: Path) -> Iterator[Callable[[str], Act]]:
    """`make_act(credentials_path)` → `act(rules_yaml, event)` with one shared Clients."""
    registry = catalog.registry()

    def make(credentials_path: str) -> Act:
        settings = config.load(None, env={},
                               overrides={"gcp.credentials_path": credentials_path})
        clients = Clients(settings, timeout=5)

        def run(text: str, ev: models.Event | None = None) -> Acted:
            path = tmp_path / "rules.yaml"
            path.write_text(textwrap.dedent(text))
            notes: list[Any] = []
            engine = Engine(registry=registry, rules=RuleStore(rules.load([str(path)],
                                                                          registry)),
                            metrics=Metrics(), notify=lambda _n, note: notes.append(note),
                            default_notifiers=("webhook",), clients=clients)
            return Acted(engine.handle(ev or event()), notes)

        return run

    yield make


@pytest.fixture
def act(make_act: Callable[[str], Act], creds: Path) -> Act:
    return make_act(str(creds))


def test_function_gets_event_context_and_id_token(act: Act, gcp_api: FakeGcp) -> None:
    fn = gcp_api.add("europe-west1", "responder", body=b'{"verdict": "contained"}')
    acted = act(rules_yaml(), event(pod_name="web-1", namespace="shop", rule="Shell"))
    note = acted.note("A")
    assert acted.done == [("R", "A", "success")], note.error
    assert note.output == '{"verdict": "contained"}'
    assert dict(note.objects) == {"name": "responder", "location": "europe-west1",
                                  "function_response_status": "200"}
    (lookup,) = gcp_api.api_calls()
    assert lookup.path == f"/v2/{FN}"
    assert lookup.headers["authorization"].removeprefix("Bearer ") in gcp_api.access_tokens
    (call,) = gcp_api.calls("responder")
    token = call.headers["authorization"].removeprefix("Bearer ")
    assert gcp_api.id_tokens[token] == fn.uri
    assert call.headers["content-type"] == "application/json"
    payload = json.loads(call.body)
    assert payload["rule"] == "Shell"
    assert payload["output_fields"] == {"k8s.pod.name": "web-1", "k8s.ns.name": "shop"}
    assert payload["output"] == "event for web-1"
    assert payload["context"]["falco-talon.rule"] == "R"
    assert payload["context"]["falco-talon.action"] == "A"
    assert payload["context"]["falco-talon.actionner"] == "gcp:function"
    assert json.loads(payload["context"]["falco-talon.action.parameters"]) == {
        "gcp_function_name": "responder", "gcp_function_location": "europe-west1",
        "gcp_function_timeout": 5}
    assert set(payload) == {"trace_id", "output", "priority", "rule", "hostname", "time",
                            "source", "output_fields", "context", "tags"}


def test_tokens_are_reused_across_events(act: Act, gcp_api: FakeGcp) -> None:
    gcp_api.add("europe-west1", "responder")
    for _ in range(3):
        assert act(rules_yaml()).done == [("R", "A", "success")]
    assert len(gcp_api.calls("responder")) == 3
    audiences = [g.get("target_audience") for g in gcp_api.grants]
    assert audiences == [None, gcp_api.functions[(PROJECT, "europe-west1", "responder")].uri]


def test_location_and_name_address_the_function(act: Act, gcp_api: FakeGcp) -> None:
    gcp_api.add("us-central1", "other")
    assert act(rules_yaml("other", "us-central1")).done == [("R", "A", "success")]
    assert [r.path for r in gcp_api.api_calls()] == [
        f"/v2/projects/{PROJECT}/locations/us-central1/functions/other"]
    assert len(gcp_api.calls("other")) == 1


def test_application_default_credentials(make_act: Callable[[str], Act], creds: Path,
                                         gcp_api: FakeGcp,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(creds))
    gcp_api.add("europe-west1", "responder")
    assert make_act("")(rules_yaml()).done == [("R", "A", "success")]
    assert [g["iss"] for g in gcp_api.grants] == [EMAIL, EMAIL]


def test_non_2xx_answer_is_a_failure(act: Act, gcp_api: FakeGcp) -> None:
    gcp_api.add("europe-west1", "responder", status=500, body=b"boom")
    note = act(rules_yaml()).note("A")
    assert note.status == "failure"
    assert note.error == f"the function '{FN}' answered with status 500: boom"
    assert note.objects["function_response_status"] == "500"


def test_timeout_is_in_seconds_and_the_next_event_runs(act: Act, gcp_api: FakeGcp) -> None:
    fn = gcp_api.add("europe-west1", "responder")
    act(rules_yaml())  # warm up: tokens fetched, so only the hanging call is timed
    fn.hang = 30
    started = time.monotonic()
    acted = act(rules_yaml(timeout=1))
    elapsed = time.monotonic() - started
    note = acted.note("A")
    assert acted.done == [("R", "A", "failure")]
    assert 0.9 <= elapsed < 3, elapsed
    assert note.error == (f"gcp:function 'responder' in 'europe-west1': the function at "
                          f"'{fn.uri}' did not answer within 1s")
    fn.hang = 0
    assert act(rules_yaml(timeout=1)).done == [("R", "A", "success")]


def test_missing_function(act: Act, gcp_api: FakeGcp) -> None:
    note = act(rules_yaml("nope")).note("A")
    missing = f"projects/{PROJECT}/locations/europe-west1/functions/nope"
    assert note.error == (f"gcp:function 'nope' in 'europe-west1': cannot get the function "
                          f"'{missing}': 404 Resource '{missing}' was not found")
    assert gcp_api.calls("nope") == []


def test_refused_credentials_then_recovery(act: Act, gcp_api: FakeGcp) -> None:
    gcp_api.add("europe-west1", "responder")
    gcp_api.refuse = True
    note = act(rules_yaml()).note("A")
    assert note.status == "failure"
    assert note.error.startswith(
        f"gcp:function 'responder' in 'europe-west1': cannot get the function '{FN}': ")
    assert "invalid_grant" in note.error
    assert gcp_api.calls("responder") == []
    gcp_api.refuse = False
    assert act(rules_yaml()).done == [("R", "A", "success")]


def test_wrong_key_is_refused(make_act: Callable[[str], Act], gcp_api: FakeGcp,
                              tmp_path: Path) -> None:
    gcp_api.add("europe-west1", "responder")
    wrong = gcp_api.credentials_file(tmp_path / "wrong.json", key=new_key())
    note = make_act(str(wrong))(rules_yaml()).note("A")
    assert "Invalid JWT Signature" in note.error
    assert FN in note.error
    assert gcp_api.grants == []


def test_credentials_path_is_a_path(make_act: Callable[[str], Act], gcp_api: FakeGcp,
                                    tmp_path: Path) -> None:
    gcp_api.add("europe-west1", "responder")
    path = tmp_path / "later.json"
    act = make_act(str(path))
    note = act(rules_yaml()).note("A")
    assert note.error == ("gcp:function 'responder' in 'europe-west1': cannot read the GCP "
                          f"credentials file '{path}': No such file or directory")
    gcp_api.credentials_file(path)
    assert act(rules_yaml()).done == [("R", "A", "success")]


def test_unreachable_api(act: Act, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv(API_ENV_GCP, f"http://127.0.0.1:{port}/")
    note = act(rules_yaml()).note("A")
    assert note.error.startswith(
        f"gcp:function 'responder' in 'europe-west1': cannot get the function '{FN}': ")
    assert f"port={port}" in note.error


def test_unreachable_function(act: Act, gcp_api: FakeGcp) -> None:
    fn = gcp_api.add("europe-west1", "responder")
    fn.uri = f"http://127.0.0.1:{free_port()}/run/responder"
    note = act(rules_yaml()).note("A")
    assert note.error.startswith(f"gcp:function 'responder' in 'europe-west1': cannot call "
                                 f"the function at '{fn.uri}': ")


@pytest.mark.parametrize(("field", "value"), [
    ("gcp_function_name", "a/b"), ("gcp_function_location", "../x")])
def test_parameters_refuse_slashes(field: str, value: str) -> None:
    values = {"gcp_function_name": "fn", "gcp_function_location": "us-central1", field: value}
    _, problems = params.coerce(gcp.FunctionParams, values)
    assert [(p.field, p.message) for p in problems] == [
        (field, f"parameter '{field}' can't contain '/'")]


def test_metadata_names_the_permissions_used() -> None:
    from talon.outputs import gcp as gcs_output
    from talon.registry import REGISTRY

    function = REGISTRY.get("actionner", "gcp:function")
    assert function.run is gcp.function
    for permission in ("cloudfunctions.functions.get", "run.routes.invoke",
                       "roles/run.invoker"):
        assert permission in function.info.cloud_permissions
    assert function.info.requires == ("google.auth", "requests")
    store = REGISTRY.get("output", "gcp:gcs")
    assert store.run is gcs_output.gcs
    assert store.info.cloud_permissions.startswith("storage.objects.create")
