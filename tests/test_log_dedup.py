"""Logging and deduplication details.

Covers: text and JSON formatters (fields, ordering, error first), escaping of control
characters so an event cannot forge a log line, secret masking, color only on a TTY;
dedup keys (output text, fields), window expiry with an injected clock, bounded memory.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time

from talon import log, models
from talon.dedup import Deduplicator, LocalBackend, key_of


def capture(fmt: str, secrets: tuple[str, ...] = ()) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    log.setup(fmt, stream=stream, secrets=secrets)
    return logging.getLogger("talon.test"), stream


def test_text_line_cannot_be_forged() -> None:
    logger, stream = capture("text")
    log.emit(logger, logging.INFO, "event",
             output='ok\n2026-01-01T00:00:00Z ERR forged="yes"', rule="R", trace_id="t1")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "INF event" in lines[0]
    assert '\\n2026-01-01T00:00:00Z ERR forged=\\"yes\\"' in lines[0]
    assert lines[0].index("output=") < lines[0].index("rule=") < lines[0].index("trace_id=")


def test_json_lines_and_error_first() -> None:
    logger, stream = capture("json")
    log.emit(logger, logging.ERROR, "action", status="failure", error="boom\x1b[31m",
             objects={"pod": "p"})
    data = json.loads(stream.getvalue())
    assert data["level"] == "error" and data["message"] == "action"
    assert data["error"] == "boom\x1b[31m"  # JSON escapes it: \u001b
    assert "\\u001b" in stream.getvalue()
    assert list(data)[3] == "error"
    assert data["objects"] == {"pod": "p"}


def test_secrets_are_masked() -> None:
    logger, stream = capture("text", secrets=("hunter2-secret",))
    log.emit(logger, logging.WARNING, "notification", error="auth hunter2-secret refused")
    assert "hunter2-secret" not in stream.getvalue()
    assert "auth *** refused" in stream.getvalue()


def test_color_only_on_a_tty() -> None:
    logger, stream = capture("color")  # StringIO is not a TTY
    log.emit(logger, logging.INFO, "x", a="b")
    assert "\x1b[" not in stream.getvalue()


def ev(output: str, pod: str = "web") -> models.Event:
    return models.from_mapping({"rule": "R", "output": output,
                                "output_fields": {"k8s.pod.name": pod, "k8s.ns.name": "n"}})


def test_keys() -> None:
    assert key_of(ev("a"), ()) == key_of(ev("a", pod="other"), ())
    assert key_of(ev("a"), ()) != key_of(ev("b"), ())
    fields = ("rule", "output_fields.k8s.pod.name")
    assert key_of(ev("a"), fields) == key_of(ev("b"), fields)
    assert key_of(ev("a"), fields) != key_of(ev("a", pod="x"), fields)


def test_window_expires() -> None:
    now = [100.0]
    dedup = Deduplicator(5, backend=LocalBackend(clock=lambda: now[0]))
    assert not dedup.is_duplicate(ev("a"))
    assert dedup.is_duplicate(ev("a"))
    now[0] += 5.1
    assert not dedup.is_duplicate(ev("a"))


def test_zero_window_disables() -> None:
    dedup = Deduplicator(0)
    assert not dedup.is_duplicate(ev("a")) and not dedup.is_duplicate(ev("a"))


def test_memory_is_bounded() -> None:
    backend = LocalBackend(max_entries=100)
    for i in range(1000):
        backend.first_seen(str(i), 60)
    assert len(backend) == 100
    assert backend.first_seen("0", 60)  # forgotten, so seen "first" again
    assert not backend.first_seen("999", 60)


class _Writes(io.StringIO):
    """A stream that remembers each write (one write is one system call for a file)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_batched_lines_arrive_within_the_interval_in_order() -> None:
    stream = _Writes()
    log.setup("json", stream=stream, flush_interval=0.2)
    logger = logging.getLogger("talon.test")
    try:
        for i in range(5):
            log.emit(logger, logging.INFO, "action", seq=i)
        assert stream.getvalue() == ""  # held back for one write
        deadline = time.monotonic() + 2.0
        while not stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [json.loads(line)["seq"] for line in stream.getvalue().splitlines()] == \
            list(range(5))
        assert len(stream.writes) == 1
    finally:
        log.setup("json", stream=io.StringIO())


def test_a_warning_is_written_at_once_after_the_lines_before_it() -> None:
    stream = _Writes()
    log.setup("text", stream=stream, flush_interval=30.0)
    logger = logging.getLogger("talon.test")
    try:
        log.emit(logger, logging.INFO, "action", status="in_progress")
        log.emit(logger, logging.ERROR, "action", status="failure", error="boom")
        lines = stream.getvalue().splitlines()
        assert [line.split()[1] for line in lines] == ["INF", "ERR"]
        log.emit(logger, logging.INFO, "action", status="ignored")
        assert len(stream.getvalue().splitlines()) == 2
        log.setup("text", stream=io.StringIO())  # replacing the handler flushes it
        assert "status=ignored" in stream.getvalue().splitlines()[2]
    finally:
        log.setup("json", stream=io.StringIO())


class _Stalled(io.StringIO):
    """A stream whose writes block until `release` is set, like a stuck log reader."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait(10)
        return super().write(text)


def test_a_stalled_reader_holds_back_the_logging_thread_not_memory() -> None:
    stream = _Stalled()
    handler = log.LineHandler(stream, flush_interval=0.01, max_pending=5)
    handler.setFormatter(log.formatter("text", stream))
    logger = logging.getLogger("talon.test.stalled")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    writer = threading.Thread(target=lambda: [
        log.emit(logger, logging.INFO, "line", seq=i) for i in range(20)])
    try:
        writer.start()
        writer.join(0.5)
        assert writer.is_alive()  # blocked behind the stalled write, not buffering on
        stream.release.set()
        writer.join(5)
        handler.flush()
        assert [line.split("seq=")[1] for line in stream.getvalue().splitlines()] == \
            [str(i) for i in range(20)]
    finally:
        stream.release.set()
        logger.removeHandler(handler)
        handler.close()
