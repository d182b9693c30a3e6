"""Structured logging: text, color and JSON formatters, field escaping, secret masking.

Layer L1: stdlib only. Code logs with `log.emit(logger, level, message, **fields)`;
fields travel in `record.fields`. Every value is escaped (control characters and quotes),
so an event string cannot forge a log line; values listed as secrets are masked.
`setup()` is called once, by the CLI.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

_LEVELS = {logging.DEBUG: "DBG", logging.INFO: "INF", logging.WARNING: "WRN",
           logging.ERROR: "ERR", logging.CRITICAL: "FTL"}
_COLORS = {"DBG": "\x1b[90m", "INF": "\x1b[32m", "WRN": "\x1b[33m", "ERR": "\x1b[31m",
           "FTL": "\x1b[1;31m"}
_FIRST = ("error",)
_ESCAPES = {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord('"'): '\\"',
            ord("\\"): "\\\\"}


def emit(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log `message` with structured `fields` (empty values are dropped)."""
    if logger.isEnabledFor(level):
        clean = {k: v for k, v in fields.items()
                 if v or (v is not None and isinstance(v, int | float))}
        logger.log(level, message, extra={"fields": clean})


def escape(text: str) -> str:
    """Make `text` safe on one log line: no raw control characters, quotes escaped."""
    out = text.translate(_ESCAPES)
    if any(ord(c) < 32 or ord(c) == 127 for c in out):
        out = "".join(c if ord(c) >= 32 and ord(c) != 127 else f"\\x{ord(c):02x}" for c in out)
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


class _Masker:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        if not self.secrets:
            return text
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(getattr(record, "fields", {}) or {})
    if record.exc_info and "error" not in fields:
        fields["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}" \
            if record.exc_info[0] else ""
    ordered = {k: fields[k] for k in _FIRST if k in fields}
    ordered.update(sorted((k, v) for k, v in fields.items() if k not in _FIRST))
    return ordered


_second: list[Any] = [None, ""]


def _time(record: logging.LogRecord) -> str:
    """RFC 3339 UTC with milliseconds; the date part is formatted once per second."""
    whole = int(record.created)
    cache = _second
    if cache[0] != whole:
        cache[1] = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cache[0] = whole
    return f"{cache[1]}.{int((record.created - whole) * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """`<time> <LVL> <message> key=value …`, values quoted when they contain spaces."""

    def __init__(self, color: bool = False, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.color, self.mask = color, _Masker(secrets)

    def format(self, record: logging.LogRecord) -> str:
        level = _LEVELS.get(record.levelno, "INF")
        parts = [_time(record), self._paint(level, level), escape(record.getMessage())]
        for key, value in _fields(record).items():
            text = escape(self.mask(_text(value)))
            if not text or any(c in text for c in ' ="'):
                text = f'"{text}"'
            parts.append(f"{self._paint('key', key + '=')}{text}")
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
        self.mask = _Masker(secrets)

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"level": logging.getLevelName(record.levelno).lower(),
                                "time": _time(record), "message": record.getMessage()}
        data.update(_fields(record))
        return self.mask(json.dumps(data, default=str, ensure_ascii=True))


def formatter(log_format: str, stream: TextIO, secrets: Iterable[str] = ()) -> logging.Formatter:
    """The formatter for `log_format`; `color` falls back to text when not on a TTY."""
    if log_format == "json":
        return JsonFormatter(secrets)
    color = log_format == "color" and hasattr(stream, "isatty") and stream.isatty()
    return TextFormatter(color=color, secrets=secrets)


def setup(log_format: str = "text", *, level: int = logging.INFO, stream: TextIO | None = None,
          secrets: Iterable[str] = ()) -> None:
    """Configure the `talon` logger once (replacing earlier handlers)."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format, stream, secrets))
    root = logging.getLogger("talon")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    logging.logThreads = False  # no formatter shows them: save their cost on every line
    logging.logProcesses = False
    logging.logMultiprocessing = False
