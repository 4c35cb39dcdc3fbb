"""A project's max_concurrent_runs holds across eventmanager replicas: a real cluster (two
replicas of each service as OS processes, two workermanagers, Kafka, etcd, the Mongo
stand-in) gets several runs of a limited project at once; they run one after another."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.docker_support import TEST_IMAGE
from tests.e2e.cluster_support import (
    start_cluster,
)
from tests.git_support import GitServer
from tests.support import HANG_S, eventually

RUNS = 5  # keys spread over the topic's partitions, so over both eventmanager replicas
SLOW_STEP = f"""
jobs:
  work:
    image: {TEST_IMAGE}
    steps:
      - run: ["sleep 1"]
"""
_STARTS = ("CheckoutQueued", "RunPlanned", "JobStarted")
_ENDS = ("RunSucceeded", "RunFailed", "RunErrored", "RunCancelled")


def busy_span(events: list[dict[str, Any]]) -> tuple[datetime, datetime]:
    """From the run's first start (its checkout queued) to its end, by event time."""
    start = next(e["ts"] for e in events if e["type"] in _STARTS)
    end = next(e["ts"] for e in events if e["type"] in _ENDS)
    return datetime.fromisoformat(start), datetime.fromisoformat(end)


async def test_a_limited_projects_runs_never_overlap_across_eventmanager_replicas(
    tmp_path: Path, infra: dict[str, str], git_server: GitServer,
) -> None:
    cluster = start_cluster(tmp_path, infra, workers=2, replicas=2)
    try:
        repo = git_server.create("limited")
        repo.commit({".cyclone.yml": SLOW_STEP})
        api = cluster["api"]
        async with aiohttp.ClientSession(api.url, headers=api.headers) as http:
            async with http.post("/api/v1/projects", json={
                    "name": "limited", "repo": repo.url, "max_concurrent_runs": 1}) as r:
                assert r.status == 201, await r.text()

            async def trigger() -> str:
                async with http.post("/api/v1/projects/limited/runs", json={}) as r:
                    assert r.status == 202, await r.text()
                    return str((await r.json())["id"])

            run_ids = await asyncio.gather(*(trigger() for _ in range(RUNS)))

            async def statuses() -> list[str] | None:
                found = []
                for run_id in run_ids:
                    async with http.get(f"/api/v1/runs/{run_id}") as response:
                        found.append((await response.json())["status"])
                ended = all(s in ("success", "failure", "errored", "cancelled") for s in found)
                return found if ended else None

            # one after the other: RUNS times one run's deadline
            done = await eventually(statuses, timeout=RUNS * HANG_S, interval=0.5,
                                    what="every run ends")
            assert done == ["success"] * RUNS
            spans = []
            for run_id in run_ids:
                async with http.get(f"/api/v1/runs/{run_id}/events") as response:
                    spans.append(busy_span((await response.json())["events"]))
        spans.sort()
        overlaps = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
        assert not overlaps, f"runs of the project ran at the same time: {overlaps}"
    finally:
        cluster.stop()
