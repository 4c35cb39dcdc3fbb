"""The push streams end to end, over real parts: an ``Embedded`` runtime (shell executor),
the API app as ``cyclone up`` builds and starts it (``Embedded.running``) served on
127.0.0.1, and real HTTP clients (``aiohttp`` and the CLI's
``CycloneClient``).

Runs that must still be running when a test acts wait at a *gate*: a step that loops
until the test creates a file, so "mid-run" never depends on timing. Keep-alives
(15 s) and the log server's re-check (5 s) would also end a wait whose wake-up was
lost; both are pushed out to an hour here, so a lost wake-up shows as a hang, which
the deadlines below turn into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import cyclone.apps as apps
import services.api.live as live_module
from cyclone.client import CycloneClient, SseEvent
from cyclone.embedded import Embedded
from services.api.app import build_app
from services.api.auth import Tokens
from services.api.commands import request_run
from services.api.context import ApiContext
from services.api.live import LiveRuns, RunChange
from shared import sse
from shared.adapters.bus.memory import MemoryBus
from shared.config import Settings
from shared.events import RecordedEvent, run_stream
from shared.ports.bus import TOPIC_EVENTS
from shared.projections.runs import RunView
from shared.runstream import new_run_id
from shared.wire import encode_event
from tests.api.support import serve_api
from tests.sse_support import Sse, sse_events
from tests.support import eventually

TIMEOUT = 60.0  # deadline for anything that involves running a pipeline (2 busy cores)
QUIET_S = 3600.0  # keep-alive / re-check interval in these tests: a lost wake-up hangs


class _QuietPacer(sse.Pacer):
    """No keep-alive (nor the wake-up that comes with it) within a test's deadline."""

    def __init__(self, keepalive_s: float = QUIET_S) -> None:
        super().__init__(keepalive_s)


# --- the pieces --------------------------------------------------------------------------------


class Stream:
    """A ``text/event-stream`` response read event by event, across several waits."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self._events = self._parse()

    async def _parse(self) -> AsyncIterator[Sse]:
        async for event in sse_events(self.resp):
            if event.event != "comment":  # keep-alives
                yield event

    async def next(self) -> Sse:
        """The next event; fails at the deadline or if the stream closes first."""
        async with asyncio.timeout(TIMEOUT):
            async for event in self._events:
                return event
        raise AssertionError("the stream closed")

    async def until(self, done: Callable[[Sse], bool]) -> list[Sse]:
        """Events up to and including the first for which ``done`` is true."""
        taken: list[Sse] = []
        while not taken or not done(taken[-1]):
            taken.append(await self.next())
        return taken

    async def rest(self) -> list[Sse]:
        """Every event until the server closes the stream (which it must, in time)."""
        async with asyncio.timeout(TIMEOUT):
            return [event async for event in self._events]


@dataclass
class Env:
    runtime: Embedded
    session: aiohttp.ClientSession
    base: str
    token: str
    tmp: Path

    @property
    def gate(self) -> Path:
        """What a ``gated`` pipeline's run waits for (made at the end of every test)."""
        return self.tmp / "gate"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self) -> CycloneClient:
        return CycloneClient(self.base, self.token)

    async def start_run(self, pipeline: str, project: str = "p",
                        run_id: str | None = None) -> str:
        source = self.tmp / "src"
        source.mkdir(exist_ok=True)
        return await request_run(self.runtime.store, project=project, trigger="push",
                                 branch="main", commit="abc", pipeline_file=".cyclone.yml",
                                 pipeline=pipeline, source=str(source), run_id=run_id)

    @contextlib.asynccontextmanager
    async def stream(self, path: str, query: Mapping[str, str] | None = None,
                     headers: Mapping[str, str] | None = None) -> AsyncIterator[Stream]:
        async with self.session.get(f"{self.base}{path}", params=query,
                                    headers={**self.headers, **(headers or {})}) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.content_type == "text/event-stream"
            yield Stream(resp)

    async def stored(self, run_id: str) -> list[RecordedEvent]:
        return await self.runtime.store.read(run_stream(run_id))

    async def ended(self, run_id: str) -> RunView:
        """The run's view once the read model has its end."""
        runs = self.runtime.readmodel.runs
        await eventually(lambda: run_id in runs and runs[run_id].done, timeout=TIMEOUT,
                         what=f"run {run_id} to end")
        return runs[run_id]


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a free port of 127.0.0.1, served as `cyclone up` serves (an AppRunner
    does not cancel a handler whose client went away; TestServer would)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(autouse=True)
