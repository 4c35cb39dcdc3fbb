"""Step-level behaviour through the embedded services (host shell executor: fast, real
processes): retries, job timeouts, per-step `when`, matrix expansion, parallel jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cyclone.embedded import Embedded
from services.api.commands import request_run
from shared.config import Settings
from shared.projections.runs import RunView
from tests.support import eventually


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Embedded]:
    settings = Settings.from_env({"CYCLONE_HOME": str(tmp_path / "home"),
                                  "CYCLONE_EXECUTOR": "shell",
                                  "CYCLONE_MAX_PARALLEL_JOBS": "3"})
    started = await Embedded.start(settings, own_all_runs=True)
    try:
        yield started
    finally:
        await started.stop()


async def run_to_end(runtime: Embedded, pipeline: str, tmp_path: Path,
                     branch: str = "main") -> RunView:
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    run_id = await request_run(runtime.store, project="p", trigger="push", branch=branch,
                               commit="abc", pipeline_file=".cyclone.yml", pipeline=pipeline,
                               source=str(source))
    runs = runtime.readmodel.runs
    await eventually(lambda: run_id in runs and runs[run_id].done, what="run end")
    return runs[run_id]


async def log_texts(runtime: Embedded, run: RunView) -> list[str]:
    """The ended run's whole log (it may trail the run's end: the log server stores the
    lines, the event manager records the end)."""
    async def complete() -> bool:
        return await runtime.logs.count(run.id) >= run.log_lines

    await eventually(complete, what=f"the {run.log_lines} lines of run {run.id} stored")
    return [s.line.text async for s in runtime.logs.read(run.id)]


async def test_a_flaky_step_is_retried_until_it_passes(runtime: Embedded,
                                                       tmp_path: Path) -> None:
    run = await run_to_end(runtime, """
jobs:
  flaky:
    image: none
    steps:
      - name: third-time-lucky
        retry: 3
        run:
          - echo x >> attempts
          - test "$(wc -l < attempts)" -ge 3
""", tmp_path)
    step = run.jobs[0].steps[0]
    assert (run.status, step.status, step.attempt) == ("success", "success", 3)


async def test_retries_give_up_after_the_limit(runtime: Embedded, tmp_path: Path) -> None:
    run = await run_to_end(runtime, """
jobs:
  broken:
    image: none
    steps:
      - retry: 1
        run: ["exit 3"]
""", tmp_path)
    step = run.jobs[0].steps[0]
    assert (run.status, step.status, step.exit_code, step.attempt) == ("failure", "failure", 3, 2)


async def test_job_timeout_stops_the_running_step_and_skips_the_rest(
    runtime: Embedded, tmp_path: Path,
) -> None:
    run = await run_to_end(runtime, """
jobs:
  slow:
    image: none
    timeout: 1s
    steps:
      - name: sleeps
        run: ["sleep 300"]
      - name: never
        run: ["echo never"]
""", tmp_path)  # its deadline, far below the 300 s sleep, fails a run that waited for it
    job = run.jobs[0]
    assert (run.status, job.status) == ("failure", "failure")
    assert job.reason == "job timed out after 1s"
    assert [s.status for s in job.steps] == ["timeout", "skipped"]
    assert job.duration_s is not None


async def test_step_when_filters_by_branch(runtime: Embedded, tmp_path: Path) -> None:
    pipeline = """
jobs:
  build:
    image: none
    steps:
      - name: always
        run: ["echo built"]
      - name: release-only
        when: {branch: "release/*"}
        run: ["echo releasing"]
"""
    on_main = await run_to_end(runtime, pipeline, tmp_path, branch="main")
    assert [s.status for s in on_main.jobs[0].steps] == ["success", "skipped"]
    on_release = await run_to_end(runtime, pipeline, tmp_path, branch="release/2.0")
    assert [s.status for s in on_release.jobs[0].steps] == ["success", "success"]


async def test_matrix_runs_one_job_per_combination_with_its_values(
    runtime: Embedded, tmp_path: Path,
) -> None:
    run = await run_to_end(runtime, """
jobs:
  test:
    image: none
    matrix: {py: ["3.11", "3.12"], db: [pg]}
    steps:
      - run: ["echo testing py=$PY db=$DB"]
  report:
    image: none
    needs: test
    steps:
      - run: ["echo all done"]
""", tmp_path)
    assert run.status == "success"
    assert [j.name for j in run.jobs] == ["test (py=3.11, db=pg)", "test (py=3.12, db=pg)",
                                          "report"]
    texts = await log_texts(runtime, run)
    assert "testing py=3.11 db=pg" in texts and "testing py=3.12 db=pg" in texts
    assert texts.index("all done") > max(texts.index("testing py=3.11 db=pg"),
                                         texts.index("testing py=3.12 db=pg"))


async def test_independent_jobs_run_in_parallel(runtime: Embedded, tmp_path: Path) -> None:
    # Each job waits for a file only the other job writes: they can only both finish
    # if they run at the same time.
    run = await run_to_end(runtime, """
jobs:
  left:
    image: none
    timeout: 60s
    steps:
      - run: ["touch left.ready", "while [ ! -e right.ready ]; do sleep 0.05; done"]
  right:
    image: none
    timeout: 60s
    steps:
      - run: ["touch right.ready", "while [ ! -e left.ready ]; do sleep 0.05; done"]
""", tmp_path)
    assert run.status == "success"


async def test_a_projects_runs_beyond_max_concurrent_runs_wait_their_turn(
    runtime: Embedded, tmp_path: Path,
) -> None:
    from shared.events import NewEvent, ProjectRegistered, run_stream
    from shared.projections.projects import project_stream

    await runtime.store.append(project_stream("p"), [NewEvent(ProjectRegistered(
        name="p", repo="unused", max_concurrent_runs=1))], 0)
    gate = tmp_path / "gate"
    pipeline = f"""
jobs:
  wait:
    image: none
    timeout: 60s
    steps:
      - run: ["while [ ! -e {gate} ]; do sleep 0.05; done"]
"""
    source = tmp_path / "src"
    source.mkdir()
    first, second = [await request_run(runtime.store, project="p", trigger="manual",
                                       branch="main", commit="", pipeline_file=".cyclone.yml",
                                       pipeline=pipeline, source=str(source))
                     for _ in range(2)]
    runs = runtime.readmodel.runs
    # Runs are admitted in the order the event manager sees them: either may go first.
    started = await eventually(
        lambda: next((r for r in (first, second) if r in runs
                      and runs[r].status == "running"), None), what="one run starts")
    other = second if started == first else first
    gate.touch()
    await eventually(lambda: all(r in runs and runs[r].done for r in (first, second)),
                     what="both runs end")
    started_end = (await runtime.store.read(run_stream(started)))[-1]
    other_planned = next(e for e in await runtime.store.read(run_stream(other))
                         if e.type == "RunPlanned")
    assert started_end.type == "RunSucceeded"
    assert other_planned.position > started_end.position  # it waited for the first to end
    assert runs[other].status == "success"
