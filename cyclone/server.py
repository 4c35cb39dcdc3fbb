"""``cyclone up``: the embedded services plus the HTTP API on one port.

Start-up order: the runtime (store, recovery of a crashed run, services), the API
token (the first start prints an admin token once), then the HTTP site. SIGTERM
or SIGINT stops in reverse, within a container's usual 10 s grace.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from cyclone.embedded import Embedded
from services.api.app import create_app
from services.api.auth import Tokens
from services.api.context import ApiContext
from services.logserver.http import log_routes
from shared.config import Settings

__all__ = ["SHUTDOWN_TIMEOUT_S", "serve", "until_signalled"]

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 5.0


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    runtime = await Embedded.start(settings, own_all_runs=True)
    try:
        tokens = Tokens(runtime.store)
        admin = await tokens.ensure_admin()
        app = _app(runtime, tokens, settings)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        try:
            host, port = settings.listen
            await web.TCPSite(runner, host, port).start()
            _announce(settings, admin, runtime)
            if ready is not None:
                ready.set()
            await until_signalled()
        finally:
            await runner.cleanup()
    finally:
        await runtime.stop()


def _app(runtime: Embedded, tokens: Tokens, settings: Settings) -> web.Application:
    ctx = ApiContext(store=runtime.store, readmodel=runtime.readmodel, tokens=tokens,
                     public_read=settings.public_read, live=runtime.live)
    return create_app(ctx, extra_routes=log_routes(runtime.logserver, runtime.live.view),
                      events_appended=lambda: runtime.store.appended_total,
                      collectors=[runtime.notifier.collector(), runtime.logserver.collector(),
                                  runtime.eventmanager.collector()])


def _announce(settings: Settings, admin: str | None, runtime: Embedded) -> None:
    host, port = settings.listen
    print(f"Cyclone is serving on http://{host}:{port} ({runtime.executor.name} executor, "
          f"data in {settings.home})", flush=True)
    if admin is not None:
        print("An admin API token was created. It is shown this once and only its hash is "
              f"kept:\n\n    export CYCLONE_TOKEN={admin}\n", flush=True)
    for run_id in runtime.recovered:
        print(f"run {run_id}: was running when Cyclone stopped; marked errored", flush=True)
    for run in runtime.resumed:
        print(f"run {run.id}: was queued when Cyclone stopped; resumed", flush=True)


async def until_signalled() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print("Cyclone is stopping...", file=sys.stderr, flush=True)
