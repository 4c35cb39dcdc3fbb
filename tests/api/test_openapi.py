"""The OpenAPI document describes exactly the routes the server has."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.api.app import build_app
from services.api.context import ApiContext
from services.api.openapi import openapi_document
from services.api.readmodel import RunsReadModel
from services.logserver.http import log_routes
from services.logserver.service import LogServer
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.adapters.logstore.files import FileLogStore


def _routes(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD" and path:
            found.add((route.method.lower(), path))
    return found


async def test_the_document_lists_every_route_and_no_other(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db")
    bus = MemoryBus()
    logs = FileLogStore(tmp_path / "logs")
    try:
        ctx = ApiContext(store=store, readmodel=RunsReadModel())
        app = build_app(ctx)
        app.add_routes(log_routes(LogServer(bus, logs), ctx.find_run))  # as the api serves them
        documented = {(method, path) for path, ops in openapi_document()["paths"].items()
                      for method in ops}
        assert documented == _routes(app)
    finally:
        await logs.close()
        await bus.close()
        await store.close()


def test_every_operation_documents_its_responses_and_errors_as_json() -> None:
    for path, ops in openapi_document()["paths"].items():
        for method, op in ops.items():
            assert op["summary"], (method, path)
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path)
