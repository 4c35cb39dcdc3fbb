"""The Docker executor's image steps against a real daemon and real registries: builds with
args, target and labels, pushes (with and without a login), pulls of what was pushed by
digest, and promotes that keep the digest. Every image is ``FROM`` the local test image:
nothing is pulled from the internet."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiodocker
import pytest

from shared.adapters.executor import DockerExecutor
from shared.adapters.executor.docker_convert import BUILT_IMAGE, built_image
from shared.errors import ExecutorError
from shared.pipeline.plan import BuildSpec, PromoteSpec, ServiceSpec, StepSpec
from shared.ports.executor import (
    NO_REGISTRIES,
    Registries,
    RegistryAuth,
    RunContext,
    StepOutcome,
)
from tests.docker_support import TEST_IMAGE
from tests.executors.conftest import Logs, job_of, step_of
from tests.registry_support import AUTH_PASSWORD, RegistryServer, auth_registry, registry

__all__ = ["auth_registry", "registry"]  # fixtures

pytestmark = pytest.mark.usefixtures("docker_ready")

OCI = {"org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
       "org.opencontainers.image.source": "https://git.example/team/app.git"}
# On every image the tests build, so that what a failed test left is found and removed.
MINE = {"io.cyclone.test-images": uuid.uuid4().hex}
# A multi-stage Dockerfile: the target stage is "runtime"; "broken" after it must not run.
DOCKERFILE = f"""FROM {TEST_IMAGE} AS base
ARG GREETING=unset
ENV GREETING_SEEN=$GREETING
RUN echo "hello from $GREETING" > /greeting
FROM base AS runtime
LABEL stage=runtime
RUN echo {uuid.uuid4().hex} > /unique
FROM runtime AS broken
LABEL stage=broken
RUN exit 7
"""

Prepare = Callable[[], Awaitable[RunContext]]


@pytest.fixture
async def docker() -> AsyncIterator[DockerExecutor]:
    executor = await DockerExecutor.connect()
    try:
        yield executor
    finally:
        await executor.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "Dockerfile").write_text(DOCKERFILE)
    return src


@pytest.fixture
async def prepare(docker: DockerExecutor, source: Path,
                  images: list[str]) -> AsyncIterator[Prepare]:
    """Makes prepared runs of ``source``; each is destroyed after the test."""
    made: list[RunContext] = []

    async def new_run() -> RunContext:
        ctx = RunContext(run_id=f"t{uuid.uuid4().hex[:16]}", source_dir=str(source))
        made.append(ctx)
        await docker.prepare_run(ctx)
        return ctx

    try:
        yield new_run
    finally:
        for ctx in made:
            await docker.destroy_run(ctx.run_id)


@pytest.fixture
async def client() -> AsyncIterator[aiodocker.Docker]:
    async with aiodocker.Docker() as opened:
        yield opened


@pytest.fixture
async def images(client: aiodocker.Docker) -> AsyncIterator[list[str]]:
    """References the test made on this host; their images, and every image labelled
    ``MINE``, are removed after it (after its runs too: ``prepare`` depends on this
    fixture, so it is torn down first)."""
    made: list[str] = []
    yield made
    for reference in made:
        await _remove_image(client, reference)
    label = "=".join(next(iter(MINE.items())))
    for image in await client.images.list(filters={"label": [label]}):
        await _remove_image(client, image["Id"])


async def _remove_image(client: aiodocker.Docker, reference: str) -> None:
    """Remove the image ``reference`` names, with all its tags and digests (only the
    reference when it is the shared test image)."""
    try:
        image_id = (await client.images.inspect(reference))["Id"]
        test_id = (await client.images.inspect(TEST_IMAGE))["Id"]
        await client.images.delete(reference if image_id == test_id else image_id, force=True)
    except aiodocker.DockerError as exc:
        if exc.status != 404:
            raise


async def _is_here(client: aiodocker.Docker, reference: str) -> bool:
    try:
        await client.images.inspect(reference)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _repository(registry: RegistryServer) -> tuple[str, str]:
    """(path in the registry, full repository) of a new repository."""
    path = f"cyclone-test/app-{uuid.uuid4().hex[:12]}"
    return path, f"{registry.host}/{path}"


def _build_step(*tags: str, push: bool = True, name: str = "web") -> StepSpec:
    return step_of("image", build=BuildSpec(name=name, args={"GREETING": "args"},
                                            target="runtime", tags=tags,
                                            labels={**OCI, **MINE}, push=push))


async def _build(docker: DockerExecutor, run: RunContext, step: StepSpec, logs: Logs,
                 registries: Registries = NO_REGISTRIES) -> tuple[float, StepOutcome]:
    started = time.monotonic()
    outcome = await docker.run_step(run, job_of("build", step), step, {}, logs, registries)
    return time.monotonic() - started, outcome


def _no_secret_in(logs: Logs, *secrets: str) -> None:
    leaked = [text for text in logs.texts() for secret in secrets if secret in text]
    assert not leaked, leaked


async def test_a_build_applies_its_args_target_labels_and_tags(
        docker: DockerExecutor, prepare: Prepare, client: aiodocker.Docker,
        images: list[str]) -> None:
    run = await prepare()
    tags = (f"cyclone-test/local-{run.run_id}:1.0", f"localhost:5000/team/{run.run_id}")
    images.extend(tags)
    logs = Logs()
    step = _build_step(*tags, push=False)
    outcome = await docker.run_step(run, job_of("build", step), step, {}, logs)
    assert outcome.exit_code == 0, logs.lines
    assert outcome.pushed == ()  # built, tagged, not pushed
    info = await client.images.inspect(tags[0])
    assert {**OCI, "stage": "runtime"}.items() <= info["Config"]["Labels"].items()
    assert "GREETING_SEEN=args" in info["Config"]["Env"]
    for reference in (f"{tags[1]}:latest", built_image(run.run_id)):
        assert (await client.images.inspect(reference))["Id"] == info["Id"]
    use = step_of("use", "cat /greeting", image=BUILT_IMAGE)
    assert (await docker.run_step(run, job_of("use", use), use, {}, logs)).exit_code == 0
    assert logs.texts("stdout")[-1] == "hello from args"
    await docker.destroy_run(run.run_id)  # the run's own tag goes; the build's stay
    assert not await _is_here(client, built_image(run.run_id))
    assert await _is_here(client, tags[0])


async def test_a_pushed_build_is_the_registrys_digest_and_runs_elsewhere_by_it(
        docker: DockerExecutor, prepare: Prepare, client: aiodocker.Docker,
        images: list[str], registry: RegistryServer) -> None:
    path, repository = _repository(registry)
    tags = (f"{repository}:1.0", f"{repository}:latest")
    build_run = await prepare()
    images.extend([*tags, built_image(build_run.run_id)])
    logs = Logs()
    took, outcome = await _build(docker, build_run, _build_step(*tags), logs)
    print(f"\nbuild + push of a small image: {took:.2f} s")  # a figure, never asserted
    assert outcome.exit_code == 0, logs.lines
    [pushed] = outcome.pushed
    digest = registry.manifest_digest(path, "1.0")
    assert (pushed.name, pushed.repository, pushed.tags, pushed.digest) == (
        "web", repository, tags, digest)
    assert registry.manifest_digest(path, "latest") == digest
    assert any(text == f"pushed {repository}@{digest} as {', '.join(tags)}"
               for text in logs.texts("stdout")), logs.lines
    # compact: in each push, a layer's line only when its status changes, not at each tick
    pushes = "\n".join(logs.texts("stdout")).split("\npushing ")[1:]
    assert len(pushes) == len(tags), logs.lines
    for push in pushes:
        layer_lines = [t for t in push.splitlines() if re.fullmatch(r"[0-9a-f]{12}: .+", t)]
        assert layer_lines and len(layer_lines) == len(set(layer_lines)), layer_lines

    images.append(pushed.reference)
    await _remove_image(client, pushed.reference)
    assert not await _is_here(client, pushed.reference)
    other = await prepare()
    use = step_of("use", "cat /greeting", image=pushed.reference)
    logs = Logs()
    outcome = await docker.run_step(other, job_of("deploy", use), use, {}, logs)
    assert outcome.exit_code == 0, logs.lines
    assert logs.texts("stdout")[-1] == "hello from args"


async def test_two_builds_pushing_one_tag_at_once_each_push_their_own_image(
        docker: DockerExecutor, prepare: Prepare, images: list[str],
        registry: RegistryServer) -> None:
    path, repository = _repository(registry)
    runs = [await prepare(), await prepare()]
    steps = [step_of("image", build=BuildSpec(args={"GREETING": greeting}, target="runtime",
                                              tags=(f"{repository}:latest",
                                                    f"{repository}:{greeting}"),
                                              labels=MINE, push=True))
             for greeting in ("one", "two")]
    images.extend([f"{repository}:latest", f"{repository}:one", f"{repository}:two",
                   *(built_image(run.run_id) for run in runs)])
    logs = [Logs(), Logs()]
    outcomes = await asyncio.gather(*(
        docker.run_step(run, job_of("build", step), step, {}, log)
        for run, step, log in zip(runs, steps, logs, strict=True)))
    for outcome, greeting, log in zip(outcomes, ("one", "two"), logs, strict=True):
        assert outcome.exit_code == 0, log.lines
        [pushed] = outcome.pushed
        assert pushed.digest == registry.manifest_digest(path, greeting)
    assert outcomes[0].pushed[0].digest != outcomes[1].pushed[0].digest
    assert registry.manifest_digest(path, "latest") in {o.pushed[0].digest for o in outcomes}


async def test_a_build_pushes_and_pulls_with_the_registrys_login(
        docker: DockerExecutor, prepare: Prepare, client: aiodocker.Docker,
        images: list[str], auth_registry: RegistryServer) -> None:
    assert auth_registry.auth is not None
    registries = {auth_registry.host: auth_registry.auth}
    path, repository = _repository(auth_registry)
    build_run = await prepare()
    images.extend([f"{repository}:1.0", built_image(build_run.run_id)])
    logs = Logs()
    _, outcome = await _build(docker, build_run, _build_step(f"{repository}:1.0"), logs,
                              registries)
    assert outcome.exit_code == 0, logs.lines
    [pushed] = outcome.pushed
    assert pushed.digest == auth_registry.manifest_digest(path, "1.0")
    assert f"pushing {repository}:1.0 to {auth_registry.host} as {auth_registry.username}" in (
        logs.texts("stdout"))
    _no_secret_in(logs, AUTH_PASSWORD)

    images.append(pushed.reference)
    await _remove_image(client, pushed.reference)
    other = await prepare()
    use = step_of("use", "cat /greeting", image=pushed.reference)
    job = job_of("deploy", use)
    with pytest.raises(ExecutorError, match=re.escape(
            f"from registry {auth_registry.host} failed")) as refused:
        await docker.run_step(other, job, use, {}, Logs())  # no login: refused
    assert "no login for" in str(refused.value)
    logs = Logs()
    outcome = await docker.run_step(other, job, use, {}, logs, registries)
    assert outcome.exit_code == 0, logs.lines
    assert logs.texts("stdout")[-1] == "hello from args"

    # a service's image is pulled with the login too
    await _remove_image(client, pushed.reference)
    service = ServiceSpec(name="app", image=pushed.reference, command=("sleep", "300"))
    with_service = job_of("smoke", step_of("look", "true"), services=(service,))
    try:
        await docker.start_services(other, with_service, Logs(), registries=registries)
    finally:
        await docker.stop_services(other, with_service)
    assert await _is_here(client, pushed.reference)


async def test_a_builds_base_image_is_pulled_with_its_registrys_login(
        docker: DockerExecutor, prepare: Prepare, client: aiodocker.Docker, source: Path,
        images: list[str], auth_registry: RegistryServer) -> None:
    assert auth_registry.auth is not None
    registries = {auth_registry.host: auth_registry.auth}
    _, repository = _repository(auth_registry)
    base_run = await prepare()
    images.extend([f"{repository}:base", built_image(base_run.run_id)])
    _, outcome = await _build(docker, base_run, _build_step(f"{repository}:base"), Logs(),
                              registries)
    [base] = outcome.pushed
    images.append(base.reference)
    await _remove_image(client, base.reference)  # so that the build pulls it
    (source / "Dockerfile.app").write_text(
        f"FROM {base.reference}\nRUN echo \"app on $(cat /greeting)\" > /app\n")
    run = await prepare()
    images.append(built_image(run.run_id))
    app = step_of("app", build=BuildSpec(dockerfile="Dockerfile.app", labels=MINE))
    logs = Logs()
    outcome = await docker.run_step(run, job_of("app", app), app, {}, logs)  # no login
    assert outcome.exit_code == 1
    assert any(auth_registry.host in text for text in logs.texts("stderr")), logs.lines
    logs = Logs()
    outcome = await docker.run_step(run, job_of("app", app), app, {}, logs, registries)
    assert outcome.exit_code == 0, logs.lines
    use = step_of("use", "cat /app", image=BUILT_IMAGE)
    assert (await docker.run_step(run, job_of("use", use), use, {}, logs)).exit_code == 0
    assert logs.texts("stdout")[-1] == "app on hello from args"
    _no_secret_in(logs, AUTH_PASSWORD)


async def test_a_push_refused_fails_the_step_naming_the_registry_not_the_password(
        docker: DockerExecutor, prepare: Prepare, images: list[str],
        auth_registry: RegistryServer) -> None:
    _, repository = _repository(auth_registry)
    run = await prepare()
    images.extend([f"{repository}:1.0", built_image(run.run_id)])
    wrong = RegistryAuth(auth_registry.username, f"wrong-{uuid.uuid4().hex}")
    for registries in ({auth_registry.host: wrong}, NO_REGISTRIES):
        logs = Logs()
        _, outcome = await _build(docker, run, _build_step(f"{repository}:1.0"), logs,
                                  registries)
        assert outcome.exit_code == 1, logs.lines
        assert outcome.pushed == ()
        [failure] = logs.texts("stderr")
        assert failure.startswith(f"pushing {repository}:1.0 to registry {auth_registry.host}"
                                  " failed: "), failure
        assert ("was refused" if registries else "no login for") in failure
        _no_secret_in(logs, wrong.password, AUTH_PASSWORD)


async def test_a_promote_keeps_the_digest_in_another_repository_and_tag(
        docker: DockerExecutor, prepare: Prepare, client: aiodocker.Docker,
        images: list[str], auth_registry: RegistryServer) -> None:
    assert auth_registry.auth is not None
    registries = {auth_registry.host: auth_registry.auth}
    _, repository = _repository(auth_registry)
    build_run = await prepare()
    images.extend([f"{repository}:rc", built_image(build_run.run_id)])
    _, outcome = await _build(docker, build_run, _build_step(f"{repository}:rc"), Logs(),
                              registries)
    [built] = outcome.pushed
    images.append(built.reference)
    await _remove_image(client, built.reference)  # so that the promote pulls it

    path, target = _repository(auth_registry)
    tags = (f"{target}:prod", f"{target}:2024.1")
    images.extend(tags)
    run = await prepare()
    step = step_of("release", promote=PromoteSpec(image=built.reference, tags=tags,
                                                  name="web-prod"))
    logs = Logs()
    outcome = await docker.run_step(run, job_of("release", step), step, {}, logs, registries)
    assert outcome.exit_code == 0, logs.lines
    [promoted] = outcome.pushed
    assert (promoted.name, promoted.repository, promoted.tags, promoted.digest) == (
        "web-prod", target, tags, built.digest)
    assert auth_registry.manifest_digest(path, "prod") == built.digest
    assert auth_registry.manifest_digest(path, "2024.1") == built.digest
    assert f"digest kept: {built.digest}" in logs.texts("stdout")
    assert f"pulling {built.reference} from {auth_registry.host}" in logs.texts("stdout")
    _no_secret_in(logs, AUTH_PASSWORD)


async def test_a_promote_of_an_image_it_cannot_pull_fails_naming_the_registry(
        docker: DockerExecutor, prepare: Prepare, auth_registry: RegistryServer) -> None:
    missing = f"{auth_registry.host}/cyclone-test/none-{uuid.uuid4().hex[:8]}@sha256:{'0' * 64}"
    run = await prepare()
    step = step_of("release", promote=PromoteSpec(
        image=missing, tags=(f"{auth_registry.host}/cyclone-test/never:1",)))
    logs = Logs()
    assert auth_registry.auth is not None
    outcome = await docker.run_step(run, job_of("release", step), step, {}, logs,
                                    {auth_registry.host: auth_registry.auth})
    assert outcome.exit_code == 1
    [failure] = logs.texts("stderr")
    assert failure.startswith(f"pulling {missing} from registry {auth_registry.host} failed: ")


async def test_a_build_tag_docker_would_refuse_fails_the_step_before_building(
        docker: DockerExecutor, prepare: Prepare) -> None:
    run = await prepare()
    logs = Logs()
    _, outcome = await _build(docker, run, _build_step("reg:5000/app:${CYCLONE_TAG}"), logs)
    assert outcome.exit_code == 1
    assert logs.texts("stderr") == [
        "invalid image reference 'reg:5000/app:${CYCLONE_TAG}': bad tag '${CYCLONE_TAG}'"]
    assert not any("Step 1/" in text for text in logs.texts())
