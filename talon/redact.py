"""Secret masking for finished log lines.

Layer L1: stdlib only. A `Redactor` replaces with `***`:
- each configured secret value, in every form it can take in a line: as is, after the
  text log's escaping, JSON-encoded (ASCII-only, as the JSON log writes it), both
  (JSON text inside a value), and percent-encoded (inside a URL) - the forms are made by
  the `encodings` the formatter passes in;
- the password of URL user info (`https://user:***@host`), or the whole user info when
  it has no password (`https://***@host`: tokens are often passed as the user name);
- the value of token-like query parameters (`QUERY_KEYS`, any case);
- bearer tokens and Authorization header credentials (`Authorization: Basic ***`).
It runs on the finished line, so a secret is masked wherever it appears: message, any
field, nested values.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterable

MASK = "***"
MIN_SECRET = 4
"""Shorter configured values are not masked: masking `1` or `no` would garble every line."""

QUERY_KEYS = (
    # generic credentials
    "token", "access_token", "refresh_token", "id_token", "auth", "auth_token",
    "session_token", "private_token", "api_key", "api-key", "apikey", "key", "secret",
    "client_secret", "password", "passwd", "pwd",
    # request signatures: Azure SAS (sig), AWS SigV2 and others (signature)
    "sig", "signature",
    # AWS SigV4 presigned URLs: the signature, the temporary session token, and the
    # credential scope (it names the access key id, which the settings treat as secret)
    "x-amz-signature", "x-amz-security-token", "x-amz-credential",
    # Google Cloud Storage V4 signed URLs
    "x-goog-signature",
)
"""Query parameters whose value is a credential or a signature granting access."""

_USERINFO = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/?#@\s:\"'\\<>]*)"
    r"(?::(?P<password>[^/?#@\s\"'\\<>]*))?@")
_QUERY = re.compile(
    r"(?P<head>[?&;](?:" + "|".join(re.escape(k) for k in QUERY_KEYS) + r")=)"
    r"[^&#;\s\"'\\<>]+", re.IGNORECASE)
_AUTH = re.compile(r"(?P<head>(?:\bAuthorization:\s*(?:Basic|Bearer|Token)|\bBearer)\s+)"
                   r"[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)


def _userinfo(match: re.Match[str]) -> str:
    if match.group("password") is not None:
        return f"{match.group('head')}{match.group('user')}:{MASK}@"
    return f"{match.group('head')}{MASK}@"


def _percent_forms(secret: str) -> set[str]:
    return {urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}


def forms(secret: str, encodings: Iterable[Callable[[str], str]]) -> set[str]:
    """`secret` as is, under each encoding, under each pair of them, and percent-encoded."""
    found = {secret} | _percent_forms(secret)
    coded = [encode(secret) for encode in encodings]
    found.update(coded)
    for once in coded:
        found.update(encode(once) for encode in encodings)
    return {f for f in found if len(f) >= MIN_SECRET}


class Redactor:
    """Masks the secrets of one configuration, and generic credentials, in a line."""

    def __init__(self, secrets: Iterable[str],
                 encodings: Iterable[Callable[[str], str]] = ()) -> None:
        self._encodings = tuple(encodings)
        self.secrets: tuple[str, ...] = ()
        """Every form of every secret, longest first (one alternation, longest wins)."""
        self._values: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these values too (secrets read at run time, such as ingest tokens). The
        pattern is replaced whole, so formatting threads need no lock to read it."""
        found = set(self.secrets)
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET:
                found |= forms(secret, self._encodings)
        ordered = tuple(sorted(found, key=len, reverse=True))
        pattern = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None
        self.secrets, self._values = ordered, pattern

    def __call__(self, line: str) -> str:
        values = self._values
        if values is not None:
            line = values.sub(MASK, line)
        if "@" in line:
            line = _USERINFO.sub(_userinfo, line)
        if "=" in line and ("?" in line or "&" in line or ";" in line):  # every log field
            line = _QUERY.sub(lambda m: m.group("head") + MASK, line)  # has a '=': not enough
        lower = line.lower()
        if "bearer" in lower or "authorization" in lower:
            line = _AUTH.sub(lambda m: m.group("head") + MASK, line)
        return line
