"""The email channel against a real SMTP server (aiosmtpd on 127.0.0.1): what arrives,
how TLS and AUTH are used, and how each refusal is classified for the retry loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from services.notifier.email import EmailSender, SmtpSettings
from services.notifier.message import FailedStep, JobLine, SendError, Summary
from tests.notifier.smtp_server import Certificate, SmtpServer, certificate, free_port

COMMIT = "3f2a9c1b7d4e5f60718293a4b5c6d7e8f9a0b1c2"
PASSWORD = "pw-s3cret-9917"
ADDRESS = "dev@example.com"


FAILED_RUN = Summary(
    key="01JRUN/ended/email:dev@example.com", moment="ended", reason="failure",
    run_id="01JRUN", project="shop-api", status="failure",
    url="https://ci.example.com/api/v1/runs/01JRUN", branch="main", commit=COMMIT,
    author="Ada Lovelace", message="Speed up the checkout", trigger="push", duration_s=125.0,
    jobs=(JobLine("build", "success", 42.0), JobLine("unit-tests", "failure", 83.0)),
    failed_step=FailedStep("unit-tests", "pytest", "failure", 1),
    log_tail=("collected 112 items", "FAILED tests/test_cart.py::test_total"))


def failed_run(**changes: Any) -> Summary:
    return replace(FAILED_RUN, **changes)


def part(message: EmailMessage, subtype: str) -> str:
    body = message.get_body((subtype,))
    assert body is not None, f"no text/{subtype} part"
    content = body.get_content()
    assert isinstance(content, str)
    return content


def plain(message: EmailMessage) -> str:
    return part(message, "plain")


def html(message: EmailMessage) -> str:
    return part(message, "html")


async def send_error(sender: EmailSender, summary: Summary | None = None,
                     templates: dict[str, str] | None = None) -> SendError:
    with pytest.raises(SendError) as caught:
        await sender.send(ADDRESS, summary or failed_run(), templates)
    assert len(caught.value.reason) <= 300
    return caught.value


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return certificate(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
async def server() -> AsyncIterator[SmtpServer]:
    async with SmtpServer() as started:
        yield started


def settings_for(server: SmtpServer, **more: Any) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=server.port, sender="Cyclone <ci@example.com>",
                        timeout_s=5.0, **more)


# --- what arrives ---------------------------------------------------------------------

async def test_a_failed_run_mail_tells_what_failed_in_both_parts(server: SmtpServer) -> None:
    await EmailSender(settings_for(server)).send(ADDRESS, failed_run())

    [got] = server.received
    assert got.mail_from == "ci@example.com"
    assert got.rcpt_tos == (ADDRESS,)
    mail = got.message
    assert mail["To"] == ADDRESS
    assert mail["From"] == "Cyclone <ci@example.com>"
    assert mail["Subject"] == "[Cyclone] shop-api: run 01JRUN failed on main"
    assert mail["Date"]
    assert mail.get_content_type() == "multipart/alternative"
    text, page = plain(mail), html(mail)
    for part in (text, page):
        for shown in ("shop-api", "main", COMMIT[:10], "Ada Lovelace", "Speed up the checkout",
                      "failure", "2m 05s", "build", "42s", "unit-tests", "1m 23s", "pytest",
                      "exit code 1", "FAILED tests/test_cart.py::test_total",
                      "https://ci.example.com/api/v1/runs/01JRUN"):
            assert shown in part, f"{shown!r} missing"
    assert COMMIT in text  # the full commit too
    assert '<a href="https://ci.example.com/api/v1/runs/01JRUN"' in page
    assert "<pre" in page and "#d40e0d" in page  # the tail in a block, the failure's red


async def test_each_address_gets_its_own_mail(server: SmtpServer) -> None:
    sender = EmailSender(settings_for(server))
    addresses = ["a@example.com", "b@example.com", "c@example.org"]
    for address in addresses:
        await sender.send(address, failed_run())

    assert [r.rcpt_tos for r in server.received] == [(a,) for a in addresses]
    assert [r.message["To"] for r in server.received] == addresses


async def test_a_fixed_run_says_it_is_fixed(server: SmtpServer) -> None:
    summary = failed_run(reason="fixed", status="success", failed_step=None, log_tail=(),
                         jobs=(JobLine("build", "success", 12.0),))
    await EmailSender(settings_for(server)).send(ADDRESS, summary)

    mail = server.received[0].message
    assert mail["Subject"] == "[Cyclone] shop-api: run 01JRUN was fixed on main"
    assert "fixed" in plain(mail) and "#2eb886" in html(mail)
    assert "Failed step" not in plain(mail) and "<pre" not in html(mail)


def test_started_and_test_messages_have_no_failure_sections() -> None:
    sender = EmailSender(SmtpSettings())
    started = sender.render(failed_run(moment="started", reason="started", status="running",
                                       duration_s=None, failed_step=None, log_tail=(),
                                       jobs=(JobLine("build", "queued"),)))
    assert started["Subject"] == "[Cyclone] shop-api: run 01JRUN started on main"
    assert "build" in plain(started) and "running" in plain(started)
    assert "Duration" not in plain(started) and "Failed step" not in plain(started)
    assert "Last lines" not in html(started)

    test = sender.render(Summary(key="t1", moment="test", reason="test", run_id="",
                                 project="shop-api", status="test", url=""))
    assert test["Subject"] == "[Cyclone] shop-api: a test notification from Cyclone"
    assert "test message" in plain(test) and "test message" in html(test)
    assert "Failed step" not in plain(test) and "Status" not in plain(test)


def test_html_escapes_what_comes_from_the_repository() -> None:
    mail = EmailSender(SmtpSettings()).render(failed_run(
        branch="<script>alert(1)</script>", log_tail=("<img src=x onerror=alert(2)>",)))
    page = html(mail)
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<script>alert(1)</script>" in plain(mail)  # text is text


def test_the_message_id_follows_the_notification_key() -> None:
    sender = EmailSender(SmtpSettings(sender="ci@example.com"))
    first = sender.render(failed_run())["Message-ID"]
    again = sender.render(failed_run())["Message-ID"]
    other = sender.render(failed_run(key="01JRUN/ended/email:ops@example.com"))["Message-ID"]
    assert first == again
    assert first != other
    assert first.startswith("<") and first.endswith(".cyclone@example.com>")


# --- templates ------------------------------------------------------------------------

async def test_a_projects_templates_replace_the_defaults(server: SmtpServer) -> None:
    templates = {"subject": "{{ project }}\n  is {{ status }} ({{ short_commit }})\n",
                 "text": "Run {{ run_id }} on {{ branch }}: {{ duration }}\n"
                         "{% for job in jobs %}{{ job.name }}={{ job.duration_s|duration }} "
                         "{% endfor %}"}
    await EmailSender(settings_for(server)).send(ADDRESS, failed_run(), templates)

    mail = server.received[0].message
    assert mail["Subject"] == f"shop-api is failure ({COMMIT[:10]})"  # one line
    assert plain(mail).strip() == "Run 01JRUN on main: 2m 05s\nbuild=42s unit-tests=1m 23s"
    assert "Speed up the checkout" in html(mail)  # no html override: the default


async def test_a_broken_template_is_not_retried_and_is_named(server: SmtpServer) -> None:
    error = await send_error(EmailSender(settings_for(server)),
                             templates={"text": "fine\n{{ no_such_thing }}\n"})
    assert error.retry is False
    assert error.reason == "text template: line 2: 'no_such_thing' is undefined"

    error = await send_error(EmailSender(settings_for(server)),
                             templates={"html": "<p>{{ summary.__class__ }}</p>"})
    assert error.retry is False and error.reason.startswith("html template: line 1: ")

    error = await send_error(EmailSender(settings_for(server)),
                             templates={"subject": "{% if %}"})
    assert error.retry is False and error.reason.startswith("subject template: line 1: ")
    assert server.received == []


# --- TLS and AUTH ---------------------------------------------------------------------

async def test_starttls_with_a_self_signed_certificate_trusted_by_ca_file(
        cert: Certificate) -> None:
    async with SmtpServer(tls="starttls", cert=cert) as server:  # refuses MAIL before TLS
        await EmailSender(settings_for(server, tls="starttls", ca_file=str(cert.cert))).send(
            ADDRESS, failed_run())
        assert len(server.received) == 1

        error = await send_error(EmailSender(settings_for(server, tls="starttls")))
        assert error.retry is False
        assert error.reason.startswith("the SMTP server's certificate is not trusted "
                                       "(set CYCLONE_SMTP_CA_FILE?)")
        assert len(server.received) == 1


async def test_tls_none_never_upgrades(cert: Certificate) -> None:
    # aiosmtplib would STARTTLS on its own when offered; "none" must stay plain, so a
    # server that insists on TLS refuses the mail.
    async with SmtpServer(tls="starttls", cert=cert) as server:
        error = await send_error(EmailSender(settings_for(server, tls="none",
                                                          ca_file=str(cert.cert))))
        assert error.retry is False and "530" in error.reason
        assert server.received == []


async def test_implicit_tls(cert: Certificate) -> None:
    async with SmtpServer(tls="tls", cert=cert) as server:
        await EmailSender(settings_for(server, tls="tls", ca_file=str(cert.cert))).send(
            ADDRESS, failed_run())
        assert len(server.received) == 1

        error = await send_error(EmailSender(settings_for(server, tls="tls")))
        assert error.retry is False and "not trusted" in error.reason


async def test_auth_with_the_right_password_and_with_a_wrong_one(cert: Certificate) -> None:
    async with SmtpServer(tls="starttls", cert=cert, auth=("ci", PASSWORD)) as server:
        settings = settings_for(server, tls="starttls", ca_file=str(cert.cert), user="ci",
                                password=PASSWORD)
        await EmailSender(settings).send(ADDRESS, failed_run())
        assert len(server.received) == 1
        assert server.logins == [("ci", True)]

        wrong = settings_for(server, tls="starttls", ca_file=str(cert.cert), user="ci",
                             password="not-" + PASSWORD)
        error = await send_error(EmailSender(wrong))
        assert error.retry is False
        assert "refused the login" in error.reason and "535" in error.reason
        assert PASSWORD not in error.reason
        assert len(server.received) == 1


async def test_no_login_without_a_user() -> None:
    async with SmtpServer(auth=("ci", PASSWORD)) as needs_auth:
        error = await send_error(EmailSender(settings_for(needs_auth, password=PASSWORD)))
        assert needs_auth.logins == []
        assert error.retry is False and "530" in error.reason


async def test_the_password_is_scrubbed_from_what_the_server_says(server: SmtpServer) -> None:
    server.data_replies = [f"554 5.7.1 rejected for ci:{PASSWORD}"]
    error = await send_error(EmailSender(settings_for(server, password=PASSWORD)))
    assert PASSWORD not in error.reason
    assert error.reason == "the SMTP server refused the message: 554 5.7.1 rejected for ci:***"


# --- refusals and failures: retry or not ----------------------------------------------

async def test_a_451_is_retried_and_the_next_send_goes_through(server: SmtpServer) -> None:
    server.data_replies = ["451 4.3.0 try again"]
    sender = EmailSender(settings_for(server))

    error = await send_error(sender)
    assert error.retry is True
    assert error.reason == "the SMTP server refused the message: 451 4.3.0 try again"
    assert server.received == []

    await sender.send(ADDRESS, failed_run())
    assert len(server.received) == 1


@pytest.mark.parametrize("reply", ["421 4.7.0 too busy", "450 4.2.1 mailbox busy",
                                   "452 4.3.1 out of storage"])
async def test_other_4xx_at_rcpt_are_retried(server: SmtpServer, reply: str) -> None:
    server.rcpt_replies = [reply]
    error = await send_error(EmailSender(settings_for(server)))
    assert error.retry is True and reply.split()[0] in error.reason


async def test_a_550_is_final(server: SmtpServer) -> None:
    server.rcpt_replies = ["550 5.1.1 no such user"]
    error = await send_error(EmailSender(settings_for(server)))
    assert error.retry is False
    assert error.reason == ("the SMTP server refused the recipient dev@example.com: "
                            "550 5.1.1 no such user")

    server.data_replies = ["550 5.7.1 message refused as spam"]
    error = await send_error(EmailSender(settings_for(server)))
    assert error.retry is False and "550 5.7.1 message refused as spam" in error.reason
    assert server.received == []


async def test_nothing_listening_is_retried() -> None:
    settings = SmtpSettings(host="127.0.0.1", port=await free_port(), timeout_s=5.0)
    error = await send_error(EmailSender(settings))
    assert error.retry is True and "onnect" in error.reason


async def test_a_server_that_never_greets_times_out_and_is_retried() -> None:
    writers: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda r, w: writers.append(w), "127.0.0.1", 0)
    try:
        port = silent.sockets[0].getsockname()[1]
        error = await send_error(EmailSender(SmtpSettings(host="127.0.0.1", port=port,
                                                          timeout_s=0.3)))
        assert error.retry is True and "imed out" in error.reason
    finally:
        for writer in writers:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_no_server_configured_is_final() -> None:
    error = await send_error(EmailSender(SmtpSettings()))
    assert error.retry is False
    assert error.reason == "no SMTP server configured: set CYCLONE_SMTP_HOST"


async def test_an_unreadable_ca_file_is_final(server: SmtpServer, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    error = await send_error(EmailSender(settings_for(server, tls="starttls",
                                                      ca_file=str(missing))))
    assert error.retry is False and "CYCLONE_SMTP_CA_FILE" in error.reason


async def test_an_address_with_a_header_break_is_refused(server: SmtpServer) -> None:
    with pytest.raises(SendError) as caught:
        await EmailSender(settings_for(server)).send("a@example.com\r\nBcc: x@evil.test",
                                                     failed_run())
    assert caught.value.retry is False
    assert server.received == []


def test_an_unknown_tls_mode_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="tls must be one of none, starttls, tls"):
        EmailSender(SmtpSettings(host="smtp.example.com", tls="ssl"))
