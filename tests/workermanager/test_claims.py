"""A worker that finds a queued job's claim held by an attempt that is over (a worker
that took the job before it was queued again, still holding the claim) waits for
the claim and then runs the job; it does not drop the job as "someone else's".

Real parts: the embedded services (SQLite store, in-process bus and coordinator) and
the shell executor.
"""

from __future__ import annotations

from pathlib import Path

from cyclone.embedded import Embedded
from services.api.commands import request_run
from shared.config import Settings
from shared.keys import claim_key
from shared.runstream import new_run_id
from tests.support import eventually

PIPELINE = """
jobs:
  work:
    image: unused-by-the-shell-executor
    steps:
      - run: ["echo done"]
"""


async def test_a_queued_job_whose_claim_is_held_runs_once_the_claim_goes(
        tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    runtime = await Embedded.start(Settings.from_env({
        "CYCLONE_HOME": str(tmp_path / "home"), "CYCLONE_EXECUTOR": "shell"}),
        own_all_runs=True)
    try:
        run_id = new_run_id()
        stale = await runtime.coord.grant_lease(60)  # the holder's lease outlives the test
        assert await runtime.coord.create(claim_key(run_id, "work"), b"w-old", stale)
        await request_run(runtime.store, project="demo", trigger="manual", branch="main",
                          commit="", pipeline_file=".cyclone.yml", pipeline=PIPELINE,
                          source=str(source), run_id=run_id)
        live = runtime.readmodel.runs
        await eventually(lambda: run_id in live and live[run_id].jobs
                         and live[run_id].jobs[0].status == "queued", what="job queued")
        # the worker took the job's message and found the claim taken
        await eventually(lambda: runtime.workermanager._tasks, what="the worker took it")
        assert live[run_id].jobs[0].status == "queued"

        await runtime.coord.delete(claim_key(run_id, "work"))  # that attempt let go
        await eventually(lambda: live[run_id].done, what="the run ends")
        assert live[run_id].status == "success"
        await stale.revoke()
    finally:
        await runtime.stop()
