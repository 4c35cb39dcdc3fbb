"""``GET /api/v1/runs/{id}/tests`` and ``GET /api/v1/projects/{name}/tests`` over real HTTP,
and ``cyclone tests RUN`` (the CLI as a subprocess) against them: runs recorded as events
in a SQLite store and applied to the read model, their whole results put in a real
artifact store (files), as the worker records them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from services.api.context import CONTEXT
from shared import events as ev
from shared.adapters.artifacts.files import FileArtifactStore
from shared.events import NewEvent, run_stream
from shared.reports import Report
from tests.api.support import Api, serving
from tests.reports.support import digest_of, report, run_events


class ReportsApi(Api):
    artifacts: FileArtifactStore

    async def record(self, run_id: str, reports: Mapping[str, Report], commit: str,
                     end: ev.Event | None = None) -> None:
        """A run of project demo whose jobs reported ``reports``, results stored."""
        for made in reports.values():
            blob = await self.artifacts.put(_chunks(made.results_json()))
            assert blob.digest == digest_of(made.results_json())
        events = run_events(reports, commit=commit, end=end)
        await self.store.append(run_stream(run_id), [NewEvent(e) for e in events], 0)
        app = self.client.app
        assert app is not None
        for recorded in await self.store.read(run_stream(run_id)):
            await app[CONTEXT].readmodel.apply(recorded)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@asynccontextmanager
async def reports_api(tmp_path: Path) -> AsyncIterator[ReportsApi]:
    async with serving(tmp_path, ReportsApi) as api:
        api.artifacts = FileArtifactStore(tmp_path / "artifacts")
        app = api.client.app
        assert app is not None
        app[CONTEXT].artifacts = api.artifacts
        await api.call("POST", "/api/v1/projects", 201, {"name": "demo", "repo": "git://x"})
        try:
            yield api
        finally:
            await api.artifacts.close()


async def three_runs(api: ReportsApi) -> None:
    """r1 on c1: a and b fail; r2 reruns c1: a passes, b fails again; r3 on c2: a fails."""
    await api.record("r1", {"unit": report({"a": "failed", "b": "failed", "c": "passed"})},
                     "c1", end=ev.RunFailed(reason="unit failed"))
    await api.record("r2", {"unit": report({"a": "passed", "b": "failed", "c": "passed"})},
                     "c1")
    await api.record("r3", {"unit": report({"a": "failed", "c": "skipped"}),
                            "integration": report({"d": "passed"}, classname="it.Db")}, "c2")


async def test_a_runs_tests_mark_a_failure_that_passed_on_its_commit_as_flaky(
        tmp_path: Path) -> None:
    async with reports_api(tmp_path) as api:
        await three_runs(api)
        shown = (await api.call("GET", "/api/v1/runs/r1/tests", 200))[0]
        assert (shown["run"], shown["project"], shown["commit"], shown["status"]) == (
            "r1", "demo", "c1", "failure")
        assert (shown["tests"], shown["passed"], shown["failed"], shown["errors"],
                shown["skipped"]) == (3, 1, 2, 0, 0)
        assert [(f["id"], f["job"], f["flaky"]) for f in shown["failures"]] == [
            ("pkg.Suite.a", "unit", True), ("pkg.Suite.b", "unit", False)]
        assert shown["failures"][0]["message"] == "a: expected 1"
        assert shown["unreadable"] == []

        other = (await api.call("GET", "/api/v1/runs/r3/tests", 200))[0]
        assert (other["tests"], other["jobs"]) == (3, ["unit", "integration"])
        assert [(f["id"], f["flaky"]) for f in other["failures"]] == [("pkg.Suite.a", False)]
        assert [s["id"] for s in other["slowest"]] == ["pkg.Suite.a", "pkg.Suite.c",
                                                       "it.Db.d"]


async def test_a_tests_history_over_the_projects_latest_runs(tmp_path: Path) -> None:
    async with reports_api(tmp_path) as api:
        await three_runs(api)
        shown = (await api.call("GET", "/api/v1/projects/demo/tests?name=pkg.Suite.a", 200))[0]
        assert [(h["run"], h["commit"], h["outcome"], h["job"]) for h in shown["history"]] == [
            ("r3", "c2", "failed", "unit"), ("r2", "c1", "passed", "unit"),
            ("r1", "c1", "failed", "unit")]
        assert shown["history"][0]["duration_s"] == 0.5
        assert shown["history"][0]["created_at"] != ""
        assert (shown["flaky"], shown["runs"], shown["unreadable"]) == (["pkg.Suite.a"], 3, [])

        latest = (await api.call("GET", "/api/v1/projects/demo/tests?name=a&limit=1", 200))[0]
        assert [(h["run"], h["test"]) for h in latest["history"]] == [("r3", "pkg.Suite.a")]
        assert latest["flaky"] == []
        never = (await api.call("GET", "/api/v1/projects/demo/tests?name=zzz", 200))[0]
        assert never["history"] == [] and never["flaky"] == []


async def test_results_retention_collected_are_left_out_and_named(tmp_path: Path) -> None:
    async with reports_api(tmp_path) as api:
        await three_runs(api)
        r2 = report({"a": "passed", "b": "failed", "c": "passed"})
        assert await api.artifacts.delete(digest_of(r2.results_json()))
        shown = (await api.call("GET", "/api/v1/runs/r1/tests", 200))[0]
        assert [(f["id"], f["flaky"]) for f in shown["failures"]] == [
            ("pkg.Suite.a", False), ("pkg.Suite.b", False)]  # r2's pass is gone
        assert shown["unreadable"] == ["r2"]
        history = (await api.call("GET", "/api/v1/projects/demo/tests?name=a", 200))[0]
        assert [h["run"] for h in history["history"]] == ["r3", "r1"]
        assert history["unreadable"] == ["r2"]


async def test_a_run_without_reports_has_no_tests(tmp_path: Path) -> None:
    async with reports_api(tmp_path) as api:
        await api.record("r1", {}, "c1")
        shown = (await api.call("GET", "/api/v1/runs/r1/tests", 200))[0]
        assert (shown["tests"], shown["failures"], shown["slowest"], shown["jobs"]) == (
            0, [], [], [])


async def test_bad_requests_are_json_errors(tmp_path: Path) -> None:
    async with reports_api(tmp_path) as api:
        answer, _ = await api.call("GET", "/api/v1/runs/nope/tests", 404)
        assert answer == {"error": "not_found", "detail": "no run 'nope'"}
        answer, _ = await api.call("GET", "/api/v1/projects/nope/tests?name=a", 404)
        assert answer["detail"] == "no project 'nope'"
        answer, _ = await api.call("GET", "/api/v1/projects/demo/tests", 400)
        assert answer["detail"].startswith("name: expected")
        for limit in ("x", "0", "101"):
            answer, _ = await api.call("GET", f"/api/v1/projects/demo/tests?name=a&limit={limit}",
                                       400)
            assert answer["detail"].startswith("limit: expected")


async def test_without_an_artifact_store_results_are_a_503(tmp_path: Path) -> None:
    async with reports_api(tmp_path) as api:
        await three_runs(api)
        app = api.client.app
        assert app is not None
        app[CONTEXT].artifacts = None
        answer, _ = await api.call("GET", "/api/v1/projects/demo/tests?name=a", 503)
        assert "artifact store" in answer["detail"]
        await api.call("GET", "/api/v1/runs/r1/tests", 503)  # failures: flakiness needs them


async def cli(api: ReportsApi, *args: str) -> str:
    """``cyclone ARGS`` as a subprocess against the test server; its stdout (exit 0)."""
    env = {**os.environ, "CYCLONE_SERVER": str(api.client.make_url("")).rstrip("/"),
           "CYCLONE_TOKEN": api.headers["Authorization"].removeprefix("Bearer ")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cyclone.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_cyclone_tests_prints_counts_failures_flaky_and_slowest(tmp_path: Path) -> None:
    async with reports_api(tmp_path) as api:
        await three_runs(api)
        slow = report({"slow": "passed", "fast": "passed", "x": "error"},
                      durations={"slow": 75.0, "fast": 0.25, "x": 1.0})
        await api.record("r4", {"unit": slow}, "c4")
        text = await cli(api, "tests", "r1")
        assert text.splitlines() == [
            "run r1: 3 tests: 1 passed, 2 failed, 0 errors, 0 skipped (1.5s; jobs unit)",
            "",
            "JOB   TEST         FLAKY  MESSAGE",
            "unit  pkg.Suite.a  flaky  a: expected 1",
            "unit  pkg.Suite.b         b: expected 1",
            "",
            "SLOWEST      JOB   DURATION",
            "pkg.Suite.a  unit  0.5s",
            "pkg.Suite.b  unit  0.5s",
            "pkg.Suite.c  unit  0.5s",
        ]
        text = await cli(api, "tests", "r4")
        assert text.splitlines()[0] == ("run r4: 3 tests: 2 passed, 0 failed, 1 error, "
                                        "0 skipped (1m16s; jobs unit)")
        assert "pkg.Suite.slow  unit  1m15s" in text
        shown = json.loads(await cli(api, "tests", "r1", "--json"))
        assert shown["failures"][0]["flaky"] is True and shown["tests"] == 3


async def test_cyclone_tests_of_a_run_without_reports(tmp_path: Path) -> None:
    async with reports_api(tmp_path) as api:
        await api.record("r1", {}, "c1")
        assert await cli(api, "tests", "r1") == "run r1 has no test reports\n"
