"""DockerHostDeployer: the Deployer contract against the real Docker daemon, plus what only
a Docker host has: published ports served over HTTP, the target's health check, an
exit's last output in the reason, env / restart policy / labels / network of the
container, pulling with a registry login (from Debian's docker-registry with htpasswd
auth, ``tests.registry_support``), an unreachable daemon; and the pure
translation of ``docker_host_convert`` (no daemon).

Test images are built here ``FROM cyclone-test/busybox:latest`` (tags unique to the
module's run, removed afterwards); every container is named per test and removed in
teardown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import socket
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiodocker
import aiohttp
import pytest

from shared.adapters.deployer import docker_host
from shared.adapters.deployer.docker_host import DockerHostDeployer
from shared.adapters.deployer.docker_host_convert import (
    LABEL_DEPLOY_IMAGE,
    LABEL_DEPLOYED,
    PortSpec,
    container_config,
    has_health_check,
    healthcheck_config,
    next_name,
    parse_port,
    port_config,
    previous_name,
    restart_policy,
)
from shared.errors import DeployerUnavailable
from shared.pipeline.plan import DockerTarget, KubernetesTarget
from shared.ports.deployer import Deployer, DeployOutcome, DeployStatus
from shared.ports.executor import NO_REGISTRIES, Registries, RegistryAuth
from tests.contracts.deployer import (
    DeployerContract,
    DeployerHarness,
    DeployLog,
    unique_name,
)
from tests.docker_support import TEST_IMAGE
from tests.git_support import unused_port
from tests.registry_support import RegistryServer
from tests.support import HANG_S, eventually

T = TypeVar("T")

RUN = uuid.uuid4().hex[:8]  # this module's run: in every image tag it builds
SLEEPER = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"
SHORT_TIMEOUT_S = 4.0  # a health timeout for checks that never pass: the wait's length
FAST_SETTLE_S = 0.5  # SETTLE_S in tests (no health check: running this long is up)


# -- test images ------------------------------------------------------------------------


def _dockerfile(*lines: str) -> str:
    return "\n".join((f"FROM {TEST_IMAGE}", *lines)) + "\n"


def _web_image(version: int) -> tuple[str, dict[str, str]]:
    return (_dockerfile(f"LABEL io.cyclone.test.version={version}",
                        "COPY index.html /www/index.html",
                        'CMD ["sh", "-c", "trap \'exit 0\' TERM INT; '
                        'httpd -f -p 80 -h /www & wait"]'),
            {"index.html": f"version {version}\n"})


IMAGES: dict[str, tuple[str, dict[str, str]]] = {
    # healthy by the image's own HEALTHCHECK, about a second after the start
    "good-1": (_dockerfile("LABEL io.cyclone.test.version=1",
                           "HEALTHCHECK --interval=1s --timeout=5s CMD test -e /tmp/ready",
                           f'CMD ["sh", "-c", "touch /tmp/ready; {SLEEPER}"]'), {}),
    "good-2": (_dockerfile("LABEL io.cyclone.test.version=2",
                           "HEALTHCHECK --interval=1s --timeout=5s CMD test -e /tmp/ready",
                           f'CMD ["sh", "-c", "touch /tmp/ready; {SLEEPER}"]'), {}),
    "failing": (_dockerfile('CMD ["sh", "-c", "echo starting; '
                            "echo 'cannot read /etc/app.conf' >&2; exit 3\"]"), {}),
    # runs, and its check neither passes nor (within its start period) counts as failed
    "hanging": (_dockerfile("HEALTHCHECK --interval=1s --start-period=600s "
                            "CMD echo 'still warming up'; exit 1",
                            f'CMD ["sh", "-c", "{SLEEPER}"]'), {}),
    # its check fails, and counts at once: unhealthy long before any timeout
    "unhealthy": (_dockerfile("HEALTHCHECK --interval=1s --retries=1 "
                              "CMD echo 'database unreachable'; exit 1",
                              f'CMD ["sh", "-c", "{SLEEPER}"]'), {}),
    "web-1": _web_image(1),
    "web-2": _web_image(2),
}


def image(key: str) -> str:
    return f"cyclone-test/deploy-{key}:{RUN}"


def _in_own_loop(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def _tar_of(files: Mapping[str, str]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


async def _build_images() -> None:
    async with aiodocker.Docker() as docker:
        for key, (dockerfile, files) in IMAGES.items():
            output = await docker.images.build(
                fileobj=_tar_of({"Dockerfile": dockerfile, **files}), encoding="identity",
                tag=image(key))
            errors = [item for item in output if "error" in item]
            assert not errors, f"building {image(key)}: {errors}"


async def _remove_images() -> None:
    async with aiodocker.Docker() as docker:
        for key in IMAGES:
            try:
                await docker.images.delete(image(key), force=True)
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise


@pytest.fixture(scope="module")
def images(docker_ready: None) -> Iterator[None]:
    _in_own_loop(_build_images)
    yield
    _in_own_loop(_remove_images)


# -- what runs where ------------------------------------------------------------------


async def _inspect(docker: aiodocker.Docker, name: str) -> dict[str, Any] | None:
    try:
        return await docker.containers.container(name).show()
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return None
        raise


async def _containers_named(docker: aiodocker.Docker, name: str) -> list[str]:
    """The names of every container whose name starts with ``name``."""
    found = await docker.containers.list(all=True, filters=json.dumps({"name": [name]}))
    names = [str(each["Names"][0]).lstrip("/") for each in found]
    return sorted(n for n in names if n.startswith(name))


async def _remove_all(docker: aiodocker.Docker, name: str) -> None:
    for each in (name, previous_name(name), next_name(name)):
        try:
            await docker.containers.container(each).delete(force=True)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise


class DockerHarness(DeployerHarness):
    def __init__(self, deployer: DockerHostDeployer, docker: aiodocker.Docker,
                 registries: Registries = NO_REGISTRIES) -> None:
        self._deployer = deployer
        self.docker = docker
        self._registries = registries

    @property
    def deployer(self) -> Deployer:
        return self._deployer

    @property
    def registries(self) -> Registries:
        return self._registries

    def target(self, name: str, health_timeout_s: float = HANG_S) -> DockerTarget:
        return DockerTarget(container=name, image="", health_timeout_s=health_timeout_s)

    def good_image(self, version: int) -> str:
        return image(f"good-{version}")

    def failing_image(self) -> str:
        return image("failing")

    def hanging_image(self) -> str:
        return image("hanging")

    async def running_image(self, name: str) -> str | None:
        info = await _inspect(self.docker, name)
        if info is None or not info["State"].get("Running"):
            return None
        return str(info["Config"]["Image"])

    async def exists(self, name: str) -> bool:
        return await _inspect(self.docker, name) is not None

    async def left_behind(self, name: str) -> list[str]:
        return [n for n in await _containers_named(self.docker, name) if n != name]

    async def remove(self, name: str) -> None:
        await _remove_all(self.docker, name)


@pytest.fixture
async def docker(images: None) -> AsyncIterator[aiodocker.Docker]:
    async with aiodocker.Docker() as client:
        yield client


@pytest.fixture
def fast_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker_host, "SETTLE_S", FAST_SETTLE_S)


@pytest.fixture
async def deployer(docker: aiodocker.Docker) -> AsyncIterator[DockerHostDeployer]:
    deployer = DockerHostDeployer(docker)
    yield deployer
    await deployer.close()


@pytest.fixture
async def harness(deployer: DockerHostDeployer,
                  docker: aiodocker.Docker) -> DockerHarness:
    return DockerHarness(deployer, docker)


@pytest.fixture
async def name(harness: DockerHarness) -> AsyncIterator[str]:
    name = unique_name()
    yield name
    await harness.remove(name)


class TestDockerHostDeployer(DeployerContract):
    @pytest.fixture
    async def harness(self, deployer: DockerHostDeployer,
                      docker: aiodocker.Docker) -> AsyncIterator[DeployerHarness]:
        yield DockerHarness(deployer, docker)


# -- Docker only: ports, health checks, exits ----------------------------------------


async def _http_get(port: int) -> str:
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{port}/index.html",
            timeout=aiohttp.ClientTimeout(total=10)) as response:
        assert response.status == 200
        return await response.text()


WGET_CHECK = "wget -q -O /dev/null http://127.0.0.1/index.html || exit 1"


def _web_target(name: str, port: int, **changes: Any) -> DockerTarget:
    base: dict[str, Any] = {"container": name, "image": "", "ports": (f"127.0.0.1:{port}:80",),
                            "healthcheck": WGET_CHECK}
    return DockerTarget(**{**base, **changes})


async def test_a_web_server_is_replaced_and_serves_the_new_content(
        deployer: DockerHostDeployer, docker: aiodocker.Docker, name: str) -> None:
    port = unused_port()
    first = await deployer.deploy(_web_target(name, port), image("web-1"), {}, NO_REGISTRIES,
                                  DeployLog())
    assert first.status == DeployStatus.SUCCEEDED, first
    assert await _http_get(port) == "version 1\n"

    logged = DeployLog()
    started = time.monotonic()
    outcome = await deployer.deploy(_web_target(name, port), image("web-2"), {},
                                    NO_REGISTRIES, logged)
    took = time.monotonic() - started

    assert outcome == DeployOutcome(DeployStatus.SUCCEEDED, previous=image("web-1")), logged
    assert await _http_get(port) == "version 2\n"
    assert logged.texts[0] == (f"replacing container {name} (image {image('web-1')}) "
                               f"with {image('web-2')}")
    assert f"waiting for health check (up to {HANG_S:g}s)" in logged.texts
    assert any(t.startswith("healthy after ") for t in logged.texts), logged
    assert await _containers_named(docker, name) == [name]
    print(f"healthy replace of a web server took {took:.2f}s: {logged.texts}")


async def test_a_health_check_that_never_passes_is_rolled_back(
        deployer: DockerHostDeployer, name: str) -> None:
    port = unused_port()
    assert (await deployer.deploy(_web_target(name, port), image("web-1"), {}, NO_REGISTRIES,
                                  DeployLog())).status == DeployStatus.SUCCEEDED
    never = _web_target(name, port, health_timeout_s=SHORT_TIMEOUT_S,
                        healthcheck="echo 'not ready: /healthz says 503'; exit 1")

    logged = DeployLog()
    outcome = await deployer.deploy(never, image("web-2"), {}, NO_REGISTRIES, logged)

    assert outcome.status == DeployStatus.ROLLED_BACK, (outcome, str(logged))
    assert outcome.previous == image("web-1")
    assert outcome.reason.startswith(
        f"container {name} did not become healthy within {SHORT_TIMEOUT_S:g}s: "), outcome
    assert "not ready: /healthz says 503" in outcome.reason
    assert "health check: not ready: /healthz says 503" in logged.texts
    assert await _http_get(port) == "version 1\n"  # the old one serves again


async def test_a_container_that_exits_at_once_is_rolled_back_with_its_output(
        deployer: DockerHostDeployer, harness: DockerHarness, name: str) -> None:
    assert (await harness.deploy(name, image("good-1"))).status == DeployStatus.SUCCEEDED
    crashing = DockerTarget(container=name, image="", command=(
        "sh", "-c", "echo 'listening on :8080'; echo 'fatal: DATABASE_URL is not set' >&2; "
        "exit 3"))

    logged = DeployLog()
    outcome = await deployer.deploy(crashing, TEST_IMAGE, {}, NO_REGISTRIES, logged)

    assert outcome.status == DeployStatus.ROLLED_BACK, (outcome, str(logged))
    assert outcome.reason.startswith(f"container {name} exited with code 3: "), outcome
    # both lines, in whichever order Docker's log has them (two streams, one microsecond)
    assert "listening on :8080" in outcome.reason
    assert "fatal: DATABASE_URL is not set" in outcome.reason
    assert "| fatal: DATABASE_URL is not set" in logged.texts
    assert await harness.running_image(name) == image("good-1")
    assert await harness.left_behind(name) == []


async def test_an_unhealthy_container_fails_before_the_timeout(
        harness: DockerHarness, name: str) -> None:
    assert (await harness.deploy(name, image("good-1"))).status == DeployStatus.SUCCEEDED

    outcome = await harness.deploy(name, image("unhealthy"))  # health timeout: HANG_S

    assert outcome.status == DeployStatus.ROLLED_BACK, outcome
    assert outcome.reason.startswith(f"container {name} became unhealthy: "), outcome
    assert "database unreachable" in outcome.reason
    assert await harness.running_image(name) == image("good-1")


@pytest.mark.usefixtures("fast_settle")
async def test_env_command_restart_policy_and_labels_are_applied(
        deployer: DockerHostDeployer, docker: aiodocker.Docker, name: str) -> None:
    target = DockerTarget(container=name, image="", env={"GREETING": "hello world", "EMPTY": ""},
                          restart="on-failure:3", command=("sh", "-c", SLEEPER))
    logged = DeployLog()

    outcome = await deployer.deploy(target, TEST_IMAGE, {}, NO_REGISTRIES, logged)

    assert outcome == DeployOutcome(DeployStatus.SUCCEEDED), logged
    assert f"no health check: waiting {FAST_SETTLE_S:g}s for it to keep running" in logged.texts
    info = await _inspect(docker, name)
    assert info is not None
    assert {"GREETING=hello world", "EMPTY="} <= set(info["Config"]["Env"])
    assert info["Config"]["Cmd"] == ["sh", "-c", SLEEPER]
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    labels = info["Config"]["Labels"]
    assert labels[LABEL_DEPLOYED] == "1"
    assert labels[LABEL_DEPLOY_IMAGE] == TEST_IMAGE
    assert "io.cyclone.managed" not in labels and "io.cyclone.run" not in labels


@pytest.mark.usefixtures("fast_settle")
async def test_the_default_restart_policy_is_unless_stopped(
        deployer: DockerHostDeployer, docker: aiodocker.Docker, name: str) -> None:
    target = DockerTarget(container=name, image="", command=("sh", "-c", SLEEPER))
    assert (await deployer.deploy(target, TEST_IMAGE, {}, NO_REGISTRIES,
                                  DeployLog())).status == DeployStatus.SUCCEEDED
    info = await _inspect(docker, name)
    assert info is not None
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"


# -- networks ---------------------------------------------------------------------------


@pytest.fixture
async def network(docker: aiodocker.Docker, name: str) -> AsyncIterator[str]:
    net = await docker.networks.create({"Name": f"{name}-net", "Driver": "bridge"})
    yield f"{name}-net"
    await _remove_all(docker, name)  # before the network they are on
    await net.delete()


async def test_the_container_joins_the_targets_network(
        deployer: DockerHostDeployer, docker: aiodocker.Docker, name: str,
        network: str) -> None:
    target = DockerTarget(container=name, image="", network=network)

    outcome = await deployer.deploy(target, image("good-1"), {}, NO_REGISTRIES, DeployLog())

    assert outcome.status == DeployStatus.SUCCEEDED, outcome
    info = await _inspect(docker, name)
    assert info is not None
    assert list(info["NetworkSettings"]["Networks"]) == [network]


async def test_a_missing_network_fails_and_leaves_the_running_container_alone(
        deployer: DockerHostDeployer, harness: DockerHarness, docker: aiodocker.Docker,
        name: str) -> None:
    assert (await harness.deploy(name, image("good-1"))).status == DeployStatus.SUCCEEDED
    before = await _inspect(docker, name)
    assert before is not None
    missing = f"{name}-no-such-net"

    outcome = await deployer.deploy(DockerTarget(container=name, image="", network=missing),
                                    image("good-2"), {}, NO_REGISTRIES, DeployLog())

    assert outcome.status == DeployStatus.FAILED, outcome
    assert missing in outcome.reason
    after = await _inspect(docker, name)
    assert after is not None
    assert after["Id"] == before["Id"]
    assert after["State"]["StartedAt"] == before["State"]["StartedAt"]  # never stopped
    assert await harness.left_behind(name) == []


# -- ports in use, a rollback that fails too ------------------------------------------


@pytest.fixture
def held_port() -> Iterator[tuple[int, socket.socket]]:
    """A port this test listens on, on 127.0.0.1: Docker cannot publish it there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1], sock


