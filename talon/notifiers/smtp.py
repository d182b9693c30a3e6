"""The `smtp` notifier: one e-mail per notification, as text or HTML.

Layer L2 (stdlib smtplib, ssl, email). The mail is a proper MIME message: Subject
`[falco-talon][<status>][<message>] …` on both formats, RFC 2822 Date and a Message-ID;
`html` is multipart/alternative with the plaintext block and an escaped HTML table.
TLS: `tls_mode` auto (STARTTLS when offered; required when `tls: true`), starttls,
implicit (SMTP over TLS, port 465) or none. AUTH happens only when `user` is set, and
never in clear text to a remote host unless `tls_mode: none` says so.
"""

from __future__ import annotations

import email.utils
import html
import ipaddress
import logging
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import ClassVar, Literal

from talon.notifiers import _http, _text
from talon.plugin import Delivery, Notification, NotifyError, ParamValueError, notifier

logger = logging.getLogger(__name__)

DEFAULT_COLOR = "#858585"
LOGO = ("https://raw.githubusercontent.com/cncf/artwork/master/projects/falco/"
        "horizontal/color/falco-horizontal-color.png")

EXAMPLE = """\
notifiers:
  smtp:
    host_port: "localhost:1025"
    from: "falco@falcosecurity.org"
    to: "user@test.com, other@test.com"
    user: "xxxx"
    password: "xxxxx"
    format: "html"
    tls: false
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpSettings:
    """Settings of `notifiers.smtp` (the `from` key is stored as `from_`)."""

    ALIASES: ClassVar[Mapping[str, str]] = {"from": "from_"}

    host_port: str
    """host:port of the SMTP server (port defaults to 25, or 465 for implicit TLS)."""
    from_: str
    """Sender address (`from` in the configuration)."""
    to: str
    """Recipients, comma separated (spaces are removed)."""
    user: str = ""
    """AUTH user; AUTH is attempted only when set."""
    password: str = ""
    """AUTH password (secret)."""
    format: Literal["html", "text"] = "html"
    """`html`: multipart/alternative with text and HTML parts; `text`: plain text only."""
    tls: bool = False
    """Require TLS (STARTTLS unless tls_mode is implicit)."""
    tls_mode: Literal["auto", "starttls", "implicit", "none"] = "auto"
    """auto: STARTTLS when offered; starttls: required; implicit: SMTPS; none: never TLS."""
    ca_file: str = ""
    """Extra CA bundle (PEM) to trust, for servers with a private CA."""

    def __post_init__(self) -> None:
        split_host_port(self.host_port)
        for key, value in (("from", self.from_), ("to", self.to)):
            if "\r" in value or "\n" in value:
                raise ParamValueError(key, "must not contain line breaks")
        if "@" not in email.utils.parseaddr(self.from_)[1]:
            raise ParamValueError("from", f"not an e-mail address: {self.from_!r}")
        rcpts = recipients(self)
        if not rcpts:
            raise ParamValueError("to", "needs at least one address")
        for addr in rcpts:
            if "@" not in addr:
                raise ParamValueError("to", f"not an e-mail address: {addr!r}")
        if self.password and not self.user:
            raise ParamValueError("user", "password is set but user is empty")
        if self.tls and self.tls_mode == "none":
            raise ParamValueError("tls_mode", "tls: true contradicts tls_mode: none")


def split_host_port(value: str) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port` or `host` → (host, port or None); ParamValueError if bad."""
    text = value.strip()
    host, port = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ParamValueError("host_port", f"expected host:port, got {value!r}")
        port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or any(c.isspace() for c in host):
        raise ParamValueError("host_port", f"expected host:port, got {value!r}")
    if not port:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ParamValueError("host_port", f"invalid port in {value!r}")
    return host, int(port)


def recipients(settings: SmtpSettings) -> tuple[str, ...]:
    """The `to` list: comma separated, every space removed, empty items dropped."""
    return tuple(a for a in settings.to.replace(" ", "").split(",") if a)


def subject(n: Notification) -> str:
    """`[falco-talon][<status>][<message>]` + OutputTarget, Action and Rule when set."""
    text = f"[falco-talon][{n.status}][{n.message}]"
    for label, value in (("OutputTarget", n.output_target), ("Action", n.action),
                         ("Rule", n.rule)):
        if value:
            text += f" {label} '{value}'"
    return " ".join(text.split())


def _row(label: str, value: str, *, pre: bool = False) -> str:
    cell = html.escape(value)
    if pre:
        cell = f'<pre style="white-space:pre-wrap;margin:0">{cell}</pre>'
    return (f'<tr><td style="background-color:#858585;color:#fff;font-size:14px">'
            f"<strong>{html.escape(label)}</strong></td>"
            f'<td style="background-color:#d1d6da">{cell}</td></tr>')


