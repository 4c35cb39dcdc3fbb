"""A project's forge settings: validated on create and PATCH, the token stored in the
project's events for the notifier but never shown by the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.projections.projects import fold_project, project_stream
from tests.api import support

TOKEN = "ghp_s3cretTokenValue"
GITHUB = {"kind": "github", "repo": "octo-org/hello", "token": TOKEN}


class Api(support.Api):
    async def create(self, forge: Any, status: int = 201, name: str = "demo"
                     ) -> dict[str, Any]:
        body = {"name": name, "repo": "https://github.com/octo-org/hello.git", "forge": forge}
        answer, text = await self.call("POST", "/api/v1/projects", status, body)
        assert TOKEN not in text
        return answer

    async def stored_forge(self, name: str = "demo") -> dict[str, str]:
        view = fold_project(await self.store.read(project_stream(name)))
        assert view is not None
        return view.forge.to_data() if view.forge else {}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with support.serving(tmp_path, Api) as serving:
        yield serving


async def test_the_token_is_stored_for_the_notifier_but_never_shown(api: Api) -> None:
    created = await api.create(GITHUB)
    shown = {"kind": "github", "api_url": "https://api.github.com", "repo": "octo-org/hello",
             "token_set": True}
    assert created["forge"] == shown
    for path in ("/api/v1/projects/demo", "/api/v1/projects"):
        _, text = await api.call("GET", path, 200)
        assert TOKEN not in text
    answer, _ = await api.call("GET", "/api/v1/projects/demo", 200)
    assert answer["forge"] == shown
    assert await api.stored_forge() == {"kind": "github", "api_url": "https://api.github.com",
                                        "repo": "octo-org/hello", "token": TOKEN}
    assert TOKEN not in repr(fold_project(await api.store.read(project_stream("demo"))))


async def test_each_kind_gets_its_api_url_and_repo_form(api: Api) -> None:
    gitlab = await api.create({"kind": "gitlab", "repo": "group/sub/app", "token": TOKEN},
                              name="a")
    assert gitlab["forge"]["api_url"] == "https://gitlab.com/api/v4"
    by_id = await api.create({"kind": "gitlab", "repo": "4242", "token": TOKEN,
                              "api_url": "https://gitlab.example/api/v4/"}, name="b")
    assert (by_id["forge"]["api_url"], by_id["forge"]["repo"]) == (
        "https://gitlab.example/api/v4", "4242")
    gitea = await api.create({"kind": "gitea", "repo": "alice/tools", "token": TOKEN,
                              "api_url": "http://gitea.local:3000/api/v1"}, name="c")
    assert gitea["forge"]["api_url"] == "http://gitea.local:3000/api/v1"
    assert (await api.create(None, name="d"))["forge"] is None


@pytest.mark.parametrize(("forge", "detail"), [
    ({"kind": "gitea", "repo": "alice/tools", "token": TOKEN},
     "forge.api_url: Value error, required for a gitea forge"),
    ({"kind": "bitbucket", "repo": "a/b", "token": TOKEN}, "forge.kind: Input should be"),
    ({**GITHUB, "secret": "x"}, "forge.secret: unknown field"),
    ({**GITHUB, "repo": "just-a-name"}, "forge.repo: Value error, expected owner/name"),
    ({**GITHUB, "repo": "a/b/c"}, "forge.repo: Value error, expected owner/name"),
    ({"kind": "gitlab", "repo": "../etc", "token": TOKEN},
     "forge.repo: Value error, expected a project id or group/name"),
    ({"kind": "github", "repo": "a/b"}, "forge.token: Field required"),
    ({**GITHUB, "token": ""}, "forge.token: String should have at least 1 character"),
    ({**GITHUB, "api_url": "ftp://example.org"}, "forge.api_url: Value error, not an http(s)"),
    ({**GITHUB, "api_url": "https://me:pw@ghe.example/api/v3"},
     "forge.api_url: Value error, no user, password"),
    ("github", "forge: Input should be"),
])
async def test_a_bad_forge_block_is_refused_naming_the_field(
        api: Api, forge: Any, detail: str) -> None:
    answer = await api.create(forge, status=400)
    assert answer["error"] == "invalid_body"
    assert answer["detail"].startswith(detail), answer["detail"]
    assert TOKEN not in answer["detail"]
    await api.call("GET", "/api/v1/projects/demo", 404)  # nothing stored


async def test_patch_replaces_the_block_keeps_the_token_for_the_same_forge_and_removes_it(
        api: Api) -> None:
    await api.create(GITHUB)
    moved, text = await api.call("PATCH", "/api/v1/projects/demo", 200,
                                 {"forge": {"kind": "github", "repo": "octo-org/renamed"}})
    assert TOKEN not in text
    assert moved["forge"]["repo"] == "octo-org/renamed"
    assert (await api.stored_forge())["token"] == TOKEN  # kept: same forge

    # Another forge (here a GitHub Enterprise server) must be given its own token.
    refused, _ = await api.call("PATCH", "/api/v1/projects/demo", 400, {"forge": {
        "kind": "github", "repo": "octo-org/hello", "api_url": "https://ghe.example/api/v3"}})
    assert refused["detail"].startswith("forge.token: required")
    assert (await api.stored_forge())["api_url"] == "https://api.github.com"

    new = {"kind": "github", "repo": "o/r", "api_url": "https://ghe.example/api/v3",
           "token": "another-token"}
    await api.call("PATCH", "/api/v1/projects/demo", 200, {"forge": new})
    assert await api.stored_forge() == new

    unchanged, _ = await api.call("PATCH", "/api/v1/projects/demo", 200,
                                  {"max_concurrent_runs": 2})
    assert unchanged["forge"]["token_set"] is True  # a PATCH without "forge" leaves it

    removed, _ = await api.call("PATCH", "/api/v1/projects/demo", 200, {"forge": None})
    assert removed["forge"] is None
    assert await api.stored_forge() == {}
    bad, _ = await api.call("PATCH", "/api/v1/projects/demo", 400,
                            {"forge": {**GITHUB, "kind": "svn"}})
    assert bad["detail"].startswith("forge.kind")
