"""Every line a step prints is stored, in order, however slow the log pipeline behind it
is; and the per-step log limit says what it cut, in the log and in the events.

The slow pipeline is the real file log store made slow (each append waits): a Docker
step then prints faster than its lines are stored, which is the case that used to lose
a step's tail (Docker ends an attach stream ~10 s after the container exits, read or not).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from cyclone.embedded import Embedded
from services.api.commands import request_run
from shared import events as ev
from shared.config import Settings
from shared.events import decode, run_stream
from shared.ports.logstore import LogLine, LogStore
from shared.projections.runs import RunView
from tests.docker_support import TEST_IMAGE, docker_ready
from tests.support import eventually

__all__ = ["docker_ready"]

MILLION = 1_000_000


class SlowAppends:
    """The runtime's own file log store, with every append held up for ``delay_s``."""

    def __init__(self, inner: LogStore, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s

    async def append(self, run_id: str, lines: Sequence[LogLine], batch_id: str) -> int:
        await asyncio.sleep(self.delay_s)
        return await self.inner.append(run_id, lines, batch_id)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def start(tmp_path: Path, **env: str) -> Embedded:
    settings = Settings.from_env({"CYCLONE_HOME": str(tmp_path / "home"), **env})
    return await Embedded.start(settings, own_all_runs=True)


async def run_to_end(runtime: Embedded, pipeline: str, tmp_path: Path,
                     timeout: float = 60) -> RunView:
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    run_id = await request_run(runtime.store, project="p", trigger="manual", branch="main",
                               commit="", pipeline_file=".cyclone.yml", pipeline=pipeline,
                               source=str(source))
    runs = runtime.readmodel.runs
    await eventually(lambda: run_id in runs and runs[run_id].done, timeout=timeout,
                     interval=0.2, what="the run's end")
    return runs[run_id]


async def stored_texts(runtime: Embedded, run: RunView) -> list[str]:
    await eventually(lambda: _count_reached(runtime, run), timeout=120, interval=0.2,
                     what=f"{run.log_lines} lines stored")
    return [s.line.text async for s in runtime.logs.read(run.id)]


async def _count_reached(runtime: Embedded, run: RunView) -> bool:
    return await runtime.logs.count(run.id) >= run.log_lines


@pytest.fixture
async def slow_docker_runtime(tmp_path: Path, docker_ready: None) -> AsyncIterator[Embedded]:
    runtime = await start(tmp_path, CYCLONE_EXECUTOR="docker")
    # 500 lines a batch every 20 ms at most: ~25,000 lines/s, far slower than `seq`
    runtime.logserver.logs = SlowAppends(runtime.logs, 0.02)  # type: ignore[assignment]
    try:
        yield runtime
    finally:
        await runtime.stop()


async def test_a_million_lines_from_a_docker_step_are_all_stored_in_order(
    slow_docker_runtime: Embedded, tmp_path: Path,
) -> None:
    run = await run_to_end(slow_docker_runtime, f"""
jobs:
  print:
    image: {TEST_IMAGE}
    steps:
      - name: lines
        run: ["seq 1 {MILLION}"]
""", tmp_path, timeout=600)
    assert run.status == "success", run.reason
    assert run.log_lines == MILLION + 1  # the command's echo, then every number
    texts = await stored_texts(slow_docker_runtime, run)
    assert texts[0] == f"+ seq 1 {MILLION}"
    numbers = texts[1:]
    assert len(numbers) == MILLION
    # compared in one go: a million-item assertion diff would be unreadable
    wrong = next((i for i, text in enumerate(numbers, 1) if text != str(i)), None)
    assert wrong is None, f"line {wrong} is {numbers[wrong - 1]!r}"


async def test_a_step_past_the_log_limit_is_cut_and_says_so(tmp_path: Path) -> None:
    runtime = await start(tmp_path, CYCLONE_EXECUTOR="shell",
                          CYCLONE_STEP_LOG_MAX_LINES="1000")
    try:
        run = await run_to_end(runtime, """
jobs:
  chatty:
    image: none
    steps:
      - name: lines
        run: ["seq 1 5000", "echo after"]
      - name: next
        run: ["echo next step logs again"]
""", tmp_path)
        texts = await stored_texts(runtime, run)
        events = [decode(r) for r in await runtime.store.read(run_stream(run.id))]
    finally:
        await runtime.stop()
    assert run.status == "success"  # a cut log never fails a step
    # "+ seq 1 5000", then numbers up to the limit, then the notice, then the next step
    assert texts[:3] == ["+ seq 1 5000", "1", "2"]
    assert texts[999] == "999"
    assert texts[1000].startswith("cyclone: log limit reached (1000 lines")
    assert texts[1001:] == ["+ echo next step logs again", "next step logs again"]
    truncated = [e for e in events if isinstance(e, ev.StepLogTruncated)]
    assert len(truncated) == 1
    cut = truncated[0]
    # kept: the echo of the command and 999 numbers; dropped: 4001 numbers, "+ echo after"
    # and "after"
    assert (cut.job, cut.step, cut.kept_lines, cut.dropped_lines) == ("chatty", "lines",
                                                                       1000, 4003)
    step = run.jobs[0].steps[0]
    assert step.log_truncated.startswith("log truncated after 1000 lines")
    assert run.jobs[0].steps[1].log_truncated == ""
    finished = [e for e in events if isinstance(e, ev.JobFinished)]
    assert finished[0].log_lines == len(texts) == 1003
