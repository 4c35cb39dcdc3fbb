"""The five services' apps for one process (``build_apps``), and running them (``Running``).

Each service is its own app factory, ``create_app(settings, ports)``; this is the one
place that knows them all, and the only wiring between services (services never
import each other): the api's app, served at the public address, also serves

* the log streams (``services.logserver.http``): over the log server of this process
  when it runs one (its followers are woken by its own appends and read its live tail),
  else over a reader of the log store, woken by the log servers' "stored" notices;
  both are woken by the run's events, which the api's live tails see;
* the metrics of the other services of this process (embedded: one ``/metrics``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from aiohttp import web

from cyclone import SERVICES
from services.api.app import create_app as api_app
from services.api.context import CONTEXT
from services.eventmanager.app import create_app as eventmanager_app
from services.logserver.app import LOGSERVER
from services.logserver.app import create_app as logserver_app
from services.logserver.http import log_routes
from services.logserver.service import LogServer
from services.notifier.app import create_app as notifier_app
from services.workermanager.app import create_app as workermanager_app
from shared.app import BACKGROUND, REGISTRY
from shared.config import Settings
from shared.errors import ConfigError
from shared.infra import Ports

__all__ = ["SERVICES", "SHUTDOWN_TIMEOUT_S", "Running", "build_apps"]

Factory = Callable[[Settings, Ports], web.Application]

# Also the order they start in: the api's tails and every consumer group join the bus
# before the eventmanager's relay publishes (see services.eventmanager.app).
FACTORIES: Mapping[str, Factory] = {
    "api": api_app, "logserver": logserver_app, "notifier": notifier_app,
    "workermanager": workermanager_app, "eventmanager": eventmanager_app,
}
log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 5.0  # within a container's usual 10 s stop grace period


def build_apps(names: Iterable[str], settings: Settings, ports: Ports,
               ) -> dict[str, web.Application]:
    """The apps of the services ``names``, in the order they are to start."""
    wanted = set(names)
    unknown = wanted - set(FACTORIES)
    if unknown:
        raise ConfigError(f"unknown service {min(unknown)!r}: expected one of "
                          f"{', '.join(SERVICES)}")
    apps = {name: make(settings, ports) for name, make in FACTORIES.items() if name in wanted}
    api = apps.get("api")
    if api is not None:
        logserver = apps.get("logserver")
        _serve_logs(api, logserver[LOGSERVER] if logserver is not None else None, ports)
        for app in apps.values():
            if app is not api:
                api[REGISTRY].register(app[REGISTRY])
    return apps


def _serve_logs(api: web.Application, local: LogServer | None, ports: Ports) -> None:
    live = api[CONTEXT].live
    assert live is not None  # create_app gives the api its live tails
    reader = local
    if reader is None:
        reader = LogServer(ports.bus, ports.logs)  # reads only: the log servers store
        live.on_stored(reader.wake)
    live.on_event(reader.wake)
    api.add_routes(log_routes(reader, live.view))


class Running:
    """Apps started one after the other, each by its own ``AppRunner`` (its cleanup
    contexts entered; a site is added for the one that is served), and stopped in the
    reverse order, each once."""

    def __init__(self, apps: dict[str, web.Application]) -> None:
        self.apps = apps
        self._runners: dict[str, web.AppRunner] = {}

    @classmethod
    async def start(cls, apps: dict[str, web.Application]) -> Running:
        running = cls(apps)
        try:
            for name, app in apps.items():
                runner = web.AppRunner(app, access_log=None,
                                       shutdown_timeout=SHUTDOWN_TIMEOUT_S)
                running._runners[name] = runner
                await runner.setup()  # a failed start is cleaned up all the same
        except BaseException:
            await running.stop()
            raise
        return running

    def runner(self, name: str) -> web.AppRunner:
        return self._runners[name]

    def background(self) -> list[asyncio.Task[None]]:
        return [task for app in self.apps.values() for task in app[BACKGROUND]]

    async def stop(self, *names: str) -> None:
        """Stop the apps ``names`` (default: all still running), the last started first;
        one whose clean-up fails does not keep the others running (its error is raised
        once they have stopped)."""
        failed: list[Exception] = []
        for name in reversed(list(self._runners)):
            if names and name not in names:
                continue
            try:
                await self._runners.pop(name).cleanup()
            except Exception as exc:
                log.error("a service did not stop cleanly", extra={"service": name,
                                                                    "error": repr(exc)})
                failed.append(exc)
        if failed:
            raise failed[0]