def quiet_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "Pacer", _QuietPacer)
    # A stream nothing ends (a run list's changes) holds the stop this long.
    monkeypatch.setattr(apps, "SHUTDOWN_TIMEOUT_S", 1.0)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    settings = Settings.from_env({"CYCLONE_HOME": str(tmp_path / "home"),
                                  "CYCLONE_EXECUTOR": "shell"})
    runtime = await Embedded.start(settings, own_all_runs=True)
    runtime.logserver.recheck_s = QUIET_S
    try:
        _, admin = await Tokens(runtime.store).create("test", admin=True)
        async with serve_api(runtime) as base, \
                aiohttp.ClientSession() as session:
            yield Env(runtime, session, base, admin, tmp_path)
    finally:
        (tmp_path / "gate").touch()  # Env.gate: no step of a failed test waits on
        await runtime.stop()


def gated(gate: Path) -> str:
    """A pipeline whose ``wait`` step runs until ``gate`` exists."""
    return f"""
jobs:
  build:
    image: none
    steps:
      - name: hello
        run: ["echo hi"]
      - name: wait
        run: ["while [ ! -e '{gate}' ]; do sleep 0.05; done"]
      - name: bye
        run: ["echo bye"]
"""


QUICK = """
jobs:
  build:
    image: none
    steps:
      - run: ["echo hi"]
"""


def at_gate(event: SseEvent | Sse) -> bool:
    """The stream has got to the gate step's start (the run is waiting there)."""
    if event.event != "event":
        return False
    recorded = json.loads(event.data)
    return bool(recorded["type"] == "StepStarted" and recorded["data"]["step"] == "wait")


def as_json(recorded: list[RecordedEvent]) -> list[Any]:
    """The recorded events as the stream's ``data`` carries them."""
    return [json.loads(json.dumps(r.to_json())) for r in recorded]


async def follow(client: CycloneClient, run_id: str, *, last_event_id: str | None = None,
                 until: Callable[[SseEvent], bool] | None = None) -> list[SseEvent]:
    """The run's SSE events via the CLI's client: up to and including the first that
    ``until`` accepts (then disconnect), or to the stream's end."""
    got: list[SseEvent] = []
    async with asyncio.timeout(TIMEOUT), \
            contextlib.aclosing(client.follow_events(run_id, last_event_id)) as events:
        async for event in events:
            got.append(event)
            if until is not None and until(event):
                return got
    assert until is None, f"the stream ended early: {got}"
    return got


# --- one run's events --------------------------------------------------------------------------


async def test_a_runs_events_arrive_live_in_order_then_end_with_its_status(env: Env) -> None:
    gate = env.gate
    run_id = await env.start_run(gated(gate))
    async with env.stream(f"/api/v1/runs/{run_id}/events", {"follow": "1"}) as stream:
        head = await stream.until(at_gate)
        view = await env.runtime.live.view(run_id)
        assert view is not None and not view.done  # it waits at its gate: this came live
        gate.touch()
        tail = await stream.rest()
    got = head + tail
    events, end = got[:-1], got[-1]
    assert all(e.event == "event" for e in events), got
    assert (end.event, end.json()) == ("end", {"status": "success"})
    stored = await env.stored(run_id)
    assert stored[-1].type == "RunSucceeded"
    assert [e.json() for e in events] == as_json(stored)
    assert [e.id for e in events] == [str(r.seq) for r in stored]
    assert [r.seq for r in stored] == list(range(1, len(stored) + 1))
    assert len(tail) > 2  # the rest came on the same connection, as it happened


