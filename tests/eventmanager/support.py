"""Event manager replicas for tests: several ``EventManager``s sharing one SQLite store
and one coordination service (the in-process coordinator, or a real etcd with a client
per replica, as separate processes would have), each with its own in-process bus.

Tests drive ``advance`` directly, as a replica's consumer would on each event of a
run, and play the worker's part by appending what a worker reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from services.api.commands import request_run
from services.eventmanager.admission import started
from services.eventmanager.service import EventManager
from shared import events as ev
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.coordination.etcd import EtcdCoordinator
from shared.adapters.coordination.memory import MemoryCoordinator
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.events import NewEvent, RecordedEvent, run_stream
from shared.ports.coordination import Coordinator
from shared.projections.projects import project_stream
from shared.projections.runs import RunView
from shared.runstream import append_to_run, load_run
from shared.status import JobStatus

__all__ = ["PIPELINE", "Replicas", "connect", "replicas", "worker_reports"]

PIPELINE = """
jobs:
  work:
    image: none
    steps:
      - run: ["true"]
"""

Connect = Callable[[], Awaitable[Coordinator]]


@pytest.fixture(params=["memory", "etcd"])
async def connect(request: pytest.FixtureRequest) -> AsyncIterator[Connect]:
    """A new client of one coordination service per call (the in-process coordinator is
    its own single client: every replica of one process shares it)."""
    opened: list[Coordinator] = []
    if request.param == "memory":
        shared = MemoryCoordinator()
        opened.append(shared)

        async def make() -> Coordinator:
            return shared
    else:
        url = request.getfixturevalue("etcd_url")

        async def make() -> Coordinator:
            coord = await EtcdCoordinator.connect(url)
            opened.append(coord)
            return coord

    yield make
    for coord in opened:
        await coord.close()


class Replicas:
    """Event managers on one store and one coordination service; see the module doc."""

    def __init__(self, store: SqliteEventStore, connect: Connect) -> None:
        self.store = store
        self._connect = connect
        self._buses: list[MemoryBus] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def manager(self, *, running: bool = False,
                      catch_up_at_start: bool = False) -> EventManager:
        """A new replica; ``running``: its consumer and watches run in the background."""
        bus = MemoryBus()
        self._buses.append(bus)
        manager = EventManager(self.store, bus, await self._connect(), max_parallel_jobs=4,
                               catch_up_at_start=catch_up_at_start)
        if running:
            self._tasks.append(asyncio.create_task(manager.run()))
        return manager

    async def project(self, limit: int) -> str:
        """A project of its own (the etcd server is shared by the session's tests)."""
        name = f"p{uuid.uuid4().hex[:10]}"
        await self.store.append(project_stream(name), [NewEvent(ev.ProjectRegistered(
            name=name, repo="unused", max_concurrent_runs=limit))], 0)
        return name

    async def request(self, project: str) -> str:
        return await request_run(self.store, project=project, trigger="manual",
                                 branch="main", commit="", pipeline_file=".cyclone.yml",
                                 pipeline=PIPELINE, source="")

    async def state(self, run_id: str) -> RunView:
        run = await load_run(self.store, run_id)
        assert run is not None
        return run

    async def active(self, runs: list[str]) -> list[str]:
        """The runs that have started and not ended."""
        states = [await self.state(r) for r in runs]
        return [r.id for r in states if started(r) and not r.done]

    async def events(self, run_id: str) -> list[RecordedEvent]:
        return await self.store.read(run_stream(run_id))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for bus in self._buses:
            await bus.close()


@pytest.fixture
async def replicas(tmp_path: Path, connect: Connect) -> AsyncIterator[Replicas]:
    store = await SqliteEventStore.open(tmp_path / "store.db")
    running = Replicas(store, connect)
    try:
        yield running
    finally:
        await running.close()
        await store.close()


async def worker_reports(replicas: Replicas, run_id: str, worker: str = "w1") -> None:
    """What a worker appends for each queued job of the run: started, then succeeded."""

    def report(run: RunView | None) -> list[ev.Event]:
        assert run is not None
        out: list[ev.Event] = []
        for job in run.jobs:
            if job.status == "queued":
                out += [ev.JobStarted(job=job.name, worker=worker, executor="test"),
                        ev.JobFinished(job=job.name, status=JobStatus.SUCCESS, duration_s=0.0)]
        return out

    await append_to_run(replicas.store, run_id, report)
