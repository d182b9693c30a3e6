"""The one HTTP helper the slack, webhook, loki and elasticsearch notifiers share.

Layer L2 (notifiers package, stdlib only: urllib). `post()` sends one request with the
delivery's per-attempt timeout, retries connection errors, timeouts, 5xx and 429 with
exponential backoff (honouring `Retry-After`), never retries other 4xx, and raises
`NotifyError` with the upstream wording of the status. Redirects are not followed, so
credentials never travel to another host. Messages only show `redact(url)`.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from http.client import HTTPException
from typing import Any

from talon.plugin import Delivery, NotifyError, ParamValueError

logger = logging.getLogger(__name__)

STATUS_TEXT = {
    400: "header missing",
    401: "authentication error",
    403: "access denied",
    404: "resource not found",
    422: "wrong request",
    429: "exceeding post rate limit",
}
"""How the Go client words these statuses; other statuses show their reason phrase."""

MAX_BODY = 1 << 20
EXCERPT = 200


def check_url(url: str) -> str | None:
    """None when `url` is a usable http(s) URL, else the problem (never echoing the URL)."""
    if not url:
        return "required setting is empty"
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "invalid url: contains whitespace or control characters"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "invalid url"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "invalid url: expected http(s)://host[:port][/path]"
    return None


def validate_url(field: str, url: str) -> None:
    """Raise ParamValueError(field, …) unless `url` is a usable http(s) URL."""
    problem = check_url(url)
    if problem:
        raise ParamValueError(field, problem)


def validate_headers(field: str, headers: Mapping[str, str]) -> None:
    """Raise ParamValueError(field, …) on the first invalid custom header."""
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem:
            raise ParamValueError(field, problem)


def resolve_url_alias(settings: Any) -> None:
    """Accept `url` or `host_port` (exactly one); store the value in `url`, validated."""
    if settings.url and settings.host_port:
        raise ParamValueError("host_port", "set either url or its alias host_port, not both")
    if not settings.url and not settings.host_port:
        raise ParamValueError("url", "required setting is missing (or set its alias host_port)")
    key = "url" if settings.url else "host_port"
    value = settings.url or settings.host_port
    validate_url(key, value)
    object.__setattr__(settings, "url", value)
    object.__setattr__(settings, "host_port", "")


def redact(url: str) -> str:
    """`scheme://host[:port]/…`: no credentials, path or query (they may hold tokens)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{netloc}{rest}"


def join(base: str, path: str) -> str:
    """`base` without trailing slashes + `path` (which starts with a slash)."""
    return base.rstrip("/") + path


def json_body(data: Any) -> bytes:
    """`data` as a JSON request body plus the trailing newline the Go encoder writes."""
    return json.dumps(data).encode() + b"\n"


def basic_auth(user: str, password: str) -> str:
    """The value of an `Authorization: Basic …` header."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def header_problem(name: str, value: str) -> str | None:
    """None when `name: value` is a valid HTTP header, else the problem."""
    if not name or any(c in name for c in " \t\r\n:") or not name.isascii():
        return f"invalid header name {name!r}"
    if "\r" in value or "\n" in value:
        return f"header {name!r}: value must not contain line breaks"
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return f"header {name!r}: value must be ISO-8859-1 text"
    return None


def backoff(delivery: Delivery, attempt: int, retry_after: float | None = None) -> float:
    """Wait before retry number `attempt` (0-based): Retry-After when given, else exponential."""
    wait = retry_after if retry_after is not None else delivery.backoff * 2 ** attempt
    return max(0.0, min(wait, delivery.max_backoff))


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP date), None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _excerpt(body: bytes) -> str:
    text = body[: EXCERPT * 4].decode("utf-8", "replace")
    text = " ".join(text.split())
    return text[:EXCERPT] + ("…" if len(text) > EXCERPT else "")


def _status_message(status: int, reason: str, body: bytes) -> str:
    text = STATUS_TEXT.get(status) or f"{status} {reason}".strip()
    if status in STATUS_TEXT:
        text = f"{status} {text}"
    if 300 <= status < 400:
        text += " (redirects are not followed)"
    excerpt = _excerpt(body)
    return f"{text}: {excerpt}" if excerpt else text


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


def _split_userinfo(url: str, headers: dict[str, str]) -> str:
    """Move `user:password@` from the URL into a Basic Authorization header."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    if not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = basic_auth(user, password)
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _attempt(req: urllib.request.Request, timeout: float) -> tuple[int, str, bytes, str | None]:
    """One round trip: (status, reason, body, Retry-After); raises OSError/HTTPException."""
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.reason, resp.read(MAX_BODY), None
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                body = exc.read(MAX_BODY)
            except (OSError, HTTPException):
                body = b""
            return exc.code, str(exc.reason), body, exc.headers.get("Retry-After")


def _is_certificate_error(exc: BaseException) -> bool:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, ssl.SSLCertVerificationError)


def _failure(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"connection failed: {exc}"


def post(
    url: str, body: bytes | None, headers: Mapping[str, str], delivery: Delivery,
    method: str = "POST", *, accept: Collection[int] = (),
) -> tuple[int, bytes]:
    """Send one request; return (status, body) on 2xx or on a status listed in `accept`.

    Retries (up to `delivery.retries` times) connection errors, timeouts, 5xx and 429;
    raises NotifyError naming the method, the redacted URL and the last failure.
    """
    where = f"{method} {redact(url)}"
    problem = check_url(url)
    if problem:
        raise NotifyError(f"{where}: {problem}")
    hdrs = dict(headers)
    target = _split_userinfo(url, hdrs)
    last = ""
    for attempt in range(delivery.retries + 1):
        started = time.monotonic()
        req = urllib.request.Request(  # noqa: S310 - check_url allows http(s) only
            target, data=body, headers=hdrs, method=method)
        retry_after: float | None = None
        try:
            status, reason, answer, retry_header = _attempt(req, delivery.timeout)
        except ValueError:
            # http.client rejects bad header values; its message would quote the value.
            raise NotifyError(f"{where} failed: invalid request headers or URL") from None
        except (OSError, HTTPException) as exc:
            last = _failure(exc)
            if _is_certificate_error(exc):
                break
        else:
            if 200 <= status < 300 or status in accept:
                return status, answer
            last = _status_message(status, reason, answer)
            if not (status >= 500 or status == 429):
                break
            retry_after = _retry_after(retry_header)
        if attempt == delivery.retries:
            break
        wait = backoff(delivery, attempt, retry_after)
        logger.info("%s failed after %.2fs (%s); retry %d/%d in %.2fs", where,
                    time.monotonic() - started, last, attempt + 1, delivery.retries, wait)
        delivery.sleep(wait)
    raise NotifyError(f"{where} failed: {last}")
