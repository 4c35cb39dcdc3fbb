"""The email channel: a ``Summary`` rendered into a mail and sent over SMTP (aiosmtplib).

``EmailSender(settings).render(summary, templates)`` builds the mail (pure, no I/O):
``Subject``, ``From``, ``Date``, ``Message-ID``, ``Auto-Submitted``, ``X-Cyclone-*``
headers and a multipart/alternative body (text/plain, then text/html); no ``To``.
``send(address, summary, templates)`` renders, addresses the mail to that one
address and hands it to the configured SMTP server (one connection a mail).

Templates: ``subject``, ``text`` and ``html``; a project's own (``templates``, by
name; a missing or empty one falls back) replace the defaults shipped in
``templates/`` beside this module. They render in ``shared.email_templates``'
sandbox: an undefined variable is an error, the HTML is autoescaped. The subject is
made one line (whitespace, newlines included, collapsed). Variables:

* every ``Summary`` field: ``key``, ``moment`` (started, ended, test), ``reason``
  (the rule's "when" that matched: fixed, failure, ..., test), ``run_id``,
  ``project``, ``status`` (success failure errored cancelled, running, test),
  ``url`` (the run), ``branch``, ``commit``, ``author``, ``message`` (first line),
  ``trigger``, ``duration_s`` (float or None), ``created_at``, ``finished_at``,
  ``jobs`` (each with ``name``, ``status``, ``duration_s``, ``reason``),
  ``failed_step`` (None, or ``job``, ``step``, ``status``, ``exit_code``),
  ``log_tail`` (lines, already cleaned and masked), ``failing_tests`` (the ids of the
  run's first 20 failing tests, from its JUnit reports), ``more_failing_tests`` (how
  many more failed);
* ``headline`` ("api: run 01J... failed on main"), ``duration`` ("1m 05s" or ""),
  ``short_commit`` (10 characters), ``colour`` ("#rrggbb" of the outcome), and
  ``summary`` itself;
* the filter ``duration`` formats seconds: ``{{ job.duration_s|duration }}``.

Idempotency: the ``Message-ID`` is derived from ``summary.key`` (and the sender's
domain), so a mail sent again after a crash carries the same Message-ID and a
receiver or mail client can drop the copy.

Errors: every failure raises ``SendError`` (no driver exception escapes), its
``reason`` short (at most 300 characters) and without the SMTP password.
``retry=True``: the connection refused, reset or lost, a timeout, an SMTP 4xx
reply (421, 450, 451, 452, also a 4xx to AUTH). ``retry=False``: an SMTP 5xx
reply, authentication refused, the server's certificate not trusted or another TLS
failure, STARTTLS or AUTH not offered, no server configured, a template that does
not render, an address that is not one.

Settings: ``SmtpSettings`` is ``shared.config``'s (the CYCLONE_SMTP_* variables),
re-exported here. TLS (``SmtpSettings.tls``): ``none`` is plain SMTP and never
upgrades (aiosmtplib would otherwise STARTTLS whenever the server offers it);
``starttls`` upgrades after connecting and fails if the server cannot; ``tls`` is
TLS from the first byte. The server's certificate is checked against the system's CAs plus those of
``ca_file``. Credentials are sent (AUTH) only when ``user`` is set.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import ssl
from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any, TypeVar

import aiosmtplib

from services.notifier.message import SendError, Summary
from shared.config import SmtpSettings
from shared.email_templates import TEMPLATE_NAMES, render_template

__all__ = ["TLS_MODES", "EmailSender", "SmtpSettings", "message_id"]

TLS_MODES = ("none", "starttls", "tls")
_DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}
_TEMPLATE_FILES = {"subject": "subject.txt", "text": "text.txt", "html": "html.html"}
_TEMPLATES = Path(__file__).parent / "templates"
_REASON_MAX = 300
_SUBJECT_MAX = 250  # characters: RFC 5322's line limit is 998, clients show far fewer
_DOMAIN = re.compile(r"^[A-Za-z0-9.-]+$")
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")
_E = TypeVar("_E", bound=BaseException)
_UNTRUSTED = "the SMTP server's certificate is not trusted (set CYCLONE_SMTP_CA_FILE?)"


class EmailSender:
    """Renders and sends notification mails; see the module docstring. One instance
    serves any number of concurrent sends (each opens its own connection)."""

    def __init__(self, settings: SmtpSettings) -> None:
        if settings.tls not in TLS_MODES:
            raise ValueError(f"tls must be one of {', '.join(TLS_MODES)}, "
                             f"not {settings.tls!r}")
        self.settings = settings
        self._sender = parseaddr(settings.sender)[1] or settings.sender  # MAIL FROM
        self._tls_context: ssl.SSLContext | None = None

    def render(self, summary: Summary, templates: Mapping[str, str] | None = None, *,
               now: datetime | None = None) -> EmailMessage:
        """The mail for ``summary`` without a ``To``; ``now`` is its ``Date`` (default:
        the current time). Raises ``SendError(retry=False)`` if a template fails."""
        context = _context(summary)
        chosen = templates or {}
        rendered = {}
        for name in TEMPLATE_NAMES:
            try:
                rendered[name] = render_template(name, chosen.get(name) or _default(name),
                                                 context)
            except ValueError as exc:
                raise SendError(_short(str(exc)), retry=False) from None
        message = EmailMessage()
        message["Subject"] = _one_line(rendered["subject"])[:_SUBJECT_MAX] \
            or _one_line(summary.headline)
        message["From"] = self.settings.sender
        message["Date"] = format_datetime(now or datetime.now(UTC))
        message["Message-ID"] = message_id(summary.key, self._sender)
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
        message["X-Cyclone-Key"] = _one_line(summary.key)
        message["X-Cyclone-Project"] = _one_line(summary.project)
        message["X-Cyclone-Status"] = _one_line(summary.status)
        message.set_content(rendered["text"])
        message.add_alternative(rendered["html"], subtype="html")
        return message

    async def send(self, address: str, summary: Summary,
                   templates: Mapping[str, str] | None = None) -> None:
        """Render and send the mail to ``address``; ``SendError`` if it was not taken."""
        settings = self.settings
        if not settings.host:
            raise SendError("no SMTP server configured: set CYCLONE_SMTP_HOST", retry=False)
        if not _ADDRESS.match(address):
            raise SendError(_short(f"not an email address: {address!r}"), retry=False)
        message = self.render(summary, templates)
        message["To"] = address
        try:
            await aiosmtplib.send(
                message, sender=self._sender, recipients=[address],
                hostname=settings.host, port=settings.port or _DEFAULT_PORTS[settings.tls],
                username=settings.user or None,
                password=settings.password if settings.user else None,
                use_tls=settings.tls == "tls",
                start_tls=settings.tls == "starttls",  # False, not None: never opportunistic
                tls_context=self._context() if settings.tls != "none" else None,
                timeout=settings.timeout_s)
        except SendError:
            raise
        except Exception as exc:  # every driver error, classified; CancelledError passes
            error = _classify(exc)
            raise SendError(_scrub(error.reason, settings), retry=error.retry) from exc

    def _context(self) -> ssl.SSLContext:
        """The TLS context (built once): system CAs, plus ``ca_file``'s."""
        if self._tls_context is None:
            context = ssl.create_default_context()
            if self.settings.ca_file:
                try:
                    context.load_verify_locations(cafile=self.settings.ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise SendError(_short(
                        f"cannot read CYCLONE_SMTP_CA_FILE {self.settings.ca_file}: "
                        f"{getattr(exc, 'strerror', None) or exc}"), retry=False) from exc
            self._tls_context = context
        return self._tls_context


def message_id(key: str, sender: str) -> str:
    """``<hash-of-key.cyclone@domain>``: the same key gives the same Message-ID."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    domain = sender.rpartition("@")[2]
    if "@" not in sender or not _DOMAIN.match(domain):
        domain = "localhost"
    return f"<{digest}.cyclone@{domain}>"


# --- rendering ----------------------------------------------------------------------

@functools.cache
def _default(name: str) -> str:
    return (_TEMPLATES / _TEMPLATE_FILES[name]).read_text(encoding="utf-8")


def _context(summary: Summary) -> dict[str, Any]:
    context: dict[str, Any] = {f.name: getattr(summary, f.name) for f in fields(summary)}
    context.update(headline=summary.headline, duration=summary.duration,
                   short_commit=summary.short_commit, colour=summary.colour,
                   summary=summary)
    return context


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- errors -------------------------------------------------------------------------

def _classify(exc: BaseException) -> SendError:
    """What a driver error means for the record, and whether trying again may help."""
    cert = _cause(exc, ssl.SSLCertVerificationError)
    if cert is not None:
        return SendError(f"{_UNTRUSTED}: {cert.verify_message}", retry=False)
    tls = _cause(exc, ssl.SSLError)
    if tls is not None:
        return SendError(f"TLS with the SMTP server failed: {tls.reason or tls}", retry=False)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return SendError(f"{_doing(exc)}: {exc.code} {exc.message}",
                         retry=not 500 <= exc.code < 600)  # 4xx, or no proper code
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return SendError(f"the SMTP server does not support it: {exc.message}", retry=False)
    if isinstance(exc, OSError):  # refused, reset, lost, timed out: aiosmtplib's too
        return SendError(f"{type(exc).__name__}: {exc}", retry=True)
    if isinstance(exc, aiosmtplib.SMTPException):  # no STARTTLS, no AUTH mechanism, ...
        return SendError(f"SMTP: {exc.message}", retry=False)
    return SendError(f"{type(exc).__name__}: {exc}", retry=False)  # e.g. ValueError


def _doing(exc: aiosmtplib.SMTPResponseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return "the SMTP server refused the login"
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return f"the SMTP server refused the recipient {exc.recipient}"
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return f"the SMTP server refused the sender {exc.sender}"
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return "the SMTP server refused the message"
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError | aiosmtplib.SMTPHeloError):
        return "the SMTP server refused the connection"
    return "the SMTP server answered"


def _cause(exc: BaseException, kind: type[_E]) -> _E | None:
    """``exc`` or the first of its causes / contexts that is a ``kind``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _scrub(reason: str, settings: SmtpSettings) -> str:
    """``reason`` without the password, as written or as AUTH sent it (base64)."""
    password = settings.password
    if password:
        for form in (f"\0{settings.user}\0{password}", password):
            reason = reason.replace(base64.b64encode(form.encode()).decode(), "***")
        reason = reason.replace(password, "***")
    return _short(reason)


def _short(text: str) -> str:
    text = _one_line(text)
    return text if len(text) <= _REASON_MAX else text[:_REASON_MAX - 1] + "…"
