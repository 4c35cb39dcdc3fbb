"""What every service's aiohttp application has, whatever it does.

* ``service_app``: ``/healthz`` (200 while the servers behind the ports answer, else
  503 saying what is away) and ``/metrics`` over the app's own ``CollectorRegistry``
  (``REGISTRY``: several services share one process in embedded mode, each keeps its
  own figures);
* ``run_in_background``: a task that lives from the app's start to its clean-up, in
  the app's cleanup context: cancelled and awaited on exit, even when a later part of
  the start-up failed. The tasks are listed in ``BACKGROUND``: the process serving the
  app watches them, and stops when one ends (a consumer that died leaves no half-working
  service behind);
* ``on_cleanup``: a close that runs once the tasks started after it have stopped.

Cleanup contexts exit in the reverse order of their entry, so a factory adds a
resource before the tasks that use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from shared.metrics import metrics_handler
from shared.tasks import cancel_and_wait

__all__ = ["BACKGROUND", "REGISTRY", "on_cleanup", "run_in_background", "service_app"]

REGISTRY = web.AppKey("registry", CollectorRegistry)
BACKGROUND = web.AppKey("background", list[asyncio.Task[None]])

Check = Callable[[], Awaitable[object]]
Work = Callable[[], Coroutine[Any, Any, None]]


def service_app(ready: Check, collectors: Iterable[Collector] = (),
                **options: Any) -> web.Application:
    """An app serving ``/healthz`` (``ready()`` raises when not) and ``/metrics`` (the
    ``collectors``); ``options`` go to ``web.Application`` (middlewares, body size)."""
    app = web.Application(**options)
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    app[REGISTRY] = registry
    app[BACKGROUND] = []
    app.add_routes([web.get("/healthz", _healthz(ready)),
                    web.get("/metrics", metrics_handler(registry))])
    return app


def run_in_background(app: web.Application, work: Work, name: str) -> None:
    async def background(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(work(), name=name)
        app[BACKGROUND].append(task)
        try:
            yield
        finally:
            await cancel_and_wait(task)

    app.cleanup_ctx.append(background)


def on_cleanup(app: web.Application, close: Callable[[], Awaitable[object]]) -> None:
    async def closing(app: web.Application) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await close()

    app.cleanup_ctx.append(closing)


def _healthz(ready: Check) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def healthz(request: web.Request) -> web.Response:
        try:
            await ready()
        except Exception as exc:  # readiness: say what is not reachable
            return web.json_response({"status": "unavailable", "detail": str(exc)},
                                     status=503)
        return web.json_response({"status": "ok"})

    return healthz
