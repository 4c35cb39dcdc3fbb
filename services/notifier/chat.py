"""Chat channels: posting what ``chat_formats.chat_request`` builds.

``ChatSender.send`` posts once (the notifier retries) and raises ``SendError``:
a 2xx is accepted (Discord answers 204); 408, 429, 5xx, a connection error or a timeout
is ``retry=True``; any other answer (a redirect too) is ``retry=False``, with the
receiver's own message (Slack answers plain text such as ``invalid_payload``, Mattermost
and Discord JSON with a ``message``), as is a URL that is not http(s) or a TLS
certificate that is not trusted. A reason holds neither the URL (its path is the
webhook's token) nor the secret, and is at most 300 characters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from urllib.parse import unquote, urlsplit

import aiohttp
from yarl import URL

from services.notifier.chat_formats import (
    ChatRequest,
    chat_request,
    discord_body,
    mattermost_body,
    slack_body,
)
from services.notifier.message import SendError, Summary, mask
from shared.pipeline.notify import Channel

__all__ = ["REASON_MAX", "ChatRequest", "ChatSender", "SessionFactory", "chat_request",
           "discord_body", "mattermost_body", "slack_body"]

SessionFactory = Callable[[], aiohttp.ClientSession]

REASON_MAX = 300
_RETRYABLE = frozenset({408, 429})
_BODY_MAX = 8192  # of an error answer: enough for any provider's message


# --- sending ------------------------------------------------------------------------------


class ChatSender:
    """Posts chat notifications: one try per ``send`` (see the module docstring for what
    ``SendError`` says). One HTTP session, made on first use; ``close()`` closes it."""

    def __init__(self, *, session_factory: SessionFactory | None = None,
                 request_timeout: float = 10.0) -> None:
        self.request_timeout = request_timeout
        self._session_factory = session_factory or (lambda: aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=request_timeout)))
        self._session: aiohttp.ClientSession | None = None

    async def send(self, channel: Channel, summary: Summary) -> None:
        """Post ``summary`` to ``channel`` (resolved); ``SendError`` when not accepted."""
        request = chat_request(channel, summary)
        try:
            await self._post(request)
        except SendError as exc:
            raise SendError(_scrub(exc.reason, channel), retry=exc.retry) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, request: ChatRequest) -> None:
        url = _checked(request.url)
        if self._session is None:
            self._session = self._session_factory()
        try:
            async with self._session.post(url, data=request.body, headers=request.headers,
                                          allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return
                text = (await _read_some(response)).decode("utf-8", "replace")
                raise _refused(response.status, text, response.headers.get("Retry-After"))
        except TimeoutError:
            raise SendError(f"no answer within {self.request_timeout:g}s", retry=True) from None
        except aiohttp.InvalidURL:
            raise SendError("the channel's URL is not valid", retry=False) from None
        except aiohttp.ClientConnectorCertificateError:
            # waiting does not make a certificate trusted: someone must fix the server
            raise SendError("the receiver's TLS certificate is not trusted",
                            retry=False) from None
        except aiohttp.ClientError as exc:
            # the chained exception may print the URL: the reason stands alone
            raise SendError(f"{type(exc).__name__}: {exc}".rstrip(": "), retry=True) from None


async def _read_some(response: aiohttp.ClientResponse) -> bytes:
    """The first ``_BODY_MAX`` bytes of the answer: an error page may be large."""
    data = b""
    while len(data) < _BODY_MAX:
        chunk = await response.content.read(_BODY_MAX - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _checked(url: str) -> URL:
    try:
        parsed = URL(url)
    except ValueError:
        parsed = URL()
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise SendError("the channel's URL is not an http(s) URL", retry=False)
    return parsed


def _refused(status: int, text: str, retry_after: str | None) -> SendError:
    if 300 <= status < 400:
        return SendError(f"HTTP {status}: the webhook URL redirects; use the URL it "
                         "redirects to", retry=False)
    why = f"HTTP {status}: {_message(text)}"
    if status == 429:
        wait = retry_after or _json_field(text, "retry_after")
        why += f" (retry after {wait}s)" if wait else ""
    return SendError(why, retry=status >= 500 or status in _RETRYABLE)


def _message(text: str) -> str:
    """The receiver's own words: Discord's and Mattermost's JSON ``message`` (with
    Discord's first field error or Mattermost's ``detailed_error``), a JSON ``error``,
    else the text itself (Slack's ``invalid_payload``)."""
    body = _json(text)
    if isinstance(body, dict) and (body.get("message") or body.get("error")):
        said = str(body.get("message") or body.get("error"))
        detail = _first_error(body.get("errors")) or str(body.get("detailed_error") or "")
        return " ".join(f"{said} ({detail})".split() if detail else said.split())
    return " ".join(text.split()) or "(no body)"


def _first_error(errors: object, path: str = "") -> str:
    """Discord's first nested ``_errors`` entry: ``"embeds.0.title: Must be ..."``."""
    if not isinstance(errors, dict):
        return ""
    found = errors.get("_errors")
    if isinstance(found, list) and found and isinstance(found[0], dict):
        return f"{path}: {found[0].get('message', '')}".lstrip(": ")
    for key, value in errors.items():
        deeper = _first_error(value, f"{path}.{key}" if path else str(key))
        if deeper:
            return deeper
    return ""


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _json_field(text: str, name: str) -> str:
    body = _json(text)
    return str(body[name]) if isinstance(body, dict) and name in body else ""


def _scrub(reason: str, channel: Channel) -> str:
    """``reason`` without any form of the channel's URL or its secret, clipped."""
    said = mask(reason, _secret_forms(channel))
    return said if len(said) <= REASON_MAX else said[:REASON_MAX - 1] + "…"


def _secret_forms(channel: Channel) -> Iterable[str]:
    """The channel's secrets, and the parts of its URL a library may print apart: the
    path, the query, and each long path segment (the token), raw and decoded."""
    yield from channel.secrets()
    try:
        parts = urlsplit(channel.target)
    except ValueError:
        return
    wholes = [parts.path, parts.query]
    # Segments: only long ones (a token), not "services" or "hooks", which say nothing.
    for piece in [*(w for w in wholes if len(w) >= 8),
                  *(seg for seg in parts.path.split("/") if len(seg) >= 16)]:
        yield piece
        yield unquote(piece)
    try:
        yield str(URL(channel.target))  # as aiohttp prints it: normalised, re-encoded
    except ValueError:
        pass
