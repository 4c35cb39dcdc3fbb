"""Cron schedules fire each due fire once: over a real SQLite store, with an injected clock
and ``tick()`` called directly, so no test waits for a real minute. Two schedulers on the
same minute start one run, a restarted one does not fire again what was fired, fires
missed while nothing ran start one run (or none with catch-up off), and a bad cron line
in a project's settings is refused by the API naming it."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import build_app
from services.api.auth import Tokens
from services.api.context import ApiContext
from services.api.readmodel import RunsReadModel
from services.eventmanager.scheduler import (
    Scheduler,
    latest_fire,
    schedule_stream,
)
from shared import cron
from shared import events as ev
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.config import Settings
from shared.errors import ConcurrencyConflict, ConfigError
from shared.events import NewEvent, RecordedEvent, decode, run_stream
from shared.leader import leader_key, run_as_leader
from shared.projections.projects import project_stream
from shared.projections.replay import replay_runs
from shared.projections.runs import RunView
from tests.eventmanager.support import Connect, connect
from tests.infra.etcd import etcd_server, etcd_url
from tests.support import HANG_S, eventually

__all__ = ["connect", "etcd_server", "etcd_url"]  # fixtures

REPO = "https://git.example/acme/app.git"
T0 = datetime(2030, 1, 7, 10, 0, 30, tzinfo=UTC)  # when the test's project is registered


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return T0.replace(hour=hour, minute=minute, second=second)


class Clock:
    """The scheduler's clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    opened = await SqliteEventStore.open(tmp_path / "store.db")
    try:
        yield opened
    finally:
        await opened.close()


async def register(store: SqliteEventStore, schedules: Sequence[str], name: str = "demo",
                   when: datetime = T0, **fields: Any) -> None:
    event = ev.ProjectRegistered(name=name, repo=REPO, schedules=tuple(schedules),
                                 env={"DEPLOY": "nightly"}, **fields)
    await store.append(project_stream(name), [NewEvent(event, ts=when.isoformat())], 0)


async def update(store: SqliteEventStore, changes: dict[str, Any], when: datetime,
                 name: str = "demo") -> None:
    seq = len(await store.read(project_stream(name)))
    await store.append(project_stream(name),
                       [NewEvent(ev.ProjectUpdated(changes=changes), ts=when.isoformat())], seq)


def pipeline(*lines: str) -> str:
    """A pipeline file run on pushes to main and on the cron ``lines`` (none: no schedule)."""
    crons = "".join(f"\n    - cron: '{line}'" for line in lines)
    schedule = f"\n  schedule:{crons}" if lines else ""
    return f"""
on:
  push:
    branches: [main]{schedule}
jobs:
  build:
    image: busybox
    steps:
      - run: ["true"]
"""


async def branch_run(store: SqliteEventStore, run_id: str, branch: str, text: str,
                     when: datetime, trigger: str = "push", project: str = "demo") -> None:
    """A git run of ``branch`` whose checkout read ``text`` as the pipeline file."""
    requested = ev.RunRequested(project=project, trigger=trigger, branch=branch, commit="",
                                pipeline_file=".cyclone.yml", pipeline="", source=REPO,
                                source_kind="git")
    resolved = ev.RunSourceResolved(commit="c0ffee" * 6 + "c0ff", branch=branch,
                                    pipeline_file=".cyclone.yml", pipeline=text)
    await store.append(run_stream(run_id), [NewEvent(requested, ts=when.isoformat()),
                                            NewEvent(resolved, ts=when.isoformat())], 0)


async def scheduled_runs(store: SqliteEventStore) -> list[RunView]:
    runs = (await replay_runs(store)).runs.values()
    return sorted((r for r in runs if r.trigger == "schedule"), key=lambda r: r.created_at)


async def fires(store: SqliteEventStore, project: str = "demo") -> list[ev.Event]:
    return [e for r in await store.read(schedule_stream(project)) if (e := decode(r))]


async def requested(store: SqliteEventStore, run_id: str) -> ev.RunRequested:
    [first, *_] = await store.read(run_stream(run_id))
    event = decode(first)
    assert isinstance(event, ev.RunRequested)
    return event


# --- firing ------------------------------------------------------------------------------


