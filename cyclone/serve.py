"""``cyclone up`` and ``cyclone service NAME``: services' apps served until SIGTERM or SIGINT.

``up``: the embedded runtime (all five services in this process), the api's app on
``CYCLONE_LISTEN`` serving the REST API, the log streams and every service's metrics.
``service``: one service's app on the distributed ports, serving ``/healthz`` and
``/metrics`` on ``CYCLONE_LISTEN`` (the api: the whole API and the log streams too).

Start-up order: the ports, the services (the api's creates the admin token on the very
first start and prints it once), then the HTTP site. A stop (a signal, or a service's
background task that ended: a half-working service is worse than none) stops the
public site and app first, then the rest in reverse, within a container's usual 10 s
grace.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from cyclone.apps import Running, build_apps
from cyclone.embedded import Embedded
from cyclone.ports import open_ports
from shared.config import Settings
from shared.tasks import cancel_and_wait

__all__ = ["service", "until_signalled", "up"]


async def up(settings: Settings, ready: asyncio.Event | None = None) -> None:
    runtime = await Embedded.start(settings, own_all_runs=True)
    try:
        assert runtime.running is not None
        await _serve(runtime.running, "api", settings, lambda: _announce_up(runtime), ready)
    finally:
        await runtime.stop()


async def service(name: str, settings: Settings, ready: asyncio.Event | None = None) -> None:
    settings.require_infra()
    async with open_ports(settings) as ports:
        running = await Running.start(build_apps([name], settings, ports))
        ports.replay.forget()  # started: nothing else reads every run
        try:
            host, port = settings.listen
            await _serve(running, name, settings,
                         lambda: print(f"cyclone {name} is serving on http://{host}:{port}",
                                       flush=True), ready)
        finally:
            await running.stop()


async def _serve(running: Running, public: str, settings: Settings,
                 announce: Callable[[], None], ready: asyncio.Event | None) -> None:
    """Serve ``public`` until a signal or the end of a background task (its error raised)."""
    try:
        host, port = settings.listen
        await web.TCPSite(running.runner(public), host, port).start()
        announce()
        if ready is not None:
            ready.set()
        stopped = asyncio.create_task(until_signalled())
        done, _ = await asyncio.wait([stopped, *running.background()],
                                     return_when=asyncio.FIRST_COMPLETED)
        await cancel_and_wait(stopped)
    finally:
        await running.stop(public)
    for task in done:
        if task is not stopped and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def _announce_up(runtime: Embedded) -> None:
    settings = runtime.settings
    host, port = settings.listen
    print(f"Cyclone is serving on http://{host}:{port} ({runtime.executor.name} executor, "
          f"data in {settings.home})", flush=True)
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