@pytest.mark.usefixtures("fast_settle")
async def test_a_new_container_that_cannot_start_is_rolled_back(
        deployer: DockerHostDeployer, harness: DockerHarness, name: str,
        held_port: tuple[int, socket.socket]) -> None:
    assert (await harness.deploy(name, image("good-1"))).status == DeployStatus.SUCCEEDED
    port, _ = held_port
    taken = _web_target(name, port, healthcheck="")

    outcome = await deployer.deploy(taken, image("web-2"), {}, NO_REGISTRIES, DeployLog())

    assert outcome.status == DeployStatus.ROLLED_BACK, outcome
    assert outcome.reason.startswith(f"starting container {name}: "), outcome
    assert str(port) in outcome.reason
    assert await harness.running_image(name) == image("good-1")
    assert await harness.left_behind(name) == []


async def test_a_rollback_that_fails_too_is_failed_saying_both(
        deployer: DockerHostDeployer, harness: DockerHarness, name: str) -> None:
    port = unused_port()
    assert (await deployer.deploy(_web_target(name, port), image("web-1"), {}, NO_REGISTRIES,
                                  DeployLog())).status == DeployStatus.SUCCEEDED
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    async def on_log(stream: str, ts: str, text: str) -> None:
        if text.startswith("no health check: waiting"):  # the old one is stopped: its port
            # is free, until this takes it
            holder.bind(("127.0.0.1", port))
            holder.listen()

    crashing = DockerTarget(container=name, image="", command=("sh", "-c", "exit 4"))
    try:
        outcome = await deployer.deploy(crashing, TEST_IMAGE, {}, NO_REGISTRIES, on_log)
    finally:
        holder.close()

    assert outcome.status == DeployStatus.FAILED, outcome
    assert outcome.previous == image("web-1")
    assert outcome.reason.startswith(f"container {name} exited with code 4: no output; "
                                     f"rolling back to {image('web-1')} failed too: "), outcome
    assert str(port) in outcome.reason


