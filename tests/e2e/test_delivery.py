"""Delivery end to end, as a team would run ``examples/keepwork``: a real ``cyclone up``
cloning from a real ``git daemon``, building with the real Docker daemon, pushing to a
real registry (Debian's docker-registry, htpasswd auth), deploying real containers on
the host, a maintainer approving with the real ``cyclone approve``.

* branch dev: the image is built, pushed (its digest as the registry has it), tested
  inside itself, deployed as the dev server, which then serves it over HTTP; a broken
  next commit fails its health check and the dev server is rolled back to the image
  before it;
* branch master: the test server is deployed and production waits, visibly, for a
  maintainer; the local copies of the image are removed meanwhile, so the promotion
  pulls it from the registry by digest; once approved, production runs the very digest
  the test server runs; the history lists every environment;
* ``cyclone rollback`` deploys the test environment's previous image again.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest

from tests.e2e.server_support import CycloneServer
from tests.e2e.test_cli_client import cyclone
from tests.e2e.test_forks import call
from tests.e2e.test_webhooks import ended
from tests.git_support import GitRepo, GitServer, unused_port
from tests.registry_support import RegistryServer
from tests.support import eventually

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "keepwork"
CONTAINERS = ("keepwork-dev", "keepwork-test", "keepwork")
_PORTS = {"8900": "dev", "8099": "test", "8090": "production"}


def keepwork_files(registry: RegistryServer, ports: Mapping[str, int]) -> dict[str, str]:
    """The example's files, pointed at this test's registry and free ports."""
    files = {str(p.relative_to(EXAMPLE)): p.read_text() for p in EXAMPLE.rglob("*")
             if p.is_file()}
    pipeline = files[".cyclone.yml"].replace("127.0.0.1:5000", registry.host)
    pipeline = pipeline.replace("username: keepwork", f"username: {registry.username}")
    for port, env in _PORTS.items():
        pipeline = pipeline.replace(f"127.0.0.1:{port}:80", f"127.0.0.1:{ports[env]}:80")
    files[".cyclone.yml"] = pipeline
    return files


async def _remove_containers() -> None:
    async with aiodocker.Docker() as docker:
        for name in CONTAINERS:
            for suffix in ("", "-cyclone-previous", "-cyclone-next"):
                try:
                    await docker.containers.container(name + suffix).delete(force=True)
                except aiodocker.DockerError as exc:
                    if exc.status != 404:
                        raise


@pytest.fixture
async def deployed() -> AsyncIterator[None]:
    """The example's containers are removed before and after (they outlive runs)."""
    await _remove_containers()
    try:
        yield
    finally:
        await _remove_containers()


async def served(port: int, path: str, expect: str) -> str:
    """The text at http://127.0.0.1:PORT/PATH once it holds ``expect``."""
    async def check() -> str | None:
        try:
            async with aiohttp.ClientSession() as http, http.get(
                    f"http://127.0.0.1:{port}/{path}",
                    timeout=aiohttp.ClientTimeout(total=5)) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return None
        return text if expect in text else None

    return await eventually(check, timeout=60, interval=0.2, what=f"{expect!r} on :{port}")


class Keepwork:
    """The project, its server and the commands a team member types."""

    def __init__(self, server: CycloneServer, repo: GitRepo, http: aiohttp.ClientSession,
                 registry: RegistryServer, ports: Mapping[str, int]) -> None:
        self.server, self.repo, self.http = server, repo, http
        self.registry, self.ports = registry, ports
        self.api = f"{server.url}/api/v1"
        self.admin = server.token
        self.cli_env = {**os.environ, "CYCLONE_SERVER": server.url,
                        "CYCLONE_TOKEN": server.token}

    async def trigger(self, branch: str) -> str:
        answer = await call(self.http, "POST", f"{self.api}/projects/keepwork/runs",
                            self.admin, 202, {"ref": branch})
        return str(answer["id"])

    async def run(self, run_id: str) -> Any:
        return await call(self.http, "GET", f"{self.api}/runs/{run_id}", self.admin, 200)

    async def waiting(self, run_id: str, job: str) -> Any:
        async def check() -> Any:
            run = await self.run(run_id)
            view = next((j for j in run["jobs"] if j["name"] == job), None)
            return run if view and view["awaiting_approval"] and view["status"] == "pending" \
                else None
        return await eventually(check, timeout=240, interval=0.3, what=f"{job} waits")

    async def events(self, run_id: str) -> list[Any]:
        answer = await call(self.http, "GET", f"{self.api}/runs/{run_id}/events", self.admin,
                            200)
        return list(answer["events"])


@pytest.fixture
async def keepwork(server: CycloneServer, git_server: GitServer, auth_registry: RegistryServer,
                   deployed: None) -> AsyncIterator[Keepwork]:
    ports = {env: unused_port() for env in _PORTS.values()}
    repo = git_server.create("keepwork")
    repo.commit(keepwork_files(auth_registry, ports), message="keepwork", branch="master")
    async with aiohttp.ClientSession() as http:
        await call(http, "POST", f"{server.url}/api/v1/projects", server.token, 201,
                   {"name": "keepwork", "repo": repo.url, "default_branch": "master"})
        await call(http, "PUT", f"{server.url}/api/v1/projects/keepwork/secrets/"
                   "REGISTRY_PASSWORD", server.token, 200, {"value": auth_registry.password})
        yield Keepwork(server, repo, http, auth_registry, ports)


