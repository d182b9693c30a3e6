"""Structured logging: text, color and JSON formatters, field escaping, secret masking.

Layer L1: stdlib only. Code logs with `log.emit(logger, level, message, **fields)`;
fields travel in `record.fields`. Every value is escaped (control characters and quotes),
so an event string cannot forge a log line or reorder it on screen: C0 and C1 controls,
Unicode line separators and bidi controls become `\\xNN`/`\\uNNNN` in text lines (JSON
lines are ASCII-only). Secrets are masked in the finished line (`talon.redact`).
`setup()` is called once, by the CLI.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from talon import redact

_LEVELS = {logging.DEBUG: "DBG", logging.INFO: "INF", logging.WARNING: "WRN",
           logging.ERROR: "ERR", logging.CRITICAL: "FTL"}
_COLORS = {"DBG": "\x1b[90m", "INF": "\x1b[32m", "WRN": "\x1b[33m", "ERR": "\x1b[31m",
           "FTL": "\x1b[1;31m"}
_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
          logging.ERROR: "error", logging.CRITICAL: "critical"}
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=True)
"""Shared and stateless: `json.dumps` with `default=` builds a new encoder per call."""
_SORTED_ENCODER = json.JSONEncoder(default=str, ensure_ascii=True, sort_keys=True)
_json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii
"""A JSON string literal, ASCII only (the C encoder's; most log values are strings)."""
_FIRST = ("error",)
_KEYS_KEPT = 512
"""Most field names a JSON formatter keeps encoded."""
_UNSAFE = "\x80-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
"""C1 controls (NEL among them), line/paragraph separators, bidi marks, embeddings,
overrides and isolates: terminals and viewers break or reorder lines on them."""
_CONTROL = re.compile(f"[\\x00-\\x1f\\x7f{_UNSAFE}]")
_QUOTE = re.compile('[ ="]')
_SPECIAL = re.compile(f'[\\x00-\\x20\\x7f"\\\\={_UNSAFE}]')
"""What makes a text value need escaping or quotes."""
_ESCAPES = {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord('"'): '\\"',
            ord("\\"): "\\\\"}


def _encoder(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """`encoder.encode`, its C function made once rather than per call (as `encode`
    does). No circular-reference check: its memo would be shared by the threads that
    log, and log values are plain data (a cycle still fails, as a RecursionError)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C encoder
        return encoder.encode
    chunks = make(None, encoder.default, _json_string, None, encoder.key_separator,
                  encoder.item_separator, encoder.sort_keys, encoder.skipkeys,
                  encoder.allow_nan)
    return lambda value: "".join(chunks(value, 0))


_encode = _encoder(_ENCODER)
"""A log value as JSON (what `_ENCODER.encode` gives), for lines in the JSON format."""
_encode_sorted = _encoder(_SORTED_ENCODER)
"""The same with keys sorted (`json.dumps(value, default=str, sort_keys=True)`)."""
_RECORD_START = getattr(logging, "_startTime", time.time())
_record_template: dict[str, Any] = {}
"""The attributes every record made by `emit` shares, while no thread, process or
multiprocessing name is logged (`setup` turns them off)."""


def _record(logger: logging.Logger, level: int, message: str) -> logging.LogRecord:
    """What `logger.makeRecord(name, level, "", 0, message, (), None)` makes, without
    LogRecord.__init__'s work (path splitting, flag tests) when `setup` turned the
    thread, process and multiprocessing names off and no record factory is set."""
    if (logging.logThreads or logging.logProcesses or logging.logMultiprocessing
            or logging.getLogRecordFactory() is not logging.LogRecord
            or type(logger).makeRecord is not logging.Logger.makeRecord):
        return logger.makeRecord(logger.name, level, "", 0, message, (), None)
    template = _record_template
    if not template:
        template.update(vars(logging.LogRecord("", 0, "", 0, "", (), None)))
    record: logging.LogRecord = logging.LogRecord.__new__(logging.LogRecord)
    attrs = record.__dict__
    attrs.update(template)
    now = time.time()
    attrs["name"], attrs["msg"], attrs["levelno"] = logger.name, message, level
    attrs["levelname"] = logging.getLevelName(level)
    attrs["created"], attrs["msecs"] = now, int((now - int(now)) * 1000) + 0.0
    attrs["relativeCreated"] = (now - _RECORD_START) * 1000
    return record


def emit(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log `message` with structured `fields` (empty values are dropped).

    The record is made without the caller lookup `Logger.log` does (a stack walk per
    line that no formatter here shows): logging runs several times per event.
    """
    if logger.isEnabledFor(level):
        record = _record(logger, level, message)
        record.fields = {k: v for k, v in fields.items()
                         if v or (v is not None and isinstance(v, int | float))}
        logger.handle(record)


def problems(logger: logging.Logger, found: Iterable[Any], message: str = "rules") -> None:
    """Log each problem (a `talon.errors.Problem`): errors at ERROR, warnings at WARNING."""
    for p in found:
        level = logging.ERROR if p.severity == "error" else logging.WARNING
        emit(logger, level, message, error=str(p))


class Throttle:
    """At most one log line per key every `interval` seconds (a flood of one kind of
    problem must not flood the log); counts the lines it held back. `clock` is injectable."""

    def __init__(self, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.clock = interval, clock
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}

    def allow(self, key: str) -> int | None:
        """None while a line for `key` went out less than `interval` ago; else the number
        of lines held back since the previous one (0 the first time)."""
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last[0] < self.interval:
                self._last[key] = (last[0], last[1] + 1)
                return None
            self._last[key] = (now, 0)
            return last[1] if last is not None else 0


def _code(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """Make `text` safe on one log line: no raw control, separator or bidi character,
    quotes and backslashes escaped."""
    out = text.translate(_ESCAPES)
    if _CONTROL.search(out):
        out = _CONTROL.sub(_code, out)
    return out


def _json_inner(text: str) -> str:
    return _json_string(text)[1:-1]


def masker(secrets: Iterable[str]) -> redact.Redactor:
    """Masks `secrets` as they appear in text lines (escaped) and JSON lines (encoded)."""
    return redact.Redactor(secrets, (escape, _json_inner))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list | tuple):
        return _encode_sorted(value)
    return str(value)


def add_secrets(secrets: Iterable[str]) -> None:
    """Mask `secrets` in every line the `talon` logger writes from now on (values read at
    run time, such as tokens, which `setup(secrets=...)` could not know)."""
    values = list(secrets)
    for handler in logging.getLogger("talon").handlers:
        mask = getattr(handler.formatter, "mask", None)
        if isinstance(mask, redact.Redactor):
            mask.add(values)


def _fields(record: logging.LogRecord) -> list[tuple[str, Any]]:
    """The record's fields in line order: `_FIRST` keys, then the others sorted."""
    fields = getattr(record, "fields", None) or {}
    if record.exc_info and "error" not in fields:
        kind, exc = record.exc_info[0], record.exc_info[1]
        fields = {**fields, "error": f"{kind.__name__}: {exc}" if kind else ""}
    keys = sorted(fields)  # strings only: the sort's fast path, values never compared
    for first in reversed(_FIRST):
        if first in fields:
            keys.remove(first)
            keys.insert(0, first)
    return [(key, fields[key]) for key in keys]


class _Clock:
    """RFC 3339 UTC times with milliseconds; the date part is formatted once per second.

    The (second, text) pair is replaced in one assignment, so a thread never pairs one
    second's number with another second's text.
    """

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, record: logging.LogRecord) -> str:
        whole = int(record.created)
        second, text = self._second
        if second != whole:
            text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (whole, text)
        return f"{text}.{int((record.created - whole) * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """`<time> <LVL> <message> key=value …`, values quoted when they contain spaces."""

    def __init__(self, color: bool = False, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.color, self.mask = color, masker(secrets)
        self._time = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        level = _LEVELS.get(record.levelno, "INF")
        parts = [self._time(record), self._paint(level, level), escape(record.getMessage())]
        for key, value in _fields(record):
            text = value if type(value) is str else _text(value)
            if not text or _SPECIAL.search(text):  # else it is already safe as it is
                text = escape(text)
                if not text or _QUOTE.search(text):
                    text = f'"{text}"'
            parts.append(f"{self._paint('key', key + '=')}{text}" if self.color
                         else f"{key}={text}")
        return self.mask(" ".join(parts))

    def _paint(self, kind: str, text: str) -> str:
        if not self.color:
            return text
        code = _COLORS.get(kind, "\x1b[36m")
        return f"{code}{text}\x1b[0m"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: level, time, message and the fields."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.mask = masker(secrets)
        self._time = _Clock()
        self._keys: dict[str, str] = {}
        """Each field name's `"name": ` (names come from code: few, and capped anyway)."""

    def format(self, record: logging.LogRecord) -> str:
        level = _NAMES.get(record.levelno) or record.levelname.lower()
        parts = [f'{{"level": "{level}", "time": "{self._time(record)}", "message": '
                 f"{_json_string(record.getMessage())}"]
        keys = self._keys
        for key, value in _fields(record):
            kind = type(value)
            if kind is str:
                text = _json_string(value)
            elif kind is bool:
                text = "true" if value else "false"
            elif kind is int:
                text = int.__repr__(value)
            else:
                text = _encode(value)
            prefix = keys.get(key)
            if prefix is None:
                prefix = f"{_json_string(key)}: "
                if len(keys) < _KEYS_KEPT:
                    keys[key] = prefix
            parts.append(prefix + text)
        return self.mask(", ".join(parts) + "}")


def formatter(log_format: str, stream: TextIO, secrets: Iterable[str] = ()) -> logging.Formatter:
    """The formatter for `log_format`; `color` falls back to text when not on a TTY."""
    if log_format == "json":
        return JsonFormatter(secrets)
    color = log_format == "color" and hasattr(stream, "isatty") and stream.isatty()
    return TextFormatter(color=color, secrets=secrets)


class LineHandler(logging.Handler):
    """Writes one line per record to `stream`.

    With `flush_interval` > 0, INFO and DEBUG lines are written in batches at most that
    long after they were logged (one system call for many lines: the server logs several
    lines per event), by the daemon thread `talon-log-flush`; a WARNING or worse line is
    written at once, with every line before it, so that order is kept and failures are
    never held back. `flush()` (also run by `logging.shutdown` at exit) writes the rest.
    At most `max_pending` lines wait: beyond that the thread logging writes them itself,
    so a stalled log reader slows Talon down (as unbatched logging would) instead of
    filling its memory.
    """

    def __init__(self, stream: TextIO, flush_interval: float = 0.0,
                 max_pending: int = 10_000) -> None:
        super().__init__()
        self.stream, self.flush_interval = stream, flush_interval
        self.max_pending = max_pending
        self._pending: list[str] = []
        self._pending_lock = threading.Lock()
        self._writing = threading.Lock()
        self._dirty = threading.Event()
        self._closed = False
        if flush_interval > 0:
            threading.Thread(target=self._flusher, name="talon-log-flush", daemon=True).start()

    def handle(self, record: logging.LogRecord) -> bool:
        """As Handler.handle, without holding the handler lock around emit(): emit
        formats outside any lock and takes its own short ones."""
        rv = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # a filter may return a replacement
            record = rv
        if rv:
            self.emit(record)
        return bool(rv)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            with self._pending_lock:
                self._pending.append(line)
                full = len(self._pending) >= self.max_pending
            if full or record.levelno >= logging.WARNING or self.flush_interval <= 0:
                self.flush()
            elif not self._dirty.is_set():
                self._dirty.set()
        except Exception:  # noqa: BLE001 - logging must never break the caller
            self.handleError(record)

    def flush(self) -> None:
        """Write every pending line. Writers queue on `_writing`, so batches keep their
        order, while `_pending_lock` is held only to take the batch: a thread logging
        never waits for another thread's system call."""
        with self._writing:
            with self._pending_lock:
                if not self._pending:
                    return
                text = "".join(self._pending)
                self._pending.clear()
            with contextlib.suppress(OSError, ValueError):
                self.stream.write(text)
                self.stream.flush()

    def _flusher(self) -> None:
        while not self._closed:
            self._dirty.wait()
            time.sleep(self.flush_interval)
            self._dirty.clear()
            self.flush()

    def close(self) -> None:
        self.flush()
        self._closed = True
        self._dirty.set()
        super().close()


def setup(log_format: str = "text", *, level: int = logging.INFO, stream: TextIO | None = None,
          secrets: Iterable[str] = (), flush_interval: float = 0.0) -> None:
    """Configure the `talon` logger (replacing, and closing, earlier handlers).

    `flush_interval`: see LineHandler; 0 writes every line as it is logged.
    """
    stream = stream or sys.stderr
    handler = LineHandler(stream, flush_interval)
    handler.setFormatter(formatter(log_format, stream, secrets))
    root = logging.getLogger("talon")
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    logging.logThreads = False  # no formatter shows them: save their cost on every line
    logging.logProcesses = False
    logging.logMultiprocessing = False