# -- images: pulls, registry logins ---------------------------------------------------


@dataclass
class Pushed:
    """TEST_IMAGE pushed to the real registry with htpasswd auth (``auth_registry``) and
    removed from the host again: a deploy has to pull it, with the login."""

    host: str
    username: str
    password: str
    reference: str  # host/repository@digest


@pytest.fixture
async def registry(docker: aiodocker.Docker, auth_registry: RegistryServer
                   ) -> AsyncIterator[Pushed]:
    repository = f"{auth_registry.host}/deploytest/app-{uuid.uuid4().hex[:8]}"
    auth = {"username": auth_registry.username, "password": auth_registry.password,
            "serveraddress": auth_registry.host}
    await docker.images.tag(TEST_IMAGE, repository, tag="1")
    try:
        await docker.images.push(repository, tag="1", auth=auth)
    finally:
        await docker.images.delete(f"{repository}:1")
    digest = auth_registry.manifest_digest(repository.split("/", 1)[1], "1")
    pushed = Pushed(auth_registry.host, auth_registry.username, auth_registry.password,
                    f"{repository}@{digest}")
    try:
        yield pushed
    finally:
        try:
            await docker.images.delete(pushed.reference)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise


@pytest.mark.usefixtures("fast_settle")
async def test_an_image_by_digest_is_pulled_with_its_registrys_login(
        deployer: DockerHostDeployer, docker: aiodocker.Docker, registry: Pushed,
        name: str) -> None:
    logins = {registry.host: RegistryAuth(registry.username, registry.password),
              "other.example:5000": RegistryAuth("nobody", "wrong")}
    target = DockerTarget(container=name, image="", command=("sh", "-c", SLEEPER))
    logged = DeployLog()

    outcome = await deployer.deploy(target, registry.reference, {}, logins, logged)

    assert outcome == DeployOutcome(DeployStatus.SUCCEEDED), (outcome, str(logged))
    assert f"pulling image {registry.reference} (logged in to {registry.host})" in logged.texts
    info = await _inspect(docker, name)
    assert info is not None
    assert info["Config"]["Image"] == registry.reference
    assert info["Config"]["Labels"][LABEL_DEPLOY_IMAGE] == registry.reference
    assert registry.password not in str(logged)


