"""aws:lambda and the `aws` context, against moto and fake IMDSv2/Lambda servers on loopback.

Behaviours covered:
- RequestResponse: the function receives the event as JSON with its `context` (Talon's
  keys), the payload it returns is the action's output, status code 200 in the objects;
- Event (202) and DryRun (204) are successes (the Go version counted 202 as a failure);
- the alias or version is sent (an alias works, a missing one fails naming it); a missing
  function fails with the service's message, and the next event still runs;
- a function error (X-Amz-Function-Error) fails with the function's errorType/message; an
  unexpected status fails naming it;
- credentials: aws.role_arn + aws.external_id go through STS AssumeRole (moto records it),
  wrong static keys fail naming the function (moto with credential checks on; that the
  static keys are the ones used is shown with S3, in test_aws_buckets.py); an
  unreachable endpoint fails naming the function;
- the `aws` context: IMDSv2 token then the instance id, region, zone and instance profile,
  in the payload's context; cached (a second event reads nothing); no instance profile
  leaves those keys out; an unreachable IMDS fails the action, or is skipped under
  ignore_errors; a refused token is renewed once; the cache expires after five minutes;
- end to end: the server subprocess invokes the function with the context of a fake IMDS.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from talon.clients import aws as aws_client
from tests.actionners.cloud import Cloud, cloud, event
from tests.actionners.conftest import assert_failed
from tests.fakes.aws import (
    REGION,
    FakeImds,
    FakeLambda,
    Moto,
    aws_env,
    fake_lambda,
    imds,
    moto,
    sdk_env,
)
from tests.notifiers.sinks import free_port
from tests.support import Launch, start

__all__ = ["aws_env", "cloud", "fake_lambda", "imds", "moto", "start"]


def rules(name: str = "echo", qualifier: str = "$LATEST", kind: str = "RequestResponse",
          extra: str = "") -> str:
    return f"""
        - rule: R
          actions:
            - action: A
              actionner: aws:lambda
              parameters:
                aws_lambda_name: {name}
                aws_lambda_alias_or_version: "{qualifier}"
                aws_lambda_invocation_type: {kind}
              {extra}
        """


def test_request_response_sends_event_and_context(aws_env: Moto, cloud: Cloud) -> None:
    aws_env.function("echo")
    acted = cloud(rules())
    assert acted.done == [("R", "A", "success")]
    note = acted.note("A")
    received = json.loads(note.output)  # moto's simple Lambda answers with what it got
    assert received["rule"] == "Terminal shell in container"
    assert received["output"] == "shell in web-1"
    assert received["trace_id"] == "0123456789abcdef0123456789abcdef"
    assert received["output_fields"] == {"k8s.pod.name": "web-1", "k8s.ns.name": "shop",
                                         "proc.pid": 4242}
    assert received["tags"] == ["container", "shell"]
    assert received["hostname"] == "node-1"
    ctx = received["context"]
    assert ctx["falco-talon.rule"] == "R"
    assert ctx["falco-talon.action"] == "A"
    assert ctx["falco-talon.actionner"] == "aws:lambda"
    assert json.loads(ctx["falco-talon.action.parameters"])["aws_lambda_name"] == "echo"
    assert note.objects["status_code"] == "200"
    assert note.objects["function"] == "echo"


@pytest.mark.parametrize(("kind", "status", "text"), [
    ("Event", "202", "accepted the event"),
    ("DryRun", "204", "can be invoked (dry run)"),
])
def test_event_and_dry_run_succeed(aws_env: Moto, cloud: Cloud, kind: str, status: str,
                                   text: str) -> None:
    aws_env.function("echo")
    acted = cloud(rules(kind=kind))
    assert acted.done == [("R", "A", "success")]
    note = acted.note("A")
    assert note.output == f"the function 'echo' ($LATEST) {text} (status {status})"
    assert note.objects["invocation_type"] == kind


def test_alias_is_used_and_a_missing_one_fails(aws_env: Moto, cloud: Cloud) -> None:
    aws_env.function("echo")
    assert cloud(rules(qualifier="live")).done == [("R", "A", "success")]
    note = assert_failed(cloud(rules(qualifier="prod")), "the function 'echo' (prod)")
    assert "Function not found" in note.error
    assert note.error.endswith("function:echo:prod (HTTP 404)")


def test_missing_function_fails_and_next_event_runs(aws_env: Moto, cloud: Cloud) -> None:
    aws_env.function("echo")
    two_rules = "".join(f"""
        - rule: {rule}
          match: {{output_fields: ["k8s.pod.name={pod}"]}}
          actions:
            - action: A
              actionner: aws:lambda
              parameters: {{aws_lambda_name: {name}}}
        """ for rule, pod, name in (("R", "web-1", "nope"), ("S", "web-2", "echo")))
    acted = cloud(two_rules, event(pod="web-1"), event(pod="web-2"))
    assert acted.done == [("R", "A", "failure"), ("S", "A", "success")]
    first = next(n for n in acted.notes if n.message == "action" and n.status == "failure")
    assert "the function 'nope' ($LATEST) cannot be read: ResourceNotFoundException" in (
        first.error)


def test_function_error_fails_with_its_message(aws_env: Moto, fake_lambda: FakeLambda,
                                               cloud: Cloud,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", fake_lambda.url)
    fake_lambda.function_error = "Unhandled"
    fake_lambda.body = json.dumps({"errorType": "ValueError", "errorMessage": "boom"}).encode()
    note = assert_failed(cloud(rules()), "the function 'echo' ($LATEST) failed")
    assert note.error.endswith("failed (Unhandled): ValueError: boom")
    assert json.loads(fake_lambda.invocations[0])["rule"] == "Terminal shell in container"


def test_an_invocation_is_never_sent_twice_behind_the_rules_back(
        aws_env: Moto, fake_lambda: FakeLambda, cloud: Cloud,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's own retries would invoke the function again after a 5xx (or a read
    timeout); retrying is the rule's decision (`retries`), so the SDK makes one attempt."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", fake_lambda.url)
    fake_lambda.status = 503
    assert_failed(cloud(rules()), "the function 'echo' ($LATEST)")
    assert len(fake_lambda.invocations) == 1


def test_unexpected_status_fails(aws_env: Moto, fake_lambda: FakeLambda, cloud: Cloud,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", fake_lambda.url)
    fake_lambda.status, fake_lambda.body = 202, b""
    note = assert_failed(cloud(rules()), "the function 'echo' ($LATEST) answered with "
                                         "status 202")
    assert note.objects == {}


def test_role_arn_is_assumed_with_external_id(aws_env: Moto, cloud: Cloud) -> None:
    aws_env.function("echo")
    role = aws_env.role("talon-responder")
    before = len(aws_env.assumed_roles())
    acted = cloud(rules(), aws__role_arn=role, aws__external_id="ext-42")
    assert acted.done == [("R", "A", "success")]
    assert aws_env.assumed_roles()[before:] == [(role, "talon", "ext-42")]


def test_wrong_keys_fail_naming_the_function(aws_env: Moto, cloud: Cloud) -> None:
    aws_env.function("echo")
    with aws_env.auth():
        wrong = cloud(rules(), aws__access_key="AKIAWRONGWRONGWRONG1",
                      aws__secret_key="nope", aws__region=REGION)
    note = assert_failed(wrong, "the function 'echo' ($LATEST) cannot be read: ")
    assert note.error.endswith("(HTTP 403)")
    assert "\n" not in note.error


def test_unreachable_endpoint_fails_naming_the_function(aws_env: Moto, cloud: Cloud,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    note = assert_failed(cloud(rules()), "the function 'echo' ($LATEST) cannot be read: "
                                         "Could not connect to the endpoint URL")
    assert "127.0.0.1" in note.error


# --- the aws context --------------------------------------------------------------------

WITH_CONTEXT = "additional_contexts: [aws]"
FACTS = {"aws.instance_id": "i-0abc123", "aws.region": "eu-west-3",
         "aws.availability_zone": "eu-west-3b",
         "aws.instance_profile_arn": "arn:aws:iam::123456789012:instance-profile/talon-node",
         "aws.instance_profile_id": "AIPAEXAMPLE"}
PATHS = ["/latest/meta-data/instance-id", "/latest/meta-data/placement/region",
         "/latest/meta-data/placement/availability-zone", "/latest/meta-data/iam/info"]


def _payload_context(acted: object, index: int = 0) -> dict[str, str]:
    notes = [n for n in acted.notes if n.message == "action"]  # type: ignore[attr-defined]
    return dict(json.loads(notes[index].output)["context"])


def test_context_reaches_the_function(aws_env: Moto, imds: FakeImds, cloud: Cloud,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    aws_env.function("echo")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
    acted = cloud(rules(extra=WITH_CONTEXT), event(), event(pod="web-2"))
    assert acted.done == [("R", "A", "success"), ("R", "A", "success")]
    for index in (0, 1):
        ctx = _payload_context(acted, index)
        assert {k: v for k, v in ctx.items() if k.startswith("aws.")} == FACTS
    assert imds.gets == PATHS  # the second event used the cached facts
    assert imds.tokens_issued == 1
    assert imds.token_ttls == ["21600"]
    assert imds.refused == []


def test_context_without_instance_profile(aws_env: Moto, imds: FakeImds, cloud: Cloud,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    aws_env.function("echo")
    imds.profile = False
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
    ctx = _payload_context(cloud(rules(extra=WITH_CONTEXT)))
    assert {k for k in ctx if k.startswith("aws.")} == {
        "aws.instance_id", "aws.region", "aws.availability_zone"}


def test_unreachable_context_fails_or_is_ignored(aws_env: Moto, cloud: Cloud,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    aws_env.function("echo")
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
    note = assert_failed(cloud(rules(extra=WITH_CONTEXT)), "context 'aws': instance "
                         f"metadata at {endpoint} is unreachable")
    assert "Connection refused" in note.error
    acted = cloud(rules(extra=WITH_CONTEXT + "\n              ignore_errors: true"))
    assert acted.done == [("R", "A", "success")]
    assert not [k for k in _payload_context(acted) if k.startswith("aws.")]


def test_imds_refuses_gets_without_token(imds: FakeImds) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{imds.url}/latest/meta-data/instance-id", timeout=5)
    err.value.close()
    assert err.value.code == 401
    assert imds.refused == ["/latest/meta-data/instance-id"]


def test_refused_token_is_renewed_and_cache_expires(imds: FakeImds) -> None:
    now = [1000.0]
    reader = aws_client.Imds(endpoint=imds.url, clock=lambda: now[0])
    assert reader.facts() == FACTS
    imds.token = "tok-rotated"  # the service forgot the old token
    now[0] += aws_client.FACTS_SECONDS - 1
    assert reader.facts() == FACTS
    assert imds.tokens_issued == 1
    now[0] += 1
    imds.values["/latest/meta-data/placement/availability-zone"] = "eu-west-3c"
    assert reader.facts()["aws.availability_zone"] == "eu-west-3c"
    assert imds.tokens_issued == 2
    assert imds.refused == ["/latest/meta-data/instance-id"]


# --- end to end -------------------------------------------------------------------------


def test_server_invokes_lambda_with_context(aws_env: Moto, imds: FakeImds,
                                            start: Launch) -> None:
    aws_env.function("echo")
    server = start(rules(extra=WITH_CONTEXT),
                   env={**sdk_env(aws_env), "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url})
    assert server.post({"rule": "Terminal shell in container", "priority": "Warning",
                        "output": "shell in web-1",
                        "output_fields": {"k8s.pod.name": "web-1", "k8s.ns.name": "shop"}}
                       ) == 200
    text = server.wait_log(r'"actionner": "aws:lambda".*"status": "success"', timeout=30)
    line = next(json.loads(raw) for raw in text.splitlines()
                if '"aws:lambda"' in raw and '"status": "success"' in raw)
    received = json.loads(line["output"])
    assert received["output_fields"]["k8s.pod.name"] == "web-1"
    assert received["context"]["aws.instance_id"] == "i-0abc123"
    assert received["context"]["falco-talon.actionner"] == "aws:lambda"
    assert line["status_code"] == "200"