async def test_a_reconnect_with_last_event_id_resumes_without_loss_or_repeat(env: Env) -> None:
    gate = env.gate
    run_id = await env.start_run(gated(gate))
    async with env.client() as client:
        first = await follow(client, run_id, until=lambda e: e.id == "2")  # then hang up

        async def at_the_gate() -> bool:
            return any(r.type == "StepStarted" and r.data["step"] == "wait"
                       for r in await env.stored(run_id))

        # Events are appended while nobody listens; the run waits at the gate.
        await eventually(at_the_gate, timeout=TIMEOUT, what="the run at its gate")
        second = await follow(client, run_id, last_event_id=first[-1].id, until=at_gate)
        gate.touch()  # the rest comes live, on a third connection
        third = await follow(client, run_id, last_event_id=second[-1].id)
    assert third[-1].event == "end" and json.loads(third[-1].data) == {"status": "success"}
    union = first + second + third[:-1]
    stored = await env.stored(run_id)
    assert [e.id for e in union] == [str(r.seq) for r in stored]  # each once, in order
    assert [json.loads(e.data) for e in union] == as_json(stored)
    assert len(second) > 1 and len(third) > 2  # each part had something to resume


async def test_after_seq_on_a_finished_run_sends_the_rest_and_ends(env: Env) -> None:
    run_id = await env.start_run(QUICK)
    await env.ended(run_id)
    stored = await env.stored(run_id)
    path = f"/api/v1/runs/{run_id}/events"
    async with env.stream(path, {"follow": "1", "after": "3"}) as stream:
        got = await stream.rest()
    assert [e.json() for e in got[:-1]] == as_json(stored[3:])
    assert (got[-1].event, got[-1].json()) == ("end", {"status": "success"})
    # Accept: text/event-stream asks for the stream too; Last-Event-ID wins over ?after.
    async with env.stream(path, {"after": "1"}, {"Accept": "text/event-stream",
                                                 "Last-Event-ID": "4"}) as stream:
        got = await stream.rest()
    assert [e.id for e in got[:-1]] == [str(r.seq) for r in stored[4:]]
    assert got[-1].event == "end"
    # After the last event: nothing but the end.
    async with env.stream(path, {"follow": "1", "after": str(stored[-1].seq)}) as stream:
        got = await stream.rest()
    assert [(e.event, e.json()) for e in got] == [("end", {"status": "success"})]


async def test_unknown_run_is_404_and_malformed_positions_are_400(env: Env) -> None:
    run_id = await env.start_run(QUICK)
    await env.ended(run_id)
    cases: list[tuple[str, dict[str, str], dict[str, str], int]] = [
        ("/api/v1/runs/no-such-run/events", {"follow": "1"}, {}, 404),
        ("/api/v1/runs/no-such-run/events", {}, {"Accept": "text/event-stream"}, 404),
        (f"/api/v1/runs/{run_id}/events", {"follow": "1"}, {"Last-Event-ID": "abc"}, 400),
        (f"/api/v1/runs/{run_id}/events", {"follow": "1"}, {"Last-Event-ID": "-1"}, 400),
        (f"/api/v1/runs/{run_id}/events", {"follow": "1", "after": "x"}, {}, 400),
        (f"/api/v1/runs/{run_id}/events", {"follow": "1", "after": "-2"}, {}, 400),
        ("/api/v1/changes", {}, {"Last-Event-ID": "nope"}, 400),
    ]
    for path, query, headers, status in cases:
        async with env.session.get(f"{env.base}{path}", params=query,
                                   headers={**env.headers, **headers}) as resp:
            assert resp.status == status, (path, query, headers, await resp.text())
            assert resp.content_type == "application/json"
            body = await resp.json()
            assert body["error"] == {404: "not_found", 400: "bad_request"}[status]
            assert body["detail"]