async def test_a_pull_refused_by_the_registry_fails_naming_the_image(
        deployer: DockerHostDeployer, harness: DockerHarness, registry: Pushed,
        name: str) -> None:
    wrong = {registry.host: RegistryAuth(registry.username, "not-the-password")}
    logged = DeployLog()

    outcome = await deployer.deploy(DockerTarget(container=name, image=""), registry.reference,
                                    {}, wrong, logged)

    assert outcome.status == DeployStatus.FAILED, outcome
    assert outcome.reason.startswith(f"could not pull image {registry.reference}: "), outcome
    assert "not-the-password" not in outcome.reason + str(logged)
    assert not await harness.exists(name)


async def test_an_unreachable_registry_fails_without_a_word_of_the_password(
        deployer: DockerHostDeployer, harness: DockerHarness, name: str) -> None:
    host = f"127.0.0.1:{unused_port()}"
    reference = f"{host}/team/app@sha256:{'ab' * 32}"
    logged = DeployLog()

    outcome = await deployer.deploy(DockerTarget(container=name, image=""), reference, {},
                                    {host: RegistryAuth("deployer", "hunter2-s3cret")}, logged)

    assert outcome.status == DeployStatus.FAILED, outcome
    assert outcome.reason.startswith(f"could not pull image {reference}: "), outcome
    assert "hunter2" not in outcome.reason + str(logged)
    assert not await harness.exists(name)
    assert await harness.left_behind(name) == []