async def test_a_schedule_fires_once_per_due_minute_with_the_projects_default_branch(
    store: SqliteEventStore,
) -> None:
    await register(store, ["* * * * *"], default_branch="trunk", pipeline_file="ci.yml")
    clock = Clock(at(10, 0, 45))
    scheduler = Scheduler(store, now=clock)
    assert await scheduler.tick() == []  # registered at 10:00:30: nothing due yet

    clock.now = at(10, 1)
    [first] = await scheduler.tick()
    clock.now = at(10, 1, 40)
    assert await scheduler.tick() == []  # the same minute again: already fired
    clock.now = at(10, 2)
    [second] = await scheduler.tick()

    assert [r.id for r in await scheduled_runs(store)] == [first, second]
    run = await requested(store, first)
    assert (run.project, run.trigger, run.branch, run.commit, run.source, run.source_kind,
            run.pipeline_file, run.params) == ("demo", "schedule", "trunk", "", REPO, "git",
                                               "ci.yml", {"DEPLOY": "nightly"})
    assert [(f.at, f.run_id, f.late) for f in await fires(store)
            if isinstance(f, ev.ScheduleFired)] == [
        (at(10, 1).isoformat(), first, False), (at(10, 2).isoformat(), second, False)]


async def test_two_schedulers_deciding_the_same_minute_start_one_run(
    store: SqliteEventStore,
) -> None:
    await register(store, ["* * * * *", "*/2 * * * *"])
    clock = Clock(at(10, 2))
    racing = RacingStore(store, racers=2)
    one, two = Scheduler(racing, now=clock), Scheduler(racing, now=clock)

    first, second = await asyncio.gather(one.tick(), two.tick())

    assert racing.conflicts == 1  # both decided on the same seq; one append lost
    runs = await scheduled_runs(store)
    assert len(runs) == 2  # one per cron line, not one per scheduler
    assert sorted(first + second) == sorted(r.id for r in runs)
    assert {(await requested(store, r.id)).requested_by for r in runs} == {
        "schedule '* * * * *'", "schedule '*/2 * * * *'"}
    clock.now = at(10, 2, 30)
    assert await one.tick() == [] and await two.tick() == []


