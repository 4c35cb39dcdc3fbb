"""Distributed mode, first step: each service its own process (``cyclone service``) on
Kafka, etcd and the MongoDB stand-in; a Git project's run goes through all of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.docker_support import TEST_IMAGE, cyclone_leftovers
from tests.e2e.cluster_support import (
    Cluster,
    start_cluster,
)
from tests.git_support import GitServer
from tests.support import eventually

PIPELINE = f"""
jobs:
  build:
    image: {TEST_IMAGE}
    steps:
      - run: ["echo built on $CYCLONE_BRANCH"]
  test:
    image: {TEST_IMAGE}
    needs: build
    steps:
      - run: ["for i in $(seq 1 20); do echo line $i; done"]
"""


@pytest.fixture
def cluster(tmp_path: Path, infra: dict[str, str]) -> Iterator[Cluster]:
    running = start_cluster(tmp_path, infra)
    try:
        yield running
    finally:
        running.stop()


async def test_a_run_goes_through_five_service_processes(
    cluster: Cluster, git_server: GitServer,
) -> None:
    repo = git_server.create("demo")
    sha = repo.commit({".cyclone.yml": PIPELINE})
    api = cluster["api"]
    async with aiohttp.ClientSession(api.url, headers=api.headers) as http:
        for service in cluster.services.values():
            async with http.get(f"{service.url}/healthz") as response:
                assert response.status == 200, (service.name, await response.text())
        async with http.post("/api/v1/projects", json={"name": "demo", "repo": repo.url}) as r:
            assert r.status == 201, await r.text()
        async with http.post("/api/v1/projects/demo/runs", json={}) as r:
            run_id = (await r.json())["id"]

        async def ended() -> Any:
            async with http.get(f"/api/v1/runs/{run_id}") as response:
                run = await response.json()
            return run if run["status"] in ("success", "failure", "errored") else None

        run = await eventually(ended, timeout=120, interval=0.2, what="the run ends")
        assert run["status"] == "success", run
        assert run["commit"] == sha

        async def logged() -> list[str] | None:  # the log may trail the run's end
            async with http.get(f"/api/v1/runs/{run_id}/logs") as response:
                texts = [json.loads(x)["text"] for x in (await response.text()).splitlines()]
            return texts if "line 20" in texts else None

        texts = await eventually(logged, what="the last job's last line stored")
        assert "built on main" in texts
        assert [t for t in texts if t.startswith("line ")] == [f"line {i}" for i in range(1, 21)]
        async with http.get(f"/api/v1/runs/{run_id}/events") as response:
            seqs = [e["seq"] for e in (await response.json())["events"]]
        assert seqs == list(range(1, len(seqs) + 1))


def test_a_service_without_its_infrastructure_settings_says_which_is_missing(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CYCLONE_")}
    env["CYCLONE_HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-m", "cyclone.cli", "service", "api"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "CYCLONE_BUS" in done.stderr and "kafka://" in done.stderr


# The first attempt never ends by itself: a killed worker's job can only end on another.
SLOW_STEP = f"""
jobs:
  work:
    image: {TEST_IMAGE}
    steps:
      - run: ["echo waiting since $((1+1))",
              "if [ $CYCLONE_JOB_ATTEMPT = 1 ]; then sleep 300; fi", "echo done working"]
"""


async def test_a_job_whose_worker_is_killed_is_run_again_by_another_worker(
    tmp_path: Path, infra: dict[str, str], git_server: GitServer,
) -> None:
    services = start_cluster(tmp_path, infra, workers=2, CYCLONE_WORKER_LEASE_S="3")
    try:
        repo = git_server.create("demo")
        repo.commit({".cyclone.yml": SLOW_STEP})
        api = services["api"]
        async with aiohttp.ClientSession(api.url, headers=api.headers) as http:
            async with http.post("/api/v1/projects",
                                 json={"name": "demo", "repo": repo.url}) as r:
                assert r.status == 201, await r.text()
            async with http.post("/api/v1/projects/demo/runs", json={}) as r:
                run_id = (await r.json())["id"]

            async def run() -> Any:
                async with http.get(f"/api/v1/runs/{run_id}") as response:
                    return await response.json()

            async def worker_running() -> str:
                job = (await run())["jobs"]
                return str(job[0]["worker"]) if job and job[0]["status"] == "running" else ""

            first = await eventually(worker_running, timeout=60, what="the job runs")
            services[first].kill()  # SIGKILL: its lease expires, nobody finishes the job
            survivor = "w2" if first == "w1" else "w1"

            async def ended() -> Any:
                current = await run()
                return current if current["status"] in ("success", "failure",
                                                         "errored") else None

            done = await eventually(ended, timeout=120, interval=0.2,
                                    what="the run ends on the other worker")
            assert done["status"] == "success", done
            assert done["jobs"][0]["worker"] == survivor
            async with http.get(f"/api/v1/runs/{run_id}/events") as response:
                types = [e["type"] for e in (await response.json())["events"]]
            assert types.count("JobQueued") == 2 and types.count("JobStarted") == 2
            assert types.count("JobFinished") == 1
    finally:
        services.stop()


async def test_cancel_reaches_the_worker_process_running_the_step(
    cluster: Cluster, git_server: GitServer,
) -> None:
    repo = git_server.create("demo")
    repo.commit({".cyclone.yml": SLOW_STEP})
    api = cluster["api"]
    async with aiohttp.ClientSession(api.url, headers=api.headers) as http:
        async with http.post("/api/v1/projects", json={"name": "demo", "repo": repo.url}) as r:
            assert r.status == 201, await r.text()
        async with http.post("/api/v1/projects/demo/runs", json={}) as r:
            run_id = (await r.json())["id"]

        async def run() -> Any:
            async with http.get(f"/api/v1/runs/{run_id}") as response:
                return await response.json()

        async def step_running() -> bool:
            jobs = (await run())["jobs"]
            return bool(jobs) and jobs[0]["steps"][0]["status"] == "running"

        await eventually(step_running, timeout=60, what="the step runs")
        async with http.post(f"/api/v1/runs/{run_id}/cancel") as r:
            assert r.status == 202, await r.text()

        async def cancelled() -> Any:
            current = await run()
            return current if current["status"] == "cancelled" else None

        done = await eventually(cancelled, timeout=60, interval=0.2, what="the run is cancelled")
        assert done["jobs"][0]["steps"][0]["status"] == "cancelled"
        await eventually(lambda: not cyclone_leftovers(run_id),
                         what="the run's containers removed by the worker process")