# --- every run's changes -----------------------------------------------------------------------


def changes_of(events: list[Sse], run_id: str) -> list[dict[str, Any]]:
    return [e.json() for e in events if e.event == "run" and e.json()["run"]["id"] == run_id]


def statuses(changes: list[dict[str, Any]]) -> list[str]:
    """The run's statuses in the order seen, a repeat (a change sent twice) counted once."""
    seen: list[str] = []
    for change in changes:
        if not seen or seen[-1] != change["run"]["status"]:
            seen.append(change["run"]["status"])
    return seen


def ended_run(run_id: str) -> Callable[[Sse], bool]:
    def done(event: Sse) -> bool:
        return (event.event == "run" and event.json()["run"]["id"] == run_id
                and event.json()["run"]["status"] == "success")
    return done


async def test_changes_stream_every_runs_changes_filtered_by_project_and_resumes(
    env: Env,
) -> None:
    async with env.stream("/api/v1/changes") as every, \
            env.stream("/api/v1/changes", {"project": "other"}) as others:
        ready = await every.next()
        assert ready.event == "ready"
        assert ready.json() == {"position": await env.runtime.store.last_position()}
        assert int(ready.id) == ready.json()["position"]
        assert (await others.next()).event == "ready"

        p_run = await env.start_run(QUICK, project="p")
        seen = await every.until(ended_run(p_run))
        other_run = await env.start_run(QUICK, project="other")
        seen += await every.until(ended_run(other_run))
        seen_other = await others.until(ended_run(other_run))

    for run_id, project in ((p_run, "p"), (other_run, "other")):
        changes = changes_of(seen, run_id)
        assert statuses(changes) == ["requested", "running", "success"], changes
        assert all(c["run"]["project"] == project for c in changes)
        positions = [c["position"] for c in changes]
        assert positions == sorted(positions) and positions[0] > ready.json()["position"]
    assert all(e.event == "run" and int(e.id) == e.json()["position"] for e in seen)
    # The filtered stream: the other project's run only (p's came first, and was left out).
    assert {e.json()["run"]["id"] for e in seen_other} == {other_run}
    assert statuses(changes_of(seen_other, other_run)) == ["requested", "running", "success"]

    # Resume from the ready position: each run changed since, once, as it is now.
    resume = {"Last-Event-ID": ready.id}
    async with env.stream("/api/v1/changes", headers=resume) as every, \
            env.stream("/api/v1/changes", {"project": "p"}, resume) as ps:
        replayed = await every.until(lambda e: e.json()["run"]["id"] == other_run)
        assert [(e.event, e.json()["run"]["id"], e.json()["run"]["status"]) for e in replayed] \
            == [("run", p_run, "success"), ("run", other_run, "success")]
        assert [int(e.id) for e in replayed] == [
            (await env.stored(run_id))[-1].position for run_id in (p_run, other_run)]
        replayed_p = await ps.next()
        assert (replayed_p.json()["run"]["id"], replayed_p.json()["run"]["status"]) \
            == (p_run, "success")
        # ... then live.
        later = await env.start_run(QUICK, project="p")
        live_every = await every.until(ended_run(later))
        live_p = await ps.until(ended_run(later))
    assert statuses(changes_of(live_every, later)) == ["requested", "running", "success"]
    assert statuses(changes_of(live_p, later)) == ["requested", "running", "success"]
    assert {e.json()["run"]["id"] for e in live_every} == {later}  # nothing old again
    assert {e.json()["run"]["id"] for e in live_p} == {later}


