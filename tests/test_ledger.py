"""The action ledger (`talon.ledger`) and `talon ledger verify`, on real files.

Behaviours covered:
- each record becomes one ASCII JSON line with time (RFC 3339 UTC), trace id, stage, rule,
  action, actionner, objects, final parameters, status, output, error, then `prev` (64
  zeros first, then the SHA-256 of the previous line without its newline) and, with a key,
  `mac` = HMAC-SHA256 over the line without `,"mac":"..."` (recomputed here by the rule);
- configured secrets never appear in a line (`***`), in any parameter;
- `verify` prints the entry count and exits 0 on an intact chain; it exits 1 naming the
  first bad line: an edited byte (at the next line without a key, at that line with one),
  a deleted line, two swapped lines, an inserted line;
- with the key, a chain recomputed without it fails at the edited line (without the key it
  would pass: the mac is what makes recomputing detectable);
- rotation: no file grows past max_bytes, `path.1`, `path.2`... continue the chain; the
  files verify in order, not out of order; a later file alone verifies only with --prev;
- a restarted ledger continues the chain of the newest file; an incomplete last line (a
  write cut short) is cut off first, and the chain still verifies;
- stop() writes everything queued; a full queue makes submit wait, never drop.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from talon import cli, ledger
from talon.records import ActionRecord

KEY = b"ledger-test-key-0123456789"
SECRET = "s3cr3t-aws-key-value"
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def call(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return call


def record(i: int, **fields: object) -> ActionRecord:
    values: dict[str, object] = {
        "time": 1704248022.5 + i, "trace_id": f"trace-{i}", "rule": "Shell in a container",
        "action": "Label Pod", "actionner": "kubernetes:label", "status": "success",
        "objects": {"namespace": "shop", "pod": f"web-{i}"},
        "parameters": {"labels": {"suspicious": "true"}, "token": SECRET},
        "output": f"labelled web-{i}"}
    values.update(fields)
    return ActionRecord(**values)  # type: ignore[arg-type]


def write(path: Path, count: int, *, key: bytes | None = None, max_bytes: int = 1 << 20,
          start: int = 0) -> ledger.Ledger:
    book = ledger.Ledger(str(path), key=key, max_bytes=max_bytes, secrets=[SECRET])
    book.start()
    for i in range(start, start + count):
        book.submit(record(i))
    book.stop()
    return book


def lines_of(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def test_lines_hold_the_fields_and_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    write(path, 2, key=KEY)
    first, second = lines_of(path)
    entry = json.loads(first)
    assert list(entry) == ["time", "trace_id", "stage", "rule", "action", "actionner",
                           "objects", "parameters", "status", "output", "error", "prev",
                           "mac"]
    assert entry["time"] == "2024-01-03T02:13:42.500000Z"
    assert entry | {"mac": ""} == {
        "time": "2024-01-03T02:13:42.500000Z", "trace_id": "trace-0", "stage": "action",
        "rule": "Shell in a container", "action": "Label Pod",
        "actionner": "kubernetes:label", "objects": {"namespace": "shop", "pod": "web-0"},
        "parameters": {"labels": {"suspicious": "true"}, "token": "***"},
        "status": "success", "output": "labelled web-0", "error": "", "prev": "0" * 64,
        "mac": ""}
    assert json.loads(second)["prev"] == hashlib.sha256(first).hexdigest()
    for line in (first, second):
        signed, tail = line.rsplit(b',"mac":"', 1)
        assert hmac.new(KEY, signed + b"}", hashlib.sha256).hexdigest() == tail[:-2].decode()
    assert SECRET.encode() not in path.read_bytes()


def test_output_stage_lines_name_the_target(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    book = ledger.Ledger(str(path))
    book.start()
    book.submit(record(0, stage="output", output_target="local:file", status="failure",
                       parameters={"destination": "/tmp/x"}, error="no such folder"))
    book.stop()
    entry = json.loads(lines_of(path)[0])
    assert (entry["stage"], entry["output_target"], entry["status"], entry["error"]) == (
        "output", "local:file", "failure", "no such folder")
    assert list(entry).index("output_target") == list(entry).index("actionner") + 1
    assert "mac" not in entry


def test_verify_counts_the_entries(tmp_path: Path, run: Run) -> None:
    path = tmp_path / "ledger.jsonl"
    write(path, 5, key=KEY)
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    code, out, err = run("ledger", "verify", str(path), "--key", str(key_file))
    assert (code, err) == (0, "")
    last = hashlib.sha256(lines_of(path)[-1]).hexdigest()
    assert out == f"ok: 5 entries in 1 file(s), MACs checked; last hash {last}\n"


def _edit_byte(lines: list[bytes]) -> list[bytes]:
    lines[2] = lines[2].replace(b"web-2", b"web-X")
    return lines


def _delete(lines: list[bytes]) -> list[bytes]:
    return lines[:2] + lines[3:]


def _swap(lines: list[bytes]) -> list[bytes]:
    return [*lines[:2], lines[3], lines[2], *lines[4:]]


def _insert(lines: list[bytes]) -> list[bytes]:
    return [*lines[:2], lines[1], *lines[2:]]


@pytest.mark.parametrize(("tamper", "with_key", "bad_line"), [
    (_edit_byte, False, 4), (_edit_byte, True, 3), (_delete, False, 3), (_delete, True, 3),
    (_swap, False, 3), (_swap, True, 3), (_insert, False, 3)])
def test_tampering_fails_at_the_first_line_out_of_place(
        tmp_path: Path, run: Run, tamper: Callable[[list[bytes]], list[bytes]],
        with_key: bool, bad_line: int) -> None:
    path = tmp_path / "ledger.jsonl"
    write(path, 6, key=KEY)
    path.write_bytes(b"\n".join(tamper(lines_of(path))) + b"\n")
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    args = ("--key", str(key_file)) if with_key else ()
    code, out, err = run("ledger", "verify", str(path), *args)
    assert code == 1
    assert out == ""
    assert err.startswith(f"{path}:{bad_line}: ")
    assert f"{bad_line - 1} entries verified before it" in err


def test_a_chain_recomputed_without_the_key_fails_with_it(tmp_path: Path, run: Run) -> None:
    path = tmp_path / "ledger.jsonl"
    write(path, 4, key=KEY)
    lines = lines_of(path)
    lines[1] = lines[1].replace(b"web-1", b"web-Z")
    for i in range(2, len(lines)):  # what someone without the key can do: fix every prev
        prev = hashlib.sha256(lines[i - 1]).hexdigest().encode()
        lines[i] = re.sub(rb'"prev":"[0-9a-f]{64}"', b'"prev":"' + prev + b'"', lines[i])
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert run("ledger", "verify", str(path))[0] == 0  # the chain alone holds again
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    code, _, err = run("ledger", "verify", str(path), "--key", str(key_file))
    assert code == 1
    assert err.startswith(f"{path}:2: mac does not match")


def test_rotation_keeps_the_chain_across_files(tmp_path: Path, run: Run) -> None:
    path = tmp_path / "ledger.jsonl"
    write(path, 40, key=KEY, max_bytes=4096)
    files = ledger.files_of(path)
    assert len(files) >= 3
    assert [f.name for f in files] == ["ledger.jsonl"] + [
        f"ledger.jsonl.{n}" for n in range(1, len(files))]
    assert all(0 < f.stat().st_size <= 4096 for f in files)
    assert sum(len(lines_of(f)) for f in files) == 40
    first_of_second = json.loads(lines_of(files[1])[0])
    assert first_of_second["prev"] == hashlib.sha256(lines_of(files[0])[-1]).hexdigest()
    names = [str(f) for f in files]
    code, out, _ = run("ledger", "verify", *names)
    assert (code, out.split(";")[0]) == (0, f"ok: 40 entries in {len(files)} file(s)")
    code, _, err = run("ledger", "verify", names[1], names[0], *names[2:])
    assert code == 1
    assert err.startswith(f"{names[1]}:1: ")
    code, _, err = run("ledger", "verify", *names[1:])
    assert code == 1 and "pass --prev" in err
    code, _, _ = run("ledger", "verify", *names[1:], "--prev", first_of_second["prev"])
    assert code == 0


def test_a_restart_continues_the_chain(tmp_path: Path, run: Run) -> None:
    path = tmp_path / "ledger.jsonl"
    write(path, 3)
    with path.open("ab") as fh:  # a write cut short by a crash
        fh.write(b'{"time":"2024-01-03T02:13:45')
    write(path, 2, start=3)
    lines = lines_of(path)
    assert [json.loads(line)["trace_id"] for line in lines] == [
        "trace-0", "trace-1", "trace-2", "trace-3", "trace-4"]
    assert run("ledger", "verify", str(path))[0] == 0


def test_a_restart_after_rotation_appends_to_the_newest_file(tmp_path: Path,
                                                             run: Run) -> None:
    path = tmp_path / "ledger.jsonl"
    write(path, 20, max_bytes=4096)
    before = ledger.files_of(path)
    write(path, 1, max_bytes=4096, start=20)
    after = ledger.files_of(path)
    assert after[: len(before)] == before
    assert json.loads(lines_of(after[-1])[-1])["trace_id"] == "trace-20"
    assert run("ledger", "verify", *map(str, after))[0] == 0


def test_a_full_queue_makes_submit_wait_not_drop(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    book = ledger.Ledger(str(path), queue_size=2)
    book.open()  # the writer is not running yet: the queue fills up
    book.submit(record(0))
    book.submit(record(1))
    waited = threading.Event()

    def third() -> None:
        book.submit(record(2))
        waited.set()

    thread = threading.Thread(target=third)
    thread.start()
    assert not waited.wait(0.3)  # blocked while the queue is full
    book.start()
    thread.join(10)
    book.stop()
    assert [json.loads(line)["trace_id"] for line in lines_of(path)] == [
        "trace-0", "trace-1", "trace-2"]


def test_verify_reports_a_missing_file_and_an_empty_key(tmp_path: Path, run: Run) -> None:
    code, _, err = run("ledger", "verify", str(tmp_path / "nope.jsonl"))
    assert code == 1 and "nope.jsonl" in err
    empty = tmp_path / "key"
    empty.write_bytes(b"\n")
    code, _, err = run("ledger", "verify", str(tmp_path / "nope.jsonl"), "--key", str(empty))
    assert code == 1 and "empty" in err
