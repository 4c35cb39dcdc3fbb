"""The claim protocol of a worker's jobs: a job runs on the worker that holds its claim
in the coordination service, and only as the attempt the event store says it is.

A job's claim (``claim_key(run, job)``) is created if absent and bound to this
worker's lease (``WorkerLease``), so a job the bus delivers again is not run twice.
Once the job runs, the claim's deletion (the lease's end, or a release) makes the
event manager queue it again.

* ``claim(run_id, name)`` claims a queued job. A claim someone else holds is theirs
  once they started the job (None: a redelivery, not ours); but it may be left by an
  attempt that is over (a worker that took the job before it was queued again holds
  it until it sees that): while the job stays queued, it waits for that one to go.
* ``start(run_id, name, generation, taken)`` appends ``JobStarted`` only if the job is
  still queued and no cancel is requested, then sets ``taken`` (the job's message may
  be committed: from here on the claim's deletion queues the job again). If the lease
  was lost meanwhile, the claim went with it: it is claimed again and, if the event
  manager queued the job again meanwhile, started anew as the next attempt. It
  returns ``Started`` (run it) or ``NotOurs`` (the claim to release, if any).
* ``running(job, generation)`` keeps a running job in ``active`` with the lease
  generation of its claim. ``lease_lost(generation)`` stops the jobs of a lost lease
  without a word (the next attempts are other workers'), and queues again a job whose
  claim went before anyone saw its ``JobStarted``.
* ``reporter(run_id, name, attempt)`` appends a job's events unless its attempt is
  superseded (queued again: this worker was taken for lost); then it stops the job
  without a word, and ``ActiveJob.release`` gives its claim to the next attempt.

Every coordination call is retried with backoff on a ``CoordinationError`` and every
append on a ``StoreError`` (``append_retrying``), so a blip never drops a queued job.
One ``JobClaims`` per worker; its methods are called from many tasks of one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from services.workermanager.appends import append_retrying
from services.workermanager.jobs import JobRun, Report
from services.workermanager.lease import WorkerLease
from shared import events as ev
from shared.keys import claim_key
from shared.pipeline.plan import Plan
from shared.projections.runs import RunView, fold
from shared.retry import retrying
from shared.runstream import AppendResult, Decide, RunStates
from shared.status import JobStatus

__all__ = [
    "CLAIM_RECHECK_S",
    "HANDBACK_WAIT_S",
    "ActiveJob",
    "JobClaims",
    "NotOurs",
    "Started",
    "hand_back",
    "wait_handed_back",
]

log = logging.getLogger(__name__)

HANDBACK_WAIT_S = 15.0  # how long handed-back jobs get to kill their containers
CLAIM_RECHECK_S = 0.5  # while a queued job's claim is held by an attempt that is over


@dataclass
class ActiveJob:
    job: JobRun
    task: asyncio.Task[None]  # the one handling the job
    generation: int  # of the lease its claim is bound to
    superseded: bool = False  # queued again as a new attempt: stopped, its claim released

    def release(self) -> int | None:
        """The lease generation of the claim to release once the job is over; None
        keeps the claim: a job handed back leaves it to the lease's end, unless its
        attempt was superseded (the next attempt is waiting for the claim)."""
        return None if self.job.handed_back and not self.superseded else self.generation


@dataclass(frozen=True)
class Started:
    """This worker started the job: ``run`` holds its ``JobStarted``."""

    run: RunView
    plan: Plan  # the run's
    attempt: int
    generation: int  # of the lease the job's claim is bound to


@dataclass(frozen=True)
class NotOurs:
    """The job is not this worker's to run (any more)."""

    release: int | None  # the lease generation of the claim to release; None: not ours


