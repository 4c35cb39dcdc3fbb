"""The embedded services in one process: live read model == rebuilt one; logs persisted."""

from __future__ import annotations

from pathlib import Path

from cyclone.embedded import Embedded
from services.api.commands import request_cancel, request_run
from services.api.readmodel import RunsReadModel
from shared.config import Settings
from tests.support import eventually

PIPELINE = """
jobs:
  first:
    image: unused-by-the-shell-executor
    steps:
      - name: count
        run: ["for i in 1 2 3 4 5; do echo line $i; done"]
  second:
    image: unused-by-the-shell-executor
    needs: first
    steps:
      - name: check
        run: ["test \\"$SHOULD_PASS\\" = yes"]
  third:
    image: unused-by-the-shell-executor
    needs: second
    steps:
      - run: ["echo third"]
"""

SLOW = """
jobs:
  slow:
    image: unused-by-the-shell-executor
    steps:
      - run: ["echo waiting", "sleep 300"]
"""


def settings(home: Path) -> Settings:
    return Settings.from_env({"CYCLONE_HOME": str(home), "CYCLONE_EXECUTOR": "shell"})


async def trigger(runtime: Embedded, pipeline: str, source: Path, **params: str) -> str:
    return await request_run(runtime.store, project="demo", trigger="manual", branch="main",
                             commit="", pipeline_file=".cyclone.yml", pipeline=pipeline,
                             source=str(source), params=params)


async def test_live_read_model_equals_the_one_rebuilt_from_the_store(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    runtime = await Embedded.start(settings(tmp_path / "home"), own_all_runs=True)
    try:
        ok = await trigger(runtime, PIPELINE, source, SHOULD_PASS="yes")
        bad = await trigger(runtime, PIPELINE, source, SHOULD_PASS="no")
        slow = await trigger(runtime, SLOW, source)
        live = runtime.readmodel.runs
        await eventually(lambda: slow in live and live[slow].jobs
                         and live[slow].jobs[0].status == "running", what="slow job running")
        await request_cancel(runtime.store, slow, "test")
        # the slow one cancelled: it ends long before its 300 s sleep would
        await eventually(lambda: all(r in live and live[r].done for r in (ok, bad, slow)),
                         what="all runs ended")
        assert (live[ok].status, live[bad].status, live[slow].status) == \
            ("success", "failure", "cancelled")
        assert [j.status for j in live[bad].jobs] == ["success", "failure", "skipped"]
        assert live[bad].jobs[1].steps[0].exit_code == 1
        rebuilt = await RunsReadModel.rebuild(runtime.store)
        assert rebuilt.runs == live
        await eventually(lambda: _logged(runtime, ok, "line 5"), what="log lines persisted")
        lines = [s.line.text async for s in runtime.logs.read(ok)]
        assert [t for t in lines if t.startswith("line")] == [f"line {i}" for i in range(1, 6)]
    finally:
        await runtime.stop()

    again = await Embedded.start(settings(tmp_path / "home"), own_all_runs=True)
    try:
        assert again.readmodel.runs == rebuilt.runs  # durable across a restart
    finally:
        await again.stop()


async def _logged(runtime: Embedded, run_id: str, text: str) -> bool:
    return any([s.line.text == text async for s in runtime.logs.read(run_id)])
