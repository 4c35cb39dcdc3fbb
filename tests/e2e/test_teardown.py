"""Nothing of a run is left on the Docker host, however it ends: success, failure, a
timeout, a cancel. The run exercises everything the executor makes: a job with a
service (the run's network, the service, a sandbox), a job of several steps (a sandbox
on the default bridge), a one-step job (no sandbox), and the workspace volume, whose
containers are removed in the background."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cyclone.embedded import Embedded
from services.api.commands import request_cancel, request_run
from shared.config import Settings
from shared.projections.runs import RunView
from tests.docker_support import TEST_IMAGE, cyclone_leftovers_async, docker_ready
from tests.support import eventually

__all__ = ["docker_ready"]


def pipeline(last_step: str, timeout: str = "") -> str:
    return f"""
jobs:
  with-service:
    image: {TEST_IMAGE}
    services:
      web: {{image: {TEST_IMAGE}, command: "sh -c 'while :; do sleep 1; done'"}}
    steps:
      - run: ["ping -c 1 web >/dev/null || true"]
  several-steps:
    image: {TEST_IMAGE}
    steps:
      - run: ["echo one > one"]
      - run: ["cat one"]
  last:
    image: {TEST_IMAGE}
    needs: [with-service, several-steps]
    steps:
      - name: last
        {timeout}
        run: ["{last_step}"]
"""


@pytest.fixture
async def runtime(tmp_path: Path, docker_ready: None) -> AsyncIterator[Embedded]:
    settings = Settings.from_env({"CYCLONE_HOME": str(tmp_path / "home"),
                                  "CYCLONE_EXECUTOR": "docker"})
    started = await Embedded.start(settings, own_all_runs=True)
    try:
        yield started
    finally:
        await started.stop()


async def start(runtime: Embedded, tmp_path: Path, text: str) -> str:
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    return await request_run(runtime.store, project="p", trigger="manual", branch="main",
                             commit="", pipeline_file=".cyclone.yml", pipeline=text,
                             source=str(source))


async def ended(runtime: Embedded, run_id: str) -> RunView:
    runs = runtime.readmodel.runs
    await eventually(lambda: run_id in runs and runs[run_id].done, timeout=120,
                     interval=0.1, what="the run's end")
    return runs[run_id]


async def nothing_left(run_id: str) -> None:
    async def clean() -> bool:
        return await cyclone_leftovers_async(run_id) == []

    await eventually(clean, timeout=60, interval=0.2, what=f"nothing left of run {run_id}")


@pytest.mark.parametrize(("last_step", "timeout", "step_status"), [
    ("true", "", "success"),
    ("exit 3", "", "failure"),
    ("sleep 60", "timeout: 1s", "timeout"),
])
async def test_an_ended_run_leaves_nothing_behind(runtime: Embedded, tmp_path: Path,
                                                  last_step: str, timeout: str,
                                                  step_status: str) -> None:
    run_id = await start(runtime, tmp_path, pipeline(last_step, timeout))
    run = await ended(runtime, run_id)
    assert run.status == ("success" if step_status == "success" else "failure"), run.reason
    assert {job.name: job.status for job in run.jobs}["several-steps"] == "success"
    last = run.job("last")
    assert last is not None and last.steps[0].status == step_status
    await nothing_left(run_id)


async def test_a_cancelled_run_leaves_nothing_behind(runtime: Embedded, tmp_path: Path) -> None:
    run_id = await start(runtime, tmp_path, pipeline("echo started; sleep 60"))
    runs = runtime.readmodel.runs

    def last_running() -> bool:
        job = runs[run_id].job("last") if run_id in runs else None
        return job is not None and job.status == "running"

    await eventually(last_running, timeout=120, interval=0.1, what="the last job running")
    await request_cancel(runtime.store, run_id, "test")
    run = await ended(runtime, run_id)
    assert run.status == "cancelled"
    await nothing_left(run_id)
