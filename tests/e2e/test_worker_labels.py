"""Worker labels end to end, in one process: the embedded runtime's own worker (labels
``a``) and more workers on the same store, bus and coordinator, as separate
workermanagers with labels of their own. A job only one of them can take runs there; a
job nobody can take waits saying so (API and ``cyclone show``), and runs once a worker
with its labels starts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from cyclone.embedded import Embedded
from services.api.auth import Tokens
from services.api.commands import request_run
from services.workermanager.service import WorkerManager
from shared.adapters.executor import open_executor
from shared.config import Settings
from shared.workers import live_workers
from tests.api.support import serve_api
from tests.support import eventually

PIPELINE = """
jobs:
  on-b:
    image: unused-by-the-shell-executor
    runs-on: b
    steps:
      - run: ["echo on b"]
  on-gpu:
    image: unused-by-the-shell-executor
    runs-on: [gpu]
    steps:
      - run: ["echo on gpu"]
"""


@contextlib.asynccontextmanager
async def worker(runtime: Embedded, home: Path, worker_id: str,
                 *labels: str) -> AsyncIterator[WorkerManager]:
    """Another workermanager (shell executor) with ``labels``, until the block ends."""
    executor = await open_executor("shell", home / worker_id, keep_out=(home,))
    manager = WorkerManager(runtime.store, runtime.bus, runtime.coord, executor, worker_id,
                            capacity=2, git_cache=home / worker_id / "git",
                            labels=frozenset(labels))
    running = asyncio.create_task(manager.run())
    try:
        await eventually(lambda: _registered(runtime, worker_id), what=f"{worker_id} live")
        yield manager
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await manager.close()
        await executor.close()


async def _registered(runtime: Embedded, worker_id: str) -> bool:
    return worker_id in {w.id for w in await live_workers(runtime.coord)}


async def test_jobs_go_to_the_worker_with_their_labels_or_wait_saying_so(
        tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    home = tmp_path / "home"
    runtime = await Embedded.start(Settings.from_env({
        "CYCLONE_HOME": str(home), "CYCLONE_EXECUTOR": "shell", "CYCLONE_WORKER_ID": "wa",
        "CYCLONE_WORKER_LABELS": "a"}), own_all_runs=True)
    try:
        _, token = await Tokens(runtime.store).create("test", admin=True)
        async with serve_api(runtime) as base, \
                aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {token}"}) \
                as http, worker(runtime, home, "wb", "b"):
            run_id = await request_run(runtime.store, project="demo", trigger="manual",
                                       branch="main", commit="", pipeline_file=".cyclone.yml",
                                       pipeline=PIPELINE, source=str(source))
            runs = runtime.readmodel.runs

            def job(name: str) -> Any:
                view = runs.get(run_id)
                return view.job(name) if view is not None else None

            await eventually(lambda: job("on-b") and job("on-b").status == "success",
                             what="on-b to run")
            assert job("on-b").worker == "wb"  # the only worker with label b

            waiting = await _why(http, run_id, "on-gpu")
            assert waiting["kind"] == "no_worker", waiting
            assert waiting["text"] == ("no live worker has labels gpu (live: wa [a], wb [b]): "
                                       "it runs when one with them starts")
            assert job("on-gpu").status == "queued"
            shown = await _cyclone_show(base, token, run_id)
            assert "no live worker has labels gpu" in shown, shown

            async with worker(runtime, home, "wg", "gpu", "linux"):
                await eventually(lambda: runs[run_id].done, what="the run to end")
            assert runs[run_id].status == "success"
            assert job("on-gpu").worker == "wg"
    finally:
        await runtime.stop()


async def _why(http: aiohttp.ClientSession, run_id: str, job: str) -> Any:
    """The job's entry of the run's ``waiting`` (GET /api/v1/runs/{id})."""
    async with http.get(f"/api/v1/runs/{run_id}") as response:
        assert response.status == 200, await response.text()
        waits = (await response.json())["waiting"]
    return next(w for w in waits if w["job"] == job)


async def _cyclone_show(server: str, token: str, run_id: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cyclone.cli", "show", run_id,
        env={**os.environ, "CYCLONE_SERVER": server, "CYCLONE_TOKEN": token},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()
