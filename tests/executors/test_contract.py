"""The executor contract (shared/ports/executor.py), run against Docker and the host shell."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from shared.adapters.executor import DockerExecutor, ShellExecutor
from shared.errors import ExecutorError
from shared.ports.executor import Executor, RunContext
from tests.docker_support import AT_THE_GATE, cyclone_leftovers_async
from tests.executors.conftest import Logs, job_of, step_of
from tests.support import HANG_S, eventually

MATRIX_JOB = "test (python=3.11, os=linux)"  # a name as matrix expansion makes them
# Steps that would sleep 300 s are killed: a deadline below that (and far above any
# machine's kill time) tells a kill from a wait without timing the kill.
SHORTER_THAN_THE_SLEEP = 200.0


async def test_a_passing_step_echoes_each_command_before_its_output(
        executor: Executor, run: RunContext) -> None:
    logs = Logs()
    step = step_of("greet", "echo hello", "echo world")
    outcome = await executor.run_step(run, job_of("build", step), step, {}, logs)
    assert outcome.exit_code == 0
    assert not outcome.timed_out
    assert logs.texts("stdout") == ["+ echo hello", "hello", "+ echo world", "world"]
    stamps = [ts for _, ts, _ in logs.lines]
    assert stamps == sorted(stamps)


async def test_commands_are_echoed_verbatim(executor: Executor, run: RunContext) -> None:
    logs = Logs()
    command = """echo 'it'"'"'s' "$HOME" \\n done"""
    step = step_of("quote", command)
    await executor.run_step(run, job_of("build", step), step, {}, logs)
    assert logs.texts()[0] == f"+ {command}"


async def test_the_exit_code_of_a_failing_step_is_reported(
        executor: Executor, run: RunContext) -> None:
    step = step_of("fail", "exit 7")
    outcome = await executor.run_step(run, job_of("build", step), step, {}, Logs())
    assert outcome.exit_code == 7


async def test_the_first_failing_command_fails_the_step_and_stops_it(
        executor: Executor, run: RunContext) -> None:
    logs = Logs()
    step = step_of("stop", "echo before", "false", "echo after")
    outcome = await executor.run_step(run, job_of("build", step), step, {}, logs)
    assert outcome.exit_code == 1
    assert logs.texts() == ["+ echo before", "before", "+ false"]


async def test_env_is_visible_and_the_workspace_is_the_working_directory(
        executor: Executor, run: RunContext) -> None:
    logs = Logs()
    env = {"GREETING": "hi there", "TRICKY": "a'b\"c $x"}
    step = step_of("env", 'echo "[$GREETING] [$TRICKY]"', 'test "$(pwd)" = "$CYCLONE_WORKSPACE"')
    outcome = await executor.run_step(run, job_of("build", step), step, env, logs)
    assert outcome.exit_code == 0, logs.lines
    assert "[hi there] [a'b\"c $x]" in logs.texts("stdout")


async def test_the_workspace_holds_the_source_and_is_shared_by_steps(
        executor: Executor, run: RunContext) -> None:
    logs = Logs()
    write = step_of("write", "cat hello.txt sub/nested.txt", "echo made > made.txt")
    read = step_of("read (again)", "cat made.txt")
    first = await executor.run_step(run, job_of(MATRIX_JOB, write), write, {}, logs)
    second = await executor.run_step(run, job_of("other job", read), read, {}, logs)
    assert (first.exit_code, second.exit_code) == (0, 0), logs.lines
    assert logs.texts("stdout") == ["+ cat hello.txt sub/nested.txt", "hello from the source",
                                    "nested", "+ echo made > made.txt", "+ cat made.txt", "made"]


async def test_preparing_twice_keeps_what_steps_changed(
        executor: Executor, run: RunContext) -> None:
    change = step_of("change", "echo changed > hello.txt")
    await executor.run_step(run, job_of("build", change), change, {}, Logs())
    await executor.prepare_run(run)
    logs = Logs()
    read = step_of("read", "cat hello.txt")
    await executor.run_step(run, job_of("build", read), read, {}, logs)
    assert logs.texts()[-1] == "changed"


async def test_stderr_lines_are_tagged_and_a_last_line_without_newline_arrives(
        executor: Executor, run: RunContext) -> None:
    logs = Logs()
    step = step_of("streams", "echo out", "echo err >&2", "printf 'no newline'")
    await executor.run_step(run, job_of("build", step), step, {}, logs)
    assert ("stderr", "err") in [(s, t) for s, _, t in logs.lines]
    assert ("stdout", "out") in [(s, t) for s, _, t in logs.lines]
    assert logs.lines[-1][0::2] == ("stdout", "no newline")


async def test_lines_arrive_while_the_step_is_still_running(
        executor: Executor, run: RunContext) -> None:
    logs = Logs()
    # The step cannot go past its gate until the test opens it (a step of another job,
    # in the shared workspace): it is still running when its first line is checked,
    # however slowly a loaded machine starts it.
    step = step_of("live", "echo first", AT_THE_GATE, "echo second")
    task = asyncio.create_task(executor.run_step(run, job_of("build", step), step, {}, logs))
    try:
        await eventually(lambda: "first" in logs.texts(), what="the first line")
        assert not task.done()
        assert "second" not in logs.texts()
        opener = step_of("open", "touch gate")
        opened = await executor.run_step(run, job_of("opener", opener), opener, {}, Logs())
        assert opened.exit_code == 0
        outcome = await asyncio.wait_for(task, HANG_S)
    finally:
        task.cancel()  # a failed check leaves the step at its gate: it is killed
        await asyncio.gather(task, return_exceptions=True)
    assert outcome.exit_code == 0
    assert logs.texts() == ["+ echo first", "first", f"+ {AT_THE_GATE}", "+ echo second",
                            "second"]


async def test_a_step_past_its_timeout_is_killed(executor: Executor, run: RunContext) -> None:
    logs = Logs()
    step = step_of("slow", "echo started", "sleep 300", "echo finished", timeout_s=1)
    # Killed, not waited for: it returns long before its sleep would have ended.
    async with asyncio.timeout(SHORTER_THAN_THE_SLEEP):
        outcome = await executor.run_step(run, job_of("build", step), step, {}, logs)
    assert outcome.timed_out
    assert outcome.exit_code is None
    assert "started" in logs.texts()
    assert "finished" not in logs.texts()


async def test_cancelling_a_step_kills_it_before_the_cancel_propagates(
        executor: Executor, run: RunContext) -> None:
    logs = Logs()
    step = step_of("long", "sleep 300 & echo $! > sleeper.pid", "echo started", "wait")
    task = asyncio.create_task(executor.run_step(run, job_of("build", step), step, {}, logs))
    await eventually(lambda: "started" in logs.texts(), what="the step to start")
    task.cancel()
    # The sleeper is killed, not waited for: the cancel comes through long before it
    # would have ended, and what the step ran is gone by the time it does.
    async with asyncio.timeout(SHORTER_THAN_THE_SLEEP):
        with pytest.raises(asyncio.CancelledError):
            await task
    if isinstance(executor, DockerExecutor):
        containers = [r for r in await cyclone_leftovers_async(run.run_id)
                      if r.startswith("container")]
        assert containers == []
    else:
        assert isinstance(executor, ShellExecutor)
        pid = int((executor.workspace(run.run_id) / "sleeper.pid").read_text())
        # signalled before the cancel propagated; the kernel may take a moment to reap it
        await eventually(lambda: not _alive(pid), what=f"pid {pid} to end")


async def test_destroy_removes_everything_and_is_safe_twice(
        executor: Executor, source: Path) -> None:
    ctx = RunContext(run_id=f"t{uuid.uuid4().hex[:16]}", source_dir=str(source))
    await executor.prepare_run(ctx)
    step = step_of("write", "echo x > file.txt")
    await executor.run_step(ctx, job_of("build", step), step, {}, Logs())
    assert ctx.run_id in await executor.leftover_runs()
    await executor.destroy_run(ctx.run_id)
    await executor.destroy_run(ctx.run_id)
    assert ctx.run_id not in await executor.leftover_runs()
    await _assert_nothing_left(executor, ctx.run_id)


async def test_destroy_after_a_failed_prepare(executor: Executor, tmp_path: Path) -> None:
    ctx = RunContext(run_id=f"t{uuid.uuid4().hex[:16]}", source_dir=str(tmp_path / "missing"))
    with pytest.raises(ExecutorError, match="missing"):
        await executor.prepare_run(ctx)
    await executor.destroy_run(ctx.run_id)
    await executor.destroy_run(ctx.run_id)
    assert ctx.run_id not in await executor.leftover_runs()
    await _assert_nothing_left(executor, ctx.run_id)


async def test_a_run_without_source_gets_an_empty_workspace(executor: Executor) -> None:
    ctx = RunContext(run_id=f"t{uuid.uuid4().hex[:16]}")
    await executor.prepare_run(ctx)
    try:
        logs = Logs()
        step = step_of("list", "ls -A | wc -l")
        outcome = await executor.run_step(ctx, job_of("build", step), step, {}, logs)
        assert outcome.exit_code == 0
        assert logs.texts()[-1].strip() == "0"
    finally:
        await executor.destroy_run(ctx.run_id)


async def test_an_unsafe_run_id_is_refused(executor: Executor) -> None:
    with pytest.raises(ExecutorError, match="invalid run id"):
        await executor.prepare_run(RunContext(run_id="../escape"))


async def _assert_nothing_left(executor: Executor, run_id: str) -> None:
    if isinstance(executor, DockerExecutor):
        assert await cyclone_leftovers_async(run_id) == []
    else:
        assert isinstance(executor, ShellExecutor)
        assert not (executor.root / run_id).exists()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
