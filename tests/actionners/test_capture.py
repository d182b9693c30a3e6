"""kubernetes:tcpdump and kubernetes:sysdig.

Driven through the real engine (`act`) or the real server (`start`), with the real client
talking to the fake API server; captures are scripted with `on_exec` (pcap-like bytes with
NUL and 0xFF, which must reach the local:file output unchanged).

Behaviours covered:
- tcpdump: one strategic-merge PATCH of pods/ephemeralcontainers adding
  `falco-talon-tcpdump-<5 hex>` (image, `sleep <duration + 30>`, target = first container,
  privileged, uid 0); wait until it runs; exec `timeout <duration> tcpdump -n -i any -s
  <snaplen> -w /tmp/tcpdump.pcap` in it, exit 124 (and 0) being success; snaplen 4096 by
  default (fix of B9) and as configured; `cat` of the pcap → artifact `tcpdump.pcap`, bytes
  exact; a container that never runs (with the kubelet's waiting reason) or ends early;
  tcpdump or cat failing; a capture longer than the action timeout is refused up front;
- sysdig: a Job in the pod's namespace pinned to the pod's node (labels, privileged, host
  `/` read-only at /host, HOST_ROOT, TTL, deadline), its pod found by the job-name label
  once running and ready, sysdig exec'd with duration, buffer size and (scope pod) the
  container-id filter of the pod, `cat` → artifact `sysdig.scap.gz`, objects with `job`;
  the Job is deleted (propagationPolicy Background) after success and after every failure
  once created; a failed delete keeps the capture; unscheduled pod, pod without started
  containers, Job pod failing or never ready, sysdig failing;
- for each: missing k8s fields (failure notified, no request), API errors 404/403/500 with
  the API's message, a timeout, dry-run sending nothing, and one end-to-end run through
  `python -m talon server` storing the capture with local:file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from talon.actionners.kubernetes import capture
from tests.actionners.conftest import assert_failed, event, no_pod_event, pod, wait_for, writes
from tests.actionners.test_execs import Act, answer, out, rules, serve_into, stored
from tests.fakes.kube_api import FakeKubeAPI, RecordedRequest
from tests.support import Launch

__all__ = ["out"]

PCAP = b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + bytes(range(256)) + b"\x00\xff\x00\xff\n\r"
SCAP = b"\x1f\x8b\x08\x00" + bytes(reversed(range(256))) + b"\x00\xff"
POD_PATH = "/api/v1/namespaces/shop/pods/web-1"
IDS = ("0123456789abcdef0123", "fedcba9876543210aaaa")


def argv0(call: Any) -> str:
    return str(call.argv[0])


# --- kubernetes:tcpdump -------------------------------------------------------------------


def tcpdump_answers(kube_api: FakeKubeAPI, code: int = 124,
                    err: bytes = b"tcpdump: listening on any\n") -> None:
    kube_api.on_exec(answer(code, b"", err), argv0="timeout")
    kube_api.on_exec(answer(0, PCAP), argv0="cat")


def ephemeral_patch(kube_api: FakeKubeAPI) -> RecordedRequest:
    [patch] = kube_api.requests_for("PATCH", POD_PATH + "/ephemeralcontainers")
    return patch


def test_tcpdump_captures_with_an_ephemeral_container(act: Act, kube_api: FakeKubeAPI,
                                                      out: Path) -> None:
    kube_api.add(pod(containers=("app", "side")))
    tcpdump_answers(kube_api)
    acted = act(rules("kubernetes:tcpdump", folder=out), event(**{"container.name": "side"}))
    assert acted.done == [("R", "A", "success")]
    note = acted.note("A")
    assert note.output == "a tcpdump 'tcpdump.pcap' has been created"
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop"}
    patch = ephemeral_patch(kube_api)
    assert patch.content_type == "application/strategic-merge-patch+json"
    [container] = patch.body["spec"]["ephemeralContainers"]
    name = container.pop("name")
    assert re.fullmatch(r"falco-talon-tcpdump-[0-9a-f]{5}", name)
    assert container == {"image": "issif/tcpdump:latest", "command": ["sleep", "35"],
                         "targetContainerName": "app", "stdin": False, "tty": False,
                         "securityContext": {"privileged": True, "runAsUser": 0}}
    stored_pod = kube_api.get("pods", "shop", "web-1")
    assert stored_pod is not None
    assert [c["name"] for c in stored_pod["spec"]["ephemeralContainers"]] == [name]
    capture_call, cat_call = kube_api.execs
    assert (capture_call.container, cat_call.container) == (name, name)
    assert capture_call.argv == ["timeout", "5", "tcpdump", "-n", "-i", "any", "-s", "4096",
                                 "-w", "/tmp/tcpdump.pcap"]
    assert cat_call.argv == ["cat", "--", "/tmp/tcpdump.pcap"]
    assert acted.note("A", "output").status == "success"
    assert stored(out) == PCAP
    assert next(out.iterdir()).name.endswith("_shop_web-1_tcpdump.pcap")


def test_tcpdump_parameters(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
    kube_api.add(pod())
    tcpdump_answers(kube_api, code=0)
    acted = act(rules("kubernetes:tcpdump", {"duration": 10, "snaplen": 1024,
                                             "image": "registry.local/tcpdump:4.99"},
                      folder=out), event())
    assert acted.done == [("R", "A", "success")]
    [container] = ephemeral_patch(kube_api).body["spec"]["ephemeralContainers"]
    assert (container["image"], container["command"]) == ("registry.local/tcpdump:4.99",
                                                          ["sleep", "40"])
    assert kube_api.execs[0].argv[:2] == ["timeout", "10"]
    assert kube_api.execs[0].argv[6:8] == ["-s", "1024"]
    assert stored(out) == PCAP


def test_tcpdump_snaplen_zero_is_passed_through(act: Act, kube_api: FakeKubeAPI,
                                                out: Path) -> None:
    kube_api.add(pod())
    tcpdump_answers(kube_api)
    act(rules("kubernetes:tcpdump", {"snaplen": 0}, folder=out), event())
    assert kube_api.execs[0].argv[6:8] == ["-s", "0"]


def test_tcpdump_failure_and_unreadable_pcap(act: Act, kube_api: FakeKubeAPI,
                                             out: Path) -> None:
    kube_api.add(pod())
    tcpdump_answers(kube_api, code=1, err=b"tcpdump: any: No such device exists\n")
    note = assert_failed(act(rules("kubernetes:tcpdump", folder=out), event()),
                         "tcpdump: any: No such device exists")
    assert note.error.startswith("tcpdump failed: the command exited with code 1")
    assert [argv0(c) for c in kube_api.execs] == ["timeout"]
    tcpdump_answers(kube_api)
    kube_api.on_exec(answer(1, b"", b"cat: /tmp/tcpdump.pcap: No such file\n"), argv0="cat")
    assert_failed(act(rules("kubernetes:tcpdump", folder=out), event()),
                  "cannot read '/tmp/tcpdump.pcap'")
    assert list(out.iterdir()) == []


def test_tcpdump_container_never_running(act: Act, kube_api: FakeKubeAPI, out: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture, "EPHEMERAL_WAIT", 0.7)
    kube_api.add(pod())
    kube_api.run_ephemeral_containers = False

    def pulling(verb: str, resource: str, obj: dict[str, Any]) -> None:
        if verb == "patch" and resource == "pods" and obj["spec"].get("ephemeralContainers"):
            name = obj["spec"]["ephemeralContainers"][0]["name"]
            obj["status"]["ephemeralContainerStatuses"] = [{
                "name": name, "image": "x", "imageID": "", "ready": False, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff",
                                      "message": "Back-off pulling image"}}}]
            kube_api.add(obj)

    kube_api.on_write(pulling)
    tcpdump_answers(kube_api)
    note = assert_failed(act(rules("kubernetes:tcpdump", folder=out), event()),
                         "ephemeral container for the tcpdump not ready in the pod 'web-1' "
                         "in the namespace 'shop' (ImagePullBackOff: Back-off pulling image)")
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop"}
    assert kube_api.execs == []


def test_tcpdump_container_that_ended(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
    kube_api.add(pod())
    kube_api.run_ephemeral_containers = False

    def crashed(verb: str, resource: str, obj: dict[str, Any]) -> None:
        if verb == "patch" and obj["spec"].get("ephemeralContainers"):
            name = obj["spec"]["ephemeralContainers"][0]["name"]
            obj["status"]["ephemeralContainerStatuses"] = [{
                "name": name, "image": "x", "imageID": "", "ready": False, "restartCount": 0,
                "state": {"terminated": {"exitCode": 128, "reason": "StartError"}}}]
            kube_api.add(obj)

    kube_api.on_write(crashed)
    assert_failed(act(rules("kubernetes:tcpdump", folder=out), event()),
                  "ended before the capture: StartError")
    assert kube_api.execs == []


def test_tcpdump_longer_than_the_action_timeout(act: Act, kube_api: FakeKubeAPI,
                                                out: Path) -> None:
    kube_api.add(pod())
    acted = act(rules("kubernetes:tcpdump", {"duration": 60}, folder=out), event(),
                action_timeout=30)
    assert_failed(acted, "a 60s capture can't finish within the action timeout")
    assert writes(kube_api) == []


@pytest.mark.parametrize(("method", "path", "status", "message"), [
    ("PATCH", "/ephemeralcontainers$", 403,
     'cannot patch resource "pods/ephemeralcontainers"'),
    ("PATCH", "/ephemeralcontainers$", 422, "EphemeralContainers are disabled"),
    ("GET", "/exec$", 500, "kubelet is unreachable"),
    ("GET", POD_PATH + "$", 404, "doesn't exist"),
])
def test_tcpdump_api_errors(act: Act, kube_api: FakeKubeAPI, out: Path, method: str,
                            path: str, status: int, message: str) -> None:
    kube_api.add(pod())
    tcpdump_answers(kube_api)
    if status == 403:
        kube_api.forbid(method, path)
    else:
        kube_api.fail(method, path, status, message=message)
    assert_failed(act(rules("kubernetes:tcpdump", folder=out), event()), message)
    assert list(out.iterdir()) == []


def test_tcpdump_missing_fields_timeout_dry_run(act: Act, kube_api: FakeKubeAPI,
                                                out: Path) -> None:
    action = rules("kubernetes:tcpdump", {"duration": 1}, folder=out)
    assert_failed(act(action, no_pod_event()), "k8s.pod.name")
    assert kube_api.requests == []
    kube_api.add(pod())
    tcpdump_answers(kube_api)
    assert act(action, event(), dry_run=True).done == [("R", "A", "dry_run")]
    assert kube_api.requests == []
    kube_api.delay("PATCH", "/ephemeralcontainers$", 3)
    assert_failed(act(action, event(), action_timeout=1.5), "did not finish within 1.5s")


def test_tcpdump_end_to_end(start: Launch, kube_api: FakeKubeAPI, kube_config: Path,
                            tmp_path: Path) -> None:
    kube_api.add(pod())
    tcpdump_answers(kube_api)
    folder = tmp_path / "pcaps"
    server = serve_into(start, kube_config, folder, "kubernetes:tcpdump", {"duration": 2})
    assert stored(folder) == PCAP
    assert kube_api.execs[0].argv[:2] == ["timeout", "2"]
    server.wait_log("has been copied to")


# --- kubernetes:sysdig --------------------------------------------------------------------


def target_pod(node: str | None = "node-1", ids: tuple[str, ...] = IDS) -> dict[str, Any]:
    manifest = pod(node=node or "", containers=tuple(f"c{i}" for i in range(len(ids))) or ("app",))
    if node is None:
        manifest["spec"].pop("nodeName")
    manifest["status"]["containerStatuses"] = [
        {"name": f"c{i}", "image": "nginx", "imageID": "", "ready": True, "restartCount": 0,
         "containerID": f"containerd://{cid}", "state": {"running": {}}}
        for i, cid in enumerate(ids)]
    return manifest


def run_jobs(kube_api: FakeKubeAPI, phase: str = "Running", ready: bool = True) -> None:
    """Stand in for the Job controller and kubelet: each new Job gets a pod."""
    def hook(verb: str, resource: str, obj: dict[str, Any]) -> None:
        if verb != "create" or resource != "jobs.batch":
            return
        job = obj["metadata"]["name"]
        spec = obj["spec"]["template"]["spec"]
        kube_api.add({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{job}-x7k2p", "namespace": obj["metadata"]["namespace"],
                         "labels": {"batch.kubernetes.io/job-name": job}},
            "spec": spec,
            "status": {"phase": phase, "containerStatuses": [
                {"name": "sysdig", "image": "x", "imageID": "", "ready": ready,
                 "restartCount": 0, "state": {"running": {}}}]}})
    kube_api.on_write(hook)


def sysdig_answers(kube_api: FakeKubeAPI, code: int = 0, err: bytes = b"") -> None:
    kube_api.on_exec(answer(code, b"", err), argv0="sysdig")
    kube_api.on_exec(answer(0, SCAP), argv0="cat")


def created_job(kube_api: FakeKubeAPI) -> dict[str, Any]:
    [request] = kube_api.requests_for("POST", "/apis/batch/v1/namespaces/shop/jobs")
    return dict(request.body)


def job_deleted(kube_api: FakeKubeAPI, name: str) -> bool:
    return [(d.resource, d.namespace, d.name, d.propagation_policy)
            for d in kube_api.deletions] == [("jobs.batch", "shop", name, "Background")]


def test_sysdig_captures_the_pods_containers(act: Act, kube_api: FakeKubeAPI,
                                             out: Path) -> None:
    kube_api.add(target_pod())
    run_jobs(kube_api)
    sysdig_answers(kube_api)
    acted = act(rules("kubernetes:sysdig", folder=out), event())
    assert acted.done == [("R", "A", "success")]
    job = created_job(kube_api)
    name = job["metadata"]["name"]
    assert re.fullmatch(r"falco-talon-sysdig-[0-9a-f]{5}", name)
    note = acted.note("A")
    assert note.output == "a sysdig capture 'sysdig.scap.gz' has been created"
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop", "job": name}
    sysdig_call, cat_call = kube_api.execs
    assert (sysdig_call.pod, sysdig_call.container) == (f"{name}-x7k2p", "sysdig")
    assert sysdig_call.argv == [
        "sysdig", "--modern-bpf", "--cri", "/run/containerd/containerd.sock", "-M", "5",
        "-s", "2048", "-z", "-w", "/tmp/sysdig.scap.gz",
        "container.id in (0123456789ab, fedcba987654)"]
    assert cat_call.argv == ["cat", "--", "/tmp/sysdig.scap.gz"]
    assert stored(out) == SCAP
    assert next(out.iterdir()).name.endswith("_shop_web-1_sysdig.scap.gz")
    assert job_deleted(kube_api, name)
    assert kube_api.get("jobs", "shop", name) is None


def test_sysdig_job_manifest(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
    kube_api.add(target_pod(node="worker-7"))
    run_jobs(kube_api)
    sysdig_answers(kube_api)
    act(rules("kubernetes:sysdig", {"image": "mirror.local/sysdig:0.38"}, folder=out),
        event(), action_timeout=40)
    job = created_job(kube_api)
    labels = {"app.kubernetes.io/managed-by": "falco-talon",
              "app.kubernetes.io/name": "falco-talon-sysdig",
              "app.kubernetes.io/part-of": "falco-talon"}
    assert job["metadata"]["labels"] == labels
    end_at = job["metadata"]["annotations"]["end-at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", end_at)
    spec = job["spec"]
    assert (spec["ttlSecondsAfterFinished"], spec["backoffLimit"], spec["completions"]) == (
        3600, 0, 1)
    pod_spec = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"] == labels
    assert (pod_spec["nodeName"], pod_spec["restartPolicy"]) == ("worker-7", "Never")
    assert pod_spec["volumes"] == [{"name": "host", "hostPath": {"path": "/"}}]
    [container] = pod_spec["containers"]
    assert container["image"] == "mirror.local/sysdig:0.38"
    assert container["securityContext"] == {"privileged": True, "runAsUser": 0}
    assert container["volumeMounts"] == [{"name": "host", "mountPath": "/host",
                                          "readOnly": True}]
    assert container["env"] == [{"name": "HOST_ROOT", "value": "/host"}]
    lifetime = int(container["command"][1])
    assert container["command"][0] == "sleep" and 40 <= lifetime <= 50
    assert spec["activeDeadlineSeconds"] == lifetime + 5


def test_sysdig_scope_node_and_parameters(act: Act, kube_api: FakeKubeAPI,
                                          out: Path) -> None:
    kube_api.add(target_pod(ids=()))
    run_jobs(kube_api)
    sysdig_answers(kube_api)
    acted = act(rules("kubernetes:sysdig", {"scope": "node", "duration": 12,
                                            "buffer_size": 4096}, folder=out), event())
    assert acted.done == [("R", "A", "success")]
    assert kube_api.execs[0].argv == [
        "sysdig", "--modern-bpf", "--cri", "/run/containerd/containerd.sock", "-M", "12",
        "-s", "4096", "-z", "-w", "/tmp/sysdig.scap.gz"]


def test_sysdig_refusals_before_any_job(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
    kube_api.add(target_pod(node=None))
    assert_failed(act(rules("kubernetes:sysdig", folder=out), event()),
                  "the pod 'web-1' in the namespace 'shop' is not scheduled on a node")
    kube_api.add(target_pod(ids=()))
    assert_failed(act(rules("kubernetes:sysdig", folder=out), event()),
                  "the pod 'web-1' has no started container to capture")
    assert_failed(act(rules("kubernetes:sysdig", {"duration": 30}, folder=out), event(),
                      action_timeout=20), "a 30s capture can't finish")
    assert writes(kube_api) == []


def test_sysdig_failures_delete_the_job(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
    kube_api.add(target_pod())
    run_jobs(kube_api)
    sysdig_answers(kube_api, code=1, err=b"Unable to load the BPF probe\n")
    note = assert_failed(act(rules("kubernetes:sysdig", folder=out), event()),
                         "sysdig failed: the command exited with code 1 in the container "
                         "'sysdig': Unable to load the BPF probe")
    assert job_deleted(kube_api, dict(note.objects)["job"])
    assert [argv0(c) for c in kube_api.execs] == ["sysdig"]
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(("phase", "ready", "error"), [
    ("Failed", False, "ended (Failed)"),
    ("Running", False, "for the sysdig capture is not ready"),
    ("Pending", False, "for the sysdig capture is not ready"),
])
def test_sysdig_job_pod_not_ready(act: Act, kube_api: FakeKubeAPI, out: Path,
                                  monkeypatch: pytest.MonkeyPatch, phase: str, ready: bool,
                                  error: str) -> None:
    monkeypatch.setattr(capture, "JOB_POD_WAIT", 0.7)
    kube_api.add(target_pod())
    run_jobs(kube_api, phase=phase, ready=ready)
    sysdig_answers(kube_api)
    note = assert_failed(act(rules("kubernetes:sysdig", folder=out), event()), error)
    assert job_deleted(kube_api, dict(note.objects)["job"])
    assert kube_api.execs == []


def test_sysdig_failed_cleanup_keeps_the_capture(act: Act, kube_api: FakeKubeAPI, out: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    kube_api.add(target_pod())
    run_jobs(kube_api)
    sysdig_answers(kube_api)
    kube_api.fail("DELETE", "/jobs/", 500, message="etcd leader changed")
    acted = act(rules("kubernetes:sysdig", folder=out), event())
    assert acted.done == [("R", "A", "success")]
    assert stored(out) == SCAP
    assert "etcd leader changed" in caplog.text
    assert kube_api.deletions == []


@pytest.mark.parametrize(("method", "path", "status", "message"), [
    ("POST", "/jobs$", 403, 'cannot create resource "jobs"'),
    ("POST", "/jobs$", 500, "admission webhook timed out"),
    ("GET", "/pods$", 500, "cannot list the pods of the job"),
    ("GET", "/exec$", 404, "injected failure 404"),
])
def test_sysdig_api_errors(act: Act, kube_api: FakeKubeAPI, out: Path, method: str,
                           path: str, status: int, message: str) -> None:
    kube_api.add(target_pod())
    run_jobs(kube_api)
    sysdig_answers(kube_api)
    if status == 403:
        kube_api.forbid(method, path)
    else:
        kube_api.fail(method, path, status,
                      message=None if "injected" in message else message)
    note = assert_failed(act(rules("kubernetes:sysdig", folder=out), event()), message)
    if method == "POST":
        assert kube_api.deletions == []
    else:
        assert job_deleted(kube_api, dict(note.objects)["job"])


def test_sysdig_missing_fields_missing_pod_timeout_dry_run(act: Act, kube_api: FakeKubeAPI,
                                                           out: Path) -> None:
    action = rules("kubernetes:sysdig", {"duration": 1}, folder=out)
    assert_failed(act(action, no_pod_event()), "k8s.pod.name")
    assert kube_api.requests == []
    assert_failed(act(action, event()), "doesn't exist")
    kube_api.add(target_pod())
    run_jobs(kube_api)
    sysdig_answers(kube_api)
    assert act(action, event(), dry_run=True).done == [("R", "A", "dry_run")]
    assert writes(kube_api) == []
    kube_api.delay("POST", "/jobs$", 3)
    assert_failed(act(action, event(), action_timeout=1.5), "did not finish within 1.5s")


def test_sysdig_end_to_end(start: Launch, kube_api: FakeKubeAPI, kube_config: Path,
                           tmp_path: Path) -> None:
    kube_api.add(target_pod())
    run_jobs(kube_api)
    sysdig_answers(kube_api)
    folder = tmp_path / "scaps"
    server = serve_into(start, kube_config, folder, "kubernetes:sysdig", {"duration": 2})
    wait_for(lambda: bool(kube_api.deletions))
    assert stored(folder) == SCAP
    assert kube_api.execs[0].argv[4:6] == ["-M", "2"]
    assert kube_api.deletions[0].propagation_policy == "Background"
    server.wait_log("has been copied to")
