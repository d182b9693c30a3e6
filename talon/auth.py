"""Credentials for ingest and /metrics: bearer tokens (also as a Basic password) and
signed requests.

Layer L1: stdlib plus talon.filewatch, talon.log and talon.errors. Tokens come from a
file, one per line, and the HMAC secret from another; both are read again when their
file changes (a file that becomes unreadable keeps the last good values, with a warning).
Every token is compared in constant time, each against every configured one. A signed
request carries `X-Talon-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`;
it is refused when `t` is more than `max_skew_seconds` away from now, or when the same
signature was already accepted within that window. Values read here are handed to the
logger's masking as soon as they are read, so they never show in a log line.
"""

from __future__ import annotations

import binascii
import collections
import hashlib
import hmac
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from talon import filewatch, log
from talon.config import AuthSettings
from talon.errors import ConfigError

logger = logging.getLogger("talon.server")

SIGNATURE_HEADER = "X-Talon-Signature"
MIN_TOKEN_LENGTH = 16
REPLAY_CACHE_SIZE = 100_000
"""Signatures remembered against replays (the oldest are forgotten first)."""
_REALM = 'realm="talon"'


class HeaderSource(Protocol):
    def get_all(self, name: str) -> list[str] | None: ...


def _read(path: str, key: str) -> bytes:
    try:
        with Path(path).open("rb") as fh:
            return fh.read(1 << 20)
    except OSError as exc:
        raise ConfigError([f"{key} {path}: cannot read the file: {exc.strerror or exc}"]) \
            from None


def read_tokens(path: str) -> tuple[bytes, ...]:
    """The tokens of `path`: one per line, surrounding whitespace and blank lines ignored."""
    key = "auth.bearer_tokens_file"
    tokens = tuple(dict.fromkeys(line.strip() for line in _read(path, key).splitlines()
                                 if line.strip()))
    if not tokens:
        raise ConfigError([f"{key} {path}: no token in the file"])
    for number, token in enumerate(tokens, 1):
        if not all(0x21 <= c <= 0x7E for c in token) or len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError([f"{key} {path}: token {number} must be at least "
                               f"{MIN_TOKEN_LENGTH} printable ASCII characters without "
                               "spaces (e.g. the output of `openssl rand -hex 32`)"])
    return tokens


def read_secret(path: str) -> bytes:
    """The HMAC secret of `path`, its trailing newline stripped."""
    key = "auth.hmac_secret_file"
    secret = _read(path, key).rstrip(b"\r\n")
    if len(secret) < MIN_TOKEN_LENGTH:
        raise ConfigError([f"{key} {path}: the secret must be at least {MIN_TOKEN_LENGTH} "
                           "bytes long"])
    return secret


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The `X-Talon-Signature` value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def parse_signature(value: str) -> tuple[int, list[str]] | None:
    """(t, [v1 values]) of a signature header value, None when malformed."""
    timestamp: int | None = None
    macs: list[str] = []
    for part in value.split(",")[:8]:
        name, _, text = part.strip().partition("=")
        if name == "t" and text.isascii() and text.isdigit() and len(text) <= 12:
            timestamp = int(text)
        elif name == "v1" and len(text) == 64:
            macs.append(text.lower())
    return (timestamp, macs) if timestamp is not None and macs else None


class ReplayCache:
    """Signatures accepted within the window, bounded in number."""

    def __init__(self, size: int = REPLAY_CACHE_SIZE) -> None:
        self.size = size
        self._expiry: dict[str, float] = {}
        self._order: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()

    def first_use(self, key: str, expires: float, now: float) -> bool:
        """Record `key` until `expires`; False when it is already recorded and current."""
        with self._lock:
            seen = self._expiry.get(key)
            if seen is not None and seen >= now:
                return False
            while self._order and (len(self._order) >= self.size
                                   or self._expiry.get(self._order[0], now) < now):
                self._expiry.pop(self._order.popleft(), None)
            self._expiry[key] = expires
            self._order.append(key)
            return True


