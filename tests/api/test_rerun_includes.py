"""``POST /api/v1/runs/{id}/rerun`` over real HTTP: the rerun gets the very files the run
included, as recorded, not what their refs name now."""

from __future__ import annotations

from pathlib import Path

from shared import events as ev
from shared.events import NewEvent, decode, run_stream
from shared.pipeline.include import IncludedFile
from tests.api.support import Api, serving


async def test_a_rerun_carries_the_recorded_includes(tmp_path: Path) -> None:
    included = IncludedFile.read(("shared", "v1", "ci/common.yml"), "a" * 40,
                                 "jobs:\n  common: {image: x, steps: [{run: make}]}\n")
    async with serving(tmp_path, Api) as api:
        await api.call("POST", "/api/v1/projects", 201, {"name": "app", "repo": "git://x"})
        first = (await api.call("POST", "/api/v1/projects/app/runs", 202))[0]["id"]
        await api.store.append(run_stream(first), [NewEvent(ev.CheckoutQueued()), NewEvent(
            ev.RunSourceResolved(commit="b" * 40, branch="main", pipeline_file=".cyclone.yml",
                                 pipeline="include: {project: shared, ref: v1, file: "
                                          "ci/common.yml}\n",
                                 includes=(included.to_data(),)))], 1)

        rerun = (await api.call("POST", f"/api/v1/runs/{first}/rerun", 202))[0]["id"]
        requested = decode((await api.store.read(run_stream(rerun)))[0])
        assert isinstance(requested, ev.RunRequested)
        assert (requested.commit, requested.trigger) == ("b" * 40, "rerun")
        assert requested.includes == (included.to_data(),)
