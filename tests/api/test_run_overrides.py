"""``POST /api/v1/projects/{name}/runs`` with ``overrides`` (``cyclone trigger --set``),
over real HTTP: recorded in the run's request, kept by a rerun; a malformed one is a 400
naming it, before any run is recorded."""

from __future__ import annotations

from pathlib import Path

from shared import events as ev
from shared.events import decode, run_stream
from tests.api.support import Api, serving

SETS = ["jobs.test.image=python:3.13", "jobs.test.steps.0.retry=2"]


async def _requested(api: Api, run_id: str) -> ev.RunRequested:
    first = decode((await api.store.read(run_stream(run_id)))[0])
    assert isinstance(first, ev.RunRequested)
    return first


async def test_overrides_are_recorded_and_a_rerun_keeps_them(tmp_path: Path) -> None:
    async with serving(tmp_path, Api) as api:
        await api.call("POST", "/api/v1/projects", 201, {"name": "app", "repo": "git://x"})
        run = (await api.call("POST", "/api/v1/projects/app/runs", 202,
                              {"overrides": SETS}))[0]["id"]
        assert (await _requested(api, run)).overrides == tuple(SETS)
        rerun = (await api.call("POST", f"/api/v1/runs/{run}/rerun", 202))[0]["id"]
        assert (await _requested(api, rerun)).overrides == tuple(SETS)


async def test_a_malformed_override_is_a_400_naming_it(tmp_path: Path) -> None:
    async with serving(tmp_path, Api) as api:
        await api.call("POST", "/api/v1/projects", 201, {"name": "app", "repo": "git://x"})
        before = await api.store.last_position()
        answer, _ = await api.call("POST", "/api/v1/projects/app/runs", 400,
                                   {"overrides": ["jobs.test.image"]})
        assert "'jobs.test.image': expected PATH=VALUE" in str(answer["detail"])
        assert await api.store.last_position() == before
