"""The API's error middleware, on a real aiohttp server."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.api.errors import error_middleware


async def _read(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({})


async def test_a_body_over_the_limit_is_a_413_naming_the_limit() -> None:
    app = web.Application(middlewares=[error_middleware], client_max_size=100)
    app.router.add_post("/", _read)
    async with TestClient(TestServer(app)) as client, \
            client.post("/", data=b"x" * 1000) as response:
        assert response.status == 413
        assert await response.json() == {"error": "payload_too_large",
                                         "detail": "request body larger than 100 bytes"}
