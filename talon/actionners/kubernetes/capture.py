"""Kubernetes actionners that capture what the event's pod does: tcpdump, sysdig.

Layer L2 (plug-in). Both run a capture tool from a container image (an ephemeral container
in the pod for tcpdump, a privileged Job on the pod's node for sysdig) and hand the capture
file to the required output. Both stop the rule's next actions by default, as the Go version
does. In an air-gapped cluster, `image` must name a copy of the image in a reachable
registry. Declared with metadata and params dataclass; the run functions come later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from talon import registry
from talon.actionners.kubernetes import pods, rbac

TCPDUMP_IMAGE = "issif/tcpdump:latest"
SYSDIG_IMAGE = "issif/sysdig:latest"
_AIRGAP = "; in an air-gapped cluster, point it at a mirrored copy"


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

registry.declare(
    "actionner", pods.CATEGORY, "tcpdump", params=TcpdumpParams,
    description="Capture the network packets for the pod",
    default_continue=False, require_output=True,
    required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=(rbac.PODS_GET_UPDATE_PATCH_LIST, rbac.PODS_EPHEMERAL_CONTAINERS,
                 rbac.PODS_EXEC),
    example=TCPDUMP_EXAMPLE,
)

registry.declare(
    "actionner", pods.CATEGORY, "sysdig", params=SysdigParams,
    description="Capture the syscalls of the pod (or of its node) with sysdig",
    default_continue=False, require_output=True,
    required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=(rbac.PODS_GET_LIST, rbac.JOBS, rbac.PODS_EXEC),
    example=SYSDIG_EXAMPLE,
)
