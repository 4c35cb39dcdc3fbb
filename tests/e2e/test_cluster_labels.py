"""Worker labels on Kafka and etcd: two workermanager processes with different labels
(two pools, two consumer groups of ``cyclone.jobs``); a job only one of them can take
runs there, a job neither can take waits saying so and runs on a third worker started
with its labels (a new pool: its group, and the event manager's offer, find the job)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.docker_support import TEST_IMAGE
from tests.e2e.cluster_support import Service, start_cluster
from tests.e2e.test_cluster_worker import Api, api_of
from tests.git_support import GitServer
from tests.support import eventually

PIPELINE = f"""
jobs:
  on-b:
    image: {TEST_IMAGE}
    runs-on: b
    steps:
      - run: echo on b
  on-gpu:
    image: {TEST_IMAGE}
    runs-on: [gpu]
    steps:
      - run: echo on gpu
"""

__all__ = ["api_of"]


async def test_a_job_goes_to_the_pool_with_its_labels_or_waits_for_one(
    tmp_path: Path, infra: dict[str, str], git_server: GitServer, api_of: Any,
) -> None:
    cluster = start_cluster(tmp_path, infra, workers=0, names=("api", "eventmanager"))
    try:
        for replica, labels in (("w1", "a"), ("w2", "b")):
            cluster.services[replica] = Service("workermanager", replica, tmp_path / replica,
                                                {**infra, "CYCLONE_WORKER_LABELS": labels})
            cluster[replica].start()
        api: Api = api_of(cluster)
        run_id = await api.start_run(git_server, PIPELINE)

        async def job(name: str) -> Any:
            jobs = (await api.run(run_id))["jobs"] or []
            return next((j for j in jobs if j["name"] == name), None)

        async def ended(name: str) -> Any:
            found = await job(name)
            return found if found and found["status"] in ("success", "failure") else None

        assert (await eventually(lambda: ended("on-b"), what="on-b to run"))["worker"] == "w2"
        waiting = {w["job"]: w for w in (await api.run(run_id))["waiting"]}["on-gpu"]
        assert waiting["kind"] == "no_worker", waiting
        assert "no live worker has labels gpu (live: w1 [a], w2 [b])" in waiting["text"]

        cluster.services["w3"] = Service("workermanager", "w3", tmp_path / "w3",
                                         {**infra, "CYCLONE_WORKER_LABELS": "gpu"})
        cluster["w3"].start()
        done = await eventually(lambda: api.ended(run_id), what="the run to end")
        assert done["status"] == "success", done
        assert (await job("on-gpu"))["worker"] == "w3"
    finally:
        cluster.stop()
