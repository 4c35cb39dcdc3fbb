"""The API service's aiohttp application.

``create_app(settings, ports) -> web.Application``: the service as ``cyclone up`` and
``cyclone service api`` run it. Its cleanup contexts open the run views (in MongoDB
beside the events, or folded from the store in this process), create the admin token on
the very first start (printed once), and run in the background the read model's
consumer (``api-readmodel`` on ``cyclone.events``) and the live tails the push streams
are fed by; the app starts serving once the tails are open.

``build_app(ctx) -> web.Application``: the routes and middlewares over a given context,
with nothing started: what ``create_app`` builds on, and what tests serve over parts
of their own. Middlewares: errors as JSON first (so even auth failures are JSON), then
bearer-token auth.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from services.api.auth import TOKEN_KEY, Tokens, auth_middleware
from services.api.context import CONTEXT, ApiContext
from services.api.errors import ApiError, error_middleware, read_json
from services.api.live import LiveRuns
from services.api.metrics import api_collector
from services.api.models import TokenCreate
from services.api.notifications import notification_routes
from services.api.openapi import openapi_document
from services.api.projects import project_routes
from services.api.readmodel import GROUP, RunsReadModel
from services.api.runs import run_routes
from services.api.streams import stream_routes
from services.api.webhooks import webhook_routes
from shared.app import BACKGROUND, run_in_background, service_app
from shared.config import Settings
from shared.infra import Ports

__all__ = ["build_app", "create_app"]


def create_app(settings: Settings, ports: Ports) -> web.Application:
    live = LiveRuns(ports.bus, ports.store)
    readmodel = RunsReadModel(store=ports.store)  # its views are opened at start
    ctx = ApiContext(store=ports.store, readmodel=readmodel, tokens=Tokens(ports.store),
                     public_read=settings.public_read, live=live)
    app = build_app(ctx, ready=ports.ready, events_appended=lambda: ports.store.appended_total)

    async def run_views(app: web.Application) -> AsyncIterator[None]:
        readmodel.views = await ports.open_run_views()
        try:
            yield
        finally:
            await readmodel.views.close()

    async def admin_token(app: web.Application) -> AsyncIterator[None]:
        admin = await ctx.tokens.ensure_admin()
        if admin is not None:
            print("An admin API token was created. It is shown this once and only its hash "
                  f"is kept:\n\n    export CYCLONE_TOKEN={admin}\n", flush=True)
        yield

    async def follow() -> None:
        # The replicas share one consumer group: each event is applied to the views once.
        await readmodel.follow(ports.bus, group=GROUP)

    app.cleanup_ctx.append(run_views)
    app.cleanup_ctx.append(admin_token)
    run_in_background(app, follow, "RunsReadModel.follow")
    run_in_background(app, live.run, "LiveRuns.run")
    app.cleanup_ctx.append(_tails_open)
    return app


async def _tails_open(app: web.Application) -> AsyncIterator[None]:
    """Serve once the live tails are open: a stream sees every event from then on (a
    tail that failed to open is the process's to notice: its task has ended)."""
    live = app[CONTEXT].live
    assert live is not None
    opened = asyncio.ensure_future(live.ready.wait())
    try:
        await asyncio.wait([opened, *app[BACKGROUND]], return_when=asyncio.FIRST_COMPLETED)
    finally:
        opened.cancel()
    yield


def build_app(ctx: ApiContext, *, ready: Callable[[], Awaitable[object]] | None = None,
              events_appended: Callable[[], int] = lambda: 0) -> web.Application:
    """``ready``: what ``/healthz`` checks (default: that the event store answers)."""
    app = service_app(ready or ctx.store.last_position,
                      [api_collector(ctx.readmodel, events_appended)],
                      client_max_size=ctx.max_body,
                      middlewares=[error_middleware,
                                   auth_middleware(ctx.tokens, ctx.public_read)])
    app[CONTEXT] = ctx
    app.add_routes([
        web.get("/api/v1/openapi.json", _openapi),
        *project_routes(),
        *run_routes(),
        *stream_routes(),
        *webhook_routes(),
        *notification_routes(),
        web.post("/api/v1/tokens", _token_create),
        web.get("/api/v1/tokens", _token_list),
        web.delete("/api/v1/tokens/{id}", _token_revoke),
    ])
    return app


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def _admin(request: web.Request) -> None:
    token = request.get(TOKEN_KEY)
    if token is None or not token.admin:
        raise ApiError(403, "managing tokens needs an admin token")


async def _token_create(request: web.Request) -> web.Response:
    _admin(request)
    body = TokenCreate.model_validate(await read_json(request))
    view, secret = await request.app[CONTEXT].tokens.create(body.name)
    return web.json_response({**view.to_json(), "token": secret}, status=201)


async def _token_list(request: web.Request) -> web.Response:
    _admin(request)
    tokens = await request.app[CONTEXT].tokens.all()
    return web.json_response({"tokens": [t.to_json() for t in tokens.values()]})


async def _token_revoke(request: web.Request) -> web.Response:
    _admin(request)
    token_id = request.match_info["id"]
    if not await request.app[CONTEXT].tokens.revoke(token_id):
        raise ApiError(404, f"no token {token_id!r}")
    return web.Response(status=204)