def _credentials(value: str) -> bytes | None:
    """The token in one `Authorization` value: Bearer, or a Basic password."""
    scheme, _, rest = value.strip().partition(" ")
    scheme, rest = scheme.lower(), rest.strip()
    if scheme == "bearer":
        return rest.encode("latin-1")
    if scheme == "basic":
        try:
            decoded = binascii.a2b_base64(rest.encode("latin-1"), strict_mode=True)
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(b":")[2]
    return None


class Authenticator:
    """Decides whether a request's credentials admit it (client certificates are checked
    by talon.tls; a connection they authenticated needs nothing more)."""

    def __init__(self, settings: AuthSettings, *, interval: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.open_metrics = settings.open_metrics
        self.max_skew = settings.max_skew_seconds
        self._clock = clock
        self._replays = ReplayCache()
        self._tokens: filewatch.Watched[tuple[bytes, ...]] | None = None
        self._secret: filewatch.Watched[bytes] | None = None
        path, secret_path = settings.bearer_tokens_file, settings.hmac_secret_file
        if path:
            self._tokens = filewatch.Watched(
                [path], lambda: read_tokens(path), interval=interval,
                on_error=_warn("bearer tokens", path), on_load=_mask)
        if secret_path:
            self._secret = filewatch.Watched(
                [secret_path], lambda: read_secret(secret_path), interval=interval,
                on_error=_warn("HMAC secret", secret_path), on_load=lambda s: _mask((s,)))
        self.challenges: tuple[str, ...] = (
            *((f"Bearer {_REALM}", f'Basic {_REALM}, charset="UTF-8"') if path else ()),
            *((f"Talon-Signature {_REALM}, header=\"{SIGNATURE_HEADER}\"",)
              if secret_path else ()))

    def by_header(self, headers: HeaderSource) -> bool:
        """Whether an `Authorization` header carries a configured token."""
        if self._tokens is None:
            return False
        values = headers.get_all("Authorization") or ()
        tokens = self._tokens.get()
        ok = False
        for value in values[:4]:
            given = _credentials(value)
            if given is not None:
                for token in tokens:  # every one, so the time taken says nothing
                    ok |= hmac.compare_digest(given, token)
        return ok

    def signed(self, headers: HeaderSource) -> bool:
        """Whether the request claims a signature that `by_signature` should check."""
        return self._secret is not None and bool(headers.get_all(SIGNATURE_HEADER))

    def by_signature(self, headers: HeaderSource, body: bytes) -> bool:
        """Whether `X-Talon-Signature` is a fresh, unreplayed signature of `body`."""
        values = headers.get_all(SIGNATURE_HEADER) or []
        if self._secret is None or len(values) != 1:
            return False
        parsed = parse_signature(values[0])
        now = self._clock()
        if parsed is None or abs(now - parsed[0]) > self.max_skew:
            return False
        timestamp, macs = parsed
        expected = sign(self._secret.get(), body, timestamp).rpartition("=")[2]
        matched = [m for m in macs if hmac.compare_digest(m, expected)]
        return bool(matched) and self._replays.first_use(
            matched[0], timestamp + self.max_skew, now)


def _mask(values: Iterable[bytes]) -> None:
    log.add_secrets(v.decode("utf-8", "replace") for v in values)


def _warn(what: str, path: str) -> Callable[[Exception], None]:
    def warn(exc: Exception) -> None:
        log.emit(logger, logging.WARNING, "auth", result=f"{what} file changed but cannot "
                 f"be used: keeping the previous {what}", file=path, error=str(exc))
    return warn


def configured(settings: AuthSettings) -> bool:
    """Whether tokens or signatures are required (client certificates aside)."""
    return bool(settings.bearer_tokens_file or settings.hmac_secret_file)


def is_loopback(address: str) -> bool:
    """Whether a listen address is reachable from this host only."""
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False
