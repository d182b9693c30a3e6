"""Kubernetes actionners that run commands in, or read from, the event's pod.

Layer L2 (plug-in): kubernetes:exec, kubernetes:script, kubernetes:log, kubernetes:download.

Event values are attacker-controlled (a file may be named `x; reboot`), so they never
become shell source. A command or script keeps its `${NAME}`/`$NAME` references as
written; the values of the names it references are handed to the container as
environment variables (`env NAME=value … <shell> -c <command>`), so the shell expands them
as data. Names the event does not define are left to the container's own environment
(`$HOME` is the container's). A name with `-` (`FALCO-TALON_RULE`) is passed too but a
shell can't expand it: write `${FALCO_TALON_RULE}`, which is passed under that spelling.
Quote references (`cat "${FD_NAME}"`) to avoid word splitting. kubernetes:download
takes its path as one argv item (`cat -- <path>`), with no shell at all.

Commands run in ONE container: the event's `container.name` when it names a container of
the pod, else the pod's first container (the Go version ran them in every container).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talon.actionners.kubernetes import _stream, common, pods, rbac
from talon.plugin import (
    ActionContext,
    ActionError,
    Artifact,
    ParamValueError,
    Result,
    Status,
    actionner,
    references,
)

DEFAULT_SHELL = "/bin/sh"
DEFAULT_TAIL_LINES = 20

EXEC_PERMISSIONS = (rbac.PODS_GET, rbac.PODS_EXEC)


def _require_text(name: str, value: str) -> None:
    if not value.strip():
        raise ParamValueError(name, f"parameter '{name}' can't be empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecParams:
    """Parameters of kubernetes:exec."""

    command: str = field(metadata={"shell_env": True,
        "help": "Command to run, e.g. 'cat \"${FD_NAME}\"'; event values reach it as "
                "environment variables, never as shell source"})
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
            raise ParamValueError("script", "missing parameter 'script' or 'file'")
        if self.script and self.file:
            raise ParamValueError(
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

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"             # CSI: colours, cursor moves
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: window titles, links
    r"|\x1b[ -/]*[0-~]"                    # other escapes: ESC ( B, ESC 7, ESC =
    r"|\x9b[0-?]*[ -/]*[@-~]")             # 8-bit CSI
_TALON_PREFIX, _TALON_ALIAS = "FALCO-TALON_", "FALCO_TALON_"
SCRIPT_WRAPPER = b"{\n%s\n} </dev/null\nexit $?\n"
"""How a script is fed to `<shell> -s`: the shell parses the whole group before running it,
so commands that read stdin get /dev/null instead of the rest of the script, and `exit`
ends the shell even when stdin can't be closed (v4 exec protocol)."""


# --- shared helpers -----------------------------------------------------------------------


def strip_ansi(text: str) -> str:
    """`text` without ANSI escape sequences (colours, cursor moves, titles)."""
    return _ANSI.sub("", text)


def _lookup(name: str, env: Mapping[str, str]) -> str | None:
    value = env.get(name)
    if value is None and name.startswith(_TALON_ALIAS):
        value = env.get(_TALON_PREFIX + name[len(_TALON_ALIAS):])
    return value


def _passable(name: str) -> bool:
    """Whether `env` would take `name` as a variable name (no `=`, NUL or leading `-`)."""
    return bool(name) and "=" not in name and "\0" not in name and not name.startswith("-")


def shell_env(texts: Iterable[str], env: Mapping[str, str]) -> list[str]:
    """`NAME=value` for each name `texts` reference that the event or its context defines.

    `${FD_NAME:-x}` and `${FD_NAME#*/}` pass FD_NAME; unknown names are not passed.
    """
    pairs: dict[str, str] = {}
    for text in texts:
        for ref in references(text):
            leading = _IDENTIFIER.match(ref)
            for name in dict.fromkeys((ref, leading.group() if leading else "")):
                value = _lookup(name, env)
                if value is not None and _passable(name):
                    pairs.setdefault(name, value)
    return [f"{name}={value}" for name, value in pairs.items()]