async def test_changes_resumed_mid_run_sends_its_current_summary_then_the_rest(env: Env) -> None:
    gate = env.gate
    async with env.stream("/api/v1/changes") as every:
        await every.next()  # ready
        run_id = await env.start_run(gated(gate))
        requested = await every.next()
        assert requested.json()["run"]["status"] == "requested"

    async def at_the_gate() -> list[RecordedEvent]:
        stored = await env.stored(run_id)
        view = await env.runtime.live.view(run_id)
        waiting = stored[-1].type == "StepStarted" and stored[-1].data["step"] == "wait"
        return stored if waiting and view is not None and view.last_seq == len(stored) else []

    # It waits at its gate (no change comes until the test opens it), and the live view
    # has all of it, so that what the resume's replay...
    stored = await eventually(at_the_gate, timeout=TIMEOUT, what="the run at its gate")
    async with env.stream("/api/v1/changes", headers={"Last-Event-ID": requested.id}) as every:
        replayed = await every.next()  # ...sends the run as it is now, once
        assert int(replayed.id) == stored[-1].position
        assert (replayed.json()["run"]["id"], replayed.json()["run"]["status"]) \
            == (run_id, "running")
        gate.touch()
        rest = await every.until(ended_run(run_id))
    assert statuses(changes_of([replayed, *rest], run_id)) == ["running", "success"]


# --- LiveRuns ----------------------------------------------------------------------------------


async def test_a_listener_that_falls_behind_is_ended(env: Env,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_module, "LISTENER_BACKLOG", 3)
    live = env.runtime.live
    with live.changes() as slow, live.changes() as keeping_up:
        run_id = await env.start_run(QUICK)
        kept: list[RunChange] = []
        while not kept or not kept[-1].run.done:  # read as they come: never 3 behind
            change = await keeping_up.next(TIMEOUT)
            assert change is not None, "a listener that kept up was ended"
            kept.append(change)
        got: list[RunChange | None] = [await slow.next(TIMEOUT) for _ in range(4)]
        assert got[3] is None
        assert got[:3] == kept[:3]  # what it had before it was ended, in order
        assert await slow.next(TIMEOUT) is None  # and it stays ended
        assert slow not in live._listeners and keeping_up in live._listeners
    assert len(kept) > 4 and kept[-1].run.id == run_id and kept[-1].run.status == "success"
    # A listener that is ended does not grow: nothing more is queued for it.
    assert slow._queue.empty()


async def test_a_watched_runs_view_is_current_with_the_event_that_woke_it(env: Env) -> None:
    live = env.runtime.live
    gate = env.gate
    run_id = await env.start_run(gated(gate))
    seen: list[RunView] = []
    with live.watch(run_id) as watch:
        async with asyncio.timeout(TIMEOUT):
            while True:
                woken = watch.event
                view = await live.view(run_id)
                assert view is not None
                seen.append(view)
                if view.done:
                    break
                if any(s.name == "wait" and s.status == "running"
                       for job in view.jobs for s in job.steps):
                    gate.touch()
                await woken.wait()  # the last wake is the end's: the view must have it
    assert seen[-1].status == "success"
    assert [v.last_seq for v in seen] == sorted(v.last_seq for v in seen)
    assert seen[-1].last_seq == (await env.stored(run_id))[-1].seq


async def test_each_wake_up_sees_the_view_with_its_own_event(env: Env) -> None:
    live = env.runtime.live
    woken_at: list[int] = []  # the cached view's last seq at each wake-up of the run
    run_id = new_run_id()

    def on_event(changed: str) -> None:
        if changed == run_id:
            view = live._views.get(run_id)  # what a stream woken now would see
            woken_at.append(-1 if view is None else view.last_seq)

    live.on_event(on_event)
    try:
        await env.start_run(QUICK, run_id=run_id)
        await env.ended(run_id)
        last = (await env.stored(run_id))[-1].seq
        await eventually(lambda: woken_at and woken_at[-1] == last, timeout=TIMEOUT,
                         what="the wake-up of the run's last event")
    finally:
        live._on_event.remove(on_event)
    assert woken_at == list(range(1, last + 1))  # one per event, each with its event


# --- the log stream ----------------------------------------------------------------------------


