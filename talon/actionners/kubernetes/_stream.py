"""Run one command in one container over the pods/exec WebSocket and collect what it did.

Layer L2 (plug-in support for execs.py and capture.py). `run()` takes an argv list (never
shell source), optional stdin bytes, and returns the exact stdout/stderr bytes and the exit
code the API server reports on the status channel, within the action's deadline.

Details of the kubernetes 36.x client handled here:
- `stream()` swaps `request` on the ApiClient it is given for the duration of the call, so
  a shared client would send other threads' requests over WebSocket: each exec gets its own
  short-lived ApiClient built on the shared configuration;
- `binary=True` keeps stdout/stderr as bytes (text mode decodes as UTF-8 with replacement);
- a failed handshake (404 pod, 403 RBAC, 400 container) surfaces as an AttributeError whose
  context is an ApiException with the status and body in `reason`;
- stdin is ended with the v5 channel-close signal; on a v4-only server it cannot be, so
  callers whose command reads stdin must not rely on EOF (see execs.script);
- when the server closes first, `WSClient.close()` leaves the socket open: it is shut down.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from talon.actionners.kubernetes import common
from talon.plugin import ActionContext, ActionError

STDOUT, STDERR, STATUS = 1, 2, 3
V5 = "v5.channel.k8s.io"
_HANDSHAKE = re.compile(r"Handshake status (\d+)")
_SEPARATOR = " -+-+- "
_MAX_WAIT = 1.0
"""Longest single wait for a frame, so the deadline is checked regularly."""
_CLOSE_WAIT = 1.0
"""Longest wait for the server's reply when Talon closes the stream first."""


@dataclass(frozen=True, slots=True)
class Exec:
    """What one command did: its output bytes and how it ended."""

    stdout: bytes
    stderr: bytes
    exit_code: int | None
    """0 on success, the command's code on failure, None when it could not run."""
    message: str = ""
    """The status channel's message when the command failed or could not run."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def run(ctx: ActionContext, namespace: str, pod: str, container: str, argv: list[str], *,
        stdin: bytes | None = None) -> Exec:
    """Run `argv` in `container` of `pod`; ActionError when the exec can't be done in time."""
    from kubernetes import client

    shared = common.kube(ctx).api_client
    api = client.ApiClient(shared.configuration)
    try:
        ws = _connect(client.CoreV1Api(api), namespace, pod, container, argv, stdin is not None)
        try:
            if stdin is not None:
                _send(ws, stdin)
            return _collect(ws, ctx.deadline, argv)
        finally:
            _finish(ws)
    finally:
        api.close()


def _connect(core: Any, namespace: str, pod: str, container: str, argv: list[str],
             with_stdin: bool) -> Any:
    from kubernetes.stream import stream

    try:
        return stream(core.connect_get_namespaced_pod_exec, pod, namespace, command=argv,
                      container=container, stdin=with_stdin, stdout=True, stderr=True,
                      tty=False, binary=True, _preload_content=False)
    except Exception as exc:
        raise ActionError(f"cannot exec in the container '{container}' of the pod '{pod}' in "
                          f"the namespace '{namespace}': {handshake_error(exc)}") from exc


def handshake_error(exc: BaseException) -> str:
    """The API server's message for a failed exec handshake (or the error's own text)."""
    seen: BaseException | None = exc
    while seen is not None:
        reason = str(getattr(seen, "reason", "") or "")
        found = _HANDSHAKE.search(reason)
        if found:
            body = reason.rsplit(_SEPARATOR, 1)[-1]
            try:
                message = json.loads(body).get("message")
            except (ValueError, AttributeError):
                message = None
            return f"{message or reason.split(_SEPARATOR, 1)[0]} ({found.group(1)})"
        if getattr(seen, "body", None):
            return common.api_error(seen)
        if reason:  # e.g. connection refused: ApiException(status=0, reason=<error>)
            return reason.split(_SEPARATOR, 1)[0].strip()
        seen = seen.__cause__ or seen.__context__
    return common.api_error(exc)


def _send(ws: Any, data: bytes) -> None:
    """Write stdin, then end it (v5 only: v4 has no way to close stdin alone)."""
    if data:
        ws.write_stdin(data)
    ws.close_channel(0)


def _collect(ws: Any, deadline: float, argv: list[str]) -> Exec:
    """Buffer the channels until the server ends the stream (or the deadline passes)."""
    got: dict[int, list[bytes]] = {STDOUT: [], STDERR: [], STATUS: []}

    def drain() -> None:
        for channel, parts in got.items():
            parts.append(ws.read_channel(channel))

    while ws.is_open():
        left = deadline - time.monotonic()
        if left <= 0:
            raise ActionError(f"the command '{argv[0]}' did not finish before the action's "
                              "deadline")
        try:
            ws.update(timeout=min(left, _MAX_WAIT))
        except Exception as exc:
            raise ActionError(f"the exec stream of '{argv[0]}' broke: {exc}") from exc
        drain()
    drain()  # reading a channel may buffer frames of another one: take what is left
    return _ended(*(b"".join(got[c]) for c in (STDOUT, STDERR, STATUS)))


def _ended(stdout: bytes, stderr: bytes, status: bytes) -> Exec:
    """Read the exit status the API server sent on channel 3 (a metav1.Status)."""
    if not status:
        return Exec(stdout, stderr, None, "the exec stream ended without an exit status")
    try:
        data = json.loads(status)
    except ValueError:
        return Exec(stdout, stderr, None, status.decode("utf-8", "replace"))
    if data.get("status") == "Success":
        return Exec(stdout, stderr, 0)
    message = str(data.get("message") or data.get("reason") or "the command failed")
    if data.get("reason") == "NonZeroExitCode":
        for cause in (data.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode" and str(cause.get("message", "")).isdigit():
                return Exec(stdout, stderr, int(cause["message"]), message)
    return Exec(stdout, stderr, None, message)


def _finish(ws: Any) -> None:
    """Close the stream, and the socket too when the server already closed its side."""
    ws.close(timeout=_CLOSE_WAIT)
    sock = getattr(ws, "sock", None)
    if sock is not None:
        sock.shutdown()