async def test_a_container_cyclone_did_not_deploy_is_left_alone(
        deployer: DockerHostDeployer, docker: aiodocker.Docker, name: str) -> None:
    mine = await docker.containers.create(
        {"Image": TEST_IMAGE, "Cmd": ["sh", "-c", SLEEPER]}, name=name)
    await mine.start()
    logged = DeployLog()

    outcome = await deployer.deploy(DockerTarget(container=name, image=""), image("good-1"), {},
                                    NO_REGISTRIES, logged)

    assert outcome.status == DeployStatus.FAILED, outcome
    assert "was not deployed by Cyclone" in outcome.reason
    info = await _inspect(docker, name)
    assert info is not None and info["Id"] == mine.id and info["State"]["Running"]


# -- daemons, targets -------------------------------------------------------------------


async def test_an_unreachable_daemon_is_deployer_unavailable(images: None) -> None:
    deployer = DockerHostDeployer()
    try:
        target = DockerTarget(container=unique_name(), image="",
                              host=f"tcp://127.0.0.1:{unused_port()}")
        with pytest.raises(DeployerUnavailable, match="cannot reach the Docker daemon"):
            await deployer.deploy(target, image("good-1"), {}, NO_REGISTRIES, DeployLog())
    finally:
        await deployer.close()


