"""``waiting`` in ``GET /api/v1/runs/{id}``, over real HTTP: a project that runs one run at
a time, its runs recorded as events in a SQLite store and applied to the read model."""

from __future__ import annotations

from pathlib import Path

from services.api.context import CONTEXT
from services.api.readmodel import RunsReadModel
from shared import events as ev
from shared.events import NewEvent, run_stream
from tests.api.support import Api, serving


def readmodel_of(api: Api) -> RunsReadModel:
    """The served app's read model: these tests apply events to it by hand."""
    app = api.client.app
    assert app is not None
    readmodel: RunsReadModel = app[CONTEXT].readmodel
    return readmodel


async def test_a_run_says_it_waits_for_the_run_holding_its_projects_slot(
        tmp_path: Path) -> None:
    async with serving(tmp_path, Api) as api:
        readmodel = readmodel_of(api)
        await api.call("POST", "/api/v1/projects", 201,
                       {"name": "demo", "repo": "git://x", "max_concurrent_runs": 1})
        first = (await api.call("POST", "/api/v1/projects/demo/runs", 202))[0]["id"]
        await api.store.append(run_stream(first), [NewEvent(ev.CheckoutQueued())], 1)
        second = (await api.call("POST", "/api/v1/projects/demo/runs", 202))[0]["id"]
        for recorded in await api.store.read_all(0, 10_000):  # the read model, caught up
            await readmodel.apply(recorded)

        shown = (await api.call("GET", f"/api/v1/runs/{second}", 200))[0]
        assert shown["id"] == second and shown["status"] == "requested"  # as before
        assert shown["jobs"] == [] and shown["project"] == "demo"
        [wait] = shown["waiting"]
        assert (wait["kind"], wait["on"], wait["job"]) == ("slots", [first], "")
        assert wait["text"] == (f"project 'demo' runs at most 1 at once (max_concurrent_runs), "
                                f"and run {first} holds it: it starts when one ends")

        holder = (await api.call("GET", f"/api/v1/runs/{first}", 200))[0]
        assert [w["kind"] for w in holder["waiting"]] == ["checkout"]
        assert holder["checkout_queued_at"] == holder["waiting"][0]["since"] != ""

        await api.store.append(run_stream(first), [NewEvent(ev.RunCancelled(reason="x"))], 2)
        for recorded in await api.store.read(run_stream(first)):
            await readmodel.apply(recorded)
        assert (await api.call("GET", f"/api/v1/runs/{first}", 200))[0]["waiting"] == []
        [wait] = (await api.call("GET", f"/api/v1/runs/{second}", 200))[0]["waiting"]
        assert wait["kind"] == "admission"  # its slot is free: the event manager's turn


async def test_a_run_shows_what_its_stream_has_before_the_read_model_applies_it(
        tmp_path: Path) -> None:
    # The read model follows the bus: an event stream (or another replica) may have shown
    # a client the run's end before this replica's read model applied it.
    async with serving(tmp_path, Api) as api:
        readmodel = readmodel_of(api)
        await api.call("POST", "/api/v1/projects", 201, {"name": "demo", "repo": "git://x"})
        run = (await api.call("POST", "/api/v1/projects/demo/runs", 202))[0]["id"]
        for recorded in await api.store.read(run_stream(run)):
            await readmodel.apply(recorded)
        await api.store.append(run_stream(run), [NewEvent(ev.RunCancelled(reason="x"))], 1)

        shown = (await api.call("GET", f"/api/v1/runs/{run}", 200))[0]
        assert (shown["status"], shown["reason"], shown["last_seq"]) == ("cancelled", "x", 2)
        kept = await readmodel.get(run)
        assert kept is not None and kept.status == "requested"  # it has not applied it
