"""API tokens: bearer tokens whose SHA-256 alone is stored (as ``TokenCreated`` events).

Writes need a token; reads need one unless ``CYCLONE_PUBLIC_READ=1``; managing tokens
needs an admin token. The first start creates an admin token and returns it once
to be printed; after that nobody, the server included, can show it again.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from services.api.errors import ApiError
from shared import events as ev
from shared.errors import ConcurrencyConflict
from shared.events import NewEvent
from shared.ports.eventstore import EventStore
from shared.projections.projects import TOKENS_STREAM, TokenView, fold_tokens
from shared.streamcache import StreamCache

__all__ = ["TOKEN_KEY", "Tokens", "auth_middleware", "hash_token"]

TOKEN_KEY = web.RequestKey("token", TokenView)
_OPEN_PATHS = frozenset({"/healthz", "/metrics", "/api/v1/openapi.json"})
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Webhook deliveries carry the forge's signature instead of a token (checked per project).
_WEBHOOK_PREFIX = "/api/v1/hooks/"


def _is_webhook(request: web.Request) -> bool:
    return request.method == "POST" and request.path.startswith(_WEBHOOK_PREFIX)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def hash_token(token: str) -> str:
    # surrogateescape: an Authorization header's bytes that are not UTF-8 (aiohttp hands
    # them over as lone surrogates) hash like any other wrong token, instead of raising.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class Tokens:
    """The live tokens, read from the store at every check (so every API replica sees a
    revocation), each time only what was appended since the last read."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._folds: StreamCache[dict[str, TokenView]] = StreamCache(store, fold_tokens)
        self._by_hash: tuple[dict[str, TokenView] | None, dict[str, TokenView]] = (None, {})

    async def all(self) -> dict[str, TokenView]:
        return dict(await self._folds.load(TOKENS_STREAM) or {})

    async def check(self, token: str) -> TokenView | None:
        """The token's view, found by its SHA-256 (a lookup, not a scan of every token;
        the digest of a random secret tells nothing of another token)."""
        return (await self._hashes()).get(hash_token(token))

    async def _hashes(self) -> dict[str, TokenView]:
        tokens = await self._folds.load(TOKENS_STREAM)
        if tokens is not self._by_hash[0]:  # a new fold: index it once
            self._by_hash = (tokens, {v.token_hash: v for v in (tokens or {}).values()})
        return self._by_hash[1]

    async def create(self, name: str, admin: bool = False) -> tuple[TokenView, str]:
        """A new token and its secret, which is shown to the caller once and never stored."""
        secret = f"cyc_{secrets.token_urlsafe(32)}"
        token_id = secrets.token_hex(6)
        created = ev.TokenCreated(token_id=token_id, name=name, token_hash=hash_token(secret),
                                  admin=admin)
        await self._append(created)
        return (await self.all())[token_id], secret

    async def revoke(self, token_id: str) -> bool:
        if token_id not in await self.all():
            return False
        await self._append(ev.TokenRevoked(token_id=token_id))
        return True

    async def ensure_admin(self) -> str | None:
        """On the very first start, an admin token (returned once); afterwards None."""
        if await self.store.read(TOKENS_STREAM):
            return None
        return (await self.create("admin", admin=True))[1]

    async def _append(self, event: ev.Event) -> None:
        while True:
            last = await self.store.read(TOKENS_STREAM)
            try:
                await self.store.append(TOKENS_STREAM, [NewEvent(event)],
                                        last[-1].seq if last else 0)
                return
            except ConcurrencyConflict:
                continue


def auth_middleware(tokens: Tokens, public_read: bool) -> Callable[..., Awaitable[
        web.StreamResponse]]:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in _OPEN_PATHS or _is_webhook(request):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        view = await tokens.check(secret.strip()) if scheme.lower() == "bearer" else None
        if view is None:
            if public_read and request.method in _READ_METHODS:
                return await handler(request)
            detail = ("missing bearer token (Authorization: Bearer <token>)" if not header
                      else "invalid or revoked token")
            raise ApiError(401, detail)
        request[TOKEN_KEY] = view
        return await handler(request)

    return authenticate
