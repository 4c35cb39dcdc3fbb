"""A local SMTP server (aiosmtpd) on 127.0.0.1, in the test's own event loop.

It records each mail it accepts as ``Received(mail_from, rcpt_tos, message)`` (the
message parsed into an ``email.message.EmailMessage``) and answers as scripted:
``data_replies`` / ``rcpt_replies`` are replies given to the next DATA / RCPT
commands, one each, before it goes back to accepting ("250 OK"). It can speak
STARTTLS (``tls="starttls"``, required before MAIL) or TLS from the first byte
(``tls="tls"``) with a self-signed certificate for 127.0.0.1 / localhost made at
test time (``certificate()``), and require AUTH LOGIN / PLAIN with ``auth=(user,
password)``.

Use it as ``async with SmtpServer(...) as server:``; leaving closes the listener
and every connection still open.
"""

from __future__ import annotations

import asyncio
import email.policy
import ssl
import subprocess
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Self

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["Certificate", "Received", "SmtpServer", "certificate", "free_port"]


@dataclass(frozen=True)
class Certificate:
    cert: Path  # PEM; also what a client trusts (it is its own CA)
    key: Path


def certificate(directory: Path) -> Certificate:
    """A new self-signed certificate for 127.0.0.1 and localhost, in ``directory``."""
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return Certificate(cert, key)


async def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage


class SmtpServer:
    def __init__(self, *, tls: str = "none", cert: Certificate | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        if tls != "none" and cert is None:
            raise ValueError("a TLS server needs a certificate")
        self.tls = tls
        self.cert = cert
        self.auth = auth
        self.received: list[Received] = []
        self.data_replies: list[str] = []
        self.rcpt_replies: list[str] = []
        self.logins: list[tuple[str, bool]] = []  # (user, accepted) per AUTH attempt
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: list[SMTP] = []

    async def __aenter__(self) -> Self:
        context = None
        if self.cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert.cert, self.cert.key)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self._connection(context), "127.0.0.1", 0,
            ssl=context if self.tls == "tls" else None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for connection in self._connections:
            # The TCP transport too: after a failed STARTTLS handshake the TLS one no
            # longer tells the protocol that the connection is gone.
            for transport in (connection.transport, connection._original_transport):
                if transport is not None:
                    transport.close()
        await self._server.wait_closed()
        tasks = [c._handler_coroutine for c in self._connections
                 if c._handler_coroutine is not None and not c._handler_coroutine.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _connection(self, context: ssl.SSLContext | None) -> SMTP:
        options: dict[str, Any] = {"hostname": "smtp.test", "loop": asyncio.get_running_loop()}
        if self.tls == "starttls":
            options.update(tls_context=context, require_starttls=True)
        if self.auth is not None:
            # AUTH is offered in the clear too (auth_require_tls=False) so that it can be
            # tested without TLS; handle_MAIL insists on it instead of auth_required.
            options.update(authenticator=self._authenticate, auth_require_tls=False)
        connection = SMTP(self, **options)
        self._connections.append(connection)
        return connection

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, auth_data: Any) -> AuthResult:
        assert self.auth is not None
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        accepted = (user, password) == self.auth
        self.logins.append((user, accepted))
        return AuthResult(success=accepted, handled=False)  # aiosmtpd answers 535

    # --- aiosmtpd handler hooks ---------------------------------------------------------

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if self.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        raw = (envelope.original_content or b"").replace(b"\r\n", b"\n")  # wire -> local
        message = BytesParser(policy=email.policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(envelope.mail_from or "", tuple(envelope.rcpt_tos),
                                      message))
        return "250 OK"
