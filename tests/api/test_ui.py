"""The web UI as the api serves it, over a small build of its own in a temporary directory:
files with their types and cache headers, deep links to the app, the API's own 404s
kept, 503 while it is not built, security headers, and no way out of the build."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import build_app
from services.api.context import ApiContext
from services.api.readmodel import RunsReadModel
from services.api.ui import CSP
from services.logserver.http import log_routes
from services.logserver.service import LogServer
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.adapters.logstore.files import FileLogStore
from shared.config import Settings

INDEX = ('<!doctype html><html><head><script type="module" src="/assets/index-3f9a1c.js">'
         '</script><link rel="stylesheet" href="/assets/index-77b2e0.css"></head>'
         '<body><div id="app"></div></body></html>')
SECRET = "TOP SECRET: outside the build"


def make_dist(root: Path) -> Path:
    """A Vite-like build (and, beside it, a file nobody may read through the UI)."""
    dist = root / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(INDEX)
    (dist / "assets" / "index-3f9a1c.js").write_text("console.log('cyclone')\n")
    (dist / "assets" / "index-77b2e0.css").write_text("body { margin: 0 }\n")
    (dist / "assets" / "logo-9d0e.woff2").write_bytes(b"wOF2\0\0")
    (dist / "favicon.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (dist / ".env").write_text(SECRET)
    (root / "secret.txt").write_text(SECRET)
    (dist / "assets" / "escape.js").symlink_to(root / "secret.txt")
    return dist


@dataclass
class Ui:
    client: TestClient[Any, Any]
    admin: str

    async def get(self, path: str, method: str = "GET",
                  **headers: str) -> tuple[int, dict[str, str], str]:
        async with self.client.request(method, path, headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.text()

    async def raw(self, target: str) -> str:
        """The answer to a request line sent byte for byte (no client tidies the path)."""
        server = self.client.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        return answer.decode(errors="replace")


@pytest.fixture
async def ui(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Ui]:
    built = getattr(request, "param", True)
    dist = make_dist(tmp_path) if built else tmp_path / "not-built"
    store = await SqliteEventStore.open(tmp_path / "events.db")
    bus, logs = MemoryBus(), FileLogStore(tmp_path / "logs")
    ctx = ApiContext(store=store, readmodel=RunsReadModel(), ui_dist=dist)
    app = build_app(ctx)
    app.add_routes(log_routes(LogServer(bus, logs), ctx.find_run))  # added later, as the api does
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    _, admin = await ctx.tokens.create("admin", admin=True)
    try:
        yield Ui(client, admin)
    finally:
        await client.close()
        await logs.close()
        await bus.close()
        await store.close()


async def test_the_app_is_served_at_the_root_never_cached(ui: Ui) -> None:
    status, headers, body = await ui.get("/")
    assert (status, body) == (200, INDEX)
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize(("path", "kind"), [
    ("/assets/index-3f9a1c.js", "text/javascript; charset=utf-8"),
    ("/assets/index-77b2e0.css", "text/css; charset=utf-8"),
    ("/assets/logo-9d0e.woff2", "font/woff2"),
])
async def test_assets_have_their_types_and_are_cached_for_good(ui: Ui, path: str,
                                                               kind: str) -> None:
    status, headers, _ = await ui.get(path)
    assert status == 200
    assert headers["Content-Type"] == kind
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"


async def test_a_missing_asset_is_a_404_not_the_app(ui: Ui) -> None:
    status, headers, body = await ui.get("/assets/index-old.js")
    assert status == 404 and headers["Content-Type"].startswith("application/json")
    assert "reload the page" in body


@pytest.mark.parametrize("path", ["/runs/019ab3f2c4d1", "/projects/demo/settings", "/login",
                                  "/index.html", "/assets", "/metricsboard", "/apiary"])
async def test_any_other_page_opens_the_app(ui: Ui, path: str) -> None:
    status, headers, body = await ui.get(path)
    assert (status, body) == (200, INDEX)
    assert headers["Cache-Control"] == "no-cache"


async def test_files_at_the_root_of_the_build_are_served(ui: Ui) -> None:
    status, headers, body = await ui.get("/favicon.svg")
    assert status == 200 and body.startswith("<svg")
    assert headers["Content-Type"] == "image/svg+xml"


async def test_head_answers_without_a_body(ui: Ui) -> None:
    status, headers, body = await ui.get("/", method="HEAD")
    assert (status, body) == (200, "")
    assert int(headers["Content-Length"]) == len(INDEX)


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/api/v1/nope", 404), ("GET", "/api", 404), ("GET", "/api/", 404),
    ("POST", "/api/v1/nope", 404), ("GET", "/healthz/x", 404), ("GET", "/metrics/x", 404),
    ("POST", "/api/v1/hooks/github/nope", 404), ("POST", "/runs/1", 405),
])
async def test_the_apis_own_errors_stay_json(ui: Ui, method: str, path: str,
                                             status: int) -> None:
    got, headers, body = await ui.get(path, method=method)
    assert got == status, body
    assert headers["Content-Type"].startswith("application/json")


async def test_api_routes_added_after_the_ui_still_answer(ui: Ui) -> None:
    status, _, body = await ui.get("/api/v1/runs/nope/logs",
                                   Authorization=f"Bearer {ui.admin}")
    assert status == 404 and "no run 'nope'" in body
    status, _, body = await ui.get("/api/v1/runs/nope/logs")
    assert status == 401  # the log route's access rule, not the UI's page


async def test_every_answer_carries_the_security_headers(ui: Ui) -> None:
    for path in ("/", "/assets/index-3f9a1c.js", "/healthz", "/api/v1/nope"):
        _, headers, _ = await ui.get(path)
        assert headers["Content-Security-Policy"] == CSP, path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Referrer-Policy"] == "same-origin", path
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["img-src"] == "'self' data:"


@pytest.mark.parametrize("target", [
    "/../secret.txt", "/assets/../../secret.txt", "/assets/%2e%2e/%2e%2e/secret.txt",
    "/assets/..%2f..%2fsecret.txt", "/assets/%2E%2E%2F%2E%2E%2Fsecret.txt",
    "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/assets/escape.js", "/.env", "/assets/.%2e/.env",
    "/assets/..\\..\\secret.txt", "/assets//etc/passwd", "//etc/passwd", "/assets/%00.js",
])
async def test_nothing_outside_the_build_is_served(ui: Ui, target: str) -> None:
    answer = await ui.raw(target)
    status = int(answer.split(" ", 2)[1])
    assert SECRET not in answer and "root:" not in answer, answer
    if target.startswith("/assets/"):
        assert status in (400, 404), answer  # an asset that is none
    else:
        assert status in (200, 400, 404), answer
        assert status != 200 or INDEX in answer  # at most, the app itself


@pytest.mark.parametrize("ui", [False], indirect=True)
@pytest.mark.parametrize("path", ["/", "/runs/1", "/assets/index-3f9a1c.js"])
async def test_an_unbuilt_ui_says_how_to_build_it(ui: Ui, path: str) -> None:
    status, headers, body = await ui.get(path)
    assert status == 503 and headers["Content-Type"].startswith("application/json")
    assert '"error": "ui_not_built"' in body and "make ui" in body
    status, _, _ = await ui.get("/healthz")
    assert status == 200  # the rest of the server works without it


def test_the_build_served_is_a_setting(tmp_path: Path) -> None:
    assert Settings.from_env({"CYCLONE_UI_DIST": str(tmp_path)}).ui_dist == tmp_path
    assert Settings.from_env({}).ui_dist is None  # the package's own build
