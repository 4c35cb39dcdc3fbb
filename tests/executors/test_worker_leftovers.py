"""What a crashed worker left: an executor opened for a worker id labels everything with
it, and the worker's next incarnation finds and removes exactly that
(``leftover_runs(worker=...)``, ``destroy_run(run, worker=...)``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest

from shared.adapters.executor import DockerExecutor, ShellExecutor
from shared.adapters.executor.docker_convert import (
    LABEL_RUN,
    LABEL_WORKER,
    network_name,
    volume_name,
)
from shared.pipeline.plan import ServiceSpec
from shared.ports.executor import RunContext, StepOutcome
from tests.docker_support import TEST_IMAGE, cyclone_leftovers_async
from tests.executors.conftest import Logs, job_of, step_of
from tests.support import HANG_S, eventually

LONG = step_of("long", "echo started", "sleep 300")
# A service, so that the run has a network on the worker too (jobs without one use none)
IDLE = ServiceSpec(name="idle", image=TEST_IMAGE, command=("sleep", "300"))


async def _labelled(run_id: str, worker: str) -> list[str]:
    """``"kind name"`` of the containers, networks and volumes of ``run_id`` labelled
    with ``worker``."""
    selector = {"label": [f"{LABEL_RUN}={run_id}", f"{LABEL_WORKER}={worker}"]}
    async with aiodocker.Docker() as docker:
        found = [f"container {c['Names'][0].lstrip('/')}" for c in
                 await docker.containers.list(all=True, filters=json.dumps(selector))]
        found += [f"network {n['Name']}" for n in await docker.networks.list(filters=selector)]
        volumes = await docker.volumes.list(filters=selector)  # type: ignore[no-untyped-call]
        found += [f"volume {v['Name']}" for v in volumes["Volumes"] or []]
    return sorted(found)


@pytest.fixture
def worker_id() -> str:
    return f"wtest-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def crashed(worker_id: str, source: Path,
                  docker_ready: None) -> AsyncIterator[tuple[RunContext, asyncio.Task[StepOutcome]]]:
    """A run prepared by an executor of ``worker_id`` whose step is still running, the
    executor gone without cleaning up (as after a SIGKILL of its worker)."""
    executor = await DockerExecutor.connect(worker=worker_id)
    ctx = RunContext(run_id=f"t{uuid.uuid4().hex[:16]}", source_dir=str(source))
    await executor.prepare_run(ctx)
    logs = Logs()
    job = job_of("build", LONG, services=(IDLE,))
    await executor.start_services(ctx, job, Logs())
    step = asyncio.create_task(executor.run_step(ctx, job, LONG, {}, logs))
    try:
        await eventually(lambda: "started" in logs.texts(), what="the step runs")
        yield ctx, step
    finally:
        step.cancel()
        await asyncio.gather(step, return_exceptions=True)
        await executor.destroy_run(ctx.run_id)
        await executor.close()


async def test_the_next_incarnation_of_a_worker_removes_what_it_left(
        worker_id: str, crashed: tuple[RunContext, asyncio.Task[StepOutcome]]) -> None:
    ctx, step = crashed
    left = await _labelled(ctx.run_id, worker_id)
    assert [k for k in left if k.startswith("container")], left  # the step's container
    assert f"network {network_name(ctx.run_id, worker_id)}" in left
    assert f"volume {volume_name(ctx.run_id, worker_id)}" in left
    async with aiodocker.Docker() as client:
        again = DockerExecutor(client, worker=worker_id)
        other = DockerExecutor(client, worker=f"{worker_id}-other")
        assert ctx.run_id in await again.leftover_runs(worker=worker_id)
        assert ctx.run_id not in await other.leftover_runs(worker=f"{worker_id}-other")
        await again.destroy_run(ctx.run_id, worker=worker_id)
        await again.destroy_run(ctx.run_id, worker=worker_id)  # safe twice
        assert ctx.run_id not in await again.leftover_runs(worker=worker_id)
    assert await cyclone_leftovers_async(ctx.run_id) == []
    outcome = await asyncio.wait_for(step, HANG_S)  # its container was killed (not slept 300 s)
    assert outcome.exit_code != 0


async def test_only_the_workers_own_part_goes_when_another_worker_uses_the_run(
        worker_id: str, crashed: tuple[RunContext, asyncio.Task[StepOutcome]]) -> None:
    # Two workers on one Docker host: the second one's attempt runs in a network and a
    # workspace of its own (one name each would race: Docker may create two networks).
    ctx, _ = crashed
    second = await DockerExecutor.connect(worker=f"{worker_id}-2")
    try:
        await second.prepare_run(ctx)
        logs = Logs()
        job = job_of("next", LONG, services=(IDLE,))
        await second.start_services(ctx, job, Logs())
        step = asyncio.create_task(second.run_step(ctx, job, LONG, {}, logs))
        await eventually(lambda: "started" in logs.texts(), what="2nd step runs")
        again = await DockerExecutor.connect(worker=worker_id)
        try:
            await again.destroy_run(ctx.run_id, worker=worker_id)
        finally:
            await again.close()
        # The crashed worker's container is gone; what the other worker uses stays.
        assert [k for k in await _labelled(ctx.run_id, worker_id)
                if k.startswith("container")] == []
        assert not step.done()
        left = await cyclone_leftovers_async(ctx.run_id)
        assert f"network {network_name(ctx.run_id, f'{worker_id}-2')}" in left
        assert f"volume {volume_name(ctx.run_id, f'{worker_id}-2')}" in left
        assert f"network {network_name(ctx.run_id, worker_id)}" not in left
        assert [k for k in await _labelled(ctx.run_id, f"{worker_id}-2")
                if k.startswith("container")], left
        step.cancel()
        await asyncio.gather(step, return_exceptions=True)
    finally:
        await second.destroy_run(ctx.run_id)
        await second.close()
    assert await cyclone_leftovers_async(ctx.run_id) == []


async def test_the_shell_executor_has_no_worker_leftovers(tmp_path: Path, source: Path) -> None:
    shell = ShellExecutor(tmp_path / "runs")
    ctx = RunContext(run_id=f"t{uuid.uuid4().hex[:16]}", source_dir=str(source))
    await shell.prepare_run(ctx)
    try:
        assert await shell.leftover_runs(worker="w1") == set()
        await shell.destroy_run(ctx.run_id, worker="w1")
        assert ctx.run_id in await shell.leftover_runs()  # a worker's reap leaves runs be
    finally:
        await shell.destroy_run(ctx.run_id)
        await shell.close()
