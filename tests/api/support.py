"""An API app on a real HTTP test server over a SQLite store, with an admin token; or
the api app of a whole ``Embedded`` runtime, served on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cyclone.embedded import Embedded
from services.api.app import build_app
from services.api.auth import Tokens
from services.api.context import ApiContext
from services.api.readmodel import RunsReadModel
from shared.adapters.eventstore.sqlite import SqliteEventStore

__all__ = ["Api", "serve_api", "serving"]


class Api:
    def __init__(self, client: TestClient[Any, Any], store: SqliteEventStore,
                 admin: str) -> None:
        self.client = client
        self.store = store
        self.headers = {"Authorization": f"Bearer {admin}"}

    async def call(self, method: str, path: str, status: int,
                   json: Any = None) -> tuple[dict[str, Any], str]:
        """The answer's JSON and text, once its status is ``status``."""
        async with self.client.request(method, path, json=json,
                                       headers=self.headers) as response:
            text = await response.text()
            assert response.status == status, text
            return await response.json(), text


A = TypeVar("A", bound=Api)


@asynccontextmanager
async def serving(tmp_path: Path, kind: type[A]) -> AsyncIterator[A]:
    store = await SqliteEventStore.open(tmp_path / "events.db")
    tokens = Tokens(store)
    _, admin = await tokens.create("admin", admin=True)
    app = build_app(ApiContext(store=store, readmodel=RunsReadModel()))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield kind(client, store, admin)
    finally:
        await client.close()
        await store.close()


@asynccontextmanager
async def serve_api(runtime: Embedded) -> AsyncIterator[str]:
    """The runtime's api app (started with the runtime) on a free port of 127.0.0.1."""
    assert runtime.running is not None
    runner = runtime.running.runner("api")
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await site.stop()
