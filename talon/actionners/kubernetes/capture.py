"""Kubernetes actionners that capture what the event's pod does: tcpdump, sysdig.

Layer L2 (plug-in). Both run a capture tool from a container image and hand the capture
file to the required output; both stop the rule's next actions by default, as the Go
version does. In an air-gapped cluster, `image` must name a mirrored copy.

`image` may be pinned by digest (`name[:tag]@sha256:<64 hex>`): the node then runs exactly
that image, whatever the tag later points to. The defaults stay the Go version's tags
(no digest of them can be vouched for here), so `rules check` warns about every image not
pinned, the defaults included; a malformed digest is an error.

- tcpdump adds an ephemeral container (`falco-talon-tcpdump-<5 hex>`, privileged, sleeping
  `duration + 30` s) to the pod, waits for it to run, execs
  `timeout <duration> tcpdump -n -i any -s <snaplen> -w /tmp/tcpdump.pcap` (exit 124, the
  timeout, is the normal end) and reads the file back. Ephemeral containers can't be
  removed: it ends when its sleep does. `snaplen` defaults to 4096 (the Go version left 0).
- sysdig creates a privileged Job pinned to the pod's node (host `/` mounted read-only at
  `/host`), waits for its pod, execs sysdig (filtered on the pod's container ids for scope
  `pod`), reads the capture back, then deletes the Job (the Go version left it to the TTL).
Commands are argv lists: nothing here goes through a shell.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from talon.actionners.kubernetes import _stream, common, execs, pods, rbac
from talon.plugin import (
    ActionContext,
    ActionError,
    Artifact,
    ParamValueError,
    Result,
    actionner,
)

T = TypeVar("T")

TCPDUMP_IMAGE = "issif/tcpdump:latest"
SYSDIG_IMAGE = "issif/sysdig:latest"
_AIRGAP = ("; pin it as name@sha256:<digest>; in an air-gapped cluster, point it at a "
           "mirrored copy")
_PINNED = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")


def check_image(image: str) -> None:
    """Raise ParamValueError when `image` carries a digest that is not `sha256:<64 hex>`."""
    if "@" in image and not _PINNED.fullmatch(image):
        raise ParamValueError("image", f"malformed digest in '{image}': expected "
                                       "name[:tag]@sha256:<64 lower-case hex digits>")


def image_advice(image: str) -> list[tuple[str, str]]:
    """A warning when `image` is not pinned by digest."""
    if _PINNED.fullmatch(image):
        return []
    return [("image", f"the image '{image}' is not pinned by digest: the node runs whatever "
                      "the tag points to when it pulls (pullPolicy Always); set "
                      "name@sha256:<digest> of an image you have verified")]


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpdumpParams:
    """Parameters of kubernetes:tcpdump."""

    duration: int = field(default=5, metadata={
        "min": 1, "max": 3600, "help": "Duration of the capture, in seconds"})
    snaplen: int = field(default=4096, metadata={
        "min": 0,
        "help": "Bytes captured per packet; 0 lets tcpdump use its own default (262144)"})
    image: str = field(default=TCPDUMP_IMAGE, metadata={
        "help": f"Image of the ephemeral container running tcpdump{_AIRGAP}"})

    def __post_init__(self) -> None:
        check_image(self.image)

    def advice(self) -> list[tuple[str, str]]:
        """Warnings for `rules check`: the image is not pinned by digest."""
        return image_advice(self.image)


@dataclass(frozen=True, slots=True, kw_only=True)
class SysdigParams:
    """Parameters of kubernetes:sysdig."""

    duration: int = field(default=5, metadata={
        "min": 1, "max": 30, "help": "Duration of the capture, in seconds"})
    buffer_size: int = field(default=2048, metadata={
        "min": 128, "help": "Bytes captured from each I/O buffer (sysdig -s)"})
    scope: Literal["pod", "node"] = field(default="pod", metadata={
        "help": "Capture the syscalls of the pod's containers only ('pod') or of its whole "
                "node ('node')"})
    image: str = field(default=SYSDIG_IMAGE, metadata={
        "help": f"Image of the privileged Job running sysdig on the pod's node{_AIRGAP}"})

    def __post_init__(self) -> None:
        check_image(self.image)

    def advice(self) -> list[tuple[str, str]]:
        """Warnings for `rules check`: the image is not pinned by digest."""
        return image_advice(self.image)


TCPDUMP_EXAMPLE = """\
- action: Capture the network packets of the pod
  actionner: kubernetes:tcpdump
  parameters:
    duration: 10
    snaplen: 1024
  output:
    target: aws:s3
    parameters:
      bucket: my-bucket
      prefix: /captures/
