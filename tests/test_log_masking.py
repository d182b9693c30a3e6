"""Log lines an event cannot bend, and secrets that never reach them.

Covers: the text and color formatters escape Unicode line separators (U+2028, U+2029,
NEL), C1 controls and bidi overrides/isolates/marks in the message and in every field,
while plain non-ASCII text stays readable; JSON lines carry none of them raw. Masking,
in text, color and JSON lines alike: configured secrets (also when they hold quotes,
backslashes or non-ASCII and so appear escaped or JSON-encoded, or percent-encoded in a
URL), the password (or lone user) of URL user info, token-like query parameters
(case-insensitive) and bearer tokens; what is not a secret is left as it is.
"""

from __future__ import annotations

import io
import json
import logging
import urllib.parse

import pytest

from talon import log

DANGEROUS = ["\u2028", "\u2029", "\u0085", "\u0080", "\u009b", "\u009f", "\u202a", "\u202b",
             "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e",
             "\u200f", "\u061c"]


class Tty(io.StringIO):
    """A stream that says it is a terminal, so `color` really paints."""

    def isatty(self) -> bool:
        return True


def capture(fmt: str, secrets: tuple[str, ...] = ()) -> tuple[logging.Logger, io.StringIO]:
    stream: io.StringIO = Tty() if fmt == "color" else io.StringIO()
    log.setup(fmt, stream=stream, secrets=secrets)
    return logging.getLogger("talon.test"), stream


@pytest.mark.parametrize("fmt", ["text", "color"])
@pytest.mark.parametrize("char", DANGEROUS)
def test_text_lines_escape_separators_c1_and_bidi(fmt: str, char: str) -> None:
    logger, stream = capture(fmt)
    log.emit(logger, logging.INFO, f"event{char}", output=f"sh -c id{char}INF forged=1",
             objects={"pod": f"p{char}"})
    text = stream.getvalue()
    assert char not in text
    assert f"\\u{ord(char):04x}" in text
    assert len(text.splitlines()) == 1  # str.splitlines() breaks on U+2028, U+0085…


@pytest.mark.parametrize("fmt", ["text", "color"])
def test_text_lines_keep_plain_unicode(fmt: str) -> None:
    logger, stream = capture(fmt)
    log.emit(logger, logging.INFO, "event", output="café ✓ 日本")
    assert '"café ✓ 日本"' in stream.getvalue()


def test_json_lines_carry_no_raw_separator_or_bidi() -> None:
    logger, stream = capture("json")
    value = "".join(DANGEROUS)
    log.emit(logger, logging.INFO, f"m{value}", output=value, objects={"pod": value})
    text = stream.getvalue()
    assert not set(DANGEROUS) & set(text)
    assert "\\u2028" in text and "\\u202e" in text
    data = json.loads(text)
    assert data["output"] == value and data["objects"] == {"pod": value}


SECRETS = ('pa"ss\\wörd✓', "plain-token-1234")


@pytest.mark.parametrize("fmt", ["text", "color", "json"])
def test_secrets_with_quotes_backslashes_and_non_ascii_are_masked(fmt: str) -> None:
    logger, stream = capture(fmt, secrets=SECRETS)
    secret = SECRETS[0]
    log.emit(logger, logging.WARNING, f"msg {secret}", error=f"auth {secret} refused",
             objects={"header": secret}, result=json.dumps({"echo": secret}),
             output=f"url=https://u:{urllib.parse.quote(secret, safe='')}@h/")
    text = stream.getvalue()
    for form in (secret, 'pa"', 'pa\\"', "wörd", "w\\u00f6rd", "\\u2713", "%C3%B6"):
        assert form not in text, (form, text)
    assert text.count("***") >= 5


@pytest.mark.parametrize("fmt", ["text", "color", "json"])
def test_url_user_info_and_token_parameters_are_masked(fmt: str) -> None:
    logger, stream = capture(fmt)
    log.emit(logger, logging.ERROR, "notification",
             error="POST https://alice:hunter2@hooks.example/x?token=tok-abc&keep=1 failed",
             url="https://ghp_lonetoken@git.example/r.git",
             presigned="https://b.s3.example/k?X-Amz-Credential=AKIA1&X-Amz-Signature=f00d"
                       "&X-Amz-Security-Token=sess1&X-Goog-Signature=beef&Sig=azure1",
             more="?API_KEY=k1&apikey=k2&access_token=k3&key=k4&password=k5&secret=k6"
                  "&signature=k7&client_secret=k8",
             header="Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc")
    text = stream.getvalue()
    for leaked in ("hunter2", "tok-abc", "ghp_lonetoken", "AKIA1", "f00d", "sess1", "beef",
                   "azure1", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "eyJhbGci"):
        assert leaked not in text, (leaked, text)
    for kept in ("https://alice:***@hooks.example/x?token=***&keep=1", "https://***@git.example",
                 "X-Amz-Signature=***", "Bearer ***"):
        assert kept in text, (kept, text)


def test_what_is_not_a_secret_stays() -> None:
    logger, stream = capture("text")
    log.emit(logger, logging.INFO, "http", result="listening on 127.0.0.1:2803",
             url="http://127.0.0.1:2803/healthz?verbose=1&monkey=2", who="git@example.org")
    text = stream.getvalue()
    assert "http://127.0.0.1:2803/healthz?verbose=1&monkey=2" in text
    assert "git@example.org" in text
