"""The log server's aiohttp application: ``create_app(settings, ports) -> web.Application``.

It stores what the workers ship on ``cyclone.logs`` (``LogServer.run``, in the
background) and serves ``/healthz`` and ``/metrics``. The log streams (``http.py``)
are served by the api, at the public address: over this app's ``LogServer`` when both
run in one process (its followers are woken by its own appends and read its live
tail), else over a reader of the same log store.
"""

from __future__ import annotations

from aiohttp import web

from services.logserver.service import LogServer
from shared.app import run_in_background, service_app
from shared.config import Settings
from shared.infra import Ports

__all__ = ["LOGSERVER", "create_app"]

LOGSERVER = web.AppKey("logserver", LogServer)


def create_app(settings: Settings, ports: Ports) -> web.Application:
    server = LogServer(ports.bus, ports.logs)
    app = service_app(ports.ready, [server.collector()])
    app[LOGSERVER] = server
    run_in_background(app, server.run, "LogServer.run")
    return app
