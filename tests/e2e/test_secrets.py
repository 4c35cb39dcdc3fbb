"""Secrets end to end, every service in one process as ``cyclone up`` runs them (SQLite
store, shell executor, real HTTP, a real SMTP server): a step that asks for secrets gets
them; what it prints of them whole, line by line, or in two writes a second apart is
``***`` in the stored log, the SSE and websocket streams and the notification mail; a
value the step base64-encodes is not masked (documented); the store never holds it."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cyclone.apps import SERVICES, Running, build_apps
from cyclone.ports import open_ports
from services.api.auth import Tokens
from shared.config import Settings
from tests.git_support import GitHost, git_files_fixture
from tests.notifier.smtp_server import SmtpServer
from tests.sse_support import sse_events
from tests.support import eventually

__all__ = ["git_files_fixture"]  # the fixture this module uses

TOKEN = "dt-s3cr3t-9f8e7d6c"
MULTI = "line-one-AAAA\nline-two-BBBB"
PIPELINE = r"""
jobs:
  build:
    image: unused-by-the-shell-executor
    secrets: [DEPLOY_TOKEN]
    steps:
      - name: leak
        secrets: [SIGNING_KEY]
        run:
          - echo "whole $DEPLOY_TOKEN"
          - printf '%s\n' "$SIGNING_KEY"
          - printf 'split %s' "$(printf %s "$DEPLOY_TOKEN" | cut -c1-6)"; sleep 1; printf '%s end\n' "$(printf %s "$DEPLOY_TOKEN" | cut -c7-)"
          - echo "b64 $(printf %s "$DEPLOY_TOKEN" | base64)"
          - exit 3
      - name: none
        when: {status: always}
        run: ["echo \"unasked [${SIGNING_KEY:-}]\""]