class JobClaims:
    def __init__(self, lease: WorkerLease, runs: RunStates, executor_name: str) -> None:
        self.lease = lease
        self.coord = lease.coord
        self.worker_id = lease.worker_id
        self.runs = runs
        self.executor_name = executor_name
        self.active: dict[tuple[str, str], ActiveJob] = {}  # (run id, job) -> running job

    async def claim(self, run_id: str, name: str) -> int | None:
        """Claim the job; returns the lease generation of the claim, or None when the
        job is another worker's."""
        key = claim_key(run_id, name)
        generation = await self.lease.claim(key)
        while generation is None:
            if not await self._held_while_queued(run_id, name, key):
                return None  # another worker has it and started it (a redelivery)
            generation = await self.lease.claim(key)
        return generation

    async def _held_while_queued(self, run_id: str, name: str, key: str) -> bool:
        """Someone holds the job's claim: wait until they start the job (False: theirs)
        or let the claim go while it is still queued (True: claim it). A claim can outlive
        its attempt: a worker that took the job before it was queued again holds it until
        it sees that its attempt is over. Until then this message stays uncommitted."""
        while True:
            run = await self.runs.load(run_id)
            job = run.job(name) if run else None
            if run is None or run.done or job is None or job.status != JobStatus.QUEUED:
                return False
            if await retrying(functools.partial(self.coord.get, key), "read a claim") is None:
                return True
            await asyncio.sleep(CLAIM_RECHECK_S)  # polling: the store has no change feed

    async def start(self, run_id: str, name: str, generation: int,
                    taken: asyncio.Event) -> Started | NotOurs:
        """Start the claimed job in the store, as this attempt or (the lease was lost
        meanwhile) the next."""
        def start_if_queued(run: RunView | None) -> list[ev.Event]:
            job = run.job(name) if run else None
            if run is None or run.done or run.cancel_requested or job is None:
                return []
            if job.status != JobStatus.QUEUED:
                return []
            return [ev.JobStarted(job=name, worker=self.worker_id, executor=self.executor_name)]

        result = await self._append(run_id, start_if_queued)
        taken.set()  # the job runs in the store now: our claim's deletion re-queues it
        run = fold(result.appended, result.run)  # with our JobStarted: this attempt
        view = run.job(name) if run else None
        if not result.appended or run is None or run.plan is None or view is None:
            return NotOurs(generation)
        while generation != self.lease.generation:
            # The lease was lost while the job started: its claim went with it. Claim it
            # again; if the event manager saw the claim gone once the job ran, it queued
            # the job again meanwhile: then this is a new attempt, started anew.
            regained = await self.lease.claim(claim_key(run_id, name))
            if regained is None:
                return NotOurs(None)  # whoever holds the claim finds the job running: re-queued
            generation = regained
            now = await self.runs.load(run_id)
            job_now = now.job(name) if now else None
            if job_now is not None and job_now.status == JobStatus.QUEUED:
                result = await self._append(run_id, start_if_queued)
                run = fold(result.appended, result.run)
                view = run.job(name) if run else None
                if not result.appended or run is None or run.plan is None or view is None:
                    return NotOurs(generation)
            elif job_now is None or (job_now.status, job_now.attempt) != (JobStatus.RUNNING,
                                                                          view.attempt):
                return NotOurs(generation)  # ended, cancelled or someone else's now: let it go
        assert run is not None and run.plan is not None and view is not None  # checked above
        return Started(run, run.plan, view.attempt, generation)

    @contextlib.contextmanager
    def running(self, job: JobRun, generation: int) -> Iterator[ActiveJob]:
        """Keep ``job`` (run by the current task) in ``active`` while it runs."""
        task = asyncio.current_task()
        assert task is not None
        entry = ActiveJob(job, task, generation)
        key = (job.run.id, job.job.name)
        self.active[key] = entry
        try:
            yield entry
        finally:
            if self.active.get(key) is entry:
                del self.active[key]

    async def lease_lost(self, generation: int) -> None:
        """Etcd deleted (or is about to delete) the claims of the lease of ``generation``
        and the event manager queues those jobs again: stop them without a word (the
        next attempts are other workers'), and give them time to kill their containers."""
        lost = [e for e in self.active.values() if e.generation <= generation]
        log.warning("lost the lease; stopping its jobs without reporting them",
                    extra={"worker": self.worker_id,
                           "jobs": [f"{e.job.run.id}/{e.job.job.name}" for e in lost]})
        hand_back(lost)
        await wait_handed_back({e.task for e in lost})
        for entry in lost:
            await self._requeue_if_unclaimed(entry)

    async def _requeue_if_unclaimed(self, entry: ActiveJob) -> None:
        """A claim that etcd deleted while its job was still queued (the lease ran out
        between the claim and ``JobStarted``) made no one queue the job again: if it is
        still this attempt's and unclaimed, queue it again here (as the event manager
        would have: whichever of us comes second appends nothing)."""
        run_id, name, attempt = entry.job.run.id, entry.job.job.name, entry.job.attempt
        read = functools.partial(self.coord.get, claim_key(run_id, name))
        if await retrying(read, "read a claim") is not None:
            return

        def requeue(run: RunView | None) -> list[ev.Event]:
            job = run.job(name) if run else None
            mine = job is not None and job.status == JobStatus.RUNNING and job.attempt == attempt
            return [ev.JobQueued(job=name)] if run and not run.done and mine else []

        await self._append(run_id, requeue)

    def reporter(self, run_id: str, name: str, attempt: int) -> Report:
        """Appends the job's events while ``attempt`` is the job's current one."""
        async def report(events: Sequence[ev.Event]) -> None:
            superseded = False

            def decide(run: RunView | None) -> Sequence[ev.Event]:
                nonlocal superseded
                job = run.job(name) if run else None
                superseded = job is not None and (job.attempt != attempt
                                                  or job.status == JobStatus.QUEUED)
                return [] if superseded else events

            await self._append(run_id, decide)
            if superseded:
                self._stop_superseded(run_id, name, attempt)

        return report

    def _stop_superseded(self, run_id: str, name: str, attempt: int) -> None:
        """Queued again (this worker was taken for lost): the job is no longer this
        attempt's. Stop it without a word and release its claim, which the next attempt
        is waiting for."""
        log.warning("dropped events of a superseded attempt; stopping it",
                    extra={"run": run_id, "job": name, "attempt": attempt})
        entry = self.active.get((run_id, name))
        if entry is not None and entry.job.attempt == attempt and not entry.superseded:
            entry.superseded = True
            entry.job.hand_back()

    async def _append(self, run_id: str, decide: Decide) -> AppendResult:
        return await append_retrying(self.runs, run_id, decide)


def hand_back(entries: Iterable[ActiveJob]) -> None:
    """Stop the jobs without reporting them: their next attempts report."""
    for entry in entries:
        entry.job.hand_back()


async def wait_handed_back(tasks: set[asyncio.Task[None]]) -> None:
    """Wait for the tasks of handed-back jobs for up to ``HANDBACK_WAIT_S``; then cancel
    the ones still going."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=HANDBACK_WAIT_S)
    for task in pending:
        log.warning("a handed-back job did not stop in %gs; cancelling it", HANDBACK_WAIT_S)
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=HANDBACK_WAIT_S)
