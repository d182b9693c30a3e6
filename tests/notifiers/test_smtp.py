"""SMTP notifier against real aiosmtpd servers on 127.0.0.1.

Covers: text mails (plaintext block, headers: Subject, From, To, RFC 2822 Date,
Message-ID), html mails (multipart/alternative, Subject present, values escaped),
envelope recipients from the comma list, STARTTLS (opportunistic, required by
`require_starttls`, `tls: true` against a server without it, untrusted certificate),
implicit TLS, AUTH PLAIN and LOGIN only when `user` is set, wrong password, refusal to
send credentials in clear to a remote host, retries on connection refused and 4xx, no
retry on 5xx, settings validation and normalisation (`from`, `to` lists, bool strings).
"""

from __future__ import annotations

import email.utils
import ssl
from typing import Any

import pytest

from talon.errors import NotifyError
from talon.models import Delivery, Notification
from talon.notifiers import normalise, smtp
from talon.params import coerce
from tests.notifiers.sinks import SECRET, SleepRecorder, SmtpFactory, free_port


def make(delivery: Delivery, port: int, **raw: Any) -> smtp.SmtpNotifier:
    base = {"host_port": f"127.0.0.1:{port}", "from": "Falco Talon <talon@example.org>",
            "to": "ops@example.org, sec@example.org "}
    cls = smtp.SmtpSettings
    settings, problems = coerce(cls, normalise(cls, {**base, **raw}))
    assert settings is not None, problems
    return smtp.SmtpNotifier(settings, delivery)


def test_text_mail(smtp_server: SmtpFactory, delivery: Delivery,
                   action_note: Notification) -> None:
    sink, port = smtp_server()
    make(delivery, port, format="text").send(action_note)
    [mail] = sink.mails
    assert mail.mail_from == "talon@example.org"
    assert mail.rcpt_tos == ["ops@example.org", "sec@example.org"]
    assert mail.tls is False
    assert mail.login is None
    msg = mail.message()
    assert msg["Subject"] == ("[falco-talon][success][action] Action 'Label Pod as Suspicious' "
                              "Rule 'Terminal shell in container'")
    assert msg["From"] == "Falco Talon <talon@example.org>"
    assert msg["To"] == "ops@example.org, sec@example.org"
    assert email.utils.parsedate_to_datetime(msg["Date"]).tzinfo is not None
    assert msg["Message-ID"].endswith("@example.org>")
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content() == (
        "Status: success\n"
        "Action: Label Pod as Suspicious\n"
        "Actionner: kubernetes:label\n"
        "Rule: Terminal shell in container\n"
        f"Event: {action_note.event}\n"
        "Message: action\n"
        "Namespace: default\n"
        "Networkpolicy: np-1\n"
        "Pod: cncf-1\n"
        "Output: \n"
        f"{action_note.output}\n"
        "Trace ID: 7f3c0d2e-trace\n"
    )


def test_html_mail(smtp_server: SmtpFactory, delivery: Delivery,
                   failure_note: Notification) -> None:
    sink, port = smtp_server()
    make(delivery, port).send(failure_note)
    msg = sink.mails[0].message()
    assert msg["Subject"] == "[falco-talon][failure][output] OutputTarget 'aws:s3'"
    assert msg["Date"]
    assert msg["Message-ID"]
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert text.get_content().startswith("Status: failure\nMessage: output\nFile: /tmp/x.log\n")
    body = html.get_content()
    assert "background-color:#e20b0b" in body
    assert "bucket &lt;b&gt; &amp; &quot;q&quot; not found" in body
    assert "<b>" not in body
    assert "<strong>Target</strong>" in body
    assert "<strong>File</strong>" in body


def test_starttls_required_by_server(smtp_server: SmtpFactory, delivery: Delivery,
                                     server_tls: ssl.SSLContext, ca_file: str,
                                     action_note: Notification) -> None:
    sink, port = smtp_server(tls_context=server_tls, require_starttls=True)
    make(delivery, port, ca_file=ca_file, tls="true").send(action_note)
    assert sink.mails[0].tls is True


def test_starttls_is_opportunistic_in_auto_mode(
        smtp_server: SmtpFactory, delivery: Delivery, server_tls: ssl.SSLContext,
        ca_file: str, action_note: Notification) -> None:
    sink, port = smtp_server(tls_context=server_tls)
    make(delivery, port, ca_file=ca_file).send(action_note)
    assert sink.mails[0].tls is True