"""

SYSDIG_EXAMPLE = """\
- action: Capture the syscalls of the pod
  actionner: kubernetes:sysdig
  parameters:
    duration: 10
    buffer_size: 4096
    scope: pod
  output:
    target: minio:s3
    parameters:
      bucket: captures
      prefix: /sysdig/
"""

POLL_SECONDS = 0.3
EPHEMERAL_WAIT = 20.0
JOB_POD_WAIT = 60.0
TCPDUMP_PREFIX = "falco-talon-tcpdump-"
TCPDUMP_FILE = "/tmp/tcpdump.pcap"  # noqa: S108 - inside the capture container
TCPDUMP_SLEEP_MARGIN = 30
TIMEOUT_EXIT = 124
"""Exit code of `timeout` when it stopped the command: the end of a normal capture."""
SYSDIG_PREFIX = "falco-talon-sysdig-"
SYSDIG_CONTAINER = "sysdig"
SYSDIG_FILE = "/tmp/sysdig.scap.gz"  # noqa: S108 - inside the capture container
CRI_SOCKET = "/run/containerd/containerd.sock"
"""Relative to HOST_ROOT, which sysdig prepends to the CRI socket path."""
HOST_ROOT = "/host"
JOB_LABELS = {"app.kubernetes.io/managed-by": "falco-talon",
              "app.kubernetes.io/name": "falco-talon-sysdig",
              "app.kubernetes.io/part-of": "falco-talon"}
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
_CONTAINER_ID = re.compile(r"[0-9a-f]{12}")


# --- shared helpers -----------------------------------------------------------------------


def suffix() -> str:
    """5 random lowercase hex characters, for object names."""
    return secrets.token_hex(3)[:5]


def poll(deadline: float, limit: float, probe: Callable[[], T | None]) -> T | None:
    """Call `probe` every POLL_SECONDS until it returns a value, for at most `limit` seconds
    and never past `deadline`; None when time ran out."""
    end = min(deadline, time.monotonic() + limit)
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() + POLL_SECONDS > end:
            return None
        time.sleep(POLL_SECONDS)


def check_time(ctx: ActionContext, duration: int) -> None:
    """Refuse a capture that can't end before the action's deadline."""
    left = ctx.deadline - time.monotonic()
    if left <= duration:
        raise ActionError(f"a {duration}s capture can't finish within the action timeout "
                          f"({left:.0f}s left): lower 'duration' or raise "
                          "action_timeout_seconds")


def read_back(ctx: ActionContext, namespace: str, pod: str, container: str,
              path: str) -> bytes:
    """The exact bytes of `path` in the container (`cat -- <path>`)."""
    done = _stream.run(ctx, namespace, pod, container, ["cat", "--", path])
    if not done.ok:
        raise ActionError(f"cannot read '{path}': {execs.failure_text(done, container)}")
    return done.stdout


def _state(status: Any) -> tuple[str, str]:
    """("running" | "terminated" | "waiting" | "", reason) of a V1ContainerStatus."""
    state = getattr(status, "state", None)
    for name in ("running", "terminated", "waiting"):
        detail = getattr(state, name, None) if state is not None else None
        if detail is not None:
            reason = getattr(detail, "reason", None) or ""
            message = getattr(detail, "message", None) or ""
            return name, f"{reason}: {message}" if reason and message else reason
    return "", ""


# --- kubernetes:tcpdump -------------------------------------------------------------------


def ephemeral_container(name: str, p: TcpdumpParams, target: str) -> dict[str, Any]:
    """The ephemeral container running the capture (it only sleeps; tcpdump is exec'd)."""
    return {"name": name, "image": p.image,
            "command": ["sleep", str(p.duration + TCPDUMP_SLEEP_MARGIN)],
            "targetContainerName": target, "stdin": False, "tty": False,
            "securityContext": {"privileged": True, "runAsUser": 0}}


def _add_ephemeral(ctx: ActionContext, namespace: str, name: str,
                   container: dict[str, Any]) -> None:
    k = common.kube(ctx)
    try:
        k.core.patch_namespaced_pod_ephemeralcontainers(
            name, namespace, {"spec": {"ephemeralContainers": [container]}},
            _content_type="application/strategic-merge-patch+json",
            _request_timeout=k.timeout)
    except Exception as exc:
        raise ActionError(f"cannot add the ephemeral container '{container['name']}' to the "
                          f"pod '{name}' in the namespace '{namespace}': "
                          f"{common.api_error(exc)}") from exc


def _wait_ephemeral(ctx: ActionContext, namespace: str, name: str, container: str) -> None:
    last = {"reason": ""}

    def running() -> bool | None:
        pod = common.get_pod(ctx, fresh=True)
        for status in getattr(pod.status, "ephemeral_container_statuses", None) or []:
            if status.name != container:
                continue
            state, last["reason"] = _state(status)
            if state == "terminated":
                raise ActionError(f"the ephemeral container '{container}' ended before the "
                                  f"capture: {last['reason'] or 'terminated'}")
            return True if state == "running" else None
        return None

    if poll(ctx.deadline, EPHEMERAL_WAIT, running) is None:
        why = f" ({last['reason']})" if last["reason"] else ""
        raise ActionError(f"ephemeral container for the tcpdump not ready in the pod '{name}' "
                          f"in the namespace '{namespace}'{why}")


def tcpdump_argv(p: TcpdumpParams) -> list[str]:
    return ["timeout", str(p.duration), "tcpdump", "-n", "-i", "any", "-s", str(p.snaplen),
            "-w", TCPDUMP_FILE]


def _tcpdump(ctx: ActionContext, namespace: str, name: str,
             objects: dict[str, str]) -> Result:
    p: TcpdumpParams = ctx.params
    check_time(ctx, p.duration)
    targets = execs.container_names(common.get_pod(ctx))
    if not targets:
        raise ActionError(f"the pod '{name}' has no container")
    container = TCPDUMP_PREFIX + suffix()
    _add_ephemeral(ctx, namespace, name, ephemeral_container(container, p, targets[0]))
    _wait_ephemeral(ctx, namespace, name, container)
    done = _stream.run(ctx, namespace, name, container, tcpdump_argv(p))
    if done.exit_code not in (0, TIMEOUT_EXIT):
        raise ActionError(f"tcpdump failed: {execs.failure_text(done, container)}")
    data = read_back(ctx, namespace, name, container, TCPDUMP_FILE)
    return Result(output="a tcpdump 'tcpdump.pcap' has been created", objects=objects,
                  artifact=Artifact(name="tcpdump.pcap", data=data,
                                    content_type="application/vnd.tcpdump.pcap"))


@actionner(
    pods.CATEGORY, "tcpdump",
    disruptive=True, checks=(common.pod_exists,), params=TcpdumpParams,
    description="Capture the network packets for the pod",
    default_continue=False, require_output=True,
    required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=(rbac.PODS_GET, rbac.PODS_EPHEMERAL_CONTAINERS,
                 rbac.PODS_EXEC),
    example=TCPDUMP_EXAMPLE,
)
def tcpdump(ctx: ActionContext) -> Result:
    """Capture the pod's packets for `duration` seconds (artifact `tcpdump.pcap`)."""
    namespace, name = common.pod_target(ctx)
    objects = common.pod_objects(namespace, name)
    return common.report_failures(objects, lambda: _tcpdump(ctx, namespace, name, objects))


# --- kubernetes:sysdig --------------------------------------------------------------------


def sysdig_job(name: str, node: str, image: str, lifetime: int) -> dict[str, Any]:
    """A Job whose one privileged pod sleeps `lifetime` seconds on `node`."""
    end_at = datetime.now(UTC) + timedelta(seconds=lifetime)
    container = {
        "name": SYSDIG_CONTAINER, "image": image, "command": ["sleep", str(lifetime)],
        "env": [{"name": "HOST_ROOT", "value": HOST_ROOT}],
        "securityContext": {"privileged": True, "runAsUser": 0},
        "volumeMounts": [{"name": "host", "mountPath": HOST_ROOT, "readOnly": True}],
    }
    pod_spec = {
        "nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "tolerations": [{"operator": "Exists"}], "containers": [container],
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
    }
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": dict(JOB_LABELS),
                     "annotations": {"end-at": end_at.strftime("%Y-%m-%dT%H:%M:%SZ")}},
        "spec": {"ttlSecondsAfterFinished": 3600, "backoffLimit": 0, "completions": 1,
                 "activeDeadlineSeconds": lifetime + 5,
                 "template": {"metadata": {"labels": dict(JOB_LABELS)}, "spec": pod_spec}},
    }


