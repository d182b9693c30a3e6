"""aws:s3 and minio:s3 against moto's S3 (the MinIO SDK talks to it as to a MinIO server).

Behaviours covered:
- object keys: `<prefix>/<UTC time>_<namespace>_<pod>_<name>`, the prefix without its
  leading and trailing `/`; no leading `/` for an empty prefix (the Go version's bug);
- the bytes downloaded back are exactly the artifact's;
- the output's result and objects name the bucket, key and location (`s3://bucket/key`,
  or the MinIO URL); the region parameter is used;
- failures name the bucket and the key: a missing bucket, wrong credentials (moto with
  credential checks on), an unreachable endpoint, MinIO without an endpoint; the next
  event is still processed;
- static aws.access_key/secret_key are the keys used (moto refuses any other then); an
  assumed role's credentials are renewed when close to expiry, reused otherwise;
- end to end: the server subprocess stores an artifact in S3 through AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

import pytest

from talon.clients import aws as aws_client
from tests.actionners.cloud import DATA, Cloud, cloud, event, yaml
from tests.actionners.conftest import Acted
from tests.fakes.aws import REGION, Moto, aws_env, moto, sdk_env
from tests.notifiers.sinks import free_port
from tests.support import Launch, start

__all__ = ["aws_env", "cloud", "moto", "start"]

TS = r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ"


def rules(target: str, bucket: str, **params: str) -> str:
    values = ", ".join(f"{k}: {yaml(v)}" for k, v in {"bucket": bucket, **params}.items())
    return f"""
        - rule: R
          actions:
            - action: A
              actionner: t:artifact
              output: {{target: {target}, parameters: {{{values}}}}}
        """


def output_note(acted: Acted, index: int = 0) -> Any:
    return [n for n in acted.notes if n.message == "output"][index]


def minio_settings(moto: Moto, **more: str) -> dict[str, str]:
    return {"minio__endpoint": moto.host_port, "minio__access_key": "minio",
            "minio__secret_key": "minio-secret", "minio__use_ssl": "false", **more}


@pytest.mark.parametrize(("prefix", "key_start"), [
    ("/files/", "files/"), ("a/b", "a/b/"), ("", ""), ("/", ""),
])
def test_s3_key_and_exact_bytes(aws_env: Moto, cloud: Cloud, prefix: str,
                                key_start: str) -> None:
    bucket = aws_env.bucket(f"s3-keys-{len(prefix)}-{len(key_start)}")
    acted = cloud(rules("aws:s3", bucket, prefix=prefix, region=REGION))
    assert acted.done == [("R", "A", "success")]
    (key, data), = aws_env.objects(bucket).items()
    assert re.fullmatch(re.escape(key_start) + TS + "_shop_web-1_log", key), key
    assert data == DATA
    note = output_note(acted)
    assert note.status == "success"
    assert note.result == (f"the file 'log' has been uploaded as the key '{key}' to the "
                           f"bucket '{bucket}' (s3://{bucket}/{key})")
    assert dict(note.objects) == {"file": "log", "bucket": bucket, "prefix": prefix,
                                  "key": key, "location": f"s3://{bucket}/{key}",
                                  "region": REGION}


def test_s3_hostile_names_stay_one_key(aws_env: Moto, cloud: Cloud) -> None:
    bucket = aws_env.bucket("s3-hostile")
    rules_yaml = rules("aws:s3", bucket, prefix="p").replace(
        "actionner: t:artifact", 'actionner: t:artifact\n              parameters: '
                                 '{name: "../../etc/passwd\\nx"}')
    acted = cloud(rules_yaml, event(pod="../../pod"))
    assert acted.done == [("R", "A", "success")]
    (key,) = aws_env.objects(bucket)
    assert re.fullmatch(r"p/" + TS + r"_shop_.._.._pod_.._.._etc_passwd_x", key), key


def test_s3_missing_bucket_fails_and_next_event_runs(aws_env: Moto, cloud: Cloud) -> None:
    bucket = aws_env.bucket("s3-next")
    two = "".join(rules("aws:s3", name).replace(
        "rule: R", f"rule: {rule}\n          match: {{output_fields: [k8s.pod.name={pod}]}}")
        for rule, pod, name in (("R", "web-1", "no-such-bucket"), ("S", "web-2", bucket)))
    acted = cloud(two, event(), event(pod="web-2"))
    assert acted.done == [("R", "A", "success"), ("S", "A", "success")]
    failed, stored = output_note(acted, 0), output_note(acted, 1)
    assert failed.status == "failure"
    assert re.fullmatch(r"the key '" + TS + r"_shop_web-1_log' could not be uploaded to the "
                        r"bucket 'no-such-bucket': NoSuchBucket: .* \(HTTP 404\)", failed.error)
    assert stored.status == "success"
    (key,) = aws_env.objects(bucket)
    assert key.endswith("_shop_web-2_log")


def test_s3_static_keys_are_used_and_wrong_ones_fail(aws_env: Moto, cloud: Cloud) -> None:
    bucket = aws_env.bucket("s3-static")
    key = _access_key(aws_env)
    with aws_env.auth():
        ok = cloud(rules("aws:s3", bucket), aws__access_key=key[0], aws__secret_key=key[1],
                   aws__region=REGION)
        wrong = cloud(rules("aws:s3", bucket), aws__access_key="AKIAWRONGWRONGWRONG1",
                      aws__secret_key="nope", aws__region=REGION)
    assert output_note(ok).status == "success", output_note(ok).error
    note = output_note(wrong)
    assert note.status == "failure"
    assert f"to the bucket '{bucket}': InvalidAccessKeyId" in note.error
    assert len(aws_env.objects(bucket)) == 1


def _access_key(moto: Moto) -> tuple[str, str]:
    """Keys of an IAM user allowed everything (moto checks them when auth is on)."""
    iam = moto.client("iam")
    name = "talon-static"
    if name not in [u["UserName"] for u in iam.list_users()["Users"]]:
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    found = iam.create_access_key(UserName=name)["AccessKey"]
    return found["AccessKeyId"], found["SecretAccessKey"]


def test_s3_role_arn_uploads_with_the_role(aws_env: Moto, cloud: Cloud) -> None:
    bucket = aws_env.bucket("s3-role")
    role = aws_env.role("talon-writer")
    before = len(aws_env.assumed_roles())
    acted = cloud(rules("aws:s3", bucket), aws__role_arn=role)
    assert output_note(acted).status == "success"
    assert aws_env.assumed_roles()[before:] == [(role, "talon", "")]
    assert list(aws_env.objects(bucket).values()) == [DATA]


def test_s3_role_credentials_are_refreshed_before_expiry(
        aws_env: Moto, cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials valid 15 minutes are within botocore's refresh window: each upload
    assumes the role again (with an hour, as configured, one AssumeRole serves both)."""
    bucket = aws_env.bucket("s3-refresh")
    role = aws_env.role("talon-writer")
    for seconds, calls in ((900, 2), (3600, 1)):
        monkeypatch.setattr(aws_client, "ROLE_SECONDS", seconds)
        before = len(aws_env.assumed_roles())
        acted = cloud(rules("aws:s3", bucket), event(), event(pod="web-2"),
                      aws__role_arn=role)
        assert [n.status for n in acted.notes if n.message == "output"] == ["success"] * 2
        assert len(aws_env.assumed_roles()) - before == calls


