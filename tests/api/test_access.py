"""Who may do what, walked route by route for every kind of caller, over real HTTP: no
credentials, a read-only token, a user with no role in the project, its viewer,
developer and maintainer, an admin. Then sessions (cookie, CSRF, login limits), lists
narrowed to what the caller may read, and the actor recorded with each change."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.access import ROUTES
from services.api.app import build_app
from services.api.context import ApiContext
from services.api.openapi import openapi_document
from services.api.readmodel import RunsReadModel
from services.logserver.http import log_routes
from services.logserver.service import LogServer
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.adapters.logstore.files import FileLogStore
from shared.projections.users import USERS_STREAM

# Who may call each route, written out here rather than read from ROUTES (which it checks):
# the least of anonymous < outsider (a user with no role in the project) < viewer <
# developer < maintainer < admin.
LEVELS = ("anonymous", "outsider", "viewer", "developer", "maintainer", "admin")
EXPECTED = {
    ("GET", "/healthz"): "anonymous",
    ("GET", "/"): "anonymous",
    ("GET", "/assets/{path}"): "anonymous",
    ("GET", "/{path}"): "anonymous",
    ("GET", "/metrics"): "anonymous",
    ("GET", "/api/v1/openapi.json"): "anonymous",
    ("POST", "/api/v1/hooks/{provider}/{project}"): "anonymous",
    ("POST", "/api/v1/session"): "anonymous",
    ("GET", "/api/v1/session"): "outsider",
    ("DELETE", "/api/v1/session"): "outsider",
    ("GET", "/api/v1/tokens"): "outsider",
    ("POST", "/api/v1/tokens"): "outsider",
    ("DELETE", "/api/v1/tokens/{id}"): "outsider",
    ("GET", "/api/v1/users"): "admin",
    ("POST", "/api/v1/users"): "admin",
    ("GET", "/api/v1/users/{user}"): "admin",
    ("PATCH", "/api/v1/users/{user}"): "admin",
    ("DELETE", "/api/v1/users/{user}"): "admin",
    ("GET", "/api/v1/projects"): "outsider",
    ("POST", "/api/v1/projects"): "admin",
    ("GET", "/api/v1/projects/{name}"): "viewer",
    ("PATCH", "/api/v1/projects/{name}"): "maintainer",
    ("DELETE", "/api/v1/projects/{name}"): "admin",
    ("GET", "/api/v1/projects/{name}/members"): "viewer",
    ("GET", "/api/v1/projects/{name}/badge.svg"): "viewer",
    ("PUT", "/api/v1/projects/{name}/members/{user}"): "admin",
    ("DELETE", "/api/v1/projects/{name}/members/{user}"): "admin",
    ("GET", "/api/v1/projects/{name}/secrets"): "maintainer",
    ("PUT", "/api/v1/projects/{name}/secrets/{secret}"): "maintainer",
    ("DELETE", "/api/v1/projects/{name}/secrets/{secret}"): "maintainer",
    ("GET", "/api/v1/secrets"): "admin",
    ("PUT", "/api/v1/secrets/{secret}"): "admin",
    ("DELETE", "/api/v1/secrets/{secret}"): "admin",
    ("POST", "/api/v1/projects/{name}/runs"): "developer",
    ("POST", "/api/v1/projects/{name}/notifications/test"): "maintainer",
    ("GET", "/api/v1/notifications/tests/{id}"): "viewer",
    ("GET", "/api/v1/hooks/deliveries"): "outsider",
    ("GET", "/api/v1/runs"): "outsider",
    ("GET", "/api/v1/changes"): "outsider",
    ("GET", "/api/v1/runs/{id}"): "viewer",
    ("GET", "/api/v1/runs/{id}/events"): "viewer",
    ("GET", "/api/v1/runs/{id}/tests"): "viewer",
    ("GET", "/api/v1/runs/{id}/artifacts"): "viewer",
    ("GET", "/api/v1/runs/{id}/artifacts/{job}/{name}"): "viewer",
    ("GET", "/api/v1/runs/{id}/logs"): "viewer",
    ("GET", "/api/v1/runs/{id}/logs/ws"): "viewer",
    ("GET", "/api/v1/runs/{id}/logs/search"): "viewer",
    ("POST", "/api/v1/runs/{id}/cancel"): "developer",
    ("POST", "/api/v1/runs/{id}/rerun"): "developer",
    ("POST", "/api/v1/runs/{id}/approve"): "maintainer",
    ("POST", "/api/v1/runs/{id}/reject"): "maintainer",
    ("POST", "/api/v1/runs/{id}/jobs/{job}/approve"): "developer",  # + the job's own role
    ("POST", "/api/v1/runs/{id}/jobs/{job}/reject"): "developer",
    ("GET", "/api/v1/projects/{name}/deployments"): "viewer",
    ("GET", "/api/v1/projects/{name}/tests"): "viewer",
    ("POST", "/api/v1/projects/{name}/environments/{env}/rollback"): "maintainer",
    ("POST", "/api/v1/gc"): "admin",
    ("GET", "/api/v1/audit/verify"): "admin",
    ("GET", "/api/v1/runs/{id}/provenance"): "viewer",
}
SAFE = ("GET", "HEAD")
PASSWORD = "correct horse battery"


@dataclass
class World:
    client: TestClient[Any, Any]
    store: SqliteEventStore
    readmodel: RunsReadModel
    tokens: dict[str, str]  # caller -> bearer token ("" for anonymous)
    ids: dict[str, str]  # run, test, token: ids to put in paths

    async def call(self, method: str, path: str, who: str = "admin",
                   body: Any = None) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if self.tokens[who] else {}
        async with self.client.request(method, path, json=body, headers=headers) as answer:
            text = await answer.text()
            try:
                data = json.loads(text) if text else {}
            except ValueError:
                data = {}
            return answer.status, data if isinstance(data, dict) else {}

    async def ok(self, method: str, path: str, body: Any = None, status: int = 201,
                 who: str = "admin") -> dict[str, Any]:
        got, data = await self.call(method, path, who, body)
        assert got == status, (method, path, got, data)
        return data


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = await SqliteEventStore.open(tmp_path / "events.db")
    bus, logs = MemoryBus(), FileLogStore(tmp_path / "logs")
    readmodel = RunsReadModel()
    ctx = ApiContext(store=store, readmodel=readmodel)
    app = build_app(ctx)
    app.add_routes(log_routes(LogServer(bus, logs), ctx.find_run))  # as the api serves them
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    _, admin = await ctx.tokens.create("admin", admin=True)
    w = World(client, store, readmodel, {"anonymous": "", "legacy-admin": admin}, {})
    w.tokens["admin"] = admin
    try:
        await _populate(w)
        yield w
    finally:
        await client.close()
        await logs.close()
        await bus.close()
        await store.close()


async def _populate(w: World) -> None:
    for project in ("demo", "scratch", "other"):
        await w.ok("POST", "/api/v1/projects", {"name": project, "repo": "git://x"})
    roles = {"outsider": {"other": "maintainer"}, "viewer": {"demo": "viewer"},
             "developer": {"demo": "developer"}, "maintainer": {"demo": "maintainer"},
             "victim": {}, "boss": {}}
    for name, held in roles.items():
        held = {**held, **({"scratch": held["demo"]} if "demo" in held else {})}
        await w.ok("POST", "/api/v1/users", {"name": name, "password": PASSWORD,
                                             "roles": held, "admin": name == "boss"})
        made = await w.ok("POST", "/api/v1/tokens", {"name": f"{name}-cli", "user": name})
        w.tokens[name] = made["token"]
        w.ids[f"token:{name}"] = made["id"]
    w.tokens["admin"] = w.tokens["boss"]  # an admin user, not the first start's token
    read_only = await w.ok("POST", "/api/v1/tokens", {"name": "ro", "read_only": True},
                           who="maintainer")
    w.tokens["read-only"] = read_only["token"]
    w.ids["run"] = (await w.ok("POST", "/api/v1/projects/demo/runs", {}, 202))["id"]
    w.ids["test"] = (await w.ok("POST", "/api/v1/projects/demo/notifications/test", None,
                                202))["id"]


def _path(route: str, w: World) -> str:
    method, template = route.split(" ", 1)
    destructive = method == "DELETE" and template.endswith("{name}")
    return (template.replace("{name}", "scratch" if destructive else "demo")
            .replace("{provider}", "github").replace("{project}", "demo")
            .replace("{user}", "victim").replace("{secret}", "DEPLOY_TOKEN")
            .replace("{job}", "deploy").replace("{env}", "production")
            .replace("{path}", "runs/index.js")
            .replace("{id}", w.ids["token:victim"] if "/tokens/" in template
                     else w.ids["test"] if "/tests/" in template else w.ids["run"]))


def _allowed(caller: str, method: str, template: str) -> bool:
    least = EXPECTED[method, template]
    if least == "anonymous":  # open to all, credentials or not
        return True
    if caller == "read-only":  # a maintainer's token narrowed to reads: a viewer ...
        logout = (method, template) == ("DELETE", "/api/v1/session")  # ... who may log out
        return logout or (method in SAFE and LEVELS.index(least) <= LEVELS.index("viewer"))
    return LEVELS.index(caller) >= LEVELS.index(least)


def test_every_route_has_an_access_rule_and_the_expected_one() -> None:
    documented = {(method.upper(), path) for path, ops in openapi_document()["paths"].items()
                  for method in ops}
    assert set(ROUTES) == documented
    assert set(EXPECTED) == documented


async def test_each_route_allows_exactly_the_roles_it_should(world: World) -> None:
    # deletions last, so what they delete is there for every other check
    routes = sorted(EXPECTED, key=lambda r: (r[0] == "DELETE", r))
    checked = 0
    for method, template in routes:
        path = _path(f"{method} {template}", world)
        for caller in (*LEVELS, "read-only"):
            status, body = await world.call(method, path, caller, {} if method != "GET"
                                            else None)
            if _allowed(caller, method, template):
                # past the access check (a webhook's 401 is its signature's)
                refused = status == 403 or (status == 401 and "credentials" in str(body))
                assert not refused, (caller, method, path, status, body)
            elif caller == "anonymous":
                assert status == 401, (caller, method, path, status, body)
            else:
                assert status == 403, (caller, method, path, status, body)
                writes = method not in SAFE
                assert ("read-only" if caller == "read-only" and writes else " role") in (
                    body["detail"]), body
            checked += 1
    assert checked == len(EXPECTED) * (len(LEVELS) + 1)


async def test_a_403_names_the_role_missing_and_the_one_held(world: World) -> None:
    status, body = await world.call("PATCH", "/api/v1/projects/demo", "developer",
                                    {"auto_cancel": False})
    assert status == 403
    assert body["detail"] == ("needs the maintainer role in project 'demo' "
                              "(you have developer)")
    status, body = await world.call("POST", "/api/v1/projects/demo/runs", "outsider", {})
    assert (status, body["detail"]) == (403, "needs the developer role in project 'demo' "
                                             "(you have none)")


async def test_lists_show_only_the_projects_one_may_read(world: World) -> None:
    for recorded in await world.store.read_all(0, 10_000):  # the read model, caught up
        await world.readmodel.apply(recorded)

    async def names(who: str) -> tuple[set[str], set[str]]:
        projects = (await world.ok("GET", "/api/v1/projects", status=200, who=who))["projects"]
        runs = (await world.ok("GET", "/api/v1/runs", status=200, who=who))["runs"]
        return {p["name"] for p in projects}, {r["project"] for r in runs}

    assert await names("viewer") == ({"demo", "scratch"}, {"demo"})
    assert await names("outsider") == ({"other"}, set())
    assert await names("admin") == ({"demo", "scratch", "other"}, {"demo"})
    status, body = await world.call("GET", "/api/v1/runs?project=demo", "outsider")
    assert status == 403 and "viewer" in body["detail"]


async def test_runs_are_listed_by_what_started_them_and_say_who(world: World) -> None:
    for recorded in await world.store.read_all(0, 10_000):  # the read model, caught up
        await world.readmodel.apply(recorded)
    manual = (await world.ok("GET", "/api/v1/runs?trigger=manual", status=200))["runs"]
    assert [(r["id"], r["trigger"], r["requested_by"]) for r in manual] == [
        (world.ids["run"], "manual", "boss")]  # the admin user who triggered it
    assert (await world.ok("GET", "/api/v1/runs?trigger=push", status=200))["runs"] == []
    status, body = await world.call("GET", "/api/v1/runs?trigger=webhook", "admin")
    assert status == 400 and body["detail"].startswith("trigger: expected one of push, ")


async def test_changes_name_who_made_them(world: World) -> None:
    await world.ok("PATCH", "/api/v1/projects/demo", {"auto_cancel": False}, 200,
                   who="maintainer")
    project = await world.store.read("project-demo")
    assert project[-1].type == "ProjectUpdated" and project[-1].meta["actor"] == "maintainer"
    users = await world.store.read(USERS_STREAM)
    assert {r.meta["actor"] for r in users} == {"admin"}  # the first start's token made them
    assert all(PASSWORD not in json.dumps(r.data) for r in users)  # argon2 hashes only


async def test_a_removed_users_tokens_stop_working(world: World) -> None:
    await world.ok("GET", "/api/v1/runs", status=200, who="victim")
    await world.ok("DELETE", "/api/v1/users/victim", status=204)
    status, body = await world.call("GET", "/api/v1/runs", "victim")
    assert status == 401, body


async def test_a_user_manages_their_own_tokens_only(world: World) -> None:
    mine = (await world.ok("GET", "/api/v1/tokens", status=200, who="developer"))["tokens"]
    assert [t["name"] for t in mine] == ["developer-cli"]
    status, _ = await world.call("DELETE", f"/api/v1/tokens/{world.ids['token:viewer']}",
                                 "developer")
    assert status == 404  # another user's token is not even shown to exist
    status, body = await world.call("POST", "/api/v1/tokens", "developer",
                                    {"name": "x", "user": "viewer"})
    assert status == 403 and "admin role" in body["detail"]


# --- sessions ----------------------------------------------------------------------------


async def _login(w: World, user: str,
                 password: str = PASSWORD) -> tuple[int, dict[str, Any], Any]:
    async with w.client.post("/api/v1/session",
                             json={"user": user, "password": password}) as answer:
        return answer.status, await answer.json(), answer.cookies


async def test_a_session_cookie_reads_and_writes_only_with_its_csrf_token(world: World) -> None:
    status, body, cookies = await _login(world, "developer")
    assert status == 201 and body["user"] == "developer"
    cookie = cookies["cyclone_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    client = world.client  # keeps the cookie from here on
    async with client.get("/api/v1/session") as answer:
        me = await answer.json()
        assert me["user"] == "developer" and me["csrf_token"] == body["csrf_token"]
    async with client.post("/api/v1/projects/demo/runs", json={}) as answer:
        assert answer.status == 403 and (await answer.json())["error"] == "csrf"
    async with client.post("/api/v1/projects/demo/runs", json={},
                           headers={"X-CSRF-Token": body["csrf_token"]}) as answer:
        assert answer.status == 202
    async with client.delete("/api/v1/session",
                             headers={"X-CSRF-Token": body["csrf_token"]}) as answer:
        assert answer.status == 204
    client.session.cookie_jar.update_cookies({"cyclone_session": cookie.value})
    async with client.get("/api/v1/runs") as answer:
        assert answer.status == 401  # the session ended, its cookie is worth nothing


async def test_failed_logins_are_limited_per_user(world: World) -> None:
    for _ in range(5):
        status, body, _ = await _login(world, "viewer", "wrong password")
        assert (status, body["detail"]) == (401, "wrong user or password")
    status, body, _ = await _login(world, "viewer")  # the right one, too late
    assert status == 429 and "try again in" in body["detail"]
    status, _, _ = await _login(world, "developer")  # another user is not held back
    assert status == 201


async def test_failed_logins_are_limited_per_address_across_users(world: World) -> None:
    for n in range(20):
        status, _, _ = await _login(world, f"nobody{n}", "wrong password")
        assert status == 401
    status, body, _ = await _login(world, "developer")
    assert status == 429, body


async def test_a_user_without_password_cannot_log_in(world: World) -> None:
    await world.ok("POST", "/api/v1/users", {"name": "bot"})
    status, _, _ = await _login(world, "bot", "anything at all")
    assert status == 401


@pytest.mark.parametrize("body", [{"user": "x"}, {"user": "x", "password": 5},
                                  {"user": "../x", "password": "p"}, []])
async def test_a_malformed_login_is_a_400_naming_the_field(world: World, body: Any) -> None:
    async with world.client.post("/api/v1/session", json=body) as answer:
        assert answer.status == 400, await answer.text()
        assert (await answer.json())["error"] in ("invalid_body", "bad_request")

