"""A cron schedule in a project's settings starts runs of a real ``cyclone up``.

SLOW BY NATURE: a cron line fires at most once a minute, so this test waits for the
next whole minute (up to ~70 s) before the scheduled run exists. The timing rules
themselves (once per fire across two schedulers and restarts, catch-up after
downtime) are covered without waiting in ``tests/eventmanager/test_scheduler.py``.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.docker_support import TEST_IMAGE
from tests.e2e.server_support import CycloneServer
from tests.git_support import GitServer
from tests.support import HANG_S, eventually

ENDED = ("success", "failure", "cancelled", "errored", "skipped")

# Pushes start runs; the schedule is in the project's settings, not in the file.
PIPELINE = f"""
on:
  push:
    branches: [main]
jobs:
  nightly:
    image: {TEST_IMAGE}
    steps:
      - run: ["echo scheduled on $CYCLONE_BRANCH"]
"""


async def runs(http: aiohttp.ClientSession, server: CycloneServer) -> list[dict[str, Any]]:
    async with http.get(f"{server.url}/api/v1/runs", headers=server.headers) as response:
        assert response.status == 200
        listed: list[dict[str, Any]] = (await response.json())["runs"]
        return listed


async def test_a_schedule_in_the_projects_settings_starts_a_run_of_the_default_branch(
    server: CycloneServer, git_server: GitServer,
) -> None:
    repo = git_server.create("demo")
    head = repo.commit({".cyclone.yml": PIPELINE})
    async with aiohttp.ClientSession() as http:
        body = {"name": "demo", "repo": repo.url, "schedules": ["* * * * *"]}
        async with http.post(f"{server.url}/api/v1/projects", json=body,
                             headers=server.headers) as response:
            assert response.status == 201, await response.text()
            assert (await response.json())["schedules"] == ["* * * * *"]

        async def scheduled() -> list[dict[str, Any]]:
            return [r for r in await runs(http, server) if r["trigger"] == "schedule"]

        first, *more = await eventually(scheduled, timeout=60 + 2 * HANG_S, interval=0.5,
                                        what="the next minute's scheduled run")
        assert more == []  # one run for the fire, not one per component that saw it

        async def ended() -> dict[str, Any] | None:
            async with http.get(f"{server.url}/api/v1/runs/{first['id']}",
                                headers=server.headers) as response:
                run: dict[str, Any] = await response.json()
            return run if run["status"] in ENDED else None

        run = await eventually(ended, timeout=120, interval=0.5, what="the scheduled run ends")
        assert (run["status"], run["branch"], run["commit"], run["project"]) == (
            "success", "main", head, "demo"), run
