"""Artifacts between workers of a cluster (Kafka, etcd, the MongoDB stand-in, two
workermanager processes, GridFS in the stand-in as the artifact store): a job that runs on
another worker than the job it needs gets that job's files from the store, not from a
workspace it shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.docker_support import AT_THE_GATE, TEST_IMAGE, open_gate_async
from tests.e2e.cluster_support import start_cluster
from tests.git_support import GitServer
from tests.support import eventually

PIPELINE = f"""
jobs:
  make:
    image: {TEST_IMAGE}
    artifacts: {{name: dist, paths: [dist/]}}
    steps:
      - run: ["mkdir -p dist", "echo made by $CYCLONE_JOB > dist/app.txt",
              "echo 'version=7' >> $CYCLONE_OUTPUT"]
  wait:
    image: {TEST_IMAGE}
    needs: make
    steps:
      - run: ["{AT_THE_GATE}"]
  use:
    image: {TEST_IMAGE}
    needs: [make, wait]
    steps:
      - run: ["cat dist/app.txt", "echo version $version"]
"""


async def test_a_job_on_another_worker_gets_the_artifacts_it_needs_from_the_store(
    tmp_path: Path, infra: dict[str, str], git_server: GitServer,
) -> None:
    cluster = start_cluster(tmp_path, infra, workers=2, CYCLONE_WORKER_LEASE_S="3")
    try:
        repo = git_server.create("demo")
        repo.commit({".cyclone.yml": PIPELINE})
        api = cluster["api"]
        async with aiohttp.ClientSession(api.url, headers=api.headers) as http:
            async with http.post("/api/v1/projects",
                                 json={"name": "demo", "repo": repo.url}) as r:
                assert r.status == 201, await r.text()
            async with http.post("/api/v1/projects/demo/runs", json={}) as r:
                run_id = (await r.json())["id"]

            async def jobs() -> dict[str, Any]:
                async with http.get(f"/api/v1/runs/{run_id}") as response:
                    run = await response.json()
                return {job["name"]: job for job in run["jobs"]} | {"": run}

            async def made_and_waiting() -> dict[str, Any] | None:
                now = await jobs()
                make, wait = now.get("make", {}), now.get("wait", {})  # {}: not planned yet
                ready = make.get("status") == "success" and wait.get("status") == "running"
                return now if ready else None

            now = await eventually(made_and_waiting, timeout=120, what="make done, wait running")
            maker = now["make"]["worker"]
            survivor = "w2" if maker == "w1" else "w1"
            cluster[maker].kill()  # what `use` needs is now only in the store

            async def waiting_on_survivor() -> bool:
                job = (await jobs())["wait"]  # its step at the gate (its artifacts are in)
                return bool(job["worker"] == survivor and job["steps"][0]["status"] == "running")

            await eventually(waiting_on_survivor, timeout=120, what="wait runs on the survivor")

            async def gate_opened() -> bool:
                try:  # its step's container may be a moment behind its StepStarted
                    await open_gate_async(run_id)
                except AssertionError:
                    return False
                return True

            await eventually(gate_opened, timeout=60, what="the gate of wait opened")

            async def ended() -> dict[str, Any] | None:
                now = await jobs()
                return now if now[""]["status"] in ("success", "failure", "errored") else None

            done = await eventually(ended, timeout=120, what="the run ends")
            assert done[""]["status"] == "success", done[""]
            assert (done["make"]["worker"], done["use"]["worker"]) == (maker, survivor)
            async with http.get(f"/api/v1/runs/{run_id}/logs") as response:
                lines = [json.loads(line)["text"] for line in (await response.text()).splitlines()]
            assert "made by make" in lines and "version 7" in lines
            async with http.get(f"/api/v1/runs/{run_id}/artifacts") as response:
                listed = (await response.json())["artifacts"]
            assert [(a["job"], a["name"], a["files"]) for a in listed] == [("make", "dist", 1)]
    finally:
        cluster.stop()
