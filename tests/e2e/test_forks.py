"""Pull requests from forks, on a real ``cyclone up``: the fork's commit is reachable only
under ``refs/pull/N/head`` of the project's repository (as GitHub serves it); the run
waits, visibly, until a maintainer approves it, then runs without the project's secret."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import aiohttp

from tests.api.hooks.support import headers_for, payload
from tests.docker_support import TEST_IMAGE
from tests.e2e.server_support import CycloneServer
from tests.e2e.test_webhooks import SECRET, deliver, ended, github_push, project
from tests.git_support import GitRepo, GitServer, git_env

SECRET_VALUE = "the-deploy-token-value"
PIPELINE = f"""
jobs:
  build:
    image: {TEST_IMAGE}
    secrets: [DEPLOY_TOKEN]
    steps:
      - run: ["echo token=${{DEPLOY_TOKEN:-none}}"]
"""


def _git(repo: GitRepo, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo.work, env=git_env(), check=True, timeout=60,
                   capture_output=True)


def fork_commit(repo: GitRepo, number: int) -> str:
    """A commit of a fork, served by the base repository only as refs/pull/N/head."""
    sha = repo.commit({"fork.txt": "from mallory"}, message="fork change", branch="mallory")
    _git(repo, "push", "-q", "origin", f"{sha}:refs/pull/{number}/head")
    _git(repo, "push", "-q", "origin", ":refs/heads/mallory")  # on no branch of the base
    _git(repo, "checkout", "-q", "main")
    return sha


def github_fork_pr(repo: GitRepo, number: int, sha: str) -> bytes:
    data = payload("github/pull_request_opened.json")
    data["number"] = data["pull_request"]["number"] = number
    data["pull_request"]["head"]["sha"] = sha
    data["pull_request"]["head"]["repo"]["full_name"] = "mallory/Hello-World"
    data["repository"]["clone_url"] = repo.url
    return json.dumps(data).encode()


async def call(http: aiohttp.ClientSession, method: str, url: str, token: str,
               expect: int, body: Any = None) -> Any:
    async with http.request(method, url, json=body,
                            headers={"Authorization": f"Bearer {token}"}) as response:
        text = await response.text()
        assert response.status == expect, text
        return json.loads(text) if text else None


async def test_a_fork_pr_waits_for_approval_then_runs_without_secrets(
        server: CycloneServer, git_server: GitServer) -> None:
    repo = git_server.create("demo")
    main = repo.commit({".cyclone.yml": PIPELINE})
    sha = fork_commit(repo, 7)
    admin, api = server.headers["Authorization"].split()[1], f"{server.url}/api/v1"
    async with aiohttp.ClientSession() as http:
        await project(http, server, repo)
        await call(http, "PUT", f"{api}/projects/demo/secrets/DEPLOY_TOKEN", admin, 200,
                   {"value": SECRET_VALUE})
        for name, role in (("dev", "developer"), ("lead", "maintainer")):
            await call(http, "POST", f"{api}/users", admin, 201, {"name": name,
                       "roles": {"demo": role}})
        dev = (await call(http, "POST", f"{api}/tokens", admin, 201,
                          {"name": "dev", "user": "dev"}))["token"]
        lead = (await call(http, "POST", f"{api}/tokens", admin, 201,
                           {"name": "lead", "user": "lead"}))["token"]

        body = github_fork_pr(repo, 7, sha)
        headers = headers_for("github", "pull_request", body, secret=SECRET, delivery="pr-1")
        async with http.post(f"{api}/hooks/github/demo", data=body, headers=headers) as r:
            assert r.status == 202, await r.text()
            [fork_run] = (await r.json())["runs"]
        # A later push runs to its end meanwhile; the fork's run has not moved at all.
        status, answer = await deliver(http, server, github_push(repo, "main", main), "p-1")
        assert status == 202, answer
        assert (await ended(http, server, answer["runs"][0]))["status"] == "success"
        waiting = await call(http, "GET", f"{api}/runs/{fork_run}", admin, 200)
        assert waiting["status"] == "requested"
        assert "pull request #7 from a fork" in waiting["awaiting_approval"]
        events = await call(http, "GET", f"{api}/runs/{fork_run}/events", admin, 200)
        assert [e["type"] for e in events["events"]] == ["RunRequested"]

        refused = await call(http, "POST", f"{api}/runs/{fork_run}/approve", dev, 403)
        assert "maintainer" in refused["detail"]
        await call(http, "POST", f"{api}/runs/{fork_run}/approve", lead, 202, {})
        run = await ended(http, server, fork_run)
        assert (run["status"], run["commit"], run["approved_by"]) == ("success", sha, "lead")
        async with http.get(f"{api}/runs/{fork_run}/logs",
                            headers={"Authorization": f"Bearer {admin}"}) as response:
            log = await response.text()
        assert "token=none" in log and SECRET_VALUE not in log
        assert "secrets withheld from this step (DEPLOY_TOKEN)" in log
        again = await call(http, "POST", f"{api}/runs/{fork_run}/approve", lead, 409)
        assert "waits for no approval" in again["detail"]