@pytest.mark.usefixtures("fast_settle")
async def test_a_deployer_without_a_client_opens_and_closes_its_own(
        harness: DockerHarness, name: str) -> None:
    deployer = DockerHostDeployer()
    try:
        outcome = await deployer.deploy(
            DockerTarget(container=name, image="", command=("sh", "-c", SLEEPER)),
            TEST_IMAGE, {}, NO_REGISTRIES, DeployLog())
    finally:
        await deployer.close()
    assert outcome.status == DeployStatus.SUCCEEDED, outcome
    assert await harness.running_image(name) == TEST_IMAGE


async def test_a_kubernetes_target_or_a_malformed_one_is_failed(
        deployer: DockerHostDeployer) -> None:
    kube = await deployer.deploy(KubernetesTarget(deployment="app", image=""), "x:1", {},
                                 NO_REGISTRIES, DeployLog())
    bad_port = await deployer.deploy(
        DockerTarget(container=unique_name(), image="", ports=("80:http",)), "x:1", {},
        NO_REGISTRIES, DeployLog())
    bad_restart = await deployer.deploy(
        DockerTarget(container=unique_name(), image="", restart="sometimes"), "x:1", {},
        NO_REGISTRIES, DeployLog())

    assert kube.status == bad_port.status == bad_restart.status == DeployStatus.FAILED
    assert "only to Docker targets" in kube.reason
    assert "'80:http'" in bad_port.reason
    assert "'sometimes'" in bad_restart.reason


