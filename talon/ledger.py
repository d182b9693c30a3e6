"""The action ledger: every action outcome appended as one hash-chained JSON line.

Layer L1 (stdlib + talon.log/params/records). Format of one line (ASCII, no newline inside):

    {"time":"2026-01-02T03:04:05.678901Z","trace_id":"...","stage":"action","rule":"...",
     "action":"...","actionner":"...","objects":{...},"parameters":{...},"status":"...",
     "output":"...","error":"...","prev":"<64 hex>","mac":"<64 hex>"}

(`output_target` follows `actionner` on stage `output` lines.) Exact rules:
- `prev` is the SHA-256 (lower-case hex) of the previous line's bytes without its trailing
  newline; 64 zeros on the first line of a chain. Rotation does not restart the chain.
- `mac` (only with `hmac_key_file`) is HMAC-SHA256(key, B) in hex, where B is the line's
  bytes without its newline and without the final `,"mac":"<64 hex>"` (B ends with
  `"prev":"<64 hex>"}`): the line as it was before the mac was appended.
- Secrets of the configuration are masked (`***`) before `prev` and `mac` are added.
- Files: `path`, then `path.1`, `path.2`... (never renamed); the writer appends to the
  highest-numbered one and starts the next when a line would take it past `max_bytes`.
One writer thread writes in order: entries wait in a bounded queue; when it is full,
`submit` blocks (an entry is never dropped). Each batch is written (so a killed process
loses only what is still queued) and fsynced at most `SYNC_SECONDS` later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from talon import log, params
from talon.errors import EventError
from talon.models import Event
from talon.outcome import ActionOutcome, OutputOutcome
from talon.records import ActionRecord

logger = logging.getLogger(__name__)

ZERO = "0" * 64
SYNC_SECONDS = 1.0
MAX_BATCH = 1000
STOP_ATTEMPTS = 3
_STOP = object()
_MAC_TAIL = re.compile(rb',"mac":"([0-9a-f]{64})"\}$')
_NUMBERED = re.compile(r"\.(\d+)$")


def read_key(path: str) -> bytes:
    """The HMAC key in `path` (a trailing newline is not part of it); ValueError if empty."""
    key = Path(path).read_bytes().rstrip(b"\r\n")
    if not key:
        raise ValueError(f"{path}: the HMAC key file is empty")
    return key


def _rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry(record: ActionRecord) -> dict[str, Any]:
    """The ledger fields of `record`, in line order (without prev and mac)."""
    out: dict[str, Any] = {"time": _rfc3339(record.time), "trace_id": record.trace_id,
                           "stage": record.stage, "rule": record.rule,
                           "action": record.action, "actionner": record.actionner}
    if record.output_target:
        out["output_target"] = record.output_target
    out |= {"objects": dict(record.objects), "parameters": params.to_plain(record.parameters),
            "status": record.status, "output": record.output, "error": record.error}
    return out


def seal(body: str, prev: str, key: bytes | None) -> bytes:
    """The line (no newline) for the JSON object text `body`: prev appended, then mac."""
    line = f'{body[:-1]},"prev":"{prev}"}}'.encode("ascii")
    if key is None:
        return line
    mac = hmac.new(key, line, hashlib.sha256).hexdigest()
    return line[:-1] + f',"mac":"{mac}"}}'.encode("ascii")


def digest(line: bytes) -> str:
    """The hash the next line carries as `prev`."""
    return hashlib.sha256(line).hexdigest()


def files_of(path: Path) -> list[Path]:
    """`path` and its numbered successors that exist, in chain order."""
    numbered = []
    if path.parent.is_dir():
        for sibling in path.parent.iterdir():
            found = _NUMBERED.search(sibling.name)
            if found and sibling.name[:found.start()] == path.name:
                numbered.append((int(found.group(1)), sibling))
    return [path] * path.exists() + [p for _, p in sorted(numbered)]


def _last_line(path: Path) -> bytes | None:
    """The last complete line of `path`; an incomplete tail (a write cut by a crash) is
    cut off the file, with a warning."""
    with path.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        tail, start = b"", size
        while start > 0 and tail.count(b"\n") < 2:
            start = max(0, start - 65536)
            fh.seek(start)
            tail = fh.read(size - start)
        if tail and not tail.endswith(b"\n"):
            keep = tail.rfind(b"\n") + 1
            fh.truncate(start + keep)
            log.emit(logger, logging.WARNING, "ledger", file=str(path),
                     result=f"dropped an incomplete last line ({len(tail) - keep} bytes)")
            tail = tail[:keep]
    lines = tail.split(b"\n")
    return lines[-2] if len(lines) >= 2 else None


class Ledger:
    """Appends action records to the chained files at `path` from one writer thread."""

    def __init__(self, path: str, *, key: bytes | None = None, max_bytes: int = 100 << 20,
                 secrets: Iterable[str] = (), queue_size: int = 10000,
                 sync_seconds: float = SYNC_SECONDS) -> None:
        self.path, self.key, self.max_bytes = Path(path), key, max_bytes
        self.sync_seconds = sync_seconds
        self._mask = log.masker(secrets)
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._fd = -1
        self._size, self._number, self._prev = 0, 0, ZERO
        self._stopping = False
        self._closing = False
        self._synced = time.monotonic()
        self._wake = threading.Event()
        self.written = 0
        """Entries written so far (by this process)."""

    # -- files --------------------------------------------------------------------------

    def open(self) -> None:
        """Open the newest file of the chain and take its last hash; raises OSError."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = files_of(self.path)
        for older in reversed(existing):
            last = _last_line(older)
            if last is not None:
                self._prev = digest(last)
                break
        active = existing[-1] if existing else self.path
        found = _NUMBERED.search(active.name) if active != self.path else None
        self._number = int(found.group(1)) if found else 0
        self._open_file(active)

    def _open_file(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._number += 1
        self._open_file(self.path.with_name(f"{self.path.name}.{self._number}"))
        log.emit(logger, logging.INFO, "ledger", result="rotated",
                 file=f"{self.path.name}.{self._number}")

    # -- producers ----------------------------------------------------------------------

    def submit(self, record: ActionRecord) -> None:
        """Queue `record`; blocks while the queue is full (a ledger drops nothing)."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            log.emit(logger, logging.WARNING, "ledger",
                     result="queue full: the action waits for the ledger writer")
            self._queue.put(record)

    # -- writer -------------------------------------------------------------------------

    def start(self) -> None:
        """Open the files (if not yet) and start the writer thread."""
        if self._fd < 0:
            self.open()
        self._thread = threading.Thread(target=self._run, name="talon-ledger", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Write and fsync everything queued, then close the file."""
        if self._thread is None:
            return
        self._closing = True
        self._wake.set()
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.emit(logger, logging.ERROR, "ledger", error="the writer did not finish in "
                     "time", queued=self._queue.qsize())
        self._thread = None

    def _line(self, record: ActionRecord) -> bytes:
        body = self._mask(json.dumps(entry(record), ensure_ascii=True,
                                     separators=(",", ":"), default=str))
        line = seal(body, self._prev, self.key)
        self._prev = digest(line)
        return line + b"\n"

    def _batch(self, first: Any) -> tuple[list[ActionRecord], bool]:
        batch, stopping = [], first is _STOP
        if not stopping:
            batch.append(first)
        while len(batch) < MAX_BATCH and not stopping:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            stopping = item is _STOP
            if not stopping:
                batch.append(item)
        return batch, stopping

    def _write(self, batch: list[ActionRecord]) -> None:
        chunk = bytearray()
        for record in batch:
            line = self._line(record)
            if self._size + len(chunk) + len(line) > self.max_bytes and self._size + len(chunk):
                self._write_all(bytes(chunk))
                chunk.clear()
                self._rotate()
            chunk += line
        self._write_all(bytes(chunk))
        self.written += len(batch)

    def _write_all(self, data: bytes) -> None:
        """Write `data` whole; on an error (disk full...), say so and retry every second:
        entries are held, not lost (the engine blocks once the queue is full)."""
        view, failures = memoryview(data), 0
        while view:
            try:
                done = os.write(self._fd, view)
            except OSError as exc:
                failures += 1
                log.emit(logger, logging.CRITICAL, "ledger", error=f"cannot write the "
                         f"ledger: {exc}", attempt=failures)
                if self._closing and failures >= STOP_ATTEMPTS:
                    raise
                self._wake.wait(SYNC_SECONDS)
                continue
            view = view[done:]
            self._size += done

    def _sync(self) -> None:
        os.fsync(self._fd)
        self._synced = time.monotonic()

    def _run(self) -> None:
        dirty = False
        while not self._stopping:
            try:
                first = self._queue.get(timeout=self.sync_seconds if dirty else None)
            except queue.Empty:
                self._sync()  # idle: what was written reaches the disk now
                dirty = False
                continue
            batch, self._stopping = self._batch(first)
            try:
                self._write(batch)
            except OSError:
                log.emit(logger, logging.CRITICAL, "ledger", error="giving up on shutdown",
                         lost=len(batch))
                break
            dirty = dirty or bool(batch)
            overdue = time.monotonic() - self._synced >= self.sync_seconds
            if dirty and (self._stopping or self._queue.empty() or overdue):
                self._sync()
                dirty = False
        os.close(self._fd)
        self._fd = -1


# -- verification ----------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    """What `verify` found: entries that hold, the last hash, the first failure if any."""

    entries: int = 0
    last: str = ZERO
    where: str = ""
    problem: str = ""


def check_line(line: bytes, expected_prev: str, key: bytes | None) -> str:
    """Why `line` (no newline) does not continue a chain ending in `expected_prev`; ''."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return "not a ledger entry (invalid JSON or an incomplete line)"
    if not isinstance(data, dict) or not isinstance(data.get("prev"), str):
        return "not a ledger entry (no prev)"
    if data["prev"] != expected_prev:
        return (f"prev {data['prev'][:16]}... does not match the hash of the line before "
                f"({expected_prev[:16]}...): a line was changed, removed, inserted or moved")
    if key is None:
        return ""
    found = _MAC_TAIL.search(line)
    if found is None:
        return "no mac at the end of the line"
    signed = line[:found.start()] + b"}"
    wanted = hmac.new(key, signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(wanted.encode(), found.group(1)):
        return "mac does not match: the line was changed (or signed with another key)"
    return ""


def verify(files: Iterable[str], *, key: bytes | None = None,
           first_prev: str = ZERO) -> Report:
    """Check the chain across `files` in order (and each mac, with `key`); raises OSError."""
    report = Report(last=first_prev)
    for name in files:
        with Path(name).open("rb") as fh:
            for number, raw in enumerate(fh, 1):
                line = raw[:-1] if raw.endswith(b"\n") else raw
                problem = check_line(line, report.last, key)
                if problem and report.entries == 0 and first_prev == ZERO \
                        and problem.startswith("prev"):
                    problem += " (if older files were removed, pass --prev with the hash " \
                               "of the last line before this one)"
                if problem:
                    report.where, report.problem = f"{name}:{number}", problem
                    return report
                report.entries += 1
                report.last = digest(line)
    return report


def _targets(event: Event) -> dict[str, str]:
    """The event's namespace and pod, for an outcome whose plug-in named no object."""
    try:
        found = (("namespace", event.namespace()), ("pod", event.pod_name()))
    except EventError:
        return {}
    return {key: value for key, value in found if value}


class LedgerSink:
    """A reporter sink: every action and output outcome becomes one ledger entry."""

    name = "ledger"

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def __call__(self, o: object) -> None:
        if type(o) is ActionOutcome:
            self.ledger.submit(ActionRecord(
                time=time.time(), trace_id=o.event.trace_id, rule=o.rule.name,
                action=o.action.name, actionner=o.action.actionner, status=o.status,
                objects=dict(o.objects) or _targets(o.event), parameters=o.parameters or {},
                output=o.output, error=o.error))
        elif type(o) is OutputOutcome:
            spec = o.action.output
            self.ledger.submit(ActionRecord(
                time=time.time(), trace_id=o.event.trace_id, rule=o.rule.name,
                action=o.action.name, actionner=o.action.actionner, status=o.status,
                stage="output", output_target=o.target, objects=dict(o.objects),
                parameters=spec.parameters if spec is not None else {}, output=o.result,
                error=o.error))
