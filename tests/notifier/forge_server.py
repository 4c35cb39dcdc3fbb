"""A local HTTP server on 127.0.0.1 playing a forge's commit status API.

It checks each request against the forge's documented API (method, path, headers,
JSON body and its allowed states) and answers as scripted: the next status of
``script`` (201 once the script is used up). A request that breaks the documented
API is answered 422 and listed in ``problems``, so a test that sends the wrong
thing fails twice over. ``hold`` makes the server wait before answering, to show
that nothing waits on the forge.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["FakeForge", "Received"]

TOKEN = "tok-s3cret-4242"

_STATES = {"github": {"pending", "success", "failure", "error"},
           "gitea": {"pending", "success", "failure", "error", "warning"},
           "gitlab": {"pending", "running", "success", "failed", "canceled"}}
_FIELDS = {"github": {"state", "target_url", "description", "context"},
           "gitea": {"state", "target_url", "description", "context"},
           "gitlab": {"state", "target_url", "description", "name", "ref", "coverage",
                      "pipeline_id", "context"}}
_PATHS = {"github": re.compile(r"^/repos/[^/]+/[^/]+/statuses/[0-9a-f]{40}$"),
          "gitea": re.compile(r"^/api/v1/repos/[^/]+/[^/]+/statuses/[0-9a-f]{40}$"),
          "gitlab": re.compile(r"^/api/v4/projects/[^/]+/statuses/[0-9a-f]{40}$")}
# Where each forge's API lives under the server's root (``api_url`` = root + prefix).
PREFIXES = {"github": "", "gitea": "/api/v1", "gitlab": "/api/v4"}


@dataclass(frozen=True)
class Received:
    method: str
    raw_path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeForge:
    kind: str
    script: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    hold: asyncio.Event | None = None
    url: str = ""
    _runner: web.AppRunner | None = None

    @property
    def api_url(self) -> str:
        return self.url + PREFIXES[self.kind]

    async def start(self) -> FakeForge:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def states(self) -> list[str]:
        return [r.body.get("state", "") for r in self.received]

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        got = Received(request.method, request.raw_path, dict(request.headers), body)
        self.received.append(got)
        if self.hold is not None:
            await self.hold.wait()
        problems = self._check(got, raw)
        if problems:
            self.problems.extend(problems)
            return web.json_response({"message": "; ".join(problems)}, status=422)
        status = self.script.pop(0) if self.script else 201
        if status == 401:  # a forge may echo what it was sent: the reporter must not
            return web.json_response({"message": f"Bad credentials {TOKEN}"}, status=401)
        if status >= 400:
            return web.json_response({"message": "Server Error"}, status=status)
        return web.json_response({"id": len(self.received), **body}, status=status)

    def _check(self, got: Received, raw: bytes) -> list[str]:
        problems = []
        if got.method != "POST":
            problems.append(f"method {got.method}")
        if not _PATHS[self.kind].match(got.raw_path):
            problems.append(f"path {got.raw_path}")
        if not got.headers.get("Content-Type", "").startswith("application/json"):
            problems.append("Content-Type is not JSON")
        problems += self._check_auth(got.headers)
        unknown = set(got.body) - _FIELDS[self.kind]
        if unknown:
            problems.append(f"unknown body fields {sorted(unknown)}")
        if got.body.get("state") not in _STATES[self.kind]:
            problems.append(f"state {got.body.get('state')!r}")
        if TOKEN.encode() in raw:
            problems.append("the token is in the body")
        return problems

    def _check_auth(self, headers: dict[str, str]) -> list[str]:
        if self.kind == "github":
            expected = {"Authorization": f"Bearer {TOKEN}",
                        "Accept": "application/vnd.github+json",
                        "X-GitHub-Api-Version": "2022-11-28"}
        elif self.kind == "gitea":
            expected = {"Authorization": f"token {TOKEN}"}
        else:
            expected = {"PRIVATE-TOKEN": TOKEN}
        return [f"header {name}: {headers.get(name)!r}" for name, value in expected.items()
                if headers.get(name) != value]