def test_s3_unreachable_endpoint(aws_env: Moto, cloud: Cloud,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    note = output_note(cloud(rules("aws:s3", "some-bucket")))
    assert note.status == "failure"
    assert re.fullmatch(r"the key '" + TS + r"_shop_web-1_log' could not be uploaded to the "
                        r"bucket 'some-bucket': Could not connect to the endpoint URL: .*",
                        note.error)


# --- minio:s3 ---------------------------------------------------------------------------


def test_minio_key_bytes_and_url(aws_env: Moto, cloud: Cloud) -> None:
    bucket = aws_env.bucket("minio-keys")
    acted = cloud(rules("minio:s3", bucket, prefix="/files"), **minio_settings(aws_env))
    assert acted.done == [("R", "A", "success")]
    (key, data), = aws_env.objects(bucket).items()
    assert re.fullmatch(r"files/" + TS + "_shop_web-1_log", key), key
    assert data == DATA
    note = output_note(acted)
    url = f"http://{aws_env.host_port}/{bucket}/{urllib.parse.quote(key)}"
    assert note.result.endswith(f"to the bucket '{bucket}' ({url})")
    assert note.objects["location"] == url


def test_minio_empty_prefix_and_scheme_in_endpoint(aws_env: Moto, cloud: Cloud) -> None:
    bucket = aws_env.bucket("minio-plain")
    settings = minio_settings(aws_env, minio__endpoint=f"http://{aws_env.host_port}/",
                              minio__use_ssl="true")
    acted = cloud(rules("minio:s3", bucket), **settings)
    assert output_note(acted).status == "success", output_note(acted).error
    (key,) = aws_env.objects(bucket)
    assert re.fullmatch(TS + "_shop_web-1_log", key), key


def test_minio_failures_name_bucket_and_key(aws_env: Moto, cloud: Cloud) -> None:
    missing = output_note(cloud(rules("minio:s3", "no-such-bucket"),
                                **minio_settings(aws_env)))
    assert missing.status == "failure"
    assert re.fullmatch(r"the key '" + TS + r"_shop_web-1_log' could not be uploaded to the "
                        r"bucket 'no-such-bucket': NoSuchBucket: .*", missing.error)
    unreachable = output_note(cloud(
        rules("minio:s3", "some-bucket"),
        **minio_settings(aws_env, minio__endpoint=f"127.0.0.1:{free_port()}")))
    assert "to the bucket 'some-bucket': " in unreachable.error
    assert "Connection refused" in unreachable.error
    unset = output_note(cloud(rules("minio:s3", "some-bucket")))
    assert unset.error.endswith("to the bucket 'some-bucket': minio.endpoint is not set")


def test_minio_wrong_credentials(aws_env: Moto, cloud: Cloud) -> None:
    bucket = aws_env.bucket("minio-auth")
    with aws_env.auth():
        note = output_note(cloud(rules("minio:s3", bucket), **minio_settings(aws_env)))
    assert note.status == "failure"
    assert f"to the bucket '{bucket}': InvalidAccessKeyId" in note.error
    assert aws_env.objects(bucket) == {}


# --- end to end -------------------------------------------------------------------------


def test_server_stores_artifact_in_s3(aws_env: Moto, start: Launch) -> None:
    bucket = aws_env.bucket("e2e-artifacts")
    server = start(f"""
        - rule: R
          actions:
            - action: A
              actionner: test:artifact
              parameters: {{name: capture.pcap, data: "e2e bytes"}}
              output: {{target: aws:s3, parameters: {{bucket: {bucket}, prefix: talon}}}}
        """, env=sdk_env(aws_env))
    assert server.post({"rule": "Any", "priority": "Warning", "output": "x",
                        "output_fields": {"k8s.pod.name": "web-1", "k8s.ns.name": "shop"}}
                       ) == 200
    text = server.wait_log(r'"message": "output".*"status": "success"', timeout=30)
    (key, data), = aws_env.objects(bucket).items()
    assert re.fullmatch(r"talon/" + TS + "_shop_web-1_capture.pcap", key), key
    assert data == b"e2e bytes"
    assert f"s3://{bucket}/{key}" in text