async def test_deploys_to_one_container_take_turns(
        harness: DockerHarness, name: str) -> None:
    images = [image("good-1"), image("good-2")]
    outcomes = await asyncio.gather(*(harness.deploy(name, each) for each in images))

    assert [o.status for o in outcomes] == [DeployStatus.SUCCEEDED] * 2, outcomes
    first = 0 if outcomes[0].previous == "" else 1  # whichever got its turn first
    second = 1 - first
    assert outcomes[second].previous == images[first], outcomes
    assert await harness.running_image(name) == images[second]
    assert await harness.left_behind(name) == []


async def test_a_stale_previous_container_is_removed_first(
        harness: DockerHarness, docker: aiodocker.Docker, name: str) -> None:
    assert (await harness.deploy(name, image("good-1"))).status == DeployStatus.SUCCEEDED
    stale = await docker.containers.create({"Image": TEST_IMAGE, "Cmd": ["true"]},
                                           name=previous_name(name))

    outcome = await harness.deploy(name, image("good-2"))

    assert outcome.status == DeployStatus.SUCCEEDED, outcome
    assert await _inspect(docker, stale.id) is None
    assert await harness.left_behind(name) == []


async def test_a_cancelled_first_deploy_leaves_nothing(
        harness: DockerHarness, name: str) -> None:
    deploying = asyncio.create_task(harness.deploy(name, image("hanging")))
    await eventually(lambda: harness.running_image(name), what=f"{name} started")
    deploying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await deploying
    assert not await harness.exists(name)
    assert await harness.left_behind(name) == []


# -- the translation (no daemon) ------------------------------------------------------


@pytest.mark.parametrize(("spec", "expected"), [
    ("8080:80", PortSpec(80, "tcp", "", "8080")),
    ("127.0.0.1:8080:80", PortSpec(80, "tcp", "127.0.0.1", "8080")),
    ("53:53/udp", PortSpec(53, "udp", "", "53")),
    ("80", PortSpec(80)),
    ("127.0.0.1::80", PortSpec(80, "tcp", "127.0.0.1", "")),
    ("[::1]:8080:80/tcp", PortSpec(80, "tcp", "::1", "8080")),
    ("0.0.0.0:443:8443/SCTP", PortSpec(8443, "sctp", "0.0.0.0", "443")),
])
def test_ports_are_parsed_as_docker_run_takes_them(spec: str, expected: PortSpec) -> None:
    assert parse_port(spec) == expected


@pytest.mark.parametrize("spec", ["", "http:80", "8080:80/icmp", "1:2:3:4", "localhost:80:80",
                                  "70000:80", "8080:0", "[::1]:80", "8080-8081:80"])
