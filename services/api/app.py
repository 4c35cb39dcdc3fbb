"""The API service's aiohttp application: ``create_app(context) -> web.Application``.

Used by ``cyclone up`` (embedded) and by the tests. Middlewares: errors as JSON
first (so even auth failures are JSON), then bearer-token auth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client.registry import Collector

from services.api.auth import TOKEN_KEY, auth_middleware
from services.api.context import CONTEXT, ApiContext
from services.api.errors import ApiError, error_middleware
from services.api.metrics import api_registry
from services.api.models import TokenCreate
from services.api.notifications import notification_routes
from services.api.openapi import openapi_document
from services.api.projects import project_routes
from services.api.runs import run_routes
from services.api.streams import stream_routes
from services.api.webhooks import webhook_routes
from shared.metrics import metrics_handler

__all__ = ["create_app"]


def create_app(ctx: ApiContext, extra_routes: Iterable[web.RouteDef] = (),
               events_appended: Callable[[], int] = lambda: 0,
               collectors: Iterable[Collector] = ()) -> web.Application:
    """``collectors``: the metrics of the other services in this process (embedded)."""
    app = web.Application(client_max_size=ctx.max_body,
                          middlewares=[error_middleware,
                                       auth_middleware(ctx.tokens, ctx.public_read)])
    app[CONTEXT] = ctx
    registry = api_registry(ctx.readmodel, events_appended)
    for collector in collectors:
        registry.register(collector)
    app.add_routes([
        web.get("/healthz", _healthz),
        web.get("/metrics", metrics_handler(registry)),
        web.get("/api/v1/openapi.json", _openapi),
        *project_routes(),
        *run_routes(),
        *stream_routes(),
        *webhook_routes(),
        *notification_routes(),
        *extra_routes,
        web.post("/api/v1/tokens", _token_create),
        web.get("/api/v1/tokens", _token_list),
        web.delete("/api/v1/tokens/{id}", _token_revoke),
    ])
    return app


async def _healthz(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    await ctx.store.last_position()  # the store answers: we are ready
    return web.json_response({"status": "ok"})


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def _admin(request: web.Request) -> None:
    token = request.get(TOKEN_KEY)
    if token is None or not token.admin:
        raise ApiError(403, "managing tokens needs an admin token")


async def _token_create(request: web.Request) -> web.Response:
    _admin(request)
    body = TokenCreate.model_validate(await request.json())
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
