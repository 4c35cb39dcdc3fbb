"""The service image (deploy/Dockerfile): built here (scripts/build-image.sh, on the
debootstrapped base), each of the five services started from it as a container against
the test infrastructure (Kafka, etcd, the Mongo stand-in), and a Git project's run going
through them, its Docker step run by the workermanager container on this host's Docker
(through the mounted socket), with a secret the api sealed and the worker opened.

The containers use the host's network (the infrastructure listens on 127.0.0.1), each
service its own port. Everything the test started is removed at the end; the image is
kept (the next build is one of cached layers).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.secretbox import new_key
from tests.docker_support import TEST_IMAGE, cyclone_leftovers_async
from tests.e2e.cluster_support import etcd_server, etcd_url, infra, kafka_broker, kafka_url
from tests.git_support import GitServer, unused_port
from tests.infra.mongo import mongo_url
from tests.support import HANG_S, eventually

__all__ = ["etcd_server", "etcd_url", "infra", "kafka_broker", "kafka_url", "mongo_url"]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "cyclone-test/cyclone:latest"
SERVICES = ("api", "logserver", "notifier", "workermanager", "eventmanager")
DOCKER_SOCKET = "/var/run/docker.sock"
BUILD_TIMEOUT_S = 1800  # a cold build downloads and installs everything; cached: seconds
LABEL = "io.cyclone.deploy-test"
_TOKEN = re.compile(r"CYCLONE_TOKEN=(cyc_[A-Za-z0-9_-]+)")

PIPELINE = f"""
jobs:
  build:
    image: {TEST_IMAGE}
    secrets: [GREETING_TOKEN]
    steps:
      - run: ["echo built $CYCLONE_BRANCH in $(pwd)", "cat hello.txt",
              "[ \\"$GREETING_TOKEN\\" = opened-by-the-worker ] && echo the secret opened"]
  test:
    image: {TEST_IMAGE}
    needs: build
    steps:
      - run: ["for i in $(seq 1 5); do echo line $i; done"]
"""


def _docker(*args: str, timeout: float = HANG_S) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def image() -> str:
    """The image of the tree as it is (scripts/build-image.sh: cached layers when unchanged)."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "build-image.sh"), IMAGE],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    if done.returncode != 0:
        message = f"scripts/build-image.sh failed:\n{done.stdout}\n{done.stderr}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return IMAGE


@dataclass
class Container:
    """One service's container, on the host's network at its own port."""

    service: str
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        done = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True,
                              timeout=HANG_S, check=False)
        return done.stdout + done.stderr

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(_docker("inspect", "-f", "{{json .State}}",
                                                   self.name))
        assert state["Running"], f"{self.name} exited ({state['ExitCode']}):\n{self.logs()}"
        return state

    async def healthy(self) -> None:
        """Wait until Docker runs the image's health check and it passes."""
        try:
            await eventually(lambda: self.state()["Health"]["Status"] == "healthy",
                             timeout=180, interval=0.5, what=f"{self.name} healthy")
        except AssertionError as exc:
            checks = self.state()["Health"]["Log"]
            raise AssertionError(f"{exc}; its checks: {checks}\n{self.logs()}") from None


def _run_service(image: str, service: str, env: dict[str, str], test_id: str) -> Container:
    container = Container(service, f"cyclone-deploytest-{test_id}-{service}", unused_port())
    settings = {**env, "CYCLONE_LISTEN": f"127.0.0.1:{container.port}",
                "CYCLONE_WORKER_ID": f"deploytest-{test_id}"}
    options = ["--network", "host", "--label", f"{LABEL}={test_id}"]
    if service == "workermanager":  # the host's Docker, reached through the socket's group
        options += ["-v", f"{DOCKER_SOCKET}:{DOCKER_SOCKET}",
                    "--group-add", str(os.stat(DOCKER_SOCKET).st_gid)]
    for name, value in settings.items():
        options += ["-e", f"{name}={value}"]
    _docker("run", "-d", "--name", container.name, *options, image, "service", service)
    return container


@pytest.fixture
def containers(image: str, infra: dict[str, str]) -> Iterator[dict[str, Container]]:
    """The five services, each a container of the image, healthy; removed afterwards."""
    test_id = uuid.uuid4().hex[:8]
    env = {**infra, "CYCLONE_SECRET_KEY": new_key(), "CYCLONE_EXECUTOR": "docker",
           "CYCLONE_LOG_LEVEL": "INFO"}
    started: dict[str, Container] = {}
    try:
        for service in SERVICES:
            started[service] = _run_service(image, service, env, test_id)
        yield started
    finally:
        names = _docker("ps", "-aq", "--filter", f"label={LABEL}={test_id}").split()
        if names:
            _docker("rm", "-f", *names)


def _token(api: Container) -> str | None:
    match = _TOKEN.search(api.logs())
    return match.group(1) if match else None


async def test_the_five_services_run_from_the_image_and_a_run_goes_through_them(
    containers: dict[str, Container], git_server: GitServer,
) -> None:
    for container in containers.values():  # the image's HEALTHCHECK: GET /healthz
        await container.healthy()
    user = _docker("exec", containers["api"].name, "id", "-u").strip()
    assert user == "10001"
    api = containers["api"]
    token = await eventually(lambda: _token(api), interval=0.2, what="the admin token printed")
    repo = git_server.create("demo")
    # checked out by the worker in its container, into a volume the step container mounts
    sha = repo.commit({".cyclone.yml": PIPELINE, "hello.txt": "hello from the repository\n"})
    async with aiohttp.ClientSession(api.url, headers={"Authorization": f"Bearer {token}"}
                                     ) as http:
        for container in containers.values():
            async with http.get(f"{container.url}/metrics") as response:
                assert response.status == 200, (container.service, await response.text())
        async with http.post("/api/v1/projects", json={"name": "demo", "repo": repo.url}) as r:
            assert r.status == 201, await r.text()
        async with http.put("/api/v1/projects/demo/secrets/GREETING_TOKEN",
                            json={"value": "opened-by-the-worker"}) as r:
            assert r.status in (200, 201, 204), await r.text()
        async with http.post("/api/v1/projects/demo/runs", json={}) as r:
            assert r.status == 202, await r.text()
            run_id = (await r.json())["id"]

        async def ended() -> Any:
            async with http.get(f"/api/v1/runs/{run_id}") as response:
                run = await response.json()
            return run if run["status"] in ("success", "failure", "errored") else None

        run = await eventually(ended, timeout=180, interval=0.5, what="the run ends")
        assert run["status"] == "success", (run, containers["workermanager"].logs())
        assert run["commit"] == sha

        async def logged() -> list[str] | None:  # the log may trail the run's end
            async with http.get(f"/api/v1/runs/{run_id}/logs") as response:
                texts = [json.loads(x)["text"] for x in (await response.text()).splitlines()]
            return texts if "line 5" in texts else None

        texts = await eventually(logged, what="the last step's last line stored")
        assert "built main in /workspace" in texts
        assert "hello from the repository" in texts
        assert "the secret opened" in texts
        assert [t for t in texts if t.startswith("line ")] == [f"line {i}" for i in range(1, 6)]
        async with http.get("/") as response:  # the web UI, as `make ui` built it
            if (ROOT / "services" / "api" / "web" / "dist" / "index.html").exists():
                assert response.status == 200
                assert "text/html" in response.headers["Content-Type"]
    # the worker in its container cleans its host's Docker after the run, as on a host
    await eventually(lambda: _no_leftovers(run_id), what="the run's containers and volume gone")


async def _no_leftovers(run_id: str) -> bool:
    return not await cyclone_leftovers_async(run_id)
