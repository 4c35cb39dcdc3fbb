"""Verify and parse a forge's webhook delivery: ``verify`` first, then ``parse``.

    verify(provider, headers, body, secret) -> None    raises HookAuthError  (401)
    parse(provider, headers, body) -> ForgeEvent | Ignored
                                                      raises PayloadError   (400)

``provider`` is one of ``PROVIDERS``: github, gitlab, gitea, forgejo, gogs, generic.
Forgejo and Gogs send Gitea's payloads under their own header names; their events say
``provider="gitea"`` (the commit status API is Gitea's too). ``headers`` is any mapping
(aiohttp's ``CIMultiDictProxy`` or a dict): names are matched case-insensitively.
``body`` is the raw request body, exactly as received (the signature covers its bytes).

Both functions are pure: no I/O, no clock. What each forge sends, and what of it is
built or ignored, is in the docstring of its module (``github``, ``gitlab``, ``gitea``,
``generic``; the generic module documents Cyclone's own payload format).
"""

from __future__ import annotations

from services.api.hooks import generic, gitea, github, gitlab
from services.api.hooks.common import Headers, HookAuthError, Ignored, PayloadError, lower_headers
from shared.forge import ForgeEvent

__all__ = ["PROVIDERS", "parse", "verify"]

PROVIDERS = ("github", "gitlab", "gitea", "forgejo", "gogs", "generic")


def _unknown(provider: str) -> str:
    return f"unknown webhook provider {provider!r}: one of {', '.join(PROVIDERS)}"


def verify(provider: str, headers: Headers, body: bytes, secret: str) -> None:
    """Return if ``body`` was sent by the forge holding ``secret``; else raise
    ``HookAuthError`` saying what is wrong (missing header, malformed or non-matching
    signature, no secret configured, unknown provider), never echoing a secret."""
    lowered = lower_headers(headers)
    if provider == "github":
        github.verify(lowered, body, secret)
    elif provider == "gitlab":
        gitlab.verify(lowered, body, secret)
    elif provider in gitea.FORGES:
        gitea.verify(provider, lowered, body, secret)
    elif provider == "generic":
        generic.verify(lowered, body, secret)
    else:
        raise HookAuthError(_unknown(provider))


def parse(provider: str, headers: Headers, body: bytes) -> ForgeEvent | Ignored:
    """The normalized event of an (already verified) delivery, or ``Ignored(reason)`` for
    an event or action that starts nothing. Raises ``PayloadError`` naming what is
    missing or malformed (or an unknown provider)."""
    lowered = lower_headers(headers)
    if provider == "github":
        return github.parse(lowered, body)
    if provider == "gitlab":
        return gitlab.parse(lowered, body)
    if provider in gitea.FORGES:
        return gitea.parse(provider, lowered, body)
    if provider == "generic":
        return generic.parse(lowered, body)
    raise PayloadError(_unknown(provider))