async def test_a_restarted_scheduler_does_not_fire_again_what_was_fired(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    store = await SqliteEventStore.open(path)
    try:
        await register(store, ["* * * * *"])
        [fired] = await Scheduler(store, now=Clock(at(10, 1, 5))).tick()
    finally:
        await store.close()

    store = await SqliteEventStore.open(path)  # the process restarted within the minute
    try:
        clock = Clock(at(10, 1, 50))
        again = Scheduler(store, now=clock)
        assert await again.tick() == []
        clock.now = at(10, 2)
        [nxt] = await again.tick()
        assert [r.id for r in await scheduled_runs(store)] == [fired, nxt]
    finally:
        await store.close()


async def test_a_fire_recorded_by_a_scheduler_that_died_before_requesting_its_run_is_completed(
    store: SqliteEventStore,
) -> None:
    await register(store, ["* * * * *"])
    # What a scheduler that crashed between its two appends left: the fire, no run.
    fired = ev.ScheduleFired(project="demo", cron="* * * * *", at=at(10, 1).isoformat(),
                             run_id="0123456789abcdef0123")
    await store.append(schedule_stream("demo"), [NewEvent(fired)], 0)
    clock = Clock(at(10, 1, 20))

    assert await Scheduler(store, now=clock).tick() == [fired.run_id]
    assert await Scheduler(store, now=clock).tick() == []  # completed once, by one of them
    [run] = await scheduled_runs(store)
    assert run.id == fired.run_id and run.branch == "main"


async def test_fires_missed_while_nothing_ran_start_one_late_run(
    store: SqliteEventStore,
) -> None:
    await register(store, ["0 * * * *"])
    clock = Clock(at(11, 0))
    [on_time] = await Scheduler(store, now=clock).tick()

    clock.now = at(14, 20)  # down from 11:00 to 14:20: the 12:00, 13:00, 14:00 fires missed
    restarted = Scheduler(store, now=clock)
    [caught_up] = await restarted.tick()
    assert await restarted.tick() == []
    clock.now = at(15, 0)
    [nxt] = await restarted.tick()

    assert [r.id for r in await scheduled_runs(store)] == [on_time, caught_up, nxt]
    recorded = [(f.at, f.late, f.missed_from) for f in await fires(store)
                if isinstance(f, ev.ScheduleFired)]
    assert recorded == [(at(11, 0).isoformat(), False, ""),
                        (at(14, 0).isoformat(), True, at(12, 0).isoformat()),
                        (at(15, 0).isoformat(), False, "")]


async def test_missed_every_minute_fires_start_one_run_not_one_per_minute(
    store: SqliteEventStore,
) -> None:
    await register(store, ["* * * * *"])
    clock = Clock(at(10, 1))
    await Scheduler(store, now=clock).tick()
    clock.now = at(12, 7, 30)  # two hours down
    assert len(await Scheduler(store, now=clock).tick()) == 1
    assert len(await scheduled_runs(store)) == 2


async def test_with_catch_up_off_missed_fires_start_nothing_and_are_recorded(
    store: SqliteEventStore,
) -> None:
    await register(store, ["0 * * * *"])
    clock = Clock(at(11, 0, 10))
    [on_time] = await Scheduler(store, now=clock, catch_up=False).tick()

    clock.now = at(14, 20)
    restarted = Scheduler(store, now=clock, catch_up=False)
    assert await restarted.tick() == []
    clock.now = at(15, 0)
    [nxt] = await restarted.tick()

    assert [r.id for r in await scheduled_runs(store)] == [on_time, nxt]
    missed = [f for f in await fires(store) if isinstance(f, ev.ScheduleMissed)]
    assert [(m.at, m.missed_from) for m in missed] == [(at(14, 0).isoformat(),
                                                        at(12, 0).isoformat())]


async def test_a_new_schedule_has_no_missed_fires(store: SqliteEventStore) -> None:
    await register(store, [])
    clock = Clock(at(12, 30, 5))
    scheduler = Scheduler(store, now=clock)
    await update(store, {"schedules": ["0 * * * *"]}, when=at(12, 30))
    assert await scheduler.tick() == []  # 11:00 and 12:00 were before it existed
    clock.now = at(13, 0)
    assert len(await scheduler.tick()) == 1


async def test_changing_the_settings_keeps_the_time_a_kept_line_took_effect(
    store: SqliteEventStore,
) -> None:
    await register(store, ["0 * * * *"])
    await update(store, {"schedules": ["0 * * * *", "30 3 * * *"]}, when=at(12, 30))
    [fired] = await Scheduler(store, now=Clock(at(12, 40))).tick()  # 12:00, missed
    assert (await requested(store, fired)).requested_by == "schedule '0 * * * *'"


async def test_a_removed_schedule_stops_and_a_deleted_project_fires_nothing(
    store: SqliteEventStore,
) -> None:
    await register(store, ["* * * * *"])
    await register(store, ["* * * * *"], name="other")
    clock = Clock(at(10, 1))
    scheduler = Scheduler(store, now=clock)
    assert len(await scheduler.tick()) == 2
    await update(store, {"schedules": []}, when=at(10, 1, 10))
    seq = len(await store.read(project_stream("other")))
    await store.append(project_stream("other"), [NewEvent(ev.ProjectDeleted())], seq)
    clock.now = at(10, 5)
    assert await scheduler.tick() == []


# --- cron lines from the default branch's pipeline file ---------------------------------


async def test_the_pipeline_files_schedule_comes_from_the_latest_run_of_the_default_branch(
    store: SqliteEventStore,
) -> None:
    await register(store, [])
    await branch_run(store, "r1", "main", pipeline("30 * * * *"), when=at(10, 10))
    await branch_run(store, "r2", "feature", pipeline("* * * * *"), when=at(10, 11))
    await branch_run(store, "r3", "main", pipeline("* * * * *"), when=at(10, 12),
                     trigger="pull_request")  # not the default branch's file
    await branch_run(store, "r4", "main", pipeline("* * * * *"), when=at(10, 13),
                     trigger="rerun")  # an older commit's file
    clock = Clock(at(10, 29))
    scheduler = Scheduler(store, now=clock)
    assert [s.line for s in await scheduler.schedules()] == ["30 * * * *"]
    assert await scheduler.tick() == []
    clock.now = at(10, 30)
    [fired] = await scheduler.tick()
    assert (await requested(store, fired)).branch == "main"

    # The next run of main reads a file without a schedule: it stops.
    await branch_run(store, "r5", "main", pipeline(), when=at(10, 40))
    clock.now = at(11, 30)
    assert await scheduler.schedules() == []
    assert await scheduler.tick() == []


async def test_a_line_in_both_the_file_and_the_settings_is_one_schedule(
    store: SqliteEventStore,
) -> None:
    await register(store, ["0 * * * *"])  # in force since 10:00:30
    await branch_run(store, "r1", "main", pipeline("0  *  * * *"), when=at(12, 30))
    clock = Clock(at(12, 40))  # the first scheduler starts: 11:00 and 12:00 were missed
    scheduler = Scheduler(store, now=clock)
    [schedule] = await scheduler.schedules()
    assert (schedule.line, schedule.origins) == ("0 * * * *", ("settings", "file"))
    assert len(await scheduler.tick()) == 1
    clock.now = at(13, 0)
    assert len(await scheduler.tick()) == 1
    assert [(f.at, f.late) for f in await fires(store) if isinstance(f, ev.ScheduleFired)] == [
        (at(12, 0).isoformat(), True), (at(13, 0).isoformat(), False)]


async def test_the_file_schedule_follows_the_projects_default_branch_and_repository(
    store: SqliteEventStore,
) -> None:
    await register(store, [])
    await branch_run(store, "r1", "trunk", pipeline("0 * * * *"), when=at(10, 10))
    clock = Clock(at(12, 40))
    scheduler = Scheduler(store, now=clock)
    assert await scheduler.schedules() == []  # trunk is not the default branch
    await update(store, {"default_branch": "trunk"}, when=at(12, 30))
    assert [s.line for s in await scheduler.schedules()] == ["0 * * * *"]
    assert await scheduler.tick() == []  # in force since 12:30: 11:00 and 12:00 were not
    clock.now = at(13, 0)
    assert len(await scheduler.tick()) == 1
    await update(store, {"repo": "https://git.example/acme/other.git"}, when=at(13, 10))
    assert await scheduler.schedules() == []  # that file was another repository's


async def test_an_invalid_file_keeps_the_schedule_the_last_valid_one_had(
    store: SqliteEventStore,
) -> None:
    await register(store, [])
    await branch_run(store, "r1", "main", pipeline("0 3 * * *"), when=at(10, 2))
    await branch_run(store, "r2", "main", "jobs: [not, a, mapping", when=at(10, 3))
    scheduler = Scheduler(store, now=Clock(at(10, 4)))
    assert [s.line for s in await scheduler.schedules()] == ["0 3 * * *"]


# --- the loop and the pieces -------------------------------------------------------------


async def test_the_loop_wakes_at_the_next_fire(store: SqliteEventStore) -> None:
    await register(store, ["* * * * *"])
    start, began = at(10, 0, 59) + timedelta(milliseconds=300), time.monotonic()
    # It re-reads its settings only hourly: within the deadline, only the wake-up at the
    # fire (0.7 s ahead) can make the run.
    scheduler = Scheduler(store, now=lambda: start + timedelta(seconds=time.monotonic() - began),
                          refresh_s=3600)
    task = asyncio.create_task(scheduler.run())
    try:
        [run] = await eventually(lambda: scheduled_runs(store), what="the 10:01 fire")
        assert await requested(store, run.id)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class RunningClock:
    """A clock that runs at real speed from a time the test sets (and may jump)."""

    def __init__(self, start: datetime) -> None:
        self.jump(start)

    def jump(self, to: datetime) -> None:
        self.base, self.began = to, time.monotonic()

    def __call__(self) -> datetime:
        return self.base + timedelta(seconds=time.monotonic() - self.began)


async def test_replicas_elect_one_scheduler_and_the_other_takes_over_when_it_stops(
    store: SqliteEventStore, connect: Connect,
) -> None:
    await register(store, ["* * * * *"])
    clock = RunningClock(at(10, 0, 59) + timedelta(milliseconds=500))
    role = f"scheduler-{uuid.uuid4().hex[:8]}"  # the etcd server is shared by the session
    coords = [await connect(), await connect()]
    replicas = {}
    for i, coord in enumerate(coords):
        scheduler = Scheduler(store, now=clock, refresh_s=0.2)
        replicas[f"r{i}"] = asyncio.create_task(
            run_as_leader(coord, role, f"r{i}", scheduler.run, ttl=2))
    try:
        [first] = await eventually(lambda: scheduled_runs(store), what="the 10:01 fire")
        leader = (await coords[0].get(leader_key(role)) or b"").decode()
        assert leader in replicas
        stopped = replicas.pop(leader)
        stopped.cancel()  # the leader stops (and revokes its lease on the way out)
        with contextlib.suppress(asyncio.CancelledError):
            await stopped
        clock.jump(at(10, 1, 59) + timedelta(milliseconds=500))

        async def two() -> list[RunView]:
            runs = await scheduled_runs(store)
            return runs if len(runs) >= 2 else []

        runs = await eventually(two, what="the 10:02 fire, by the other replica")
        assert [r.id for r in runs][:1] == [first.id] and len(runs) == 2
        [standby] = replicas
        assert await coords[0].get(leader_key(role)) == standby.encode()
        assert [f.at for f in await fires(store) if isinstance(f, ev.ScheduleFired)] == [
            at(10, 1).isoformat(), at(10, 2).isoformat()]
    finally:
        for task in replicas.values():
            task.cancel()
        for task in replicas.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task


def test_latest_fire_finds_the_last_fire_of_a_long_gap_without_walking_it() -> None:
    yearly, new_year = cron.parse("0 0 1 1 *"), cron.parse("* * 1 1 *")
    after, upto = datetime(2001, 5, 1, tzinfo=UTC), datetime(2030, 6, 1, tzinfo=UTC)
    assert latest_fire(yearly, after, upto) == datetime(2030, 1, 1, tzinfo=UTC)
    assert latest_fire(new_year, after, upto) == datetime(2030, 1, 1, 23, 59, tzinfo=UTC)
    assert latest_fire(yearly, datetime(2030, 1, 1, tzinfo=UTC), upto) is None
    every = cron.parse("* * * * *")
    assert latest_fire(every, at(10, 0), at(10, 0, 59)) is None
    assert latest_fire(every, at(10, 0), at(10, 1)) == at(10, 1)


def test_catch_up_is_on_unless_switched_off() -> None:
    assert Settings.from_env({}).schedule_catch_up is True
    assert Settings.from_env({"CYCLONE_SCHEDULE_CATCHUP": "0"}).schedule_catch_up is False
    with pytest.raises(ConfigError, match="CYCLONE_SCHEDULE_CATCHUP"):
        Settings.from_env({"CYCLONE_SCHEDULE_CATCHUP": "sometimes"})


# --- the project setting through the API ------------------------------------------------


async def test_the_api_refuses_a_bad_cron_line_naming_it_and_keeps_good_ones(
    store: SqliteEventStore,
) -> None:
    tokens = Tokens(store)
    _, admin = await tokens.create("admin", admin=True)
    app = build_app(ApiContext(store=store, readmodel=RunsReadModel()))
    headers = {"Authorization": f"Bearer {admin}"}
    async with TestClient(TestServer(app)) as client:
        body = {"name": "demo", "repo": REPO, "schedules": ["0 3 * * *", "61 * * * *"]}
        async with client.post("/api/v1/projects", json=body, headers=headers) as response:
            assert response.status == 400
            detail = (await response.json())["detail"]
        assert "schedules.1" in detail and "'61 * * * *'" in detail and "minute" in detail
        assert await store.read(project_stream("demo")) == []

        body["schedules"] = ["0 3 * * *", "@hourly"]
        async with client.post("/api/v1/projects", json=body, headers=headers) as response:
            assert response.status == 201, await response.text()
            assert (await response.json())["schedules"] == ["0 3 * * *", "@hourly"]
        patch = {"schedules": ["0 3 * * mon-fri", "0 0 30 feb *"]}
        async with client.patch("/api/v1/projects/demo", json=patch,
                                headers=headers) as response:
            assert response.status == 400
            assert "'0 0 30 feb *'" in (await response.json())["detail"]
        async with client.patch("/api/v1/projects/demo", json={"schedules": ["*/15 * * * *"]},
                                headers=headers) as response:
            assert response.status == 200
        async with client.get("/api/v1/projects/demo", headers=headers) as response:
            assert (await response.json())["schedules"] == ["*/15 * * * *"]
    lines = [s.line for s in await Scheduler(store).schedules()]
    assert lines == ["*/15 * * * *"]


# --- a store that makes two schedulers collide ------------------------------------------


class RacingStore:
    """The real store, except that appends to a schedule stream wait until ``racers`` of
    them are pending: every scheduler has decided on the same seq before any writes."""

    def __init__(self, inner: SqliteEventStore, racers: int) -> None:
        self.inner = inner
        self.racers = racers
        self.conflicts = 0
        self._waiting = 0
        self._go = asyncio.Event()

    async def append(self, stream: str, events: Sequence[NewEvent],
                     expected_seq: int) -> list[RecordedEvent]:
        if stream.startswith("schedule-") and not self._go.is_set():
            self._waiting += 1
            if self._waiting == self.racers:
                self._go.set()
            await asyncio.wait_for(self._go.wait(), HANG_S)
        try:
            return await self.inner.append(stream, events, expected_seq)
        except ConcurrencyConflict:
            self.conflicts += 1
            raise

    async def read(self, stream: str, from_seq: int = 1) -> list[RecordedEvent]:
        return await self.inner.read(stream, from_seq)

    async def read_last(self, stream: str, count: int) -> list[RecordedEvent]:
        return await self.inner.read_last(stream, count)

    async def read_all(self, from_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return await self.inner.read_all(from_position, limit)

    async def last_position(self) -> int:
        return await self.inner.last_position()

    async def streams(self, prefix: str = "") -> list[str]:
        return await self.inner.streams(prefix)

    async def checkpoint(self, name: str) -> int:
        return await self.inner.checkpoint(name)

    async def save_checkpoint(self, name: str, position: int) -> None:
        await self.inner.save_checkpoint(name, position)

    async def close(self) -> None:
        await self.inner.close()
