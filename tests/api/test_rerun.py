"""``POST /api/v1/runs/{id}/rerun`` with a body, over real HTTP: which request it records
for ``{"failed": true}`` and ``{"from_job": ...}``, and the 4xx answers naming why not. The
earlier runs are written to the SQLite store as the services would have written them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared import events as ev
from shared.events import NewEvent, decode, run_stream
from shared.pipeline.plan import Plan
from shared.ports.eventstore import EventStore
from shared.status import JobStatus
from tests.api.support import Api, serving
from tests.test_decide import job

REQUESTED = ev.RunRequested(project="demo", trigger="manual", branch="main", commit="c0ffee",
                            pipeline_file=".cyclone.yml", pipeline="jobs: {}", source="/src",
                            params={"MODE": "fast"})
PLANNED = ev.RunPlanned(plan=Plan(".cyclone.yml", (job("a"), job("b", "a"), job("c", "a"))))


def ran(name: str, status: JobStatus) -> list[ev.Event]:
    return [ev.JobQueued(job=name), ev.JobStarted(job=name, worker="w", executor="shell"),
            ev.JobFinished(job=name, status=status, duration_s=1.0)]


FAILED_C = [REQUESTED, PLANNED, *ran("a", JobStatus.SUCCESS), *ran("b", JobStatus.SUCCESS),
            *ran("c", JobStatus.FAILURE), ev.RunFailed(reason="job failed: c")]


async def record(store: EventStore, run_id: str, events: list[ev.Event]) -> str:
    await store.append(run_stream(run_id), [NewEvent(e) for e in events], 0)
    return run_id


async def request_of(api: Api, answer: dict[str, Any]) -> ev.RunRequested:
    first = decode((await api.store.read(run_stream(answer["id"])))[0])
    assert isinstance(first, ev.RunRequested)
    return first


async def test_failed_records_a_rerun_that_reuses_what_passed(tmp_path: Path) -> None:
    async with serving(tmp_path, Api) as api:
        earlier = await record(api.store, "r1", FAILED_C)
        answer, _ = await api.call("POST", f"/api/v1/runs/{earlier}/rerun", 202,
                                   {"failed": True})
        rerun = await request_of(api, answer)
        assert (rerun.trigger, rerun.rerun_of, rerun.reuse) == ("rerun", "r1", ("a", "b"))
        assert (rerun.commit, rerun.pipeline, rerun.source, dict(rerun.params)) == \
            ("c0ffee", "jobs: {}", "/src", {"MODE": "fast"})
        assert rerun.requested_by == "admin"

        answer, _ = await api.call("POST", f"/api/v1/runs/{earlier}/rerun", 202,
                                   {"from_job": "a"})
        assert (await request_of(api, answer)).reuse == ()
        plain = await request_of(api, (await api.call(
            "POST", f"/api/v1/runs/{earlier}/rerun", 202))[0])
        assert (plain.trigger, plain.rerun_of, plain.reuse) == ("rerun", "", ())


async def test_a_rerun_that_cannot_be_made_is_refused_saying_why(tmp_path: Path) -> None:
    async with serving(tmp_path, Api) as api:
        done = await record(api.store, "r1", FAILED_C)
        running = await record(api.store, "r2", [REQUESTED, PLANNED, ev.JobQueued(job="a")])
        passed = await record(api.store, "r3", [
            REQUESTED, PLANNED, *(e for name in "abc" for e in ran(name, JobStatus.SUCCESS)),
            ev.RunSucceeded()])
        unplanned = await record(api.store, "r4", [REQUESTED, ev.RunErrored(reason="bad")])
        recorded = len(await api.store.read_all(0, 10_000))

        async def refused(run_id: str, body: dict[str, Any], status: int) -> str:
            answer, _ = await api.call("POST", f"/api/v1/runs/{run_id}/rerun", status, body)
            return str(answer["detail"])

        assert "has not ended (running)" in await refused(running, {"failed": True}, 409)
        assert "nothing to rerun" in await refused(passed, {"failed": True}, 409)
        assert "ended before its pipeline was planned" in \
            await refused(unplanned, {"from_job": "a"}, 409)
        assert "from_job: run 'r1' has no job 'deploy'" in \
            await refused(done, {"from_job": "deploy"}, 400)
        assert "not both" in await refused(done, {"failed": True, "from_job": "a"}, 400)
        assert "faild: unknown field" in await refused(done, {"faild": True}, 400)
        assert "from_job" in await refused(done, {"from_job": ""}, 400)
        await refused("nope", {"failed": True}, 404)
        assert len(await api.store.read_all(0, 10_000)) == recorded  # no run was requested
