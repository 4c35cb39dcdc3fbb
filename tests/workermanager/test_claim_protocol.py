"""The claim protocol (``JobClaims``) between workers: a job runs once, as the attempt
the store says it is, through redeliveries, cancels and lost leases.

Real parts: the SQLite event store, the in-process coordinator, and each worker's
``WorkerLease``; the jobs are never executed (their ``JobRun`` only stands for one
that runs), as the protocol is what is under test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.workermanager.claims import ActiveJob, JobClaims, NotOurs, Started
from services.workermanager.jobs import JobRun
from services.workermanager.lease import WorkerLease
from services.workermanager.logship import LogShipper
from shared import events as ev
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.coordination.memory import MemoryCoordinator
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.adapters.executor.shell import ShellExecutor
from shared.keys import claim_key
from shared.pipeline.plan import JobSpec, Plan, StepSpec
from shared.ports.executor import RunContext
from shared.projections.runs import JobView
from shared.runstream import RunStates, new_run_id
from shared.status import JobStatus
from tests.support import eventually

JOB = "build"
PLAN = Plan(source_file=".cyclone.yml",
            jobs=(JobSpec(name=JOB, image="img", steps=(StepSpec(name="make", image="img"),)),))


@dataclass
class World:
    store: SqliteEventStore
    coord: MemoryCoordinator
    tmp_path: Path

    async def worker(self, worker_id: str, ttl: float = 10.0) -> Worker:
        lease = WorkerLease(self.coord, worker_id, b"shell", ttl)
        await lease.register()
        return Worker(lease, JobClaims(lease, RunStates(self.store), "shell"))

    async def queued_run(self) -> str:
        run_id = new_run_id()
        await RunStates(self.store).append(run_id, lambda _: [
            ev.RunRequested(project="demo", trigger="manual", branch="main", commit="",
                            pipeline_file=".cyclone.yml", pipeline="", source=""),
            ev.RunPlanned(plan=PLAN), ev.JobQueued(job=JOB)])
        return run_id

    async def append(self, run_id: str, *events: ev.Event) -> None:
        await RunStates(self.store).append(run_id, lambda _: events)

    async def job(self, run_id: str) -> JobView:
        run = await RunStates(self.store).load(run_id)
        view = run.job(JOB) if run else None
        assert view is not None
        return view

    async def claim_holder(self, run_id: str) -> bytes | None:
        return await self.coord.get(claim_key(run_id, JOB))


@dataclass
class Worker:
    lease: WorkerLease
    claims: JobClaims

    async def claim_and_start(self, run_id: str) -> Started:
        generation = await self.claims.claim(run_id, JOB)
        assert generation is not None
        started = await self.claims.start(run_id, JOB, generation, asyncio.Event())
        assert isinstance(started, Started)
        return started

    async def lose_lease_in_etcd(self) -> None:
        """Etcd lets the lease go (its claims with it) before the worker notices."""
        assert self.lease.lease is not None
        await self.lease.lease.revoke()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = await SqliteEventStore.open(tmp_path / "events.db")
    coord = MemoryCoordinator()
    try:
        yield World(store, coord, tmp_path)
    finally:
        await coord.close()
        await store.close()


@asynccontextmanager
async def running(worker: Worker, started: Started, tmp_path: Path) -> AsyncIterator[ActiveJob]:
    """A job the worker runs (in a task of its own) until it is stopped."""
    run_id = started.run.id
    job = JobRun(started.run, started.plan.job(JOB), ShellExecutor(tmp_path / "runs"),
                 RunContext(run_id=run_id),
                 report=worker.claims.reporter(run_id, JOB, started.attempt),
                 logs=LogShipper(MemoryBus(), run_id))

    async def run() -> None:
        with worker.claims.running(job, started.generation):
            await job.cancelled.wait()

    task = asyncio.create_task(run())
    try:
        entry = await eventually(lambda: worker.claims.active.get((run_id, JOB)),
                                 what="the job running")
        assert entry is not None
        yield entry
    finally:
        job.cancel()
        await task


async def test_a_job_another_worker_started_is_not_taken_on_redelivery(world: World) -> None:
    run_id = await world.queued_run()
    first, second = await world.worker("w1"), await world.worker("w2")
    await first.claim_and_start(run_id)

    assert await asyncio.wait_for(second.claims.claim(run_id, JOB), 5) is None
    job = await world.job(run_id)
    assert (job.status, job.worker, job.attempt) == ("running", "w1", 1)


async def test_a_job_whose_run_is_being_cancelled_is_not_started(world: World) -> None:
    run_id = await world.queued_run()
    await world.append(run_id, ev.RunCancelRequested(reason="no longer needed"))
    worker = await world.worker("w1")
    generation = await worker.claims.claim(run_id, JOB)
    assert generation is not None
    taken = asyncio.Event()

    outcome = await worker.claims.start(run_id, JOB, generation, taken)

    assert outcome == NotOurs(release=generation)  # its claim is given up
    assert taken.is_set()  # and its message committed: nothing is left to do
    assert (await world.job(run_id)).status == "queued"


async def test_a_claim_lost_with_the_lease_while_starting_is_claimed_again(
        world: World) -> None:
    run_id = await world.queued_run()
    worker = await world.worker("w1", ttl=3.0)
    keeper = asyncio.create_task(worker.lease.keep_alive(worker.claims.lease_lost))
    try:
        generation = await worker.claims.claim(run_id, JOB)
        assert generation is not None
        await worker.lose_lease_in_etcd()
        await eventually(lambda: worker.lease.generation > generation, what="a new lease")

        started = await worker.claims.start(run_id, JOB, generation, asyncio.Event())

        assert isinstance(started, Started)
        assert (started.attempt, started.generation) == (1, worker.lease.generation)
        assert await world.claim_holder(run_id) == b"w1"  # no one else may take it now
        job = await world.job(run_id)
        assert (job.status, job.attempt) == ("running", 1)
    finally:
        worker.lease.stop()
        keeper.cancel()
        await worker.lease.revoke()


async def test_a_superseded_attempt_reports_nothing_and_stops(world: World) -> None:
    run_id = await world.queued_run()
    old, new = await world.worker("w1"), await world.worker("w2")
    first = await old.claim_and_start(run_id)
    async with running(old, first, world.tmp_path) as entry:
        # The old worker's lease went: its job was queued again and started elsewhere.
        await old.lose_lease_in_etcd()
        await world.append(run_id, ev.JobQueued(job=JOB))
        await new.claim_and_start(run_id)

        await old.claims.reporter(run_id, JOB, first.attempt)(
            [ev.JobFinished(job=JOB, status=JobStatus.SUCCESS, duration_s=1.0)])

        current = await world.job(run_id)
        assert (current.status, current.worker, current.attempt) == ("running", "w2", 2)
        assert entry.job.handed_back  # stopped without a word
        assert entry.release() == first.generation  # the next attempt may need the claim


async def test_a_job_whose_claim_went_before_anyone_saw_it_start_is_queued_again(
        world: World) -> None:
    run_id = await world.queued_run()
    worker = await world.worker("w1")
    started = await worker.claim_and_start(run_id)
    async with running(worker, started, world.tmp_path) as entry:
        await worker.lose_lease_in_etcd()

        await worker.claims.lease_lost(started.generation)

        assert entry.job.handed_back
        assert not worker.claims.active
        queued = await world.job(run_id)
        assert (queued.status, queued.attempt) == ("queued", 1)


async def test_a_lost_job_someone_else_claimed_is_left_to_them(world: World) -> None:
    run_id = await world.queued_run()
    worker, other = await world.worker("w1"), await world.worker("w2")
    started = await worker.claim_and_start(run_id)
    async with running(worker, started, world.tmp_path) as entry:
        await worker.lose_lease_in_etcd()
        assert await other.lease.claim(claim_key(run_id, JOB)) is not None

        await worker.claims.lease_lost(started.generation)

        assert entry.job.handed_back
        still = await world.job(run_id)
        assert (still.status, still.worker) == ("running", "w1")  # no JobQueued from us
