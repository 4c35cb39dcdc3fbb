"""``cyclone rerun RUN --failed`` and ``--from JOB`` end to end: the real CLI as a subprocess,
talking HTTP to the api app of an ``Embedded`` runtime (shell executor) served on
127.0.0.1. The pipeline's job c fails until the test creates a marker file outside the
workspace, so the first run fails and the reruns pass, with no timing involved."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cyclone.embedded import Embedded
from services.api.auth import Tokens
from services.api.commands import request_run
from shared import events as ev
from shared.config import Settings
from shared.events import decode, run_stream
from shared.projections.runs import RunView
from tests.api.support import serve_api
from tests.support import eventually

TIMEOUT = 120.0  # one CLI command, a run included (2 busy cores)
STARTED = re.compile(r"^run ([0-9a-f]+): started", re.MULTILINE)


def pipeline(marker: Path) -> str:
    """a -> b, a -> c; c passes only once ``marker`` exists."""
    return f"""
jobs:
  a:
    image: none
    steps:
      - run: ["echo from a"]
  b:
    image: none
    needs: a
    steps:
      - run: ["echo from b"]
  c:
    image: none
    needs: a
    steps:
      - run: ["echo from c", "test -e '{marker}'"]
"""


@dataclass
class Server:
    runtime: Embedded
    env: dict[str, str]  # what the CLI needs to reach it

    async def cyclone(self, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cyclone.cli", *args, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            async with asyncio.timeout(TIMEOUT):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None and "Traceback" not in err.decode(), err.decode()
        return proc.returncode, out.decode(), err.decode()

    async def ended(self, run_id: str) -> RunView:
        runs = self.runtime.readmodel.runs
        await eventually(lambda: run_id in runs and runs[run_id].done, timeout=TIMEOUT,
                         what=f"run {run_id} ended")
        return runs[run_id]

    async def events(self, run_id: str) -> list[ev.Event]:
        return [e for r in await self.runtime.store.read(run_stream(run_id)) if (e := decode(r))]

    async def logged(self, run_id: str) -> list[str]:
        """The run's log, once job c's lines are stored (the run's last job to log)."""
        async def texts() -> list[str] | None:
            lines = [s.line.text async for s in self.runtime.logs.read(run_id)]
            return lines if "from c" in lines else None
        return await eventually(texts, timeout=TIMEOUT, what=f"run {run_id}'s log stored")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = Settings.from_env({"CYCLONE_HOME": str(tmp_path / "home"),
                                  "CYCLONE_EXECUTOR": "shell"})
    runtime = await Embedded.start(settings, own_all_runs=True)
    try:
        _, token = await Tokens(runtime.store).create("tester", admin=True)
        async with serve_api(runtime) as base:
            env = {k: v for k, v in os.environ.items() if not k.startswith("CYCLONE_")}
            yield Server(runtime, {**env, "CYCLONE_SERVER": base, "CYCLONE_TOKEN": token})
    finally:
        await runtime.stop()


async def test_rerun_failed_reuses_what_passed_and_from_a_job_runs_it_all_again(
        server: Server, tmp_path: Path) -> None:
    source, marker = tmp_path / "src", tmp_path / "marker"
    source.mkdir()
    first = await request_run(server.runtime.store, project="demo", trigger="manual",
                              branch="main", commit="", pipeline_file=".cyclone.yml",
                              pipeline=pipeline(marker), source=str(source))
    failed = await server.ended(first)
    assert [(j.name, j.status) for j in failed.jobs] == [
        ("a", "success"), ("b", "success"), ("c", "failure")]
    marker.touch()

    code, out, err = await server.cyclone("rerun", first, "--failed", "--follow", "--no-color")
    assert code == 0, out + err
    rerun = STARTED.search(out)
    assert rerun is not None, out
    second = await server.ended(rerun.group(1))
    assert f"[a] reused from run {first}: success" in out
    assert (second.status, second.rerun_of, second.reuse) == ("success", first, ("a", "b"))
    assert [(j.name, j.status, j.reused_from) for j in second.jobs] == [
        ("a", "success", first), ("b", "success", first), ("c", "success", "")]
    events = await server.events(second.id)
    assert [(e.job, e.from_run) for e in events if isinstance(e, ev.JobReused)] == [
        ("a", first), ("b", first)]
    assert [e.job for e in events if isinstance(e, ev.JobQueued)] == ["c"]
    texts = await server.logged(second.id)
    assert not any("from a" in t or "from b" in t for t in texts), texts

    code, shown, err = await server.cyclone("show", second.id)
    assert code == 0, err
    assert re.search(rf"^a\s+success\s+-\s+reused from {first}$", shown, re.MULTILINE), shown
    assert re.search(rf"^rerun of\s+{first}$", shown, re.MULTILINE), shown

    code, out, err = await server.cyclone("rerun", second.id, "--failed")
    assert (code, out) == (2, ""), out + err
    assert "nothing to rerun" in err

    code, out, err = await server.cyclone("rerun", second.id, "--from", "a")
    assert code == 0, err
    third = await server.ended(out.strip())
    assert (third.status, third.reuse) == ("success", ())
    assert not [e for e in await server.events(third.id) if isinstance(e, ev.JobReused)]
    texts = await server.logged(third.id)
    assert {"from a", "from b", "from c"} <= set(texts), texts