def test_malformed_ports_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="port"):
        parse_port(spec)


def test_port_config_binds_one_container_port_to_several_host_ports() -> None:
    exposed, bindings = port_config(("127.0.0.1:8080:80", "8081:80", "53:53/udp"))
    assert exposed == {"80/tcp": {}, "53/udp": {}}
    assert bindings == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}, {"HostIp": "", "HostPort": "8081"}],
        "53/udp": [{"HostIp": "", "HostPort": "53"}],
    }


@pytest.mark.parametrize(("restart", "expected"), [
    ("no", {"Name": "no", "MaximumRetryCount": 0}),
    ("always", {"Name": "always", "MaximumRetryCount": 0}),
    ("unless-stopped", {"Name": "unless-stopped", "MaximumRetryCount": 0}),
    ("on-failure", {"Name": "on-failure", "MaximumRetryCount": 0}),
    ("on-failure:5", {"Name": "on-failure", "MaximumRetryCount": 5}),
])
def test_restart_policies(restart: str, expected: dict[str, Any]) -> None:
    assert restart_policy(restart) == expected


@pytest.mark.parametrize("restart", ["sometimes", "always:3", "on-failure:x", ""])
def test_malformed_restart_policies_are_refused(restart: str) -> None:
    with pytest.raises(ValueError, match="restart policy"):
        restart_policy(restart)


def test_the_container_config_of_a_full_target() -> None:
    target = DockerTarget(container="app", image="ignored", ports=("127.0.0.1:8080:80",),
                          env={"A": "1", "B": "two words"}, network="backend",
                          restart="always", command=("serve", "--port", "80"),
                          healthcheck="wget -q -O- http://127.0.0.1/health", health_timeout_s=30)

    config = container_config(target, "registry.example/app@sha256:" + "0" * 64)

    assert config == {
        "Image": "registry.example/app@sha256:" + "0" * 64,
        "Env": ["A=1", "B=two words"],
        "Cmd": ["serve", "--port", "80"],
        "Labels": {LABEL_DEPLOYED: "1",
                   LABEL_DEPLOY_IMAGE: "registry.example/app@sha256:" + "0" * 64},
        "ExposedPorts": {"80/tcp": {}},
        "Healthcheck": {"Test": ["CMD-SHELL", "wget -q -O- http://127.0.0.1/health"],
                        "Interval": 1_000_000_000, "Timeout": 10_000_000_000, "Retries": 3,
                        "StartPeriod": 30_000_000_000},
        "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
                       "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
                       "NetworkMode": "backend"},
    }
    assert "io.cyclone.managed" not in config["Labels"]
    assert "io.cyclone.run" not in config["Labels"]


def test_a_minimal_target_keeps_the_images_command_and_health_check() -> None:
    config = container_config(DockerTarget(container="app", image=""), "app:1")
    assert "Cmd" not in config and "Healthcheck" not in config
    assert "NetworkMode" not in config["HostConfig"]
    assert config["ExposedPorts"] == {} and config["Env"] == []


def test_a_malformed_restart_policy_is_refused_with_the_config() -> None:
    with pytest.raises(ValueError, match="restart policy"):
        container_config(DockerTarget(container="app", image="", restart="never"), "app:1")


def test_healthcheck_durations_are_nanoseconds() -> None:
    assert healthcheck_config("true", 2.5)["StartPeriod"] == 2_500_000_000


@pytest.mark.parametrize(("inspected", "expected"), [
    ({"Config": {"Healthcheck": {"Test": ["CMD-SHELL", "true"]}}}, True),
    ({"Config": {"Healthcheck": {"Test": ["CMD", "true"]}}}, True),
    ({"Config": {"Healthcheck": {"Test": ["NONE"]}}}, False),
    ({"Config": {}}, False),
    ({"Config": {"Healthcheck": None}}, False),
])
def test_has_health_check(inspected: dict[str, Any], expected: bool) -> None:
    assert has_health_check(inspected) is expected