def with_env(pairs: list[str], argv: list[str]) -> list[str]:
    """`argv` run through `env` when there are variables to pass."""
    return ["env", *pairs, *argv] if pairs else argv


def container_names(pod: Any) -> list[str]:
    """The names of the pod's (regular) containers, in order."""
    return [str(c.name) for c in (getattr(pod.spec, "containers", None) or [])]


def event_container(ctx: ActionContext, pod: Any) -> str | None:
    """The event's `container.name` when it names a container (or ephemeral one) of `pod`."""
    wanted = ctx.event.field_text("container.name")
    ephemeral = [str(c.name) for c in (getattr(pod.spec, "ephemeral_containers", None) or [])]
    return wanted if wanted and wanted in container_names(pod) + ephemeral else None


def containers_in_order(ctx: ActionContext, pod: Any) -> list[str]:
    """The event's container first, then the pod's other containers; ActionError if none."""
    names = container_names(pod)
    chosen = event_container(ctx, pod)
    ordered = [chosen, *[n for n in names if n != chosen]] if chosen else names
    if not ordered:
        raise ActionError(f"the pod '{pod.metadata.name}' has no container")
    return ordered


def failure_text(done: _stream.Exec, container: str) -> str:
    """Why a command failed: its exit code and stderr (or the API server's message)."""
    stderr = strip_ansi(done.stderr.decode("utf-8", "replace")).strip()
    if done.exit_code is not None:
        text = f"the command exited with code {done.exit_code} in the container '{container}'"
    else:
        text = f"the command could not run in the container '{container}': {done.message}"
    return f"{text}: {stderr}" if stderr else text


Prepared = tuple[list[str], bytes | None]
"""The argv to run and the bytes to send on its stdin (None: no stdin)."""


def _command(ctx: ActionContext, prepare: Callable[[], Prepared]) -> Result:
    """Run the prepared argv in the target container; output = stdout, error = stderr."""
    namespace, name = common.pod_target(ctx)
    objects = common.pod_objects(namespace, name)

    def body() -> Result:
        argv, stdin = prepare()
        container = containers_in_order(ctx, common.get_pod(ctx))[0]
        done = _stream.run(ctx, namespace, name, container, argv, stdin=stdin)
        output = strip_ansi(done.stdout.decode("utf-8", "replace"))
        if not done.ok:
            return Result(status=Status.FAILURE, output=output,
                          error=failure_text(done, container), objects=objects)
        return Result(output=output, objects=objects)

    return common.report_failures(objects, body)


# --- kubernetes:exec ----------------------------------------------------------------------


@actionner(
    pods.CATEGORY, "exec",
    disruptive=True, checks=(common.pod_exists,), params=ExecParams,
    description="Exec a command in a pod",
    use_context=True, required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=EXEC_PERMISSIONS, example=EXEC_EXAMPLE,
)
def exec_(ctx: ActionContext) -> Result:
    """`[env NAME=value …] <shell> -c <command>` in one container of the event's pod."""
    p: ExecParams = ctx.params
    argv = with_env(shell_env([p.command], ctx.env), [p.shell, "-c", p.command])
    return _command(ctx, lambda: (argv, None))


# --- kubernetes:script --------------------------------------------------------------------


def script_text(p: ScriptParams) -> bytes:
    """The inline script, or the content of `file` read now on Talon's host."""
    if p.file:
        try:
            text = Path(p.file).read_bytes()
        except OSError as exc:
            raise ActionError(f"cannot read the script file '{p.file}': "
                              f"{exc.strerror or exc}") from exc
    else:
        text = p.script.encode()
    if not text.strip():
        raise ActionError(f"the script file '{p.file}' is empty" if p.file
                          else "the script is empty")
    return text


def _script_argv(ctx: ActionContext) -> Prepared:
    p: ScriptParams = ctx.params
    text = script_text(p)
    pairs = shell_env([text.decode("utf-8", "replace")], ctx.env)
    return with_env(pairs, [p.shell, "-s"]), SCRIPT_WRAPPER % text


