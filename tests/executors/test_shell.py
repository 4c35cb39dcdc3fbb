"""What only the shell executor does: no services or builds, the host's env, process groups."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.adapters.executor import ShellExecutor
from shared.errors import ExecutorError
from shared.pipeline.plan import BuildSpec, ServiceSpec
from shared.ports.executor import RunContext
from tests.executors.conftest import Logs, job_of, step_of
from tests.executors.test_contract import _alive
from tests.support import eventually


@pytest.fixture
async def shell(tmp_path: Path) -> AsyncIterator[ShellExecutor]:
    executor = ShellExecutor(tmp_path / "runs")
    try:
        yield executor
    finally:
        await executor.close()


@pytest.fixture
async def run(shell: ShellExecutor, source: Path) -> AsyncIterator[RunContext]:
    ctx = RunContext(run_id=f"t{uuid.uuid4().hex[:16]}", source_dir=str(source))
    await shell.prepare_run(ctx)
    try:
        yield ctx
    finally:
        await shell.destroy_run(ctx.run_id)


async def test_services_are_refused_with_a_clear_reason(
        shell: ShellExecutor, run: RunContext) -> None:
    job = job_of("integration", step_of("t", "true"),
                 services=(ServiceSpec(name="db", image="postgres"),
                           ServiceSpec(name="cache", image="redis")))
    with pytest.raises(ExecutorError,
                       match=r"cannot run services \(job integration needs: db, cache\)"):
        await shell.start_services(run, job, Logs())
    assert not shell.supports_services


async def test_image_builds_are_refused_with_a_clear_reason(
        shell: ShellExecutor, run: RunContext) -> None:
    step = step_of("image", build=BuildSpec())
    with pytest.raises(ExecutorError, match="cannot build images"):
        await shell.run_step(run, job_of("build", step), step, {}, Logs())


async def test_only_path_and_home_come_from_the_host(
        shell: ShellExecutor, run: RunContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYCLONE_TEST_HOST_SECRET", "leaked")
    logs = Logs()
    step = step_of("env", 'echo "[$CYCLONE_TEST_HOST_SECRET]"', 'test -n "$PATH"')
    outcome = await shell.run_step(run, job_of("build", step), step, {}, logs)
    assert outcome.exit_code == 0
    assert "[]" in logs.texts()


async def test_what_a_step_leaves_running_ends_with_it(
        shell: ShellExecutor, run: RunContext) -> None:
    step = step_of("bg", "sleep 300 > /dev/null 2>&1 & echo $! > bg.pid")
    outcome = await shell.run_step(run, job_of("build", step), step, {}, Logs())
    assert outcome.exit_code == 0
    pid = int((shell.workspace(run.run_id) / "bg.pid").read_text())
    # killed with the step (the deadline is far below the 300 s it would sleep)
    await eventually(lambda: not _alive(pid), what=f"pid {pid} to end")


async def test_the_ignored_image_is_warned_about_once_per_run(
        shell: ShellExecutor, run: RunContext, caplog: pytest.LogCaptureFixture) -> None:
    step = step_of("one", "true", image="golang:1.22")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            await shell.run_step(run, job_of("build", step), step, {}, Logs())
    warnings = [r for r in caplog.records if "ignores step images" in r.getMessage()]
    assert len(warnings) == 1


async def test_symlinks_in_the_source_stay_links(
        shell: ShellExecutor, source: Path) -> None:
    (source / "link").symlink_to("hello.txt")
    ctx = RunContext(run_id=f"t{uuid.uuid4().hex[:16]}", source_dir=str(source))
    await shell.prepare_run(ctx)
    try:
        assert (shell.workspace(ctx.run_id) / "link").readlink() == Path("hello.txt")
    finally:
        await shell.destroy_run(ctx.run_id)