"""
MASKED = ["whole ***", "***", "***", "split *** end", "unasked []"]
BASE64 = base64.b64encode(TOKEN.encode()).decode()


class Server:
    def __init__(self, url: str, token: str, smtp: SmtpServer) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.smtp = smtp

    async def call(self, http: aiohttp.ClientSession, method: str, path: str, status: int,
                   body: Any = None) -> Any:
        async with http.request(method, self.url + path, json=body,
                                headers=self.headers) as response:
            text = await response.text()
            assert response.status == status, text
            return json.loads(text) if text else None


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with SmtpServer() as smtp:
        settings = Settings.from_env({
            "CYCLONE_HOME": str(tmp_path / "home"), "CYCLONE_EXECUTOR": "shell",
            "CYCLONE_SMTP_HOST": "127.0.0.1", "CYCLONE_SMTP_PORT": str(smtp.port)})
        async with open_ports(settings) as ports:
            _, token = await Tokens(ports.store).create("tester", admin=True)
            running = await Running.start(build_apps(SERVICES, settings, ports))
            try:
                site = web.TCPSite(running.runner("api"), "127.0.0.1", 0)
                await site.start()
                host, port = running.runner("api").addresses[0][:2]
                yield Server(f"http://{host}:{port}", token, smtp)
            finally:
                await running.stop()


async def test_secrets_reach_the_step_and_nothing_that_leaves_it(
        server: Server, git_files: GitHost, tmp_path: Path) -> None:
    repo = git_files.create("demo")
    repo.commit({".cyclone.yml": PIPELINE})
    async with aiohttp.ClientSession() as http:
        await server.call(http, "POST", "/api/v1/projects", 201, {
            "name": "demo", "repo": repo.file_url,
            "notify": [{"when": ["failure"], "email": ["dev@example.com"]}]})
        refused = await server.call(http, "PUT", "/api/v1/projects/demo/secrets/SHORT", 400,
                                    {"value": "abc"})
        assert "at least 4" in refused["detail"]
        shown = await server.call(http, "PUT", "/api/v1/projects/demo/secrets/DEPLOY_TOKEN",
                                  200, {"value": TOKEN})
        await server.call(http, "PUT", "/api/v1/secrets/SIGNING_KEY", 200, {"value": MULTI})
        listed = await server.call(http, "GET", "/api/v1/projects/demo/secrets", 200)
        assert [s["name"] for s in listed["secrets"]] == ["DEPLOY_TOKEN"]
        assert TOKEN not in json.dumps([shown, listed])

        run = (await server.call(http, "POST", "/api/v1/projects/demo/runs", 202, {}))["id"]
        await eventually(lambda: _ended(server, http, run), timeout=60, what="run ended")

        stored = await _stored_log(server, http, run)
        sse = await _sse_log(server, http, run)
        ws = await _ws_log(server, http, run)
        for lines in (stored, sse, ws):
            printed = [t for t in lines if not t.startswith("+ ")]
            assert [t for t in printed if not t.startswith("b64 ")] == MASKED
            assert f"b64 {BASE64}" in printed  # an encoded value is not masked
            assert not any(TOKEN in t or "line-one-AAAA" in t for t in lines)

        await eventually(lambda: server.smtp.received, timeout=30, what="the failure mail")
        mail = server.smtp.received[0].message.as_string()
        assert "split *** end" in mail and TOKEN not in mail and "line-two-BBBB" not in mail
        await server.call(http, "DELETE", "/api/v1/secrets/SIGNING_KEY", 204)
        assert (await server.call(http, "GET", "/api/v1/secrets", 200)) == {"secrets": []}
    home = tmp_path / "home"
    for path in [*home.glob("events.db*"), *home.rglob("logs/**/*")]:
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


async def test_an_unknown_secret_errors_the_run_before_any_step(
        server: Server, git_files: GitHost) -> None:
    repo = git_files.create("demo")
    repo.commit({".cyclone.yml": PIPELINE.replace("[SIGNING_KEY]", "[SIGNING_KYE]")})
    async with aiohttp.ClientSession() as http:
        await server.call(http, "POST", "/api/v1/projects", 201,
                          {"name": "demo", "repo": repo.file_url})
        await server.call(http, "PUT", "/api/v1/projects/demo/secrets/DEPLOY_TOKEN", 200,
                          {"value": TOKEN})
        run = (await server.call(http, "POST", "/api/v1/projects/demo/runs", 202, {}))["id"]
        view = await eventually(lambda: _ended(server, http, run), timeout=60, what="run ended")
    assert view["status"] == "errored"
    assert ".cyclone.yml:8: jobs.build.steps[0].secrets[0]: unknown secret 'SIGNING_KYE'" \
        in view["reason"]
    assert [job["status"] for job in view["jobs"]] == []


async def _ended(server: Server, http: aiohttp.ClientSession, run: str) -> Any:
    async with http.get(f"{server.url}/api/v1/runs/{run}", headers=server.headers) as response:
        view = await response.json() if response.status == 200 else {}
    return view if view.get("status") in ("success", "failure", "errored") else None


async def _stored_log(server: Server, http: aiohttp.ClientSession, run: str) -> list[str]:
    async with http.get(f"{server.url}/api/v1/runs/{run}/logs",
                        headers=server.headers) as response:
        return _build([json.loads(line) for line in (await response.text()).splitlines()])


async def _sse_log(server: Server, http: aiohttp.ClientSession, run: str) -> list[str]:
    lines: list[dict[str, Any]] = []
    async with http.get(f"{server.url}/api/v1/runs/{run}/logs?follow=1",
                        headers=server.headers) as response:
        async for event in sse_events(response):
            if event.event == "end":
                break
            if event.event == "line":
                lines.append(event.json())
    return _build(lines)


async def _ws_log(server: Server, http: aiohttp.ClientSession, run: str) -> list[str]:
    lines: list[dict[str, Any]] = []
    async with http.ws_connect(f"{server.url}/api/v1/runs/{run}/logs/ws",
                               headers=server.headers) as ws:
        async for message in ws:
            data = json.loads(message.data)
            if "end" in data:
                break
            lines.append(data)
    return _build(lines)


def _build(lines: list[dict[str, Any]]) -> list[str]:
    """The text of the job's lines (not the checkout's)."""
    return [line["text"] for line in lines if line["job"] == "build"]
