"""What only the Docker executor does: services, image pulls, image builds, names, labels."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest

from shared.adapters.executor import DockerExecutor
from shared.adapters.executor import docker as docker_module
from shared.adapters.executor.docker_convert import BUILT_IMAGE, built_image
from shared.errors import ExecutorError, ExecutorUnavailable
from shared.pipeline.plan import BuildSpec, ServiceSpec
from shared.pipeline.resources import Resources
from shared.ports.executor import RunContext, StepOutcome
from tests.docker_support import TEST_IMAGE, cyclone_leftovers_async
from tests.executors.conftest import Logs, job_of, step_of
from tests.support import HANG_S, eventually

pytestmark = pytest.mark.usefixtures("docker_ready")

MiB = 1024 * 1024

WEB = ServiceSpec(name="web", image=TEST_IMAGE, env={"GREETING": "hello from web"},
                  command=("sh", "-c", 'echo "$GREETING"; exec httpd -f -p 8080 -h /etc'))


@pytest.fixture
async def docker() -> AsyncIterator[DockerExecutor]:
    executor = await DockerExecutor.connect()
    try:
        yield executor
    finally:
        await executor.close()


@pytest.fixture
async def run(docker: DockerExecutor, source: Path) -> AsyncIterator[RunContext]:
    ctx = RunContext(run_id=f"t{uuid.uuid4().hex[:16]}", source_dir=str(source))
    await docker.prepare_run(ctx)
    try:
        yield ctx
    finally:
        await docker.destroy_run(ctx.run_id)


async def test_a_service_is_reachable_by_name_and_its_output_is_logged(
        docker: DockerExecutor, run: RunContext) -> None:
    step = step_of("fetch", "for i in $(seq 1 50); do wget -q -O - http://web:8080/passwd "
                   "&& exit 0; sleep 0.1; done; exit 1")
    job = job_of("test (db=web)", step, services=(WEB,))
    service_logs, logs = Logs(), Logs()
    await docker.start_services(run, job, service_logs)
    try:
        outcome = await docker.run_step(run, job, step, {}, logs)
        await eventually(lambda: "[web] hello from web" in service_logs.texts(),
                         what="the service's own output")
    finally:
        await docker.stop_services(run, job)
    assert outcome.exit_code == 0, logs.lines
    assert "root:x:0:0:root:/root:/bin/sh" in logs.texts("stdout")
    await eventually(lambda: _no_containers(run), what="the job's containers removed")


async def _no_containers(run: RunContext) -> bool:
    return not [r for r in await cyclone_leftovers_async(run.run_id) if r.startswith("container")]


async def test_a_service_that_exits_at_once_is_an_error_naming_it(
        docker: DockerExecutor, run: RunContext, monkeypatch: pytest.MonkeyPatch) -> None:
    # "at once" is SERVICE_SETTLE_S: on a loaded machine even `exit 3` may take longer
    # (the wait ends when the service exits, so only a hang would take this long)
    monkeypatch.setattr(docker_module, "SERVICE_SETTLE_S", HANG_S)
    broken = ServiceSpec(name="db", image=TEST_IMAGE,
                         command=("sh", "-c", "echo bad config >&2; exit 3"))
    job = job_of("test", step_of("never", "true"), services=(broken,))
    try:
        with pytest.raises(ExecutorError, match=r"service 'db'.*code 3.*bad config"):
            await docker.start_services(run, job, Logs())
    finally:
        await docker.stop_services(run, job)


async def test_a_missing_image_is_an_error_naming_it(
        docker: DockerExecutor, run: RunContext) -> None:
    step = step_of("nope", "true", image="cyclone-test/does-not-exist:1")
    with pytest.raises(ExecutorError, match="'cyclone-test/does-not-exist:1'") as raised:
        await docker.run_step(run, job_of("build", step), step, {}, Logs())
    assert "Traceback" not in str(raised.value)
    await eventually(lambda: _no_containers(run), what="the job's containers removed")


async def test_a_step_past_its_memory_limit_is_out_of_memory_not_a_bare_137(
        docker: DockerExecutor, run: RunContext) -> None:
    # tail keeps the last 64 MiB it read: twice what the job may use
    step = step_of("hog", "head -c 64m /dev/zero | tail -c 64m > /dev/null")
    job = dataclasses.replace(job_of("build", step), resources=Resources(memory=32 * MiB))
    outcome = await docker.run_step(run, job, step, {}, Logs())
    assert outcome.out_of_memory
    assert outcome.exit_code == 137


async def test_a_step_container_is_unprivileged_and_limited(
        docker: DockerExecutor, run: RunContext) -> None:
    step = step_of("look", "cat /proc/self/status", "cat /sys/fs/cgroup/pids/pids.max "
                   "/sys/fs/cgroup/pids.max 2>/dev/null || true")
    limits = Resources(memory=64 * MiB, cpus=0.5, pids=100)
    job = dataclasses.replace(job_of("build", step), resources=limits)
    logs = Logs()
    outcome = await docker.run_step(run, job, step, {}, logs)
    assert outcome == StepOutcome(exit_code=0)
    status = dict(line.split(":\t", 1) for line in logs.texts("stdout") if ":\t" in line)
    assert status["NoNewPrivs"] == "1"
    assert status["CapEff"] != "0000003fffffffff"  # not every capability: not privileged
    assert "100" in logs.texts("stdout")  # the pids limit, as the container sees it


async def test_step_containers_are_named_and_labelled_from_the_run_job_and_step(
        docker: DockerExecutor, run: RunContext) -> None:
    step = step_of("wait (a=1)", "echo started", "sleep 300")  # cancelled once seen
    job = job_of("test (python=3.11, os=linux)", step)
    logs = Logs()
    task = asyncio.create_task(docker.run_step(run, job, step, {}, logs))
    try:
        await eventually(lambda: "started" in logs.texts(), what="the step to start")
        async with aiodocker.Docker() as client:
            selector = {"label": [f"io.cyclone.run={run.run_id}", f"io.cyclone.job={job.name}"]}
            # all: named and labelled is what is checked, running or not
            [container] = await client.containers.list(all=True, filters=json.dumps(selector))
            info = await container.show()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert re.fullmatch(rf"/cyclone-{run.run_id}-test_python_3\.11_os_linux-wait_a_1-[0-9a-f]{{6}}",
                        info["Name"])
    assert info["Config"]["Labels"]["io.cyclone.managed"] == "1"
    assert info["Config"]["Labels"]["io.cyclone.step"] == "wait (a=1)"


async def test_a_build_step_builds_an_image_that_a_later_step_runs(
        docker: DockerExecutor, run: RunContext, source: Path) -> None:
    tag = f"cyclone-test/built-{run.run_id}:1"
    logs = Logs()
    write = step_of("write", "mkdir -p app", "echo 'built with love' > app/greeting.txt",
                    f"printf 'FROM {TEST_IMAGE}\\nCOPY greeting.txt /greeting.txt\\n' "
                    "> app/Containerfile")
    build = step_of("image", build=BuildSpec(context_dir="app", dockerfile="Containerfile",
                                             tag=tag))
    use = step_of("use", "cat /greeting.txt", image=BUILT_IMAGE)
    job = job_of("build", write, build, use)
    try:
        for step in job.steps:
            outcome = await docker.run_step(run, job, step, {}, logs)
            assert outcome.exit_code == 0, logs.lines
        assert any(re.match(r"Step \d/\d : COPY greeting.txt", text)
                   for text in logs.texts("stdout")), logs.lines
        assert logs.texts("stdout")[-1] == "built with love"
        async with aiodocker.Docker() as client:
            await client.images.inspect(tag)  # the user's tag exists too
    finally:
        async with aiodocker.Docker() as client:
            await client.images.delete(tag)
    await docker.destroy_run(run.run_id)
    async with aiodocker.Docker() as client:
        with pytest.raises(aiodocker.DockerError):
            await client.images.inspect(built_image(run.run_id))


async def test_a_failing_build_fails_the_step_with_the_error_logged(
        docker: DockerExecutor, run: RunContext) -> None:
    write = step_of("write", f"printf 'FROM {TEST_IMAGE}\\nRUN exit 5\\n' > Dockerfile")
    build = step_of("image", build=BuildSpec())
    job = job_of("build", write, build)
    logs = Logs()
    await docker.run_step(run, job, write, {}, logs)
    outcome = await docker.run_step(run, job, build, {}, logs)
    assert outcome.exit_code == 1
    assert any("image build failed" in t and "5" in t for t in logs.texts("stderr")), logs.lines


async def test_an_unreachable_daemon_is_unavailable_rather_than_a_hang() -> None:
    # The deadline only tells "fails" from "hangs"; how soon it fails is no test's business.
    async with asyncio.timeout(HANG_S):
        with pytest.raises(ExecutorUnavailable) as raised:
            await DockerExecutor.connect("unix:///nonexistent/docker.sock")
    assert str(raised.value).startswith("cannot reach the Docker daemon: ")
    assert "/nonexistent/docker.sock" in str(raised.value)


async def test_leftover_runs_lists_runs_that_own_resources(
        docker: DockerExecutor, run: RunContext) -> None:
    assert run.run_id in await docker.leftover_runs()

    async def only_the_workspace() -> bool:  # the filling helper is removed in the background
        return await cyclone_leftovers_async(run.run_id) == [f"volume cyclone-{run.run_id}-ws"]

    await eventually(only_the_workspace, what="the run's workspace alone")


async def test_the_last_output_of_a_quickly_exiting_step_is_never_lost(
        docker: DockerExecutor, run: RunContext) -> None:
    # Docker 20.10's live log stream can end before a just-exited container's last frames
    # (seen for a third of such steps when several run at once); the executor re-reads.
    steps = [step_of(f"quick-{i}", "echo one", f"printf 'last {i}'") for i in range(12)]
    job = job_of("quick", *steps)
    sinks = [Logs() for _ in steps]
    outcomes = await asyncio.gather(*(docker.run_step(run, job, step, {}, sink)
                                      for step, sink in zip(steps, sinks, strict=True)))
    assert [o.exit_code for o in outcomes] == [0] * len(steps)
    assert [sink.texts()[-1] for sink in sinks] == [f"last {i}" for i in range(len(steps))]


async def _step_network_modes(run_id: str) -> list[str]:
    async with aiodocker.Docker() as client:
        found = await client.containers.list(all=True, filters=json.dumps(
            {"label": [f"io.cyclone.run={run_id}", "io.cyclone.role=step"]}))
        return [(await c.show())["HostConfig"]["NetworkMode"] for c in found]


async def test_steps_share_the_job_sandbox_network_and_still_reach_services(
        docker: DockerExecutor, run: RunContext) -> None:
    waiting = step_of("wait", "wget -q -O - http://web:8080/passwd | head -n 1", "sleep 300")
    job = job_of("sandboxed", waiting, services=(WEB,))
    logs = Logs()
    await docker.start_services(run, job, Logs())
    try:
        task = asyncio.create_task(docker.run_step(run, job, waiting, {}, logs))
        await eventually(lambda: "root:x:0:0:root:/root:/bin/sh" in logs.texts(),
                         what="the service reached by name from inside the sandbox")
        modes = await _step_network_modes(run.run_id)
        assert len(modes) == 1 and modes[0].startswith("container:")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await docker.stop_services(run, job)


@pytest.fixture(scope="module")
def shell_less_image() -> str:
    """An image with busybox but no /bin/sh, whose entrypoint prints a line (a plugin)."""
    import subprocess
    import tarfile
    import tempfile

    name = "cyclone-test/no-shell:latest"
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "root.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add("/bin/busybox", arcname="bin/busybox")
        subprocess.run(["docker", "import", "-c",
                        'ENTRYPOINT ["/bin/busybox", "echo", "plugin ran"]',
                        str(archive), name], check=True, capture_output=True)
    return name


async def test_a_job_whose_image_has_no_shell_runs_its_steps_on_the_network(
        docker: DockerExecutor, run: RunContext, shell_less_image: str) -> None:
    plugin = step_of("plugin", image=shell_less_image)  # no commands: the entrypoint runs
    fetch = step_of("fetch", "for i in $(seq 1 50); do wget -q -O - http://web:8080/passwd "
                    "&& exit 0; sleep 0.1; done; exit 1")
    job = job_of("plugins", plugin, fetch, services=(WEB,))
    plugin_logs, fetch_logs = Logs(), Logs()
    await docker.start_services(run, job, Logs())
    try:
        assert (await docker.run_step(run, job, plugin, {}, plugin_logs)).exit_code == 0
        assert plugin_logs.texts() == ["plugin ran"]
        assert (await docker.run_step(run, job, fetch, {}, fetch_logs)).exit_code == 0
        assert "root:x:0:0:root:/root:/bin/sh" in fetch_logs.texts()
    finally:
        await docker.stop_services(run, job)
