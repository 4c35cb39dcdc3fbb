"""Commit statuses reach each forge as its API documents them; a forge that is down,
refuses or fails for a while never holds anything up, and every outcome is recorded
in the run's stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from services.eventmanager.decide import decide
from services.notifier.forge_status import CommitStatusReporter
from shared import events as ev
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.events import NewEvent, RecordedEvent, decode, run_stream
from shared.pipeline.plan import JobSpec, Plan, StepSpec
from shared.ports.bus import TOPIC_EVENTS, Message
from shared.projections.projects import project_stream
from shared.projections.runs import fold
from shared.wire import encode_event
from tests.git_support import unused_port
from tests.notifier.forge_server import TOKEN, FakeForge
from tests.support import HANG_S, eventually

SHA = "3f786850e387550fdab836ed7e6dc881de23001b"
PUBLIC = "https://ci.example.org"
PLAN = Plan(".cyclone.yml", (JobSpec(name="build", image="alpine",
                                     steps=(StepSpec(name="make", image="alpine"),)),))
REPOS = {"github": "octo-org/hello-world", "gitea": "alice/tools", "gitlab": "group/sub/app"}
PATHS = {"github": f"/repos/octo-org/hello-world/statuses/{SHA}",
         "gitea": f"/api/v1/repos/alice/tools/statuses/{SHA}",
         "gitlab": f"/api/v4/projects/group%2Fsub%2Fapp/statuses/{SHA}"}


class World:
    """A SQLite event store with a project and its runs, and a reporter reading it."""

    def __init__(self, store: SqliteEventStore, reporter: CommitStatusReporter) -> None:
        self.store = store
        self.reporter = reporter
        self._offset = 0

    async def project(self, forge: dict[str, str] | None, name: str = "demo") -> None:
        await self.store.append(project_stream(name), [NewEvent(ev.ProjectRegistered(
            name=name, repo="https://forge.example/x.git", forge=forge or {}))], 0)

    async def append(self, run_id: str, *events: ev.Event) -> list[RecordedEvent]:
        stream = run_stream(run_id)
        last = len(await self.store.read(stream))
        return await self.store.append(stream, [NewEvent(e) for e in events], last)

    async def start_run(self, run_id: str = "r1", commit: str = SHA,
                        project: str = "demo") -> list[RecordedEvent]:
        return await self.append(
            run_id,
            ev.RunRequested(project=project, trigger="push", branch="main", commit="main",
                            pipeline_file=".cyclone.yml", pipeline="", source="git://x",
                            source_kind="git"),
            ev.RunSourceResolved(commit=commit, branch="main", pipeline_file=".cyclone.yml",
                                 pipeline="jobs: {}"),
            ev.RunPlanned(plan=PLAN))

    async def deliver(self, *recorded: RecordedEvent) -> None:
        """Hand the events to ``handle`` as the bus would: encoded ``cyclone.events``."""
        for r in recorded:
            self._offset += 1
            await self.reporter.handle(Message(TOPIC_EVENTS, r.stream.removeprefix("run-"),
                                               encode_event(r), 0, self._offset))

    async def statuses(self, run_id: str = "r1"
                       ) -> list[ev.CommitStatusReported | ev.CommitStatusFailed]:
        found: list[ev.CommitStatusReported | ev.CommitStatusFailed] = []
        for r in await self.store.read(run_stream(run_id)):
            event = decode(r)
            if isinstance(event, ev.CommitStatusReported | ev.CommitStatusFailed):
                found.append(event)
        return found


def forge_settings(fake: FakeForge | None, kind: str = "github",
                   api_url: str = "") -> dict[str, str]:
    return {"kind": fake.kind if fake else kind, "api_url": fake.api_url if fake else api_url,
            "repo": REPOS[fake.kind if fake else kind], "token": TOKEN}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    opened = await SqliteEventStore.open(tmp_path / "events.db")
    yield opened
    await opened.close()


async def make_world(store: SqliteEventStore, **options: Any) -> World:
    options = {"attempts": 3, "first_delay": 0.01, "max_delay": 0.05, **options}
    return World(store, CommitStatusReporter(store, PUBLIC + "/", **options))


@pytest.fixture
async def world(store: SqliteEventStore) -> AsyncIterator[World]:
    made = await make_world(store)
    yield made
    await made.reporter.close()


@pytest.fixture
async def forges() -> AsyncIterator[dict[str, FakeForge]]:
    started = {kind: await FakeForge(kind).start() for kind in ("github", "gitlab", "gitea")}
    yield started
    for fake in started.values():
        if fake.hold is not None:
            fake.hold.set()
        await fake.close()


@pytest.mark.parametrize("kind", ["github", "gitlab", "gitea"])
async def test_each_forge_gets_the_run_start_and_its_success_as_its_api_documents(
        world: World, forges: dict[str, FakeForge], kind: str) -> None:
    fake = forges[kind]
    await world.project(forge_settings(fake))
    await world.deliver(*await world.start_run())
    await eventually(lambda: fake.received, what="the pending status")
    await world.deliver(*await world.append("r1", ev.RunSucceeded()))
    await world.reporter.idle()

    assert fake.problems == []
    assert [r.raw_path for r in fake.received] == [PATHS[kind]] * 2
    started = {"github": "pending", "gitea": "pending", "gitlab": "running"}[kind]
    assert fake.states() == [started, "success"]
    body = fake.received[1].body
    assert body["target_url"] == f"{PUBLIC}/api/v1/runs/r1"
    assert body["description"] == "Cyclone run r1 succeeded"
    assert body["name" if kind == "gitlab" else "context"] == "cyclone"
    assert await world.statuses() == [
        ev.CommitStatusReported(state="pending", forge=kind, sha=SHA, attempt=1,
                                target_url=f"{PUBLIC}/api/v1/runs/r1", forge_state=started),
        ev.CommitStatusReported(state="success", forge=kind, sha=SHA, attempt=1,
                                target_url=f"{PUBLIC}/api/v1/runs/r1", forge_state="success")]


@pytest.mark.parametrize(("end", "kind", "sent", "recorded", "says"), [
    (ev.RunFailed(reason="job failed: build"), "github", "failure", "failure",
     "failed: job failed: build"),
    (ev.RunFailed(reason="job failed: build"), "gitlab", "failed", "failure",
     "failed: job failed: build"),
    (ev.RunErrored(reason="job errored: build\nmore"), "gitea", "error", "error",
     "errored: job errored: build"),
    (ev.RunErrored(reason="x" * 300), "gitlab", "failed", "error", "errored: " + "x" * 115 + "…"),
    (ev.RunCancelled(reason="cancelled"), "github", "error", "error", "cancelled: cancelled"),
    (ev.RunCancelled(reason="cancelled"), "gitlab", "canceled", "error", "cancelled: cancelled"),
])
async def test_each_end_maps_to_the_forges_own_state(
        world: World, forges: dict[str, FakeForge], end: ev.Event, kind: str, sent: str,
        recorded: str, says: str) -> None:
    fake = forges[kind]
    await world.project(forge_settings(fake))
    await world.start_run()  # only the end is delivered
    await world.deliver(*await world.append("r1", end))
    await world.reporter.idle()
    assert fake.problems == []
    assert fake.states() == [sent]
    description = fake.received[0].body["description"]
    assert description == f"Cyclone run r1 {says}"
    assert len(description) <= 140  # GitHub's limit
    [status] = await world.statuses()
    assert isinstance(status, ev.CommitStatusReported)
    assert (status.state, status.forge_state) == (recorded, sent)


async def test_a_forge_that_is_down_is_given_up_after_the_last_attempt_and_recorded(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await world.project(forge_settings(None, "gitea", f"http://127.0.0.1:{unused_port()}"))
    await world.deliver(*await world.start_run())
    await world.reporter.idle()
    [failed] = await world.statuses()
    assert isinstance(failed, ev.CommitStatusFailed)
    assert (failed.state, failed.forge, failed.sha, failed.attempts) == (
        "pending", "gitea", SHA, 3)
    assert "ClientConnectorError" in failed.reason
    assert TOKEN not in _everything_logged(caplog)
    # The run itself goes on regardless: its end is tried (and recorded) as well.
    await world.deliver(*await world.append("r1", ev.RunSucceeded()))
    await world.reporter.idle()
    assert [(s.state, type(s).__name__) for s in await world.statuses()] == [
        ("pending", "CommitStatusFailed"), ("success", "CommitStatusFailed")]


async def test_a_forge_that_fails_then_recovers_gets_the_status_on_a_later_attempt(
        world: World, forges: dict[str, FakeForge]) -> None:
    fake = forges["github"]
    fake.script = [500, 502]
    await world.project(forge_settings(fake))
    await world.deliver(*await world.start_run())
    await world.reporter.idle()
    assert fake.states() == ["pending"] * 3
    [reported] = await world.statuses()
    assert isinstance(reported, ev.CommitStatusReported)
    assert reported.attempt == 3


async def test_a_refusal_is_final_and_the_token_it_echoes_is_recorded_nowhere(
        world: World, forges: dict[str, FakeForge], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = forges["github"]
    fake.script = [401]
    await world.project(forge_settings(fake))
    await world.deliver(*await world.start_run())
    await world.reporter.idle()
    assert len(fake.received) == 1  # a 4xx is not retried
    [failed] = await world.statuses()
    assert isinstance(failed, ev.CommitStatusFailed)
    assert failed.attempts == 1
    assert failed.reason == "HTTP 401: Bad credentials ***"
    assert TOKEN not in _everything_logged(caplog)
    stored = [r.data for r in await world.store.read(run_stream("r1"))]
    assert TOKEN not in repr(stored)


async def test_the_consumer_does_not_wait_on_a_slow_forge(
        world: World, forges: dict[str, FakeForge]) -> None:
    fake = forges["gitlab"]
    fake.hold = asyncio.Event()
    await world.project(forge_settings(fake))
    # handle returns while the forge still holds the request: nothing is recorded yet.
    await asyncio.wait_for(world.deliver(*await world.start_run()), HANG_S)  # held forever
    await eventually(lambda: fake.received, what="the request to reach the forge")
    assert await world.statuses() == []
    fake.hold.set()
    await world.reporter.idle()
    assert [type(s).__name__ for s in await world.statuses()] == ["CommitStatusReported"]


async def test_a_redelivered_event_posts_nothing_more(
        world: World, forges: dict[str, FakeForge]) -> None:
    fake = forges["github"]
    await world.project(forge_settings(fake))
    started = await world.start_run()
    await world.deliver(*started, *started)  # again while the first is being sent
    await world.reporter.idle()
    await world.deliver(*started)  # again once it is recorded
    await world.reporter.idle()
    assert fake.states() == ["pending"]
    assert len(await world.statuses()) == 1


async def test_a_pending_still_retrying_when_the_run_ends_gives_way_to_the_end(
        store: SqliteEventStore, forges: dict[str, FakeForge]) -> None:
    world = await make_world(store, attempts=5, first_delay=600.0, max_delay=600.0)
    try:
        fake = forges["github"]
        fake.script = [503]
        await world.project(forge_settings(fake))
        await world.deliver(*await world.start_run())
        await eventually(lambda: fake.received, what="the first pending attempt")
        await world.deliver(*await world.append("r1", ev.RunSucceeded()))
        await asyncio.wait_for(world.reporter.idle(), HANG_S)  # not after the 600 s backoff
    finally:
        await world.reporter.close()
    assert fake.states() == ["pending", "success"]  # the forge ends on the end state
    pending, success = await world.statuses()
    assert isinstance(pending, ev.CommitStatusFailed)
    assert pending.reason.startswith("superseded")
    assert isinstance(success, ev.CommitStatusReported)


async def test_only_runs_with_a_forge_and_a_resolved_commit_are_reported(
        world: World, forges: dict[str, FakeForge]) -> None:
    fake = forges["github"]
    await world.project(None, name="plain")
    await world.project(forge_settings(fake), name="demo")
    await world.deliver(*await world.start_run("r1", project="plain"))
    await world.deliver(*await world.start_run("r2", commit="main"))  # not a SHA
    await world.start_run("r3")
    await world.append("r3", ev.RunSucceeded())
    run3 = await world.store.read(run_stream("r3"))
    await world.deliver(*run3)  # RunPlanned handled once r3 has ended: only its end
    await world.reporter.idle()
    assert fake.states() == ["success"]
    assert [s.state for s in await world.statuses("r3")] == ["success"]
    assert await world.statuses("r1") == [] and await world.statuses("r2") == []


async def test_it_consumes_the_events_topic_of_a_bus(
        world: World, forges: dict[str, FakeForge]) -> None:
    fake = forges["gitea"]
    await world.project(forge_settings(fake))
    bus = MemoryBus()
    consuming = asyncio.create_task(world.reporter.run(bus))
    try:
        for r in await world.start_run():
            await bus.publish(TOPIC_EVENTS, "r1", encode_event(r))
        await eventually(lambda: fake.received, what="the pending status")
        for r in await world.append("r1", ev.RunFailed()):
            await bus.publish(TOPIC_EVENTS, "r1", encode_event(r))
        await eventually(lambda: len(fake.received) == 2, what="the failure status")
        await world.reporter.idle()
    finally:
        await bus.close()
        await consuming
    assert fake.states() == ["pending", "failure"]


async def test_the_run_and_its_state_machine_pass_over_commit_status_events(
        world: World) -> None:
    await world.start_run()
    before = fold(await world.store.read(run_stream("r1")))
    await world.append("r1", ev.CommitStatusReported(state="pending", forge="github", sha=SHA,
                                                     target_url="u", attempt=1),
                       ev.CommitStatusFailed(state="pending", forge="github", sha=SHA,
                                             reason="down", attempts=5))
    after = fold(await world.store.read(run_stream("r1")))
    assert before is not None and after is not None
    assert after.skipped_events == 0  # known types, not skipped as unknown
    assert after == replace(before, last_seq=after.last_seq)
    source = (".cyclone.yml", "")
    assert decide(after, source, 4) == decide(before, source, 4)


def _everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
