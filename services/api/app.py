"""The API service's aiohttp application.

``create_app(settings, ports) -> web.Application``: the service as ``cyclone up`` and
``cyclone service api`` run it. Its cleanup contexts open the run views (in MongoDB
beside the events, or folded from the store in this process), create the admin token on
the very first start (printed once), and run in the background the read model's
consumer (``api-readmodel`` on ``cyclone.events``), the live tails the push streams
are fed by, and retention (``services.api.gc``: the storage figures of ``/metrics``, the
periodic pass as a leader); the app starts serving once the tails are open.

``build_app(ctx) -> web.Application``: the routes and middlewares over a given context,
with nothing started: what ``create_app`` builds on, and what tests serve over parts
of their own; the web UI (``services.api.ui``) is served from ``ctx.ui_dist``.
Middlewares: errors as JSON first (so even auth failures are JSON), then access
(``services.api.access``: who makes the request, and whether their role allows it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from services.api.access import Principal, Scope, access_middleware
from services.api.artifacts import artifacts_routes
from services.api.audit import audit_routes, start_audit_checkpoints
from services.api.auth import identify
from services.api.badge import badge_routes
from services.api.context import CONTEXT, UI_DIST, ApiContext
from services.api.delivery import delivery_routes
from services.api.errors import error_middleware
from services.api.gc import gc_routes, start_retention
from services.api.live import LiveRuns
from services.api.metrics import api_collector
from services.api.notifications import notification_routes
from services.api.openapi import openapi_document
from services.api.projects import project_routes
from services.api.readmodel import GROUP, RunsReadModel
from services.api.runs import run_routes
from services.api.secrets import migrate_env, secret_routes
from services.api.streams import stream_routes
from services.api.testreports import report_routes
from services.api.ui import security_headers, ui_routes
from services.api.users import user_routes
from services.api.webhooks import webhook_routes
from shared import events as ev
from shared.app import BACKGROUND, run_in_background, service_app
from shared.config import Settings
from shared.events import decode, notify_test_stream
from shared.infra import Ports
from shared.metrics import FunctionCollector
from shared.secrets import open_secret_store

__all__ = ["build_app", "create_app"]


def create_app(settings: Settings, ports: Ports) -> web.Application:
    live = LiveRuns(ports.bus, ports.store)
    readmodel = RunsReadModel(store=ports.store)  # its views are opened at start
    ctx = ApiContext(store=ports.store, readmodel=readmodel, public_read=settings.public_read,
                     live=live, max_parallel_jobs=settings.max_parallel_jobs,
                     ui_dist=settings.ui_dist or UI_DIST, artifacts=ports.artifacts,
                     coord=ports.coord)
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

    async def secrets(app: web.Application) -> AsyncIterator[None]:
        ctx.secrets = await open_secret_store(settings.secret_key, settings.home, ports.store)
        await migrate_env(ports.store, ctx.secrets)
        yield

    app.cleanup_ctx.append(secrets)
    app.cleanup_ctx.append(run_views)
    app.cleanup_ctx.append(admin_token)
    start_retention(app, settings, ports)  # reads the run views: after they are open
    start_audit_checkpoints(app, settings, ports)
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
    async def who(request: web.Request) -> Principal:
        return await identify(request, ctx.tokens, ctx.users)

    async def project_of(request: web.Request, scope: Scope) -> str | None:
        return await _project_of(ctx, request, scope)

    storage = FunctionCollector(lambda: ctx.storage.samples() if ctx.storage else ())
    app = service_app(ready or ctx.store.last_position,
                      [api_collector(ctx.readmodel, events_appended), storage],
                      client_max_size=ctx.max_body,
                      middlewares=[error_middleware,
                                   access_middleware(who, project_of, ctx.public_read)])
    app[CONTEXT] = ctx
    app.on_response_prepare.append(security_headers)
    app.add_routes([
        web.get("/api/v1/openapi.json", _openapi),
        *project_routes(),
        *run_routes(),
        *report_routes(),
        *delivery_routes(),
        *artifacts_routes(),
        *stream_routes(),
        *webhook_routes(),
        *notification_routes(),
        *user_routes(),
        *secret_routes(),
        *badge_routes(),
        *gc_routes(),
        *audit_routes(),
        *ui_routes(),  # its catch-all leaves /api/ out, so later routes (logs) still match
    ])
    return app


async def _project_of(ctx: ApiContext, request: web.Request, scope: Scope) -> str | None:
    """The project a project-scoped route is about (``access.Scope``)."""
    key = request.match_info.get("name" if scope is Scope.NAME else "id", "")
    if scope is Scope.NAME:
        return key
    if scope is Scope.RUN:
        run = await ctx.find_run(key)
        return run.project if run is not None else None
    first = await ctx.store.read(notify_test_stream(key), 1)
    test = decode(first[0]) if first else None
    return test.project if isinstance(test, ev.NotificationTestRequested) else None


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())
