"""``cyclone up`` end to end: real server process, real HTTP, real Git daemon, real Docker."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from tests.docker_support import TEST_IMAGE, cyclone_leftovers
from tests.e2e.server_support import CycloneServer
from tests.git_support import GitRepo, GitServer
from tests.support import eventually

PASSING = f"""
jobs:
  build:
    image: {TEST_IMAGE}
    steps:
      - name: hello
        run: ["echo hello from $CYCLONE_BRANCH", "cat version.txt", "echo param=$GREETING"]
  test:
    image: {TEST_IMAGE}
    needs: build
    steps:
      - run: ["for i in $(seq 1 30); do echo line $i; done"]
"""

FAILING = f"""
jobs:
  build:
    image: {TEST_IMAGE}
    steps:
      - run: ["echo about to fail", "exit 4"]
"""

SLOW = f"""
jobs:
  slow:
    image: {TEST_IMAGE}
    steps:
      - name: wait
        run: ["echo waiting since $((1+1))", "sleep 300"]
"""


@pytest.fixture
async def http(server: CycloneServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(server.url, headers=server.headers) as session:
        yield session


@pytest.fixture
def repo(git_server: GitServer) -> GitRepo:
    repo = git_server.create("demo")
    repo.commit({".cyclone.yml": PASSING, "version.txt": "v1\n"}, message="first")
    return repo


async def call(http: aiohttp.ClientSession, method: str, path: str,
               expect: int, **kwargs: Any) -> Any:
    async with http.request(method, path, **kwargs) as response:
        body = await response.text()
        assert response.status == expect, f"{method} {path}: {response.status} {body}"
        return json.loads(body) if body else None


async def add_project(http: aiohttp.ClientSession, repo: GitRepo, name: str = "demo",
                      **fields: Any) -> None:
    await call(http, "POST", "/api/v1/projects", 201,
               json={"name": name, "repo": repo.url, **fields})


async def trigger(http: aiohttp.ClientSession, project: str = "demo", **body: Any) -> str:
    return str((await call(http, "POST", f"/api/v1/projects/{project}/runs", 202,
                           json=body))["id"])


async def wait_run(http: aiohttp.ClientSession, run_id: str, timeout: float = 90) -> Any:
    async def done() -> Any:
        run = await call(http, "GET", f"/api/v1/runs/{run_id}", 200)
        return run if run["status"] in ("success", "failure", "cancelled", "errored") else None

    return await eventually(done, timeout=timeout, interval=0.1, what=f"run {run_id} ends")


async def log_texts(http: aiohttp.ClientSession, run_id: str) -> list[str]:
    async with http.get(f"/api/v1/runs/{run_id}/logs") as response:
        assert response.status == 200
        return [json.loads(line)["text"] for line in (await response.text()).splitlines()]


async def logged_texts(http: aiohttp.ClientSession, run_id: str,
                       showing: Callable[[list[str]], bool]) -> list[str]:
    """The run's log once ``showing`` holds for it: lines are stored by the log server,
    the run's end by the event manager, so an ended run's log may still trail it."""
    async def found() -> list[list[str]] | None:
        texts = await log_texts(http, run_id)
        return [texts] if showing(texts) else None

    [texts] = await eventually(found, what=f"the log of run {run_id} to show its lines")
    return texts


async def sse(http: aiohttp.ClientSession, run_id: str, last_id: str | None = None,
              stop_after: int | None = None) -> list[dict[str, Any]]:
    """SSE events (``{"id", "event", "data"}``) until the end event or ``stop_after`` lines."""
    headers = {"Last-Event-ID": last_id} if last_id is not None else {}
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with http.get(f"/api/v1/runs/{run_id}/logs", params={"follow": "1"},
                        headers=headers) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith(("id:", "event:", "data:")):
                key, _, value = line.partition(":")
                current[key] = value.strip()
            elif not line and current:
                events.append(current)
                current = {}
                if events[-1].get("event") == "end":
                    break
                if stop_after is not None and len(events) >= stop_after:
                    break
    return events


async def test_trigger_runs_the_projects_pipeline_at_the_resolved_commit(
    http: aiohttp.ClientSession, repo: GitRepo,
) -> None:
    await add_project(http, repo, env={"GREETING": "from-project"})
    run_id = await trigger(http, params={"GREETING": "from-params"})
    run = await wait_run(http, run_id)
    assert run["status"] == "success", run
    assert run["commit"] == repo.head("main") and run["branch"] == "main"
    assert [j["status"] for j in run["jobs"]] == ["success", "success"]
    await logged_texts(http, run_id, lambda texts: "hello from main" in texts and "v1" in texts
                       and "param=from-params" in texts)
    events = (await call(http, "GET", f"/api/v1/runs/{run_id}/events", 200))["events"]
    types = [e["type"] for e in events]
    assert types[0] == "RunRequested" and "RunSourceResolved" in types
    assert types[-1] == "RunSucceeded"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    resolved = next(e for e in events if e["type"] == "RunSourceResolved")["data"]
    assert resolved["pipeline"] == PASSING
    listed = (await call(http, "GET", "/api/v1/runs", 200, params={"project": "demo"}))
    assert [r["id"] for r in listed["runs"]] == [run_id]


async def test_a_failing_pipeline_fails_the_run(http: aiohttp.ClientSession,
                                                repo: GitRepo) -> None:
    repo.commit({".cyclone.yml": FAILING})
    await add_project(http, repo)
    run = await wait_run(http, await trigger(http))
    assert run["status"] == "failure"
    assert run["jobs"][0]["steps"][0]["exit_code"] == 4


async def test_an_unknown_branch_errors_the_run_with_gits_message_in_its_log(
    http: aiohttp.ClientSession, repo: GitRepo,
) -> None:
    await add_project(http, repo)
    run_id = await trigger(http, ref="no-such-branch")
    run = await wait_run(http, run_id)
    assert run["status"] == "errored"
    assert "checkout failed" in run["reason"] and "no-such-branch" in run["reason"]
    await logged_texts(http, run_id, lambda texts: any("no-such-branch" in t for t in texts))
    assert "Traceback" not in run["reason"]


async def test_cancel_mid_step_kills_it_and_leaves_nothing(http: aiohttp.ClientSession,
                                                           repo: GitRepo) -> None:
    repo.commit({".cyclone.yml": SLOW})
    await add_project(http, repo)
    run_id = await trigger(http)
    await eventually(lambda: _logged(http, run_id, "waiting since 2"), timeout=60,
                     what="the step runs")
    assert (await call(http, "POST", f"/api/v1/runs/{run_id}/cancel", 202))["status"] == \
        "cancelling"
    run = await wait_run(http, run_id, timeout=60)
    assert run["status"] == "cancelled"
    assert run["jobs"][0]["steps"][0]["status"] == "cancelled"
    await eventually(lambda: not cyclone_leftovers(run_id),
                     what="the run's containers, network and volume removed")
    await call(http, "POST", f"/api/v1/runs/{run_id}/cancel", 409)


async def _logged(http: aiohttp.ClientSession, run_id: str, text: str) -> bool:
    return text in await log_texts(http, run_id)


async def test_rerun_uses_the_recorded_commit_and_file_after_the_branch_moved(
    http: aiohttp.ClientSession, repo: GitRepo,
) -> None:
    first_sha = repo.head("main")
    await add_project(http, repo)
    first = await wait_run(http, await trigger(http))
    repo.commit({".cyclone.yml": FAILING, "version.txt": "v2\n"}, message="moved on")
    rerun = await call(http, "POST", f"/api/v1/runs/{first['id']}/rerun", 202)
    again = await wait_run(http, rerun["id"])
    assert again["status"] == "success"  # the recorded file, not the failing new one
    assert again["commit"] == first_sha and again["trigger"] == "rerun"
    await logged_texts(http, rerun["id"], lambda texts: "v1" in texts)
    fresh = await wait_run(http, await trigger(http))
    assert fresh["status"] == "failure" and fresh["commit"] == repo.head("main")


async def test_sse_resume_with_last_event_id_gives_every_line_exactly_once(
    http: aiohttp.ClientSession, repo: GitRepo,
) -> None:
    await add_project(http, repo)
    run_id = await trigger(http)
    first = await sse(http, run_id, stop_after=5)
    rest = await sse(http, run_id, last_id=first[-1]["id"])
    assert rest[-1] == {"event": "end", "data": json.dumps({"status": "success"},
                                                          separators=(",", ":"))}
    ids = [int(e["id"]) for e in first + rest[:-1]]
    assert ids == list(range(len(ids)))
    texts = [json.loads(e["data"])["text"] for e in first + rest[:-1]]
    assert texts == await log_texts(http, run_id)
    assert [t for t in texts if t.startswith("line ")] == [f"line {i}" for i in range(1, 31)]


async def test_websocket_streams_the_same_lines(http: aiohttp.ClientSession,
                                               repo: GitRepo) -> None:
    await add_project(http, repo)
    run_id = await trigger(http)
    received: list[dict[str, Any]] = []
    async with http.ws_connect(f"/api/v1/runs/{run_id}/logs/ws") as ws:
        async for message in ws:
            received.append(json.loads(message.data))
            if "end" in received[-1]:
                break
    assert received[-1] == {"end": "success"}
    assert [m["text"] for m in received[:-1]] == await log_texts(http, run_id)


WRITES = [("POST", "/api/v1/projects"), ("PATCH", "/api/v1/projects/demo"),
          ("DELETE", "/api/v1/projects/demo"), ("POST", "/api/v1/projects/demo/runs"),
          ("POST", "/api/v1/runs/x/cancel"), ("POST", "/api/v1/runs/x/rerun"),
          ("POST", "/api/v1/tokens"), ("DELETE", "/api/v1/tokens/x")]


async def test_every_write_needs_a_valid_token(server: CycloneServer) -> None:
    async with aiohttp.ClientSession(server.url) as anonymous, aiohttp.ClientSession(
            server.url, headers={"Authorization": "Bearer cyc_wrong"}) as wrong:
        for method, path in WRITES:
            body = await call(anonymous, method, path, 401, json={})
            assert body["error"] == "unauthorized" and "bearer" in body["detail"]
            assert (await call(wrong, method, path, 401, json={}))["detail"] == \
                "invalid or revoked token"
        await call(anonymous, "GET", "/api/v1/runs", 401)
        await call(anonymous, "GET", "/healthz", 200)


async def test_tokens_of_no_user_are_made_by_admins_and_revocable(
        http: aiohttp.ClientSession, server: CycloneServer) -> None:
    created = await call(http, "POST", "/api/v1/tokens", 201, json={"name": "ci-bot"})
    assert created["token"].startswith("cyc_")
    listed = (await call(http, "GET", "/api/v1/tokens", 200))["tokens"]
    assert {t["name"] for t in listed} == {"admin", "ci-bot"}
    assert all("token" not in t and "hash" not in json.dumps(t) for t in listed)
    bot = {"Authorization": f"Bearer {created['token']}"}
    async with aiohttp.ClientSession(server.url, headers=bot) as as_bot:
        await call(as_bot, "GET", "/api/v1/runs", 200)
        # a token of no user sees no token (not even its own) and makes none
        assert (await call(as_bot, "GET", "/api/v1/tokens", 200))["tokens"] == []
        assert "admin" in (await call(as_bot, "POST", "/api/v1/tokens", 403,
                                      json={"name": "more"}))["detail"]
        await call(http, "DELETE", f"/api/v1/tokens/{created['id']}", 204)
        await call(as_bot, "GET", "/api/v1/runs", 401)
    assert created["token"] not in (server.home / "events.db").read_bytes().decode(
        errors="replace")


async def test_bad_requests_get_json_errors_naming_the_problem(
    http: aiohttp.ClientSession, repo: GitRepo,
) -> None:
    bad_json = await call(http, "POST", "/api/v1/projects", 400, data=b"{nope",
                          headers={"Content-Type": "application/json"})
    assert bad_json["error"] == "invalid_json" and "line 1" in bad_json["detail"]
    unknown = await call(http, "POST", "/api/v1/projects", 400,
                         json={"name": "x", "repo": "r", "colour": "blue"})
    assert unknown["detail"] == "colour: unknown field"
    missing = await call(http, "POST", "/api/v1/projects", 400, json={"name": "x"})
    assert "repo" in missing["detail"]
    await add_project(http, repo)
    await call(http, "POST", "/api/v1/projects", 409, json={"name": "demo", "repo": repo.url})
    bad_ref = await call(http, "POST", "/api/v1/projects/demo/runs", 400, json={"ref": "a..b"})
    assert "ref" in bad_ref["detail"] and "a..b" in bad_ref["detail"]
    bad_sha = await call(http, "POST", "/api/v1/projects/demo/runs", 400,
                         json={"commit": "xyz"})
    assert bad_sha["detail"].startswith("commit:")
    assert (await call(http, "POST", "/api/v1/projects/ghost/runs", 404, json={}))[
        "detail"] == "no project 'ghost'"
    assert (await call(http, "GET", "/api/v1/runs/nope", 404))["error"] == "not_found"
    assert (await call(http, "GET", "/api/v1/nowhere", 404))["error"] == "not_found"
    assert (await call(http, "GET", "/api/v1/runs", 400, params={"status": "weird"}))[
        "detail"].startswith("status:")
    huge = await call(http, "POST", "/api/v1/projects", 413,
                      data=io.BytesIO(b"x" * (26 * 1024 * 1024)),
                      headers={"Content-Type": "application/json"})
    assert huge["error"] == "payload_too_large"


async def test_project_update_and_delete(http: aiohttp.ClientSession, repo: GitRepo) -> None:
    await add_project(http, repo)
    changed = await call(http, "PATCH", "/api/v1/projects/demo", 200,
                         json={"default_branch": "dev", "max_concurrent_runs": 2})
    assert (changed["default_branch"], changed["max_concurrent_runs"]) == ("dev", 2)
    await call(http, "DELETE", "/api/v1/projects/demo", 204)
    await call(http, "GET", "/api/v1/projects/demo", 404)
    assert (await call(http, "GET", "/api/v1/projects", 200))["projects"] == []
    await add_project(http, repo)  # the name can be used again


async def test_metrics_and_health(http: aiohttp.ClientSession, repo: GitRepo) -> None:
    await add_project(http, repo)
    run = await wait_run(http, await trigger(http))
    await log_texts(http, run["id"])
    assert (await call(http, "GET", "/healthz", 200)) == {"status": "ok"}

    async def metrics() -> str:
        async with http.get("/metrics") as response:
            return await response.text()

    async def lines_counted() -> str | None:  # the log may trail the run's end a moment
        text = await metrics()
        stored = re.search(r"^cyclone_log_lines_stored_total (\S+)$", text, re.MULTILINE)
        return text if stored and float(stored.group(1)) == run["log_lines"] else None

    text = await eventually(lines_counted, what="the run's lines counted as stored")
    assert 'cyclone_runs{status="success"} 1.0' in text
    assert "cyclone_step_duration_seconds_count 2.0" in text
    assert "cyclone_events_appended_total" in text
    assert re.search(r"^cyclone_log_batches_stored_total [1-9]", text, re.MULTILINE)


async def test_after_sigkill_running_runs_error_and_queued_runs_resume(
    git_server: GitServer, tmp_path: Any, docker_ready: None,
) -> None:
    server = CycloneServer(tmp_path / "home")
    server.env["CYCLONE_WORKER_CAPACITY"] = "1"  # the second run waits in the queue
    server.start()
    try:
        repo = git_server.create("demo")
        repo.commit({".cyclone.yml": SLOW})
        async with aiohttp.ClientSession(server.url, headers=server.headers) as http:
            await add_project(http, repo)
            running = await trigger(http)
            await eventually(lambda: _logged(http, running, "waiting since 2"), timeout=60,
                             what="the first run's step runs")
            repo.commit({".cyclone.yml": PASSING, "version.txt": "v3\n"})
            queued = await trigger(http)
            # The one worker slot is busy: the second run waits, its checkout queued.
            await eventually(lambda: _waiting(http, queued),
                             what="the second run waits in the queue")
        events_before = await _events(server, running)
        server.kill()
        assert cyclone_leftovers(running), "the killed server left the step's container"

        server.start()
        server.read_until(f"run {running}: was running when Cyclone stopped; marked errored", 10)
        server.read_until(f"run {queued}: was queued when Cyclone stopped; resumed", 10)
        async with aiohttp.ClientSession(server.url, headers=server.headers) as http:
            ended = await wait_run(http, running)
            assert ended["status"] == "errored" and "interrupted" in ended["reason"]
            resumed = await wait_run(http, queued)
            assert resumed["status"] == "success", resumed
            events_after = (await call(http, "GET", f"/api/v1/runs/{running}/events", 200))[
                "events"]
        assert events_after[:len(events_before)] == events_before  # nothing lost or rewritten
        assert [e["seq"] for e in events_after] == list(range(1, len(events_after) + 1))
        await eventually(lambda: not cyclone_leftovers(running),
                         what="the interrupted run's containers removed")
    finally:
        server.stop()


async def _waiting(http: aiohttp.ClientSession, run_id: str) -> bool:
    run = await call(http, "GET", f"/api/v1/runs/{run_id}", 200)
    return bool(run["checkout"] == "queued" and run["status"] == "requested")


async def _events(server: CycloneServer, run_id: str) -> list[Any]:
    async with aiohttp.ClientSession(server.url, headers=server.headers) as http:
        return list((await call(http, "GET", f"/api/v1/runs/{run_id}/events", 200))["events"])


async def test_public_read_opens_reads_but_not_writes(tmp_path: Any, docker_ready: None) -> None:
    server = CycloneServer(tmp_path / "home")
    server.env["CYCLONE_PUBLIC_READ"] = "1"
    server.start()
    try:
        async with aiohttp.ClientSession(server.url) as anonymous:
            assert (await call(anonymous, "GET", "/api/v1/runs", 200))["runs"] == []
            await call(anonymous, "GET", "/api/v1/projects", 200)
            await call(anonymous, "POST", "/api/v1/projects", 401,
                       json={"name": "x", "repo": "r"})
            await call(anonymous, "GET", "/api/v1/tokens", 401)  # tokens need an identity
    finally:
        server.stop()