def html_body(n: Notification) -> str:
    """The HTML part: logo, a status bar coloured by status, one row per set value."""
    color = _text.STATUS_COLORS.get(n.status, DEFAULT_COLOR)
    rows = [(label, value) for label, value in (
        ("Action", n.action), ("Actionner", n.actionner), ("Rule", n.rule))]
    rows += _text.sorted_objects(n)
    rows += [("Event", n.event), ("Target", n.output_target), ("Message", n.message),
             ("Trace ID", n.trace_id), ("Error", n.error), ("Result", n.result)]
    cells = [_row(label, value) for label, value in rows if value]
    if n.output:
        cells.append(_row("Output", n.output.replace("\r\n", "\n"), pre=True))
    table = ('cellpadding="5" cellspacing="0" '
             'style="font-family:arial,helvetica,sans-serif;width:800px')
    return "\n".join([
        '<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>',
        f'<table {table}"><tr><td><img src="{LOGO}" alt="Falco" width="117" height="47">'
        "</td></tr></table>",
        f'<table {table}"><tr><td style="background-color:{color};text-align:center;'
        f'color:#fff;font-size:12px"><strong>{html.escape(n.status)}</strong></td></tr></table>',
        f'<table {table};font-size:13px">',
        *cells,
        "</table></body></html>",
        "",
    ])


def message(settings: SmtpSettings, n: Notification) -> EmailMessage:
    """The complete MIME message for one notification."""
    msg = EmailMessage()
    msg["Subject"] = subject(n)
    msg["From"] = settings.from_
    msg["To"] = ", ".join(recipients(settings))
    msg["Date"] = email.utils.formatdate(localtime=True)
    domain = email.utils.parseaddr(settings.from_)[1].rpartition("@")[2] or "falco-talon"
    msg["Message-ID"] = email.utils.make_msgid("falco-talon", domain=domain)
    msg.set_content(_text.plaintext(n))
    if settings.format == "html":
        msg.add_alternative(html_body(n), subtype="html")
    return msg


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _describe(exc: BaseException) -> tuple[str, bool]:
    """(message, retryable) for a failed SMTP exchange."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return (f"all recipients refused: {', '.join(exc.recipients)}",
                all(400 <= c < 500 for c in codes))
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return f"authentication failed: {exc.smtp_code} {text}", False
        return f"{exc.smtp_code} {text}", 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return f"not supported by the server: {exc}", False
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS certificate verification failed: {exc.verify_message} "
                "(trust the server's CA with ca_file)", False)
    if isinstance(exc, TimeoutError):
        return "timed out", True
    transient = (isinstance(exc, smtplib.SMTPServerDisconnected)
                 or not isinstance(exc, smtplib.SMTPException))
    return f"{type(exc).__name__}: {exc}", transient


@notifier(
    "smtp", params=SmtpSettings, secrets=("password",), example=EXAMPLE,
    description="Send an e-mail (text or HTML) with the result of each action and output",
)
class SmtpNotifier:
    """Sends one e-mail per notification."""

    def __init__(self, settings: SmtpSettings, delivery: Delivery) -> None:
        self.settings = settings
        self.delivery = delivery
        host, port = split_host_port(settings.host_port)
        self.host = host
        self.port = port or (465 if settings.tls_mode == "implicit" else 25)
        self.where = f"smtp {self.host}:{self.port}"
        self.sender = email.utils.parseaddr(settings.from_)[1]
        self.recipients = list(recipients(settings))
        self.context = ssl.create_default_context()
        if settings.ca_file:
            try:
                self.context.load_verify_locations(cafile=settings.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise NotifyError(f"smtp: cannot load ca_file {settings.ca_file!r}: {exc}") \
                    from None

    def send(self, n: Notification) -> None:
        msg = message(self.settings, n)
        for attempt in range(self.delivery.retries + 1):
            try:
                self._deliver(msg)
            except (smtplib.SMTPException, OSError) as exc:  # a NotifyError is neither
                text, retryable = _describe(exc)
            else:
                return
            if not retryable or attempt == self.delivery.retries:
                raise NotifyError(f"{self.where}: {text}")
            wait = _http.backoff(self.delivery, attempt)
            logger.info("%s failed (%s); retry %d/%d in %.2fs", self.where, text, attempt + 1,
                        self.delivery.retries, wait)
            self.delivery.sleep(wait)

    def _connect(self) -> smtplib.SMTP:
        timeout = self.delivery.timeout
        if self.settings.tls_mode == "implicit":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=timeout, context=self.context)
        return smtplib.SMTP(self.host, self.port, timeout=timeout)

    def _secure(self, client: smtplib.SMTP) -> bool:
        """STARTTLS as `tls`/`tls_mode` ask; True when the session is encrypted."""
        s = self.settings
        if s.tls_mode == "implicit":
            return True
        client.ehlo_or_helo_if_needed()
        if s.tls_mode == "none":
            return False
        if client.has_extn("starttls"):
            client.starttls(context=self.context)
            client.ehlo()
            return True
        if s.tls or s.tls_mode == "starttls":
            raise NotifyError(f"{self.where}: the server does not offer STARTTLS, which "
                              "tls: true / tls_mode: starttls require")
        return False

    def _deliver(self, msg: EmailMessage) -> None:
        s = self.settings
        with self._connect() as client:
            encrypted = self._secure(client)
            if s.user:
                if not (encrypted or s.tls_mode == "none" or _is_loopback(self.host)):
                    raise NotifyError(
                        f"{self.where}: refusing to send credentials over an unencrypted "
                        "connection (enable STARTTLS on the server, use tls_mode: implicit, "
                        "or set tls_mode: none to allow it)")
                client.login(s.user, s.password)
            refused = client.send_message(msg, from_addr=self.sender,
                                          to_addrs=self.recipients)
        if refused:
            logger.warning("%s refused some recipients: %s", self.where, ", ".join(refused))