async def test_dev_builds_pushes_and_deploys_then_a_broken_image_is_rolled_back(
        keepwork: Keepwork) -> None:
    k = keepwork
    k.repo.commit({}, message="dev work", branch="dev")
    run = await ended(k.http, k.server, await k.trigger("dev"))
    assert run["status"] == "success", run
    [image] = run["images"]
    repository, tag = image["tags"][0].rsplit(":", 1)
    assert repository == f"{k.registry.host}/keepwork/app"
    assert tag == f"dev-{run['commit'][:8]}"
    assert image["digest"] == k.registry.manifest_digest("keepwork/app", tag)
    [dev] = run["deployments"]
    assert (dev["environment"], dev["state"]) == ("dev", "succeeded")
    assert dev["image"] == f"{repository}@{image['digest']}"
    assert (await served(k.ports["dev"], "env.txt", "dev")).strip() == "dev"
    assert {j["name"]: j["status"] for j in run["jobs"]} == {
        "image": "success", "unit": "success", "dev": "success", "test": "skipped",
        "production": "skipped"}
    log = await _log(k, run["id"])
    assert k.registry.password not in log

    # a commit whose server does not come up: the dev server keeps the image before it
    broken = (EXAMPLE / "Dockerfile").read_text().replace(
        "httpd -f -p 80 -h /srv & wait", "sleep 600 & wait")
    k.repo.commit({"Dockerfile": broken}, message="broken", branch="dev")
    failed = await ended(k.http, k.server, await k.trigger("dev"))
    assert failed["status"] == "failure"
    [rolled] = failed["deployments"]
    assert rolled["state"] == "rolled_back" and rolled["previous"] == dev["image"]
    assert "did not become healthy" in rolled["reason"] or "unhealthy" in rolled["reason"]
    assert (await served(k.ports["dev"], "env.txt", "dev")).strip() == "dev"


async def test_master_deploys_test_and_production_waits_for_an_approver_then_gets_that_digest(
        keepwork: Keepwork) -> None:
    k = keepwork
    run_id = await k.trigger("master")
    run = await k.waiting(run_id, "production")
    [test_deploy] = [d for d in run["deployments"] if d["environment"] == "test"]
    assert test_deploy["state"] == "succeeded"
    assert (await served(k.ports["test"], "env.txt", "master")).strip() == "master"
    shown = await cyclone(k.cli_env, "show", run_id)
    assert "waiting for approval (maintainer)" in shown.out, shown.out
    # No name of the image is left on this host: the promotion pulls it by digest.
    await _forget_local_images(k.registry.host)

    approved = await cyclone(k.cli_env, "approve", run_id, "--comment", "tested by Ann")
    assert approved.code == 0, approved.err
    assert f"job production of run {run_id} approved" in approved.out
    run = await ended(k.http, k.server, run_id)
    assert run["status"] == "success", run
    production = next(d for d in run["deployments"] if d["environment"] == "production")
    digest = test_deploy["image"].split("@")[1]
    assert production["image"].endswith(f"@{digest}")  # the very image that was tested
    assert production["approved_by"] == "admin"
    [built, promoted] = run["images"]
    assert promoted["digest"] == built["digest"] and promoted["promoted_from"]
    assert k.registry.manifest_digest("keepwork/app", "production") == digest
    await served(k.ports["production"], "index.html", "keepwork")

    history = await cyclone(k.cli_env, "deployments", "keepwork", "--json")
    entries = json.loads(history.out)["deployments"]
    assert [(e["environment"], e["state"]) for e in entries] == [
        ("production", "succeeded"), ("test", "succeeded")]
    assert entries[0]["commit"] == run["commit"] and entries[0]["run"] == run_id
    kinds = [e["type"] for e in await k.events(run_id)]
    assert kinds.count("DeploymentSucceeded") == 2 and "JobApproved" in kinds


async def test_rollback_deploys_the_environments_previous_image_again(
        keepwork: Keepwork) -> None:
    k = keepwork
    first = await k.trigger("master")
    await k.waiting(first, "production")
    await cyclone(k.cli_env, "reject", first, "--reason", "not today")
    first_run = await ended(k.http, k.server, first)
    old = next(d for d in first_run["deployments"] if d["environment"] == "test")
    k.repo.commit({"site/index.html": "<h1>keepwork v2</h1>\n"}, message="v2",
                  branch="master")
    second = await k.trigger("master")
    await k.waiting(second, "production")
    await served(k.ports["test"], "index.html", "v2")
    await cyclone(k.cli_env, "reject", second)

    rolled = await cyclone(k.cli_env, "rollback", "keepwork", "test")
    assert rolled.code == 0, rolled.err
    rollback_id = re.match(r"^(\S+): rolling test back to (\S+)", rolled.out)
    assert rollback_id is not None, rolled.out
    assert rollback_id.group(2) == old["image"]
    run = await ended(k.http, k.server, rollback_id.group(1))
    assert run["status"] == "success" and run["trigger"] == "rollback"
    assert run["deployments"][0]["image"] == old["image"]
    page = await served(k.ports["test"], "index.html", "keepwork")
    assert "v2" not in page


async def _log(k: Keepwork, run_id: str) -> str:
    async with k.http.get(f"{k.api}/runs/{run_id}/logs",
                          headers={"Authorization": f"Bearer {k.admin}"}) as response:
        return await response.text()


async def _forget_local_images(registry: str) -> None:
    """Remove every local tag and digest reference of the example's images (the layers
    stay while the test server's container uses them): a reference by digest must be
    fetched from the registry again."""
    async with aiodocker.Docker() as docker:
        for image in await docker.images.list():
            names = [*(image.get("RepoTags") or []), *(image.get("RepoDigests") or [])]
            for name in names:
                if name.startswith(f"{registry}/keepwork/"):
                    try:
                        await docker.images.delete(name)
                    except aiodocker.DockerError as exc:
                        if exc.status != 404:  # gone with the tag of its repository
                            raise
