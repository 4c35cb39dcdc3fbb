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

from tests.docker_support import TEST_IMAGE
from tests.e2e.server_support import CycloneServer
from tests.git_support import GitServer, unused_port
from tests.infra.etcd import etcd_server, etcd_url
from tests.infra.kafka import kafka_broker, kafka_url
from tests.infra.mongo import mongo_url
from tests.support import eventually

__all__ = ["etcd_server", "etcd_url", "kafka_broker", "kafka_url", "mongo_url"]

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


class Service(CycloneServer):
    """One ``cyclone service NAME`` process (reusing the server helper's output reading)."""

    def __init__(self, name: str, home: Path, env: dict[str, str]) -> None:
        super().__init__(home)
        self.name = name
        self.env.update(env)

    def start(self, timeout: float = 60.0) -> None:
        self.output = ""
        self.proc = subprocess.Popen([sys.executable, "-m", "cyclone.cli", "service", self.name],
                                     env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.read_until(f"cyclone {self.name} is serving", timeout)
        if self.name == "api":
            self.read_until("CYCLONE_TOKEN=cyc_", 10)
            self.read_until("\n", 10, after=self.output.index("CYCLONE_TOKEN="))
            self.token = self.output.split("CYCLONE_TOKEN=")[1].split()[0]


@pytest.fixture
def cluster(tmp_path: Path, kafka_url: str, etcd_url: str, mongo_url: str,
            docker_ready: None) -> Iterator[dict[str, Service]]:
    infra = {"CYCLONE_BUS": kafka_url, "CYCLONE_COORD": etcd_url,
             "CYCLONE_STORE": mongo_url, "CYCLONE_LOG_STORE": mongo_url}
    services: dict[str, Service] = {}
    try:
        for name in ("api", "eventmanager", "workermanager", "logserver", "notifier"):
            service = Service(name, tmp_path / name, infra)
            service.env["CYCLONE_LISTEN"] = f"127.0.0.1:{unused_port()}"
            service.url = f"http://{service.env['CYCLONE_LISTEN']}"
            service.start()
            services[name] = service
        yield services
    finally:
        for service in services.values():
            service.stop()


async def test_a_run_goes_through_five_service_processes(
    cluster: dict[str, Service], git_server: GitServer,
) -> None:
    repo = git_server.create("demo")
    sha = repo.commit({".cyclone.yml": PIPELINE})
    api = cluster["api"]
    async with aiohttp.ClientSession(api.url, headers=api.headers) as http:
        for service in cluster.values():
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
        async with http.get(f"/api/v1/runs/{run_id}/logs") as response:
            texts = [json.loads(x)["text"] for x in (await response.text()).splitlines()]
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