@actionner(
    pods.CATEGORY, "script",
    disruptive=True, checks=(common.pod_exists,), params=ScriptParams,
    description="Run a script in a pod",
    use_context=True, required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=EXEC_PERMISSIONS, example=SCRIPT_EXAMPLE,
)
def script(ctx: ActionContext) -> Result:
    """Send the script on stdin to `[env NAME=value …] <shell> -s` in one container."""
    return _command(ctx, lambda: _script_argv(ctx))


# --- kubernetes:log -----------------------------------------------------------------------


def _read_log(ctx: ActionContext, namespace: str, name: str, container: str,
              tail: int) -> bytes:
    k = common.kube(ctx)
    try:
        response = k.core.read_namespaced_pod_log(
            name, namespace, container=container, tail_lines=tail, _preload_content=False,
            _request_timeout=k.timeout)
    except Exception as exc:
        raise ActionError(f"cannot get the logs of the container '{container}' of the pod "
                          f"'{name}' in the namespace '{namespace}': "
                          f"{common.api_error(exc)}") from exc
    try:
        return bytes(response.data)
    finally:
        response.release_conn()


def _logs(ctx: ActionContext, namespace: str, name: str) -> Result:
    p: LogParams = ctx.params
    tail = p.tail_lines or DEFAULT_TAIL_LINES
    data, read, last_error = b"", False, None
    for container in containers_in_order(ctx, common.get_pod(ctx)):
        try:
            data = _read_log(ctx, namespace, name, container, tail)
        except ActionError as exc:
            last_error = exc
            continue
        read = True
        if data:
            break
    if not read and last_error is not None:
        raise last_error
    where = f"the pod '{name}' in the namespace '{namespace}'"
    if ctx.action.output is not None:
        output = f"the logs for {where} has been downloaded"
    else:  # the engine prints the logs themselves in the log line
        output = "" if data else f"no logs for {where}"
    return Result(output=output, objects=common.pod_objects(namespace, name),
                  artifact=Artifact(name="log", data=data,
                                    content_type="text/plain; charset=utf-8"))


@actionner(
    pods.CATEGORY, "log", checks=(common.pod_exists,), params=LogParams,
    description="Get logs from a pod",
    allow_output=True, required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=(rbac.PODS_GET, rbac.PODS_LOG), example=LOG_EXAMPLE,
)
def log(ctx: ActionContext) -> Result:
    """The last `tail_lines` lines of the first container that has logs (artifact `log`)."""
    namespace, name = common.pod_target(ctx)
    return common.report_failures(common.pod_objects(namespace, name),
                                  lambda: _logs(ctx, namespace, name))


# --- kubernetes:download ------------------------------------------------------------------


def _download(ctx: ActionContext, namespace: str, name: str, objects: dict[str, str]) -> Result:
    path = ctx.params.file
    pod = common.get_pod(ctx)
    chosen = event_container(ctx, pod)
    failures = []
    for container in [chosen] if chosen else containers_in_order(ctx, pod):
        done = _stream.run(ctx, namespace, name, container, ["cat", "--", path])
        if done.ok:
            return Result(output=f"the file '{path}' has been downloaded", objects=objects,
                          artifact=Artifact(name=path, data=done.stdout))
        failures.append(failure_text(done, container))
    return Result(status=Status.FAILURE, error=f"cannot download the file '{path}': "
                  + "; ".join(failures), objects=objects)


@actionner(
    pods.CATEGORY, "download", checks=(common.pod_exists,), params=DownloadParams,
    description="Download a file from a pod",
    use_context=True, require_output=True,
    required_fields=pods.POD_FIELDS, requires=pods.REQUIRES,
    permissions=EXEC_PERMISSIONS, example=DOWNLOAD_EXAMPLE,
)
def download(ctx: ActionContext) -> Result:
    """`cat -- <file>` in the event's container (else each container until one succeeds)."""
    namespace, name = common.pod_target(ctx)
    objects = {**common.pod_objects(namespace, name), "file": ctx.params.file}
    return common.report_failures(objects, lambda: _download(ctx, namespace, name, objects))
