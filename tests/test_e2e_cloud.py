"""End to end: every parameter of the cloud and CNI plug-ins through one running server.

`python -m talon server` runs as a subprocess with its configuration's `aws.*`
(role_arn, external_id, region) and `minio.*` settings, the SDKs' environment pointed at a
moto server (S3, STS, Lambda; also MinIO's S3 endpoint), a fake IMDSv2 server, and a
kubeconfig for the fake API server serving the Calico and Cilium APIs. One event runs a
rule that calls every plug-in with every parameter; asserted is what arrived: the role
moto saw assumed with the external id, the Lambda qualifier and invocation type, the
context keys, the objects in both buckets, the Calico and Cilium policies stored. Then a
missing bucket: the failure is logged, counted in /metrics and notified to a webhook, and
the next event is still processed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.actionners.conftest import pod
from tests.actionners.test_networkpolicy import workload
from tests.fakes.aws import FakeImds, Moto, aws_env, imds, moto, sdk_env
from tests.fakes.kube_api import FakeKubeAPI, kube_api, kube_config
from tests.notifiers.sinks import HttpSink
from tests.support import Launch, start, wait_until

__all__ = ["aws_env", "imds", "kube_api", "kube_config", "moto", "start"]

REMOTE = "198.51.100.7"


def rules(bucket: str, missing: str) -> str:
    return f"""
        - rule: Contain
          match: {{rules: [Cloud]}}
          actions:
            - action: Call
              actionner: aws:lambda
              parameters:
                aws_lambda_name: echo
                aws_lambda_alias_or_version: live
                aws_lambda_invocation_type: Event
              additional_contexts: [aws]
            - action: To S3
              actionner: test:artifact
              parameters: {{name: capture.pcap, data: "s3 bytes"}}
              output:
                target: aws:s3
                parameters: {{bucket: {bucket}, prefix: /evidence/, region: us-east-1}}
            - action: To MinIO
              actionner: test:artifact
              parameters: {{name: logs.txt, data: "minio bytes"}}
              output: {{target: minio:s3, parameters: {{bucket: {bucket}, prefix: minio}}}}
            - action: Calico
              actionner: calico:networkpolicy
              parameters: {{order: 10, allow_cidr: [10.0.0.0/8], allow_namespaces: [dns]}}
            - action: Cilium
              actionner: cilium:networkpolicy
              parameters: {{allow_cidr: [10.0.0.0/8], allow_namespaces: [dns]}}
        - rule: Broken
          match: {{rules: [Broken]}}
          actions:
            - action: Lost
              actionner: test:artifact
              parameters: {{name: lost.txt}}
              output: {{target: aws:s3, parameters: {{bucket: {missing}}}}}
        """


def config(kube_config: Path, role: str, moto: Moto, sink: HttpSink) -> str:
    return f"""
        kubeconfig: {kube_config}
        deduplication: {{time_window_seconds: 0}}
        aws: {{role_arn: "{role}", external_id: ext-42, region: us-east-1}}
        minio: {{endpoint: "{moto.host_port}", access_key: talon-e2e-access,
                 secret_key: talon-e2e-secret-key, use_ssl: false}}
        default_notifiers: [webhook]
        notifiers: {{webhook: {{url: "{sink.url}/talon"}}}}
        """


def event(rule: str, pod_name: str = "web-1") -> dict[str, Any]:
    return {"rule": rule, "priority": "Warning", "output": f"{rule} on {pod_name}",
            "output_fields": {"k8s.pod.name": pod_name, "k8s.ns.name": "shop",
                              "fd.rip": REMOTE}}


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in text.splitlines() if raw.startswith("{")]


def test_every_cloud_and_cni_parameter_through_the_server(
        aws_env: Moto, imds: FakeImds, kube_api: FakeKubeAPI, kube_config: Path,
        start: Launch) -> None:
    aws_env.function("echo")
    role = aws_env.role("talon-responder")
    bucket = aws_env.bucket("e2e-evidence")
    kube_api.add(pod("web-1", labels={"app": "web", "pod-template-hash": "5d9c"}))
    kube_api.add(workload("ReplicaSet", "web-5d9c", {"app": "web", "pod-template-hash": "5d9c"},
                          owner=("Deployment", "web")))
    before = len(aws_env.assumed_roles())
    with HttpSink() as sink:
        server = start(rules(bucket, "no-such-bucket"), config(kube_config, role, aws_env, sink),
                       env={**sdk_env(aws_env), "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url})
        assert server.post(event("Cloud")) == 200
        text = server.wait_log(r'"action": "Cilium".*"status": "(success|failure)"', 60)
        done = {(x.get("action"), x.get("message")): x for x in lines(text)
                if x.get("status") in ("success", "failure")}
        for action in ("Call", "Calico", "Cilium"):
            assert done[(action, "action")]["status"] == "success", done[(action, "action")]
        for action in ("To S3", "To MinIO"):
            assert done[(action, "output")]["status"] == "success", done[(action, "output")]

        call = done[("Call", "action")]
        assert (call["qualifier"], call["invocation_type"], call["status_code"]) == (
            "live", "Event", "202")
        assert (role, "talon", "ext-42") in aws_env.assumed_roles()[before:]

        stored = aws_env.objects(bucket)
        [s3_key] = [k for k in stored if k.startswith("evidence/")]
        [minio_key] = [k for k in stored if k.startswith("minio/")]
        assert re.fullmatch(r"evidence/[\dT:Z-]+_shop_web-1_capture\.pcap", s3_key)
        assert (stored[s3_key], stored[minio_key]) == (b"s3 bytes", b"minio bytes")
        assert done[("To S3", "output")]["location"] == f"s3://{bucket}/{s3_key}"
        assert done[("To S3", "output")]["region"] == "us-east-1"
        assert done[("To MinIO", "output")]["location"].endswith(f"/{bucket}/{minio_key}")

        calico = kube_api.get("NetworkPolicy", "shop", "web", api_version="projectcalico.org/v3")
        assert calico is not None and calico["spec"]["order"] == 10
        egress = json.dumps(calico["spec"]["egress"])
        assert f"{REMOTE}/32" in egress and "10.0.0.0/8" in egress
        assert "kubernetes.io/metadata.name in { 'dns' }" in egress
        cilium = kube_api.get("CiliumNetworkPolicy", "shop", "web", api_version="cilium.io/v2")
        assert cilium is not None
        assert json.dumps(cilium["spec"]["egressDeny"]).count(f"{REMOTE}/32") == 1
        assert "10.0.0.0/8" in json.dumps(cilium["spec"]["egress"])
        assert imds.tokens_issued >= 1                     # the aws context was read

        assert server.post(event("Broken")) == 200
        failed = server.wait_log(r'"action": "Lost".*"status": "failure"', 30)
        [lost] = [x for x in lines(failed) if x.get("action") == "Lost"
                  and x.get("status") == "failure"]
        assert "could not be uploaded to the bucket 'no-such-bucket'" in lost["error"]
        _status, metrics = server.request("GET", "/metrics")
        assert re.search(rb'output_total\{action="Lost",rule="Broken",status="failure",'
                         rb'target="aws:s3"\} 1\.0', metrics), metrics
        wait_until(lambda: any(b'"Lost"' in r.body and b'"failure"' in r.body
                               for r in sink.requests), timeout=30, interval=0.1)

        assert server.post(event("Cloud", "web-1")) == 200   # still processing
        server.wait_log(r'"action": "Call".*"status": "success"(.|\n)*'
                        r'"action": "Call".*"status": "success"', 60)