def container_ids(pod: Any) -> list[str]:
    """The 12-character ids (as Falco shows them) of the pod's started containers."""
    ids = []
    for status in getattr(pod.status, "container_statuses", None) or []:
        raw = str(getattr(status, "container_id", None) or "")
        short = raw.rpartition("://")[2][:12]
        if _CONTAINER_ID.fullmatch(short):
            ids.append(short)
    return ids


def sysdig_argv(p: SysdigParams, ids: list[str]) -> list[str]:
    argv = ["sysdig", "--modern-bpf", "--cri", CRI_SOCKET, "-M", str(p.duration),
            "-s", str(p.buffer_size), "-z", "-w", SYSDIG_FILE]
    if p.scope == "pod":
        argv.append(f"container.id in ({', '.join(ids)})")
    return argv


def _job_pod(ctx: ActionContext, namespace: str, job: str) -> str:
    """The name of the Job's pod once it runs with its container ready."""
    k = common.kube(ctx)

    def ready() -> str | None:
        try:
            found = k.core.list_namespaced_pod(namespace, label_selector=f"{JOB_NAME_LABEL}={job}",
                                               _request_timeout=k.timeout)
        except Exception as exc:
            raise ActionError(f"cannot list the pods of the job '{job}': "
                              f"{common.api_error(exc)}") from exc
        for pod in found.items:
            phase = getattr(pod.status, "phase", None)
            if phase in ("Failed", "Succeeded"):
                raise ActionError(f"the pod of the job '{job}' ended ({phase})")
            statuses = getattr(pod.status, "container_statuses", None) or []
            if phase == "Running" and statuses and statuses[0].ready:
                return str(pod.metadata.name)
        return None

    name = poll(ctx.deadline, JOB_POD_WAIT, ready)
    if name is None:
        raise ActionError(f"the job '{job}' in the namespace '{namespace}' for the sysdig "
                          "capture is not ready")
    return name


