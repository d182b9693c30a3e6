"""TLS for the HTTP listener: the server context, its reloading, the client certificate check.

Layer L1: stdlib plus talon.filewatch, talon.log and talon.errors. The context is built
from PEM files and built again when they change (checked at most once a second, when a
connection is accepted): new connections get the new certificate, open ones keep theirs.
`wrap()` runs in the accept loop and does no I/O; `handshake()` runs on the connection's
own thread, under the read timeout, and then checks the client certificate's names.

With `client_ca_file`, a client certificate signed by those CAs is required at the
handshake, unless another way to authenticate is configured too (`optional_client_cert`):
then a certificate is optional, but one that is presented must verify, and a request on
a connection without one needs other credentials (talon.auth).
"""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talon import filewatch, log
from talon.config import TlsSettings
from talon.errors import ConfigError

logger = logging.getLogger("talon.server")

_UNAUTHENTICATED = ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_VERIFY_FAILED",
                    "TLSV13_ALERT_CERTIFICATE_REQUIRED")


class Refused(Exception):
    """The connection is refused: `reason` is the metric label, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Peer:
    """The client at the other end of a TLS connection."""

    authenticated: bool
    """A client certificate was presented, verified and (if names are listed) allowed."""
    name: str = ""
    """The certificate's first DNS name or CN, for logs."""


def settings_problems(tls: TlsSettings) -> list[str]:
    """What is inconsistent in the `tls` section (empty when nothing is)."""
    problems = []
    if bool(tls.cert_file) != bool(tls.key_file):
        problems.append("tls.cert_file and tls.key_file must be set together")
    if tls.client_ca_file and not tls.cert_file:
        problems.append("tls.client_ca_file needs tls.cert_file and tls.key_file")
    if tls.allowed_client_names and not tls.client_ca_file:
        problems.append("tls.allowed_client_names needs tls.client_ca_file")
    return problems


def _readable(path: str, key: str) -> None:
    try:
        with Path(path).open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise ConfigError([f"{key} {path}: cannot read the file: {exc.strerror or exc}"]) \
            from None


def build_context(tls: TlsSettings, *, optional_client_cert: bool = False) -> ssl.SSLContext:
    """A server-side context from the files of `tls`; ConfigError names the bad file."""
    _readable(tls.cert_file, "tls.cert_file")
    _readable(tls.key_file, "tls.key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError([f"tls.cert_file {tls.cert_file} / tls.key_file {tls.key_file}: "
                           f"not a PEM certificate chain and its private key ({exc})"]) from None
    if tls.client_ca_file:
        _readable(tls.client_ca_file, "tls.client_ca_file")
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError([f"tls.client_ca_file {tls.client_ca_file}: not PEM CA "
                               f"certificates ({exc})"]) from None
        context.verify_mode = ssl.CERT_OPTIONAL if optional_client_cert else ssl.CERT_REQUIRED
    return context


def certificate_names(cert: dict[str, Any]) -> list[str]:
    """The DNS subject alternative names, then the common name(s), lower-cased."""
    names = [str(value).lower() for kind, value in cert.get("subjectAltName", ())
             if kind == "DNS"]
    names += [str(value).lower() for rdn in cert.get("subject", ())
              for key, value in rdn if key == "commonName"]
    return names


class ServerTLS:
    """The listener's TLS: a reloading context plus the client-certificate policy."""

    def __init__(self, tls: TlsSettings, *, optional_client_cert: bool = False,
                 interval: float = 1.0) -> None:
        problems = settings_problems(tls)
        if problems:
            raise ConfigError(problems)
        self.mutual = bool(tls.client_ca_file)
        self.allowed: frozenset[str] = frozenset(tls.allowed_client_names)
        paths = [p for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p]
        self._context = filewatch.Watched(
            paths, lambda: build_context(tls, optional_client_cert=optional_client_cert),
            on_error=self._reload_failed, on_load=self._loaded, interval=interval)
        self._throttle = log.Throttle(10.0)

    @staticmethod
    def _reload_failed(exc: Exception) -> None:
        log.emit(logger, logging.WARNING, "tls", result="certificate files changed but "
                 "cannot be loaded: keeping the previous ones", error=str(exc))

    @staticmethod
    def _loaded(context: ssl.SSLContext) -> None:
        log.emit(logger, logging.INFO, "tls", result="certificate loaded")

    def wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        """`sock` as a server-side TLS socket, handshake not done yet (no I/O here)."""
        return self._context.get().wrap_socket(sock, server_side=True,
                                               do_handshake_on_connect=False)

    def handshake(self, sock: socket.socket, timeout: float) -> Peer:
        """Run the handshake within `timeout`, then check the client's names; the peer,
        or Refused. `sock` is one that `wrap()` returned."""
        if not isinstance(sock, ssl.SSLSocket):
            raise TypeError("handshake() needs a socket returned by wrap()")
        sock.settimeout(timeout)
        try:
            sock.do_handshake()
        except ssl.SSLError as exc:
            unauthenticated = isinstance(exc, ssl.SSLCertVerificationError) or \
                (exc.reason or "") in _UNAUTHENTICATED
            raise Refused("unauthenticated" if unauthenticated else "tls_handshake",
                          f"TLS handshake failed: {exc.reason or exc}") from None
        except (OSError, ValueError) as exc:
            raise Refused("tls_handshake", f"TLS handshake failed: {exc}") from None
        cert = sock.getpeercert()
        if not cert:
            return Peer(False)
        names = certificate_names(cert)
        if self.allowed and not self.allowed.intersection(names):
            raise Refused("unauthenticated", "client certificate names not allowed: "
                          + ", ".join(names[:5]))
        return Peer(True, names[0] if names else "")

    def should_log(self, reason: str) -> int | None:
        """Whether to log a refusal for `reason` now (at most one line per 10 s per reason):
        None to stay quiet, else how many were held back."""
        return self._throttle.allow(reason)
