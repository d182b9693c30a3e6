"""HTTP/1.x request heads: the request line and the header fields, parsed strictly.

Layer L1: stdlib only. Used by the ingest server instead of `http.client.parse_headers`,
which runs the e-mail parser on every request (about ten times the cost of this one, for
the few headers an event POST carries) and tolerates what HTTP/1.1 says to refuse: a
header line without a colon, a space before the colon, obsolete line folding. Those are
refused here (400), so that no proxy in front can read the framing differently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus

MAX_LINE = 65536
"""Longest request or header line accepted, as the stdlib's limit."""
MAX_HEADERS = 100
MAX_HEAD = 65536
"""Most bytes of header lines accepted in one request, all lines together (431 beyond)."""

_FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n\x00]*?)[ \t]*\r?\n")
_VERSION = re.compile(r"HTTP/(\d{1,10})\.(\d{1,10})")


class HeadError(Exception):
    """The request head is malformed: answer `status` and close the connection."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class Headers:
    """Header fields by case-insensitive name, in arrival order; the subset of the
    `email.message.Message` interface that request handlers use."""

    __slots__ = ("_fields",)

    def __init__(self) -> None:
        self._fields: dict[str, list[str]] = {}

    def add(self, name: str, value: str) -> None:
        self._fields.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of `name`, else `default`."""
        values = self._fields.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str, failobj: list[str] | None = None) -> list[str] | None:
        """Every value of `name` (a new list), else `failobj`."""
        values = self._fields.get(name.lower())
        return list(values) if values else failobj

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def items(self) -> list[tuple[str, str]]:
        return [(k, v) for k, values in self._fields.items() for v in values]


@dataclass(frozen=True, slots=True)
class RequestLine:
    method: str
    target: str
    version: str
    """`HTTP/1.0` or `HTTP/1.1` (other 1.x versions are read as 1.1)."""


def parse_request_line(raw: bytes) -> RequestLine:
    """`METHOD target HTTP/1.x` (CRLF or LF); raises HeadError (400 or 505)."""
    text = raw.decode("latin-1").rstrip("\r\n")
    words = text.split()
    if len(words) != 3:
        raise HeadError(HTTPStatus.BAD_REQUEST, f"bad request line {text[:200]!r}")
    method, target, version = words
    found = _VERSION.fullmatch(version)
    if not found:
        raise HeadError(HTTPStatus.BAD_REQUEST, f"bad HTTP version {version[:40]!r}")
    major, minor = int(found.group(1)), int(found.group(2))
    if major != 1:
        raise HeadError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                        f"HTTP version {major}.{minor} not supported")
    if target.startswith("//"):  # never read as a scheme-relative URL
        target = "/" + target.lstrip("/")
    return RequestLine(method, target, "HTTP/1.0" if minor == 0 else "HTTP/1.1")


def parse_headers(readline: Callable[[int], bytes]) -> Headers:
    """Read header lines up to the empty line; raises HeadError (400 or 431).

    Each line is read up to what is left of MAX_HEAD, so no request makes Talon hold
    more than MAX_HEAD bytes of header lines."""
    headers = Headers()
    left = MAX_HEAD
    for _ in range(MAX_HEADERS + 1):
        line = readline(min(MAX_LINE, left) + 1)
        if len(line) > left:
            raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                            f"request head over {MAX_HEAD} bytes")
        if len(line) > MAX_LINE:
            raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header line too long")
        left -= len(line)
        if line in (b"\r\n", b"\n"):
            return headers
        if not line.endswith(b"\n"):
            raise HeadError(HTTPStatus.BAD_REQUEST, "request head ended early")
        found = _FIELD.fullmatch(line)
        if not found:
            what = "folded header line" if line[:1] in (b" ", b"\t") else "bad header line"
            raise HeadError(HTTPStatus.BAD_REQUEST, what)
        headers.add(found.group(1).decode("ascii"), found.group(2).decode("latin-1"))
    raise HeadError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                    f"more than {MAX_HEADERS} header lines")
