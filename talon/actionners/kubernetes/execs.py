"""Kubernetes actionners that run commands in, or read from, the event's pod.

Layer L2 (plug-in): exec, script, log and download, declared with metadata and params
dataclass; the run functions come later in this module. `${VAR}` in a command, a script
or a file path is replaced at run time with the event's fields and contexts, which is why
exec, script and download use additional contexts. Whether a script `file` exists is a
live check, not a parameter rule: the dataclass never touches the filesystem.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from talon import params, registry
from talon.actionners.kubernetes import pods, rbac

DEFAULT_SHELL = "/bin/sh"
DEFAULT_TAIL_LINES = 20

EXEC_PERMISSIONS = (rbac.PODS_GET_LIST, rbac.PODS_EXEC)


def _require_text(name: str, value: str) -> None:
    if not value.strip():
        raise params.ParamValueError(name, f"parameter '{name}' can't be empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecParams:
    """Parameters of kubernetes:exec."""

    command: str = field(metadata={"help": "Command to run, e.g. \"cat ${FD_NAME}\"",
                                   "shell_env": True})
    shell: str = field(default=DEFAULT_SHELL, metadata={
        "help": "Shell used to run the command (`<shell> -c <command>`)"})

    def __post_init__(self) -> None:
        _require_text("command", self.command)
        _require_text("shell", self.shell)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptParams:
    """Parameters of kubernetes:script: exactly one of `script` and `file`."""

    script: str = field(default="", metadata={"shell_env": True,
        "help": "Script to run (use | for several lines); can't be used with file"})
    file: str = field(default="", metadata={
        "help": "Path, on Talon's host, of a shell script to run; can't be used with script"})
    shell: str = field(default=DEFAULT_SHELL, metadata={
        "help": "Shell used to run the script"})

    def __post_init__(self) -> None:
        if not self.script and not self.file:
            raise params.ParamValueError("script", "missing parameter 'script' or 'file'")
        if self.script and self.file:
            raise params.ParamValueError(
                "script", "'script' and 'file' parameters can't be set at the same time")
        _require_text("shell", self.shell)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogParams:
    """Parameters of kubernetes:log."""

    tail_lines: int = field(default=DEFAULT_TAIL_LINES, metadata={
        "min": 0,
        "help": f"Number of lines from the end of the logs to get; 0 means "
                f"{DEFAULT_TAIL_LINES}"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadParams:
    """Parameters of kubernetes:download."""

    file: str = field(metadata={"substitute": True,
        "help": "Full path, in the pod, of the file to download, e.g. \"${FD_NAME}\""})

    def __post_init__(self) -> None:
        _require_text("file", self.file)


EXEC_EXAMPLE = """\
- action: Exec a command into the pod
  actionner: kubernetes:exec
  parameters:
    shell: /bin/bash
    command: "cat ${FD_NAME}"
"""

SCRIPT_EXAMPLE = """\
- action: Run a script into the pod
  actionner: kubernetes:script
  parameters:
    shell: /bin/bash
    script: |
      ps awxuf
      netstat -lpauten
      top -n 1
      cat ${FD_NAME}
"""

LOG_EXAMPLE = """\
- action: Get logs of the pod
  actionner: kubernetes:log
  parameters:
    tail_lines: 200
  output:
    target: aws:s3
    parameters:
      bucket: my-bucket
      prefix: /logs/
"""

DOWNLOAD_EXAMPLE = """\
- action: Download the suspicious file
  actionner: kubernetes:download
  parameters:
    file: "${FD_NAME}"
  output:
    target: aws:s3
    parameters:
      bucket: my-bucket
      prefix: /files/
"""

registry.declare(
    "actionner", pods.CATEGORY, "exec", params=ExecParams,
    description="Exec a command in a pod",
    use_context=True, required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=EXEC_PERMISSIONS, example=EXEC_EXAMPLE,
)

registry.declare(
    "actionner", pods.CATEGORY, "script", params=ScriptParams,
    description="Run a script in a pod",
    use_context=True, required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=EXEC_PERMISSIONS, example=SCRIPT_EXAMPLE,
)

registry.declare(
    "actionner", pods.CATEGORY, "log", params=LogParams,
    description="Get logs from a pod",
    allow_output=True, required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=(rbac.PODS_GET_LIST, rbac.PODS_LOG), example=LOG_EXAMPLE,
)

registry.declare(
    "actionner", pods.CATEGORY, "download", params=DownloadParams,
    description="Download a file from a pod",
    use_context=True, require_output=True,
    required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=EXEC_PERMISSIONS, example=DOWNLOAD_EXAMPLE,
)
