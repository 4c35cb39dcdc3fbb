"""Webhook deliveries to a real ``cyclone up``: a forge's signed push starts a run of the
pushed commit; redeliveries, forgeries, filters and auto-cancel behave as a user expects."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.api.hooks.support import headers_for, payload
from tests.docker_support import TEST_IMAGE
from tests.e2e.server_support import CycloneServer
from tests.git_support import GitRepo, GitServer
from tests.support import eventually

SECRET = "a-webhook-secret-of-some-length"
ENDED = ("success", "failure", "cancelled", "errored", "skipped")

PIPELINE = f"""
on:
  push:
    branches: [main]
jobs:
  build:
    image: {TEST_IMAGE}
    steps:
      - run: ["echo built $CYCLONE_BRANCH", "sleep $(cat pause 2>/dev/null || echo 0)"]
"""


def github_push(repo: GitRepo, branch: str, sha: str) -> bytes:
    data = payload("github/push.json")
    data["ref"] = f"refs/heads/{branch}"
    data["after"] = data["head_commit"]["id"] = sha
    data["commits"] = [{**data["commits"][-1], "id": sha}]
    data["repository"]["clone_url"] = repo.url
    return json.dumps(data).encode()


async def deliver(http: aiohttp.ClientSession, server: CycloneServer, body: bytes,
                  delivery: str, secret: str = SECRET) -> tuple[int, Any]:
    headers = headers_for("github", "push", body, secret=secret, delivery=delivery)
    async with http.post(f"{server.url}/api/v1/hooks/github/demo", data=body,
                         headers=headers) as response:
        return response.status, await response.json()


async def project(http: aiohttp.ClientSession, server: CycloneServer, repo: GitRepo) -> None:
    async with http.post(f"{server.url}/api/v1/projects", headers=server.headers,
                         json={"name": "demo", "repo": repo.url, "hook_secret": SECRET}) as r:
        assert r.status == 201, await r.text()
        assert "hook_secret" not in await r.json()  # chosen by the user: not echoed


async def ended(http: aiohttp.ClientSession, server: CycloneServer, run_id: str) -> Any:
    async def check() -> Any:
        async with http.get(f"{server.url}/api/v1/runs/{run_id}",
                            headers=server.headers) as response:
            run = await response.json()
        return run if run["status"] in ENDED else None

    return await eventually(check, timeout=120, interval=0.2, what=f"run {run_id} ends")


async def deliveries(http: aiohttp.ClientSession, server: CycloneServer) -> Any:
    async with http.get(f"{server.url}/api/v1/hooks/deliveries?project=demo",
                        headers=server.headers) as response:
        assert response.status == 200
        return (await response.json())["deliveries"]


async def test_a_signed_push_runs_the_pushed_commit_once_however_often_delivered(
    server: CycloneServer, git_server: GitServer,
) -> None:
    repo = git_server.create("demo")
    sha = repo.commit({".cyclone.yml": PIPELINE})
    async with aiohttp.ClientSession() as http:
        await project(http, server, repo)
        body = github_push(repo, "main", sha)
        status, answer = await deliver(http, server, body, "d-1")
        assert status == 202, answer
        [run_id] = answer["runs"]
        again, repeated = await deliver(http, server, body, "d-1")  # the forge retries
        assert (again, repeated["runs"], repeated["redelivery"]) == (200, [run_id], True)
        run = await ended(http, server, run_id)
        assert (run["status"], run["commit"], run["trigger"]) == ("success", sha, "push")
        [shown] = await deliveries(http, server)
        assert shown["runs"] == [{"id": run_id, "status": "success", "reason": ""}]


async def test_a_forged_or_unsigned_delivery_is_refused_and_leaves_no_trace(
    server: CycloneServer, git_server: GitServer,
) -> None:
    repo = git_server.create("demo")
    sha = repo.commit({".cyclone.yml": PIPELINE})
    async with aiohttp.ClientSession() as http:
        await project(http, server, repo)
        body = github_push(repo, "main", sha)
        status, answer = await deliver(http, server, body, "d-1", secret="not-the-secret!!")
        assert status == 401 and "X-Hub-Signature-256" in answer["detail"], answer
        assert SECRET not in json.dumps(answer)
        async with http.post(f"{server.url}/api/v1/hooks/github/demo", data=body,
                             headers={"X-GitHub-Event": "push"}) as response:
            assert response.status == 401
        assert await deliveries(http, server) == []
        async with http.get(f"{server.url}/api/v1/runs", headers=server.headers) as response:
            assert (await response.json())["runs"] == []


async def test_a_push_the_on_rules_exclude_is_recorded_as_skipped_with_the_reason(
    server: CycloneServer, git_server: GitServer,
) -> None:
    repo = git_server.create("demo")
    repo.commit({".cyclone.yml": PIPELINE})
    sha = repo.commit({"notes.txt": "x"}, branch="feature/x")
    async with aiohttp.ClientSession() as http:
        await project(http, server, repo)
        status, answer = await deliver(http, server, github_push(repo, "feature/x", sha), "d-2")
        assert status == 202, answer
        run = await ended(http, server, answer["runs"][0])
        assert run["status"] == "skipped" and "feature/x" in run["reason"], run
        assert run["jobs"] == []  # nothing ran
        [shown] = await deliveries(http, server)
        assert shown["runs"][0]["status"] == "skipped"


async def test_a_new_push_to_a_branch_cancels_its_older_run(
    server: CycloneServer, git_server: GitServer,
) -> None:
    repo = git_server.create("demo")
    first = repo.commit({".cyclone.yml": PIPELINE, "pause": "300"})
    async with aiohttp.ClientSession() as http:
        await project(http, server, repo)
        _, older = await deliver(http, server, github_push(repo, "main", first), "d-1")
        second = repo.commit({"pause": "0"})
        _, newer = await deliver(http, server, github_push(repo, "main", second), "d-2")
        old_run = await ended(http, server, older["runs"][0])
        assert old_run["status"] == "cancelled", old_run
        assert (await ended(http, server, newer["runs"][0]))["status"] == "success"


def push_through_hook(repo: GitRepo, server: CycloneServer, tmp_path: Path) -> str:
    """``cyclone hook install`` into the bare repo, then a real ``git push`` to it; returns
    what the pusher saw."""
    def run(*command: str, cwd: Path | None = None) -> str:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 0, (command, done.stderr)
        return done.stderr

    run(sys.executable, "-m", "cyclone.cli", "hook", "install", str(repo.path),
        "--url", f"{server.url}/api/v1/hooks/generic/demo", "--secret", SECRET)
    clone = tmp_path / "clone"
    run("git", "clone", "-q", repo.url, str(clone))
    (clone / "more.txt").write_text("more\n")
    run("git", "add", ".", cwd=clone)
    run("git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "more",
        cwd=clone)
    return run("git", "push", "-q", str(repo.path), "HEAD:main", cwd=clone)


async def test_an_oversized_or_truncated_delivery_is_refused(
    server: CycloneServer, git_server: GitServer,
) -> None:
    repo = git_server.create("demo")
    sha = repo.commit({".cyclone.yml": PIPELINE})
    async with aiohttp.ClientSession() as http:
        await project(http, server, repo)
        huge = b"{" + b" " * (26 * 1024 * 1024) + b"}"  # over the 25 MB limit
        async with http.post(f"{server.url}/api/v1/hooks/github/demo", data=io.BytesIO(huge),
                             headers=headers_for("github", "push", huge, secret=SECRET,
                                                 delivery="d-big")) as response:
            assert response.status == 413, await response.text()
        body = github_push(repo, "main", sha)
        status, answer = await deliver(http, server, body[: len(body) // 2], "d-cut")
        assert status == 400 and "not JSON" in answer["detail"], answer
        assert await deliveries(http, server) == []


async def test_a_git_push_to_a_bare_repo_with_the_installed_hook_starts_a_run(
    server: CycloneServer, git_server: GitServer, tmp_path: Path,
) -> None:
    repo = git_server.create("demo")
    repo.commit({".cyclone.yml": PIPELINE})
    async with aiohttp.ClientSession() as http:
        await project(http, server, repo)
        pushed = await asyncio.to_thread(push_through_hook, repo, server, tmp_path)
        assert "warning" not in pushed, pushed
        # The hook delivers while the push is still open: by the time `git push` returns,
        # the run is already requested.
        [shown] = await deliveries(http, server)
        assert shown["provider"] == "generic" and shown["branch"] == "main"
        run = await ended(http, server, shown["runs"][0]["id"])
        assert run["status"] == "success", run