async def test_a_running_runs_log_stream_ends_at_the_runs_end(env: Env) -> None:
    gate = env.gate
    run_id = await env.start_run(gated(gate))
    async with env.stream(f"/api/v1/runs/{run_id}/logs", {"follow": "1"}) as stream:
        hello = await stream.until(lambda e: e.event == "line" and e.json()["text"] == "hi")
        run = await env.runtime.live.view(run_id)
        assert run is not None and not run.done  # waiting at its gate
        gate.touch()
        rest = await stream.rest()  # a re-check would come in an hour: a wake must end it
    lines = [e.json()["text"] for e in hello + rest if e.event == "line"]
    assert "hi" in lines and "bye" in lines
    assert (rest[-1].event, rest[-1].json()) == ("end", {"status": "success"})
    ended = await env.ended(run_id)
    assert len(lines) == ended.log_lines


async def test_a_view_read_before_the_bus_brings_the_event_loses_no_change(env: Env) -> None:
    """A stream asks for a run's view as soon as it exists (``cyclone trigger --follow``):
    folded from the store, which is ahead of the bus. The events the bus brings after
    that are still changes for the listeners (and wake-ups for the watchers)."""
    live = env.runtime.live
    with live.changes() as listener:
        run_id = await env.start_run(QUICK)
        early = await live.view(run_id)  # the store has it; the bus has not brought it yet
        assert early is not None and early.status == "requested"
        changes: list[RunChange] = []
        while not changes or not changes[-1].run.done:
            change = await listener.next(TIMEOUT)
            assert change is not None
            changes.append(change)
    seen = [c.run.status for c in changes]
    assert [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s] \
        == ["requested", "running", "success"], changes
    assert changes[0].type == "RunRequested"


async def test_a_replica_whose_bus_lags_the_store_replays_each_runs_current_summary(
    env: Env,
) -> None:
    """Another api replica's bus may lag the store: a change it replays on a resume is
    the run as of the position its id names, or a client that resumes from that id
    never hears of what the lagging view lacked (here: the run's end)."""
    run_id = await env.start_run(QUICK)
    await env.ended(run_id)
    stored = await env.stored(run_id)
    bus = MemoryBus()
    replica = LiveRuns(bus, env.runtime.store)
    tailing = asyncio.create_task(replica.run())
    try:
        async with asyncio.timeout(TIMEOUT):
            await replica.ready.wait()
            with replica.watch(run_id) as watch:  # its bus has brought 2 events so far
                woken = watch.event
                for recorded in stored[:2]:
                    await bus.publish(TOPIC_EVENTS, run_id, encode_event(recorded))
                await woken.wait()
        lagging = await replica.view(run_id)
        assert lagging is not None and lagging.last_seq == 2 and not lagging.done
        ctx = ApiContext(store=env.runtime.store, readmodel=env.runtime.readmodel,
                         live=replica)
        async with serve(build_app(ctx)) as base:
            replica_env = Env(env.runtime, env.session, base, env.token, env.tmp)
            async with replica_env.stream("/api/v1/changes",
                                          headers={"Last-Event-ID": "0"}) as changes:
                replayed = await changes.next()
            assert int(replayed.id) == stored[-1].position
            assert (replayed.json()["run"]["id"], replayed.json()["run"]["status"]) \
                == (run_id, "success")
            # Its run event stream ends once its own bus brings the end.
            async with replica_env.stream(f"/api/v1/runs/{run_id}/events",
                                          {"follow": "1"}) as events:
                head = [await events.next() for _ in stored]
                for recorded in stored[2:]:
                    await bus.publish(TOPIC_EVENTS, run_id, encode_event(recorded))
                rest = await events.rest()
            assert [e.json() for e in head] == as_json(stored)
            assert [(e.event, e.json()) for e in rest] == [("end", {"status": "success"})]
    finally:
        await bus.close()
        await asyncio.wait_for(tailing, TIMEOUT)