def test_tls_mode_none_never_upgrades(smtp_server: SmtpFactory, delivery: Delivery,
                                      server_tls: ssl.SSLContext,
                                      action_note: Notification) -> None:
    sink, port = smtp_server(tls_context=server_tls)
    make(delivery, port, tls_mode="none").send(action_note)
    assert sink.mails[0].tls is False


def test_untrusted_certificate_is_not_retried(
        smtp_server: SmtpFactory, delivery: Delivery, sleeps: SleepRecorder,
        server_tls: ssl.SSLContext, action_note: Notification) -> None:
    sink, port = smtp_server(tls_context=server_tls, require_starttls=True)
    with pytest.raises(NotifyError, match="certificate verification failed"):
        make(delivery, port).send(action_note)
    assert sleeps.waits == []
    assert sink.mails == []


def test_tls_required_but_not_offered(smtp_server: SmtpFactory, delivery: Delivery,
                                      action_note: Notification) -> None:
    sink, port = smtp_server()
    for raw in ({"tls": True}, {"tls_mode": "starttls"}):
        with pytest.raises(NotifyError, match="does not offer STARTTLS"):
            make(delivery, port, **raw).send(action_note)
    assert sink.mails == []


def test_implicit_tls(smtp_server: SmtpFactory, delivery: Delivery, server_tls: ssl.SSLContext,
                      ca_file: str, action_note: Notification) -> None:
    sink, port = smtp_server(ssl_context=server_tls)
    make(delivery, port, tls_mode="implicit", ca_file=ca_file).send(action_note)
    assert sink.mails[0].tls is True


def test_auth_plain_over_starttls(smtp_server: SmtpFactory, delivery: Delivery,
                                  server_tls: ssl.SSLContext, ca_file: str,
                                  action_note: Notification) -> None:
    sink, port = smtp_server(users={"talon": SECRET}, tls_context=server_tls,
                             auth_required=True)
    make(delivery, port, ca_file=ca_file, user="talon", password=SECRET).send(action_note)
    assert sink.auth_attempts == [("PLAIN", "talon")]
    assert sink.mails[0].login == "talon"
    assert sink.mails[0].tls is True


def test_auth_login_on_loopback_without_tls(smtp_server: SmtpFactory, delivery: Delivery,
                                            action_note: Notification) -> None:
    sink, port = smtp_server(users={"talon": SECRET}, auth_require_tls=False,
                             auth_exclude_mechanism=["PLAIN"])
    make(delivery, port, user="talon", password=SECRET).send(action_note)
    assert sink.auth_attempts == [("LOGIN", "talon")]
    assert sink.mails[0].login == "talon"


def test_no_auth_without_user(smtp_server: SmtpFactory, delivery: Delivery,
                              action_note: Notification) -> None:
    sink, port = smtp_server(users={"talon": SECRET}, auth_require_tls=False)
    make(delivery, port).send(action_note)
    assert sink.auth_attempts == []
    assert sink.mails[0].login is None


def test_user_set_but_server_has_no_auth(smtp_server: SmtpFactory, delivery: Delivery,
                                         sleeps: SleepRecorder,
                                         action_note: Notification) -> None:
    sink, port = smtp_server()
    with pytest.raises(NotifyError, match="not supported by the server"):
        make(delivery, port, user="talon", password=SECRET).send(action_note)
    assert sleeps.waits == []
    assert sink.mails == []


def test_wrong_password(smtp_server: SmtpFactory, delivery: Delivery, sleeps: SleepRecorder,
                        action_note: Notification) -> None:
    sink, port = smtp_server(users={"talon": "right"}, auth_require_tls=False)
    with pytest.raises(NotifyError, match="authentication failed: 535") as info:
        make(delivery, port, user="talon", password=SECRET).send(action_note)
    assert SECRET not in str(info.value)
    assert sleeps.waits == []
    assert sink.mails == []


