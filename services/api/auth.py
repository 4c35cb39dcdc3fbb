"""Identities: API tokens, users with passwords, browser sessions.

Tokens are bearer secrets whose SHA-256 alone is stored (``TokenCreated`` events), each
belonging to a user (``user``) or, when made before users existed, to nobody: the first
start's admin token (``admin``), or a token that acts as a maintainer of every project.
A session is a token too, made by ``POST /api/v1/session`` from a user's password, sent
back in an HttpOnly, SameSite=Strict cookie, ending after ``SESSION_S``; a write made
with it needs ``X-CSRF-Token``: a value derived from the session's secret, which a page
of another site can neither read nor compute. Passwords are hashed with argon2
(argon2-cffi), in a thread: a hash takes tens of milliseconds of CPU.

The first start creates the admin token and returns it once to be printed; after that
nobody, the server included, can show it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from services.api.access import Principal, principal_of
from services.api.errors import ApiError
from shared import events as ev
from shared.ports.eventstore import EventStore
from shared.projections.projects import TOKENS_STREAM, TokenView, fold_tokens
from shared.projections.users import USERS_STREAM, UserView, fold_users
from shared.runstream import append_to_stream
from shared.status import Role
from shared.streamcache import StreamCache

__all__ = ["CSRF_HEADER", "SESSION_COOKIE", "SESSION_S", "LoginLimiter", "Tokens", "Users",
           "actor", "csrf_token", "hash_token"]

SESSION_COOKIE = "cyclone_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_S = 12 * 3600
MIN_PASSWORD = 8

_hasher = PasswordHasher()


def actor(request: web.Request) -> str:
    """Who is acting, for an event's ``meta["actor"]``: the user's (or no-user token's)
    name ("anonymous" for an anonymous read)."""
    return principal_of(request).name


def hash_token(token: str) -> str:
    # surrogateescape: an Authorization header's bytes that are not UTF-8 (aiohttp hands
    # them over as lone surrogates) hash like any other wrong token, instead of raising.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def csrf_token(session_secret: str) -> str:
    """The CSRF token of a session: known to whoever has the session's secret (the page
    that logged in got both), to nobody else."""
    return hmac.new(session_secret.encode(), b"cyclone-csrf", hashlib.sha256).hexdigest()


def _meta(actor: str) -> dict[str, str]:
    return {"actor": actor} if actor else {}


async def _append(store: EventStore, stream: str, events: Sequence[ev.Event],
                  actor: str) -> None:
    await append_to_stream(store, stream, lambda _: list(events), meta=_meta(actor))


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
        the digest of a random secret tells nothing of another token). An ended session
        is no token."""
        view = (await self._hashes()).get(hash_token(token))
        if view is not None and view.expires_at and view.expires_at <= ev.utc_now():
            return None
        return view

    async def _hashes(self) -> dict[str, TokenView]:
        tokens = await self._folds.load(TOKENS_STREAM)
        if tokens is not self._by_hash[0]:  # a new fold: index it once
            self._by_hash = (tokens, {v.token_hash: v for v in (tokens or {}).values()})
        return self._by_hash[1]

    async def create(self, name: str, admin: bool = False, *, user: str = "",
                     read_only: bool = False, session_s: float = 0,
                     actor: str = "") -> tuple[TokenView, str]:
        """A new token and its secret, which is shown to the caller once and never stored.
        ``session_s``: a browser session ending that many seconds from now."""
        secret = f"cyc_{secrets.token_urlsafe(32)}"
        token_id = secrets.token_hex(6)
        expires = (datetime.now(UTC) + timedelta(seconds=session_s)).isoformat(
            timespec="microseconds") if session_s else ""
        created = ev.TokenCreated(token_id=token_id, name=name, token_hash=hash_token(secret),
                                  admin=admin, user=user, read_only=read_only,
                                  session=bool(session_s), expires_at=expires)
        await _append(self.store, TOKENS_STREAM, [created], actor)
        return (await self.all())[token_id], secret

    async def revoke(self, token_id: str, actor: str = "") -> bool:
        if token_id not in await self.all():
            return False
        await _append(self.store, TOKENS_STREAM, [ev.TokenRevoked(token_id=token_id)], actor)
        return True

    async def revoke_all_of(self, user: str, actor: str) -> None:
        gone = [ev.TokenRevoked(token_id=t.id) for t in (await self.all()).values()
                if t.user == user]
        if gone:
            await _append(self.store, TOKENS_STREAM, gone, actor)

    async def ensure_admin(self) -> str | None:
        """On the very first start, an admin token (returned once); afterwards None."""
        if await self.store.read(TOKENS_STREAM):
            return None
        return (await self.create("admin", admin=True))[1]