def _capture_with_job(ctx: ActionContext, namespace: str, job: str, ids: list[str]) -> bytes:
    p: SysdigParams = ctx.params
    runner = _job_pod(ctx, namespace, job)
    done = _stream.run(ctx, namespace, runner, SYSDIG_CONTAINER, sysdig_argv(p, ids))
    if not done.ok:
        raise ActionError(f"sysdig failed: {execs.failure_text(done, SYSDIG_CONTAINER)}")
    return read_back(ctx, namespace, runner, SYSDIG_CONTAINER, SYSDIG_FILE)


def _delete_job(ctx: ActionContext, namespace: str, job: str) -> None:
    k = common.kube(ctx)
    try:
        k.batch.delete_namespaced_job(job, namespace, propagation_policy="Background",
                                      _request_timeout=k.timeout)
    except Exception as exc:  # noqa: BLE001 - cleanup: the capture's outcome stands
        ctx.logger.warning("cannot delete the job '%s' in the namespace '%s': %s", job,
                           namespace, common.api_error(exc))


def _sysdig(ctx: ActionContext, namespace: str, name: str, objects: dict[str, str]) -> Result:
    p: SysdigParams = ctx.params
    check_time(ctx, p.duration)
    pod = common.get_pod(ctx)
    node = common.node_of(pod)
    ids = container_ids(pod)
    if p.scope == "pod" and not ids:
        raise ActionError(f"the pod '{name}' has no started container to capture")
    job = SYSDIG_PREFIX + suffix()
    lifetime = int(ctx.deadline - time.monotonic()) + 10
    k = common.kube(ctx)
    try:
        k.batch.create_namespaced_job(namespace, sysdig_job(job, node, p.image, lifetime),
                                      _request_timeout=k.timeout)
    except Exception as exc:
        raise ActionError(f"cannot create the job '{job}' in the namespace '{namespace}': "
                          f"{common.api_error(exc)}") from exc
    objects["job"] = job
    try:
        data = _capture_with_job(ctx, namespace, job, ids)
    finally:
        _delete_job(ctx, namespace, job)
    return Result(output="a sysdig capture 'sysdig.scap.gz' has been created", objects=objects,
                  artifact=Artifact(name="sysdig.scap.gz", data=data,
                                    content_type="application/gzip"))


@actionner(
    pods.CATEGORY, "sysdig",
    disruptive=True, checks=(common.pod_exists,), params=SysdigParams,
    description="Capture the syscalls of the pod (or of its node) with sysdig",
    default_continue=False, require_output=True,
    required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=(rbac.PODS_GET_LIST, rbac.JOBS, rbac.PODS_EXEC),
    example=SYSDIG_EXAMPLE,
)
def sysdig(ctx: ActionContext) -> Result:
    """Capture syscalls for `duration` seconds (artifact `sysdig.scap.gz`)."""
    namespace, name = common.pod_target(ctx)
    objects = common.pod_objects(namespace, name)
    return common.report_failures(objects, lambda: _sysdig(ctx, namespace, name, objects))
