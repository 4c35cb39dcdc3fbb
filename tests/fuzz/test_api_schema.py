"""schemathesis over the OpenAPI document a running server serves (the api of an
``Embedded`` runtime on 127.0.0.1), every operation, as every caller in
``AUTH_CONTEXTS``, with data that fits the document and data that does not: no 5xx, an
error is JSON ``{"error", "detail"}``, no response shows a traceback, and a response
conforms to the document where the document says what it is."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cyclone.embedded import Embedded
from services.api.auth import Tokens, Users
from services.api.openapi import openapi_document
from shared.config import Settings
from shared.status import Role
from tests.api.support import serve_api
from tests.api.test_ui import make_dist
from tests.fuzz.budget import examples


@dataclass(frozen=True)
class Caller:
    """Who calls: ``token`` None is no Authorization header at all; else a token created
    with these properties (a role, a read-only token: add the field and an entry)."""

    token: bool = True
    admin: bool = False
    role: str = ""  # a user with this role in the seeded project "demo"
    read_only: bool = False
    examples: int = 25  # per operation (the roles' share of the budget is smaller)


# Every caller each operation is fuzzed as; a new role is one more entry.
AUTH_CONTEXTS: dict[str, Caller] = {
    "anonymous": Caller(token=False),
    "admin": Caller(admin=True),
    "viewer": Caller(role="viewer", examples=8),
    "developer": Caller(role="developer", examples=8),
    "maintainer": Caller(role="maintainer", examples=8),
    "read-only": Caller(role="maintainer", read_only=True, examples=8),
}
# Operations not fuzzed here, and why.
SKIPPED = {
    ("get", "/api/v1/changes"): "a stream of every run's changes ends only when its client "
                                "goes (tests/api/test_streams.py covers it)",
}
OPERATIONS = [(method, path) for path, ops in openapi_document()["paths"].items()
              for method in ops if (method, path) not in SKIPPED]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
TRACEBACK = ("Traceback (most recent call last)", 'File "/')


@dataclass
class Server:
    url: str
    tokens: dict[str, str]  # AUTH_CONTEXTS name -> secret
    schema: BaseSchema | None = None
    headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def caller_headers(self, context: str) -> dict[str, str]:
        secret = self.tokens.get(context)
        return {"Authorization": f"Bearer {secret}"} if secret else {}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    home: Path = tmp_path_factory.mktemp("fuzz-api")
    ui = make_dist(home)  # a build of the web UI of its own, whether `make ui` ran or not
    settings = Settings.from_env({"CYCLONE_HOME": str(home), "CYCLONE_EXECUTOR": "shell",
                                  "CYCLONE_UI_DIST": str(ui)})
    runtime = await Embedded.start(settings, own_all_runs=True)
    try:
        secrets = {name: await _token(runtime, name, caller)
                   for name, caller in AUTH_CONTEXTS.items() if caller.token}
        async with serve_api(runtime) as url:
            served = Server(url, secrets)
            await _seed(served)
            # schemathesis loads the document the server serves, over HTTP (blocking).
            served.schema = await asyncio.to_thread(
                schemathesis.openapi.from_url, f"{url}/api/v1/openapi.json")
            yield served
    finally:
        await runtime.stop()


async def _token(runtime: Embedded, name: str, caller: Caller) -> str:
    """A token for ``caller``: of no user for the admin, else of a user with its role."""
    tokens = Tokens(runtime.store)
    if not caller.role:
        return (await tokens.create(name, admin=caller.admin))[1]
    await Users(runtime.store).add(name, None, False, {"demo": Role(caller.role)}, "fuzz")
    return (await tokens.create(name, user=name, read_only=caller.read_only))[1]


async def _seed(server: Server) -> None:
    """Something for the list operations to show: a project."""
    async with aiohttp.ClientSession(headers=server.caller_headers("admin")) as http, \
            http.post(f"{server.url}/api/v1/projects", json={
                "name": "demo", "repo": "https://git.example.com/demo.git",
                "hook_secret": "a-webhook-secret"}) as response:
        assert response.status == 201, await response.text()


def _error_and_traceback_checks(response: Response) -> None:
    text = response.content.decode("utf-8", "replace")
    assert not any(marker in text for marker in TRACEBACK), text[:2000]
    if response.status_code >= 400:
        body = json.loads(text)
        assert isinstance(body, dict) and set(body) == {"error", "detail"}, text[:500]
        assert isinstance(body["error"], str) and isinstance(body["detail"], str)


def _fuzz(operation: APIOperation[Any, Any, Any, Any], url: str, headers: dict[str, str],
          count: int) -> None:
    """Runs in a worker thread: schemathesis's client blocks, the server is on the loop."""
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @examples(count)
    @given(cases)
    def run(case: Case[Any]) -> None:
        response = case.call(base_url=url, headers=headers, timeout=60)
        _error_and_traceback_checks(response)
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("context", list(AUTH_CONTEXTS))
@pytest.mark.parametrize(("method", "path"), OPERATIONS,
                         ids=[f"{m.upper()} {p}" for m, p in OPERATIONS])
async def test_operation(server: Server, context: str, method: str, path: str) -> None:
    assert server.schema is not None
    operation: Any = server.schema[path][method.upper()]
    await asyncio.to_thread(_fuzz, operation, server.url, server.caller_headers(context),
                            AUTH_CONTEXTS[context].examples)
