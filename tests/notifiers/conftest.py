"""Fixtures of the notifier tests: HTTP sink, SMTP servers, TLS material, fast deliveries."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from talon.models import Delivery, Notification
from tests.notifiers.sinks import HttpSink, SleepRecorder, SmtpFactory, SmtpSink, free_port


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def delivery(sleeps: SleepRecorder) -> Delivery:
    return Delivery(timeout=2.0, retries=2, backoff=0.5, max_backoff=4.0, sleep=sleeps)


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    with HttpSink() as server:
        yield server


@pytest.fixture
def action_note() -> Notification:
    """A successful kubernetes:label action result."""
    return Notification(
        message="action", status="success", trace_id="7f3c0d2e-trace",
        rule="Terminal shell in container", action="Label Pod as Suspicious",
        actionner="kubernetes:label",
        event="A shell was spawned in a container (user=root k8s_pod_name=cncf-1)",
        output='the pod "cncf-1" in the namespace "default" has been labelled',
        objects={"pod": "cncf-1", "namespace": "default", "NetworkPolicy": "np-1"},
        priority="Warning", source="syscalls",
    )


@pytest.fixture
def failure_note() -> Notification:
    """A failed output-stage result."""
    return Notification(
        message="output", status="failure", trace_id="0a1b-trace",
        output_target="aws:s3", error="bucket <b> & \"q\" not found",
        objects={"file": "/tmp/x.log"},
    )


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture
def smtp_server() -> Iterator[SmtpFactory]:
    """Start aiosmtpd controllers on free ports: `smtp_server(**controller_kwargs)`."""
    from aiosmtpd.controller import Controller

    stack = contextlib.ExitStack()

    def start(users: dict[str, str] | None = None, **kwargs: Any) -> tuple[SmtpSink, int]:
        handler = SmtpSink(users)
        if users is not None:
            kwargs.setdefault("authenticator", handler.authenticator)
        for _ in range(5):
            port = free_port()
            controller = Controller(handler, hostname="127.0.0.1", port=port,
                                    server_hostname="talon-test", **kwargs)
            try:
                controller.start()
            except OSError:
                continue
            stack.callback(controller.stop)
            return handler, port
        raise RuntimeError("no free port for the SMTP test server")

    with stack:
        yield start
