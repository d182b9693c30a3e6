"""Read recorded Falco events from files, one at a time, in constant memory.

Layer L1 (imports only L0). Two forms are accepted:
- JSON Lines (Falco's `json_output` file output, any suffix): one event per line, read
  line by line; blank lines are skipped; a line longer than `MAX_LINE` bytes is bad;
- a JSON document (`.json` whose first line is not a whole JSON object): one event object
  or a list of them, read whole (meant for hand-written examples, not for recordings).
A `.json` file of several lines whose first is a whole JSON object is read as JSON Lines, so a Falco
file output named `events.json` streams too. Each record says where it came from
(`file:line`, or `file[item]` inside a list) so that a bad one can be named and skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

MAX_LINE = 1048576
"""Longest accepted line in bytes (the server's default body cap)."""

_DECODER = json.JSONDecoder(parse_float=Decimal)


@dataclass(frozen=True, slots=True)
class Record:
    """One line (or list item) of an events file: its text, or why it is unusable."""

    file: str
    line: int | None
    """1-based line number for JSON Lines; None inside a JSON document."""
    item: int | None
    """1-based position inside a JSON list document; None otherwise."""
    text: str
    error: str = ""

    @property
    def where(self) -> str:
        if self.line is not None:
            return f"{self.file}:{self.line}"
        return f"{self.file}[{self.item}]" if self.item is not None else self.file


def quick_parse(text: str) -> Any:
    """The JSON value of `text` (floats as Decimal, as `models.decode` parses them);
    raises ValueError (JSONDecodeError) or RecursionError."""
    return _DECODER.decode(text)


def _first_lines(fh: IO[bytes], count: int) -> list[bytes]:
    found: list[bytes] = []
    while len(found) < count:
        line = fh.readline(MAX_LINE + 1)
        if not line:
            break
        if line.strip():
            found.append(line)
    return found


def is_json_lines(path: Path) -> bool:
    """Whether `path` holds JSON Lines (see the module docstring)."""
    if path.suffix.lower() != ".json":
        return True
    with path.open("rb") as fh:
        first = _first_lines(fh, 2)
    if len(first) < 2:
        return False
    try:
        return isinstance(json.loads(first[0]), dict)
    except (ValueError, RecursionError):
        return False


def _skip_rest(fh: IO[bytes]) -> None:
    """Consume the rest of an over-long line, in bounded pieces."""
    while True:
        piece = fh.readline(MAX_LINE)
        if not piece or piece.endswith(b"\n"):
            return


def _lines(path: Path) -> Iterator[Record]:
    name = str(path)
    with path.open("rb") as fh:
        number = 0
        while True:
            raw = fh.readline(MAX_LINE + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                _skip_rest(fh)
                yield Record(name, number, None, "", f"line longer than {MAX_LINE} bytes")
                continue
            if not raw.strip():
                continue
            try:
                yield Record(name, number, None, raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield Record(name, number, None, "",
                             f"not UTF-8: {exc.reason} at byte {exc.start}")


def _items(text: str) -> Iterator[str]:
    """The exact text of each item of the JSON list `text` (already known to be valid)."""
    index = text.index("[") + 1
    while True:
        while text[index] in " \t\r\n,":
            index += 1
        if text[index] == "]":
            return
        _value, end = _DECODER.raw_decode(text, index)
        yield text[index:end]
        index = end


def _document(path: Path) -> Iterator[Record]:
    name = str(path)
    text = path.read_text(encoding="utf-8", errors="strict")
    try:
        data = quick_parse(text)
    except json.JSONDecodeError as exc:
        yield Record(name, None, None, "", f"invalid JSON: {exc.msg} at line {exc.lineno} "
                                           f"column {exc.colno}")
        return
    except RecursionError:
        yield Record(name, None, None, "", "invalid JSON: nested too deeply")
        return
    if not isinstance(data, list):
        yield Record(name, None, None, text)
        return
    for index, item in enumerate(_items(text), 1):
        yield Record(name, None, index, item)


def records(path: str | Path) -> Iterator[Record]:
    """Every record of the file at `path`, in order; raises OSError if it cannot be read
    (UnicodeDecodeError, a ValueError, for a JSON document that is not UTF-8)."""
    path = Path(path)
    yield from (_lines(path) if is_json_lines(path) else _document(path))