def test_no_credentials_in_clear_to_remote_hosts(
        smtp_server: SmtpFactory, delivery: Delivery, action_note: Notification,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sink, port = smtp_server(users={"talon": SECRET}, auth_require_tls=False)
    monkeypatch.setattr(smtp, "_is_loopback", lambda host: False)
    with pytest.raises(NotifyError, match="refusing to send credentials") as info:
        make(delivery, port, user="talon", password=SECRET).send(action_note)
    assert SECRET not in str(info.value)
    assert sink.auth_attempts == []
    make(delivery, port, user="talon", password=SECRET, tls_mode="none").send(action_note)
    assert sink.auth_attempts == [("PLAIN", "talon")]


def test_server_down_is_retried(delivery: Delivery, sleeps: SleepRecorder,
                                action_note: Notification) -> None:
    port = free_port()
    with pytest.raises(NotifyError, match=f"smtp 127.0.0.1:{port}: ConnectionRefusedError"):
        make(delivery, port).send(action_note)
    assert sleeps.waits == [0.5, 1.0]


def test_transient_reply_is_retried(smtp_server: SmtpFactory, delivery: Delivery,
                                    sleeps: SleepRecorder, action_note: Notification) -> None:
    sink, port = smtp_server()
    sink.data_replies.append("451 4.3.0 try again later")
    make(delivery, port).send(action_note)
    assert len(sink.mails) == 1
    assert sleeps.waits == [0.5]


def test_permanent_reply_is_not_retried(smtp_server: SmtpFactory, delivery: Delivery,
                                        sleeps: SleepRecorder,
                                        action_note: Notification) -> None:
    sink, port = smtp_server()
    sink.data_replies.append("554 5.7.1 rejected as spam")
    with pytest.raises(NotifyError, match=r"554 5\.7\.1 rejected as spam"):
        make(delivery, port).send(action_note)
    assert sleeps.waits == []


def test_bad_ca_file(delivery: Delivery, tmp_path: Any) -> None:
    with pytest.raises(NotifyError, match="cannot load ca_file"):
        make(delivery, 25, ca_file=str(tmp_path / "missing.pem"))


def test_normalise_maps_from_to_list_and_strings() -> None:
    raw = {"HOST_PORT": "mail:587", "from": "a@b.c", "to": ["x@y.z", "w@y.z"], "tls": "True",
           "format": "TEXT"}
    settings, problems = coerce(smtp.SmtpSettings, normalise(smtp.SmtpSettings, raw))
    assert problems == []
    assert settings.from_ == "a@b.c"
    assert smtp.recipients(settings) == ("x@y.z", "w@y.z")
    assert settings.tls is True
    assert settings.format == "text"


@pytest.mark.parametrize(("raw", "field"), [
    ({"from": "a@b.c", "to": "x@y.z"}, "host_port"),
    ({"host_port": "h:25", "to": "x@y.z"}, "from_"),
    ({"host_port": "h:25", "from": "a@b.c"}, "to"),
    ({"host_port": "h:25", "from": "a@b.c", "to": " , "}, "to"),
    ({"host_port": "h:25", "from": "a@b.c", "to": "nobody"}, "to"),
    ({"host_port": "h:25", "from": "nobody", "to": "x@y.z"}, "from"),
    ({"host_port": "h:port", "from": "a@b.c", "to": "x@y.z"}, "host_port"),
    ({"host_port": "h:25", "from": "a@b.c", "to": "x@y.z", "format": "md"}, "format"),
    ({"host_port": "h:25", "from": "a@b.c", "to": "x@y.z", "tls_mode": "ssl"}, "tls_mode"),
    ({"host_port": "h:25", "from": "a@b.c", "to": "x@y.z", "tls": True, "tls_mode": "none"},
     "tls_mode"),
    ({"host_port": "h:25", "from": "a@b.c", "to": "x@y.z", "password": "p"}, "user"),
    ({"host_port": "h:25", "from": "a@b.c", "to": "x@y.z", "tls": "maybe"}, "tls"),
])
def test_settings_validation(raw: dict[str, Any], field: str) -> None:
    cls = smtp.SmtpSettings
    settings, problems = coerce(cls, normalise(cls, raw))
    assert settings is None
    assert next(p.field for p in problems if p.severity == "error") == field


@pytest.mark.parametrize(("value", "parsed"), [
    ("mail:587", ("mail", 587)), ("mail", ("mail", None)), ("[::1]:25", ("::1", 25)),
    ("[::1]", ("::1", None)),
])
def test_split_host_port(value: str, parsed: tuple[str, int | None]) -> None:
    assert smtp.split_host_port(value) == parsed


def test_subject_with_every_part() -> None:
    note = Notification(message="output", status="success", trace_id="t", rule="R",
                        action="A", output_target="aws:s3")
    assert smtp.subject(note) == \
        "[falco-talon][success][output] OutputTarget 'aws:s3' Action 'A' Rule 'R'"
