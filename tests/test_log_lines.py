"""What a log line holds, whatever the shortcuts taken to write it.

Covers: JSON lines encode every kind of field value as `json` does (strings, booleans,
integers, floats, mappings, lists, objects through `str`), `error` first and the other
fields sorted, empty values dropped; text lines render mappings as sorted JSON; a value
shared by threads logging at once is encoded whole in every line; the records `emit`
makes carry the same attributes as `Logger.makeRecord` gives, with the server's logging
setup and without it (another handler, such as a test's, sees ordinary records).
"""

from __future__ import annotations

import io
import json
import logging
import threading
from typing import Any

from talon import log


class Keep(logging.Handler):
    """Keeps the records it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Opaque:
    def __str__(self) -> str:
        return "opaque <1>"


def json_lines(**fields: Any) -> list[dict[str, Any]]:
    stream = io.StringIO()
    log.setup("json", stream=stream)
    log.emit(logging.getLogger("talon.test"), logging.INFO, "action", **fields)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_encode_each_kind_of_value_as_json_does() -> None:
    params = {"b": [1, 2.5, None, True], "a": {"z": "é\u2028"}, "o": Opaque()}
    [line] = json_lines(rule="R", dry_run=True, count=3, ratio=0.25, zero=0, no=False,
                        parameters=params, names=("x", "y"), thing=Opaque(), empty="",
                        gone=None, error="boom")
    assert line == {"level": "info", "time": line["time"], "message": "action", "rule": "R",
                    "dry_run": True, "count": 3, "ratio": 0.25, "zero": 0, "no": False,
                    "parameters": json.loads(json.dumps(params, default=str)),
                    "names": ["x", "y"], "thing": "opaque <1>", "error": "boom"}


def test_json_fields_come_error_first_then_sorted() -> None:
    stream = io.StringIO()
    log.setup("json", stream=stream)
    log.emit(logging.getLogger("talon.test"), logging.ERROR, "action", zeta="1",
             error="e", alpha="2", mid={"k": 1})
    text = stream.getvalue()
    assert text == (f'{{"level": "error", "time": "{json.loads(text)["time"]}", '
                    '"message": "action", "error": "e", "alpha": "2", "mid": {"k": 1}, '
                    '"zeta": "1"}\n')


def test_text_lines_show_mappings_as_sorted_json() -> None:
    stream = io.StringIO()
    log.setup("text", stream=stream)
    log.emit(logging.getLogger("talon.test"), logging.INFO, "action",
             parameters={"b": 1, "a": "x y"}, dry_run=True)
    assert stream.getvalue().rstrip("\n").endswith(
        ' INF action dry_run=true parameters="{\\"a\\": \\"x y\\", \\"b\\": 1}"')


def test_a_value_shared_by_threads_is_encoded_whole_in_every_line() -> None:
    stream = io.StringIO()
    log.setup("json", stream=stream)
    shared = {"file": "/tmp/x", "items": list(range(50))}
    logger = logging.getLogger("talon.test")

    def write() -> None:
        for _ in range(200):
            log.emit(logger, logging.INFO, "action", parameters=shared)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 800
    assert all(json.loads(line)["parameters"] == shared for line in lines)


def _attributes(record: logging.LogRecord) -> dict[str, Any]:
    skip = {"created", "msecs", "relativeCreated", "fields"}
    return {k: v for k, v in vars(record).items() if k not in skip}


def test_records_match_make_record_with_and_without_the_server_setup() -> None:
    logger = logging.getLogger("talon.test")
    for server_setup in (True, False):
        log.setup("json", stream=io.StringIO())
        if not server_setup:
            logging.logThreads = logging.logProcesses = logging.logMultiprocessing = True
        keep = Keep()
        logging.getLogger("talon").addHandler(keep)
        try:
            log.emit(logger, logging.WARNING, "event", rule="R", empty="")
            expected = logger.makeRecord(logger.name, logging.WARNING, "", 0, "event", (), None)
        finally:
            logging.getLogger("talon").removeHandler(keep)
            logging.logThreads = logging.logProcesses = logging.logMultiprocessing = True
        [record] = keep.records
        assert _attributes(record) == _attributes(expected)
        assert record.fields == {"rule": "R"}  # type: ignore[attr-defined]
        assert abs(record.created - expected.created) < 5
        assert record.msecs == int((record.created - int(record.created)) * 1000)
        assert record.getMessage() == "event" and record.levelname == "WARNING"
