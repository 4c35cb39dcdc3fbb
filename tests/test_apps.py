"""The services' app factories and their composition, on the embedded ports (real
SQLite store, in-process bus and coordinator, shell executor): each app serves its own
``/healthz`` and ``/metrics``, starts its background tasks with the app and stops them
with it; in one process the api's app also serves the log streams and the other
services' metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cyclone.apps import SERVICES, Running, build_apps
from cyclone.ports import open_ports
from shared.app import BACKGROUND
from shared.config import Settings
from shared.errors import ConfigError
from shared.infra import Ports

# What each service's own /metrics shows (the workermanager has no figures of its own).
OWN_METRIC = {"api": "cyclone_runs", "eventmanager": "cyclone_eventmanager_handle_seconds",
              "workermanager": "", "logserver": "cyclone_log_lines_stored_total",
              "notifier": "cyclone_notifications_total"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"CYCLONE_HOME": str(tmp_path / "home"),
                              "CYCLONE_EXECUTOR": "shell"})


@pytest.fixture
async def ports(settings: Settings) -> AsyncIterator[Ports]:
    async with open_ports(settings) as opened:
        yield opened


@pytest.mark.parametrize("name", SERVICES)
async def test_a_service_alone_serves_health_and_its_metrics_and_stops_its_tasks(
    name: str, settings: Settings, ports: Ports,
) -> None:
    app = build_apps([name], settings, ports)[name]
    async with TestClient(TestServer(app)) as client:
        async with client.get("/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}
        async with client.get("/metrics") as response:
            assert response.status == 200
            assert OWN_METRIC[name] in await response.text()
        tasks: list[asyncio.Task[None]] = app[BACKGROUND]
        assert tasks and not any(task.done() for task in tasks)
    assert all(task.done() for task in tasks)


async def test_in_one_process_the_api_serves_the_log_streams_and_every_services_metrics(
    settings: Settings, ports: Ports,
) -> None:
    running = await Running.start(build_apps(SERVICES, settings, ports))
    try:
        api = running.apps["api"]
        paths = {route.resource.canonical for route in api.router.routes()
                 if route.resource is not None}
        assert "/api/v1/runs/{id}/logs" in paths
        site = web.TCPSite(running.runner("api"), "127.0.0.1", 0)  # served as `up` does
        await site.start()
        host, port = running.runner("api").addresses[0][:2]
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://{host}:{port}/metrics") as response:
            text = await response.text()
        for name in SERVICES:
            assert OWN_METRIC[name] in text, name
    finally:
        await running.stop()
    assert all(task.done() for task in running.background())


async def test_an_unknown_service_is_a_config_error(settings: Settings, ports: Ports) -> None:
    with pytest.raises(ConfigError, match="'builder'"):
        build_apps(["builder"], settings, ports)