class Users:
    """Local users, their passwords (argon2 hashes) and project roles."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._folds: StreamCache[dict[str, UserView]] = StreamCache(store, fold_users)

    async def all(self) -> dict[str, UserView]:
        return dict(await self._folds.load(USERS_STREAM) or {})

    async def get(self, name: str) -> UserView | None:
        return (await self._folds.load(USERS_STREAM) or {}).get(name)

    async def add(self, name: str, password: str | None, admin: bool,
                  roles: Mapping[str, Role], actor: str) -> UserView:
        """``password`` None: a user who cannot log in, only use tokens (a bot)."""
        if await self.get(name) is not None:
            raise ApiError(409, f"user {name!r} exists")
        hashed = "" if password is None else await _hash(password)
        events: list[ev.Event] = [ev.UserAdded(name=name, admin=admin, password_hash=hashed)]
        events += [ev.ProjectRoleGranted(user=name, project=p, role=r) for p, r in roles.items()]
        await _append(self.store, USERS_STREAM, events, actor)
        return await self._need(name)

    async def change(self, name: str, actor: str, *, password: str | None = None,
                     admin: bool | None = None) -> UserView:
        await self._need(name)
        changes: dict[str, object] = {}
        if password is not None:
            changes["password_hash"] = await _hash(password)
        if admin is not None:
            changes["admin"] = admin
        if changes:
            await _append(self.store, USERS_STREAM, [ev.UserChanged(name, changes)], actor)
        return await self._need(name)

    async def remove(self, name: str, actor: str) -> None:
        await self._need(name)
        await _append(self.store, USERS_STREAM, [ev.UserRemoved(name=name)], actor)

    async def grant(self, name: str, project: str, role: Role | None, actor: str) -> None:
        """``role`` in ``project`` from now on; ``None``: no role there any more."""
        await self._need(name)
        event: ev.Event = (ev.ProjectRoleRevoked(user=name, project=project) if role is None
                           else ev.ProjectRoleGranted(user=name, project=project, role=role))
        await _append(self.store, USERS_STREAM, [event], actor)

    async def verify(self, name: str, password: str) -> UserView | None:
        """The user, when ``password`` is theirs. Unknown users cost a hash all the same,
        so the answer's time does not tell which names exist."""
        user = await self.get(name)
        stored = user.password_hash if user is not None else _DUMMY_HASH
        ok = await asyncio.to_thread(_verify, stored, password)
        return user if ok and user is not None and user.password_hash else None

    async def _need(self, name: str) -> UserView:
        user = await self.get(name)
        if user is None:
            raise ApiError(404, f"no user {name!r}")
        return user


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ApiError(400, f"password: at least {MIN_PASSWORD} characters", "invalid_body")
    return password


async def _hash(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, check_password(password))


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class LoginLimiter:
    """Failed logins per key (a user, an address): after ``limit`` within ``window_s``,
    logins are refused until the oldest of them leaves the window. Per process: with N
    api replicas an attacker gets at most N times the limit."""

    def __init__(self, limit: int, window_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, list[float]] = {}

    def wait_s(self, key: str) -> float:
        """Seconds until a login for ``key`` is tried again; 0: now."""
        now = self._clock()
        recent = [t for t in self._failures.pop(key, ()) if t > now - self.window_s]
        if recent:
            self._failures[key] = recent
        return recent[0] + self.window_s - now if len(recent) >= self.limit else 0.0

    def failed(self, key: str) -> None:
        self._failures.setdefault(key, []).append(self._clock())

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


async def identify(request: web.Request, tokens: Tokens, users: Users) -> Principal:
    """Who makes the request: its bearer token, else its session cookie, else nobody.
    Credentials that do not hold (revoked, ended, of a removed user) are a 401."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    from_cookie = not scheme
    if from_cookie:
        secret = request.cookies.get(SESSION_COOKIE, "")
        if not secret:
            return Principal("anonymous")
    elif scheme.lower() != "bearer":
        raise ApiError(401, "Authorization: expected 'Bearer <token>'")
    view = await tokens.check(secret.strip())
    if view is None:
        raise ApiError(401, "session ended; log in again" if from_cookie
                       else "invalid or revoked token")
    principal = await _principal(view, users)
    if principal.session and request.method not in ("GET", "HEAD", "OPTIONS"):
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token(secret.strip()).encode()):
            raise ApiError(403, f"a write made with a session cookie needs the {CSRF_HEADER} "
                                "header (GET /api/v1/session gives it)", "csrf")
    return principal


async def _principal(token: TokenView, users: Users) -> Principal:
    base = Principal(token.name, read_only=token.read_only, session=token.session,
                     token_id=token.id)
    if not token.user:  # made before users existed
        return replace(base, admin=token.admin,
                       every_project=None if token.admin else Role.MAINTAINER)
    user = await users.get(token.user)
    if user is None:
        raise ApiError(401, f"the token's user {token.user!r} was removed")
    return replace(base, name=user.name, user=user.name, admin=user.admin, roles=user.roles)
