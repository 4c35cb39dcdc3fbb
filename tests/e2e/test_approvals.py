"""Jobs behind an approval, on a real ``cyclone up``: the job waits, visibly, until a user
with the role its ``approval:`` names decides; a viewer's or a developer's approval of a
maintainer's job is refused; a rejection fails the job; a timeout rejects it."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.docker_support import TEST_IMAGE
from tests.e2e.server_support import CycloneServer
from tests.e2e.test_forks import call
from tests.e2e.test_webhooks import ended, project
from tests.git_support import GitServer
from tests.support import eventually

PIPELINE = f"""
jobs:
  test:
    image: {TEST_IMAGE}
    steps:
      - run: echo tested
  release:
    needs: test
    image: {TEST_IMAGE}
    environment: production
    approval: {{role: maintainer}}
    steps:
      - run: echo released
  notes:
    needs: release
    image: {TEST_IMAGE}
    approval: {{role: developer, timeout: 2s}}
    steps:
      - run: echo noted
"""


async def waiting(http: aiohttp.ClientSession, api: str, token: str, run_id: str,
                  job: str) -> Any:
    async def check() -> Any:
        run = await call(http, "GET", f"{api}/runs/{run_id}", token, 200)
        view = next((j for j in run["jobs"] if j["name"] == job), None)  # planned yet?
        ready = view and view["awaiting_approval"] and view["status"] == "pending"
        return run if ready else None

    return await eventually(check, timeout=120, interval=0.2, what=f"{job} waits")


async def test_a_job_waits_for_its_approver_and_a_timeout_rejects_the_next(
        server: CycloneServer, git_server: GitServer) -> None:
    repo = git_server.create("demo")
    repo.commit({".cyclone.yml": PIPELINE})
    admin, api = server.headers["Authorization"].split()[1], f"{server.url}/api/v1"
    async with aiohttp.ClientSession() as http:
        await project(http, server, repo)
        tokens = {}
        for name, role in (("val", "viewer"), ("dev", "developer"), ("lead", "maintainer")):
            await call(http, "POST", f"{api}/users", admin, 201,
                       {"name": name, "roles": {"demo": role}})
            tokens[name] = (await call(http, "POST", f"{api}/tokens", admin, 201,
                                       {"name": name, "user": name}))["token"]
        run_id = (await call(http, "POST", f"{api}/projects/demo/runs", tokens["dev"], 202,
                             {}))["id"]
        run = await waiting(http, api, admin, run_id, "release")
        release = next(j for j in run["jobs"] if j["name"] == "release")
        assert (release["awaiting_approval"], release["environment"]) == ("maintainer",
                                                                          "production")
        assert run["status"] == "running"

        approve = f"{api}/runs/{run_id}/jobs/release/approve"
        refused = await call(http, "POST", approve, tokens["val"], 403, {})
        assert "developer" in refused["detail"]  # the table's least role
        refused = await call(http, "POST", approve, tokens["dev"], 403, {})
        assert "needs the maintainer role" in refused["detail"]
        await call(http, "POST", approve, tokens["lead"], 202, {"comment": "ship it"})
        again = await call(http, "POST", approve, tokens["lead"], 409, {})
        assert "waits for no approval" in again["detail"]

        # nobody approves the notes job: two seconds later it is rejected
        run = await ended(http, server, run_id)
        jobs = {j["name"]: j for j in run["jobs"]}
        assert jobs["release"]["status"] == "success"
        assert jobs["release"]["approved_by"] == "lead"
        assert jobs["notes"]["status"] == "failure"
        assert jobs["notes"]["reason"] == "rejected: no approval within 2s"
        assert run["status"] == "failure"
        events = await call(http, "GET", f"{api}/runs/{run_id}/events", admin, 200)
        kinds = [(e["type"], e["data"].get("job"), e["data"].get("by"))
                 for e in events["events"] if e["type"].startswith("Job") and
                 e["data"].get("job") in ("release", "notes")]
        assert ("JobApproved", "release", "lead") in kinds
        assert ("JobRejected", "notes", "") in kinds


async def test_a_rejected_job_fails_with_the_reason_and_its_dependents_do_not_run(
        server: CycloneServer, git_server: GitServer) -> None:
    repo = git_server.create("demo")
    repo.commit({".cyclone.yml": PIPELINE})
    admin, api = server.headers["Authorization"].split()[1], f"{server.url}/api/v1"
    async with aiohttp.ClientSession() as http:
        await project(http, server, repo)
        run_id = (await call(http, "POST", f"{api}/projects/demo/runs", admin, 202, {}))["id"]
        await waiting(http, api, admin, run_id, "release")
        await call(http, "POST", f"{api}/runs/{run_id}/jobs/release/reject", admin, 202,
                   {"comment": "not on a Friday"})
        run = await ended(http, server, run_id)
        jobs = {j["name"]: j for j in run["jobs"]}
        assert jobs["release"]["status"] == "failure"
        assert jobs["release"]["reason"] == "rejected by admin: not on a Friday"
        assert jobs["notes"]["status"] == "skipped"
        assert run["status"] == "failure"
