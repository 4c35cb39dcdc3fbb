"""The workermanager: takes queued jobs off ``cyclone.jobs`` and runs them on its executor.

``WorkerManager`` consumes the bus and wires the parts, each in its own module:

* a ``CheckoutQueued`` run (from a Git project) is first resolved
  (``source_resolver``): the requested ref becomes a commit and the pipeline file is
  read there (``RunSourceResolved``), or the run errors with git's message in its log;
* for each job it (1) claims it in the coordination service (``claims``: create-if-
  absent, bound to this worker's lease from ``lease``, so a redelivered job is not run
  twice), (2) appends ``JobStarted`` only if the run's state still has the job queued
  and no cancel requested, (3) prepares the run's network and workspace on this host
  once (``host``), (4) runs the job (``jobs.JobRun``), shipping logs to
  ``cyclone.logs`` (``logship``);
* it watches the run cancel signals (``cancels``) and removes a run's containers,
  network and workspace from this host when the run ends, however it ends (``host``).

A job's message is committed once the job is claimed and started in the store (or
found not to be ours): a worker that dies or stops before that leaves it to the
others; after that, the claim's deletion (lease expiry, or a hand-back) makes the
event manager queue the job again.

What it survives:

* etcd blips: the lease is refreshed with retries while it may still be alive (less
  than its ttl since the last refresh); once it is gone, etcd has deleted our claims
  and the event manager is queuing our jobs again, so they are stopped without a
  word (the next attempt is another worker's), and the worker registers again
  under a new lease and goes on. Every other coordination call on a job's path,
  and every append to the event store (MongoDB), is retried with backoff on a
  ``CoordinationError`` / ``StoreError``, so a queued job is never dropped by a
  blip; an append whose outcome is unknown is checked before it is retried.
* Kafka blips: ``LogShipper`` retries its batches (see there).
* SIGTERM: ``drain`` takes no new job, lets running ones finish for a while, then
  hands the rest back at once (no lease ttl to wait for).
* its own crash: ``reap_own`` at the next start removes what the earlier
  incarnation of the same worker (its executor label: id and home) left on its host.

Labels (``runs-on:``, ``shared.workers``): a worker runs a job only if the job's labels
are a subset of its own. Kafka hands a partition's messages to one member of a group,
which may not be able to run them; skipping such a message for another member is not
possible (offsets are committed in order) and handing it back by publishing it again
would spin while nobody can run it. So the workers form one consumer group per label
set, a *pool* (``workermanager:amd64,docker,linux``): every pool sees every job, the
workers of a pool share its jobs as before, and a worker commits at once a job its pool
cannot run (no waiting for a free slot, no claim). A job several pools can run is
claimed by the first worker that gets to it; the others find the claim (or the job
started) and let it go, as with any redelivered job. Nothing is lost: a pool only moves
past a job it cannot run, and a job no pool can run stays queued in the store, saying
why (``shared.projections.waiting``). It runs when a worker that can run it appears: a
new pool's group starts at the topic's earliest retained message, and since the bus may
no longer hold it (the embedded bus trims what every live group has committed, Kafka's
retention), the event manager also offers such jobs again when a worker registers
(``services.eventmanager.reoffer``). For that, a worker joins its pool's group before it
registers. The cost: a job message is read once per pool, not once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from pathlib import Path

from services.workermanager.cancels import watch_cancels
from services.workermanager.claims import (
    JobClaims,
    NotOurs,
    Started,
    hand_back,
    wait_handed_back,
)
from services.workermanager.delivery import registries_for
from services.workermanager.host import Host
from services.workermanager.jobs import JobRun, effective_job
from services.workermanager.lease import WorkerLease
from services.workermanager.logship import LogShipper
from services.workermanager.secrets import JobSecrets
from services.workermanager.source_resolver import SourceResolver
from shared import events as ev
from shared.caches import CacheIndex
from shared.config import DEFAULT_STEP_LOG, DEFAULT_STEP_RESOURCES, StepLogLimit
from shared.consume import consume
from shared.errors import CycloneError
from shared.events import TERMINAL_RUN_EVENTS, RecordedEvent, decode
from shared.keys import CHECKOUT, cancel_key, claim_key
from shared.pipeline.resources import Resources
from shared.ports.artifacts import ArtifactStore
from shared.ports.bus import TOPIC_EVENTS, TOPIC_JOBS, Bus, Message
from shared.ports.coordination import Coordinator
from shared.ports.deployer import Deployer
from shared.ports.eventstore import EventStore
from shared.ports.executor import Executor, RunContext
from shared.projections.runs import RunView, run_id_of
from shared.retry import retrying
from shared.runstream import RunStates
from shared.secrets import SecretStore
from shared.status import JobStatus
from shared.wire import decode_event
from shared.workers import WorkerInfo, can_run, default_labels, label_set

__all__ = ["WorkerManager", "pool_group"]

log = logging.getLogger(__name__)

_TERMINAL_TYPES = frozenset(t.TYPE for t in TERMINAL_RUN_EVENTS)


def pool_group(labels: frozenset[str]) -> str:
    """The consumer group of ``cyclone.jobs`` of the workers with these labels."""
    return f"workermanager:{label_set(labels)}"


class WorkerManager:
    def __init__(self, store: EventStore, bus: Bus, coord: Coordinator, executor: Executor,
                 worker_id: str, capacity: int, git_cache: Path,
                 lease_ttl: float = 10.0, log_limit: StepLogLimit = DEFAULT_STEP_LOG,
                 secrets: SecretStore | None = None,
                 step_resources: Resources = DEFAULT_STEP_RESOURCES,
                 deployer: Deployer | None = None, artifacts: ArtifactStore | None = None,
                 caches: CacheIndex | None = None,
                 labels: frozenset[str] = frozenset()) -> None:
        # what it offers to ``runs-on:`` (none said: its OS, architecture and executor)
        self.labels = labels or default_labels(executor.name)
        self.deployer = deployer  # None: deploy steps error, saying so
        self.artifacts = artifacts  # None: jobs with artifacts, caches or reports error
        self.caches = caches
        self.log_limit = log_limit
        self.secrets = secrets  # None: no key, steps asking for secrets are told so
        self.step_resources = step_resources  # each container's limits when its job asks none
        self.git_cache = git_cache
        self.store = store
        self.runs = RunStates(store)
        self.bus = bus
        self.coord = coord
        self.executor = executor
        self.worker_id = worker_id
        self.capacity = asyncio.Semaphore(capacity)
        registration = WorkerInfo(worker_id, self.labels, executor.name, capacity)
        self.lease = WorkerLease(coord, worker_id, registration.encode(), lease_ttl)
        self.claims = JobClaims(self.lease, self.runs, executor.name)
        self.active = self.claims.active  # (run id, job) -> running job
        self.host = Host(executor, git_cache)
        self.sources = SourceResolver(self.runs, bus, git_cache, self.host)
        self._tasks: set[asyncio.Task[None]] = set()  # one a job (or checkout) taken
        self._checkouts: set[asyncio.Task[None]] = set()
        self._stopping = False  # drain: no new lease, no new job
        self._handing_back = False  # drain: a job that starts now is handed back at once
        self._jobs_consumer: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            # In its pool's group before it registers: a job the event manager offers
            # again when it sees the registration reaches the pool (jobs taken meanwhile
            # wait for the lease to be claimed).
            listening = asyncio.Event()
            self._jobs_consumer = group.create_task(self._consume_jobs(listening.set))
            await listening.wait()
            if self._stopping:
                return  # drained before it started (which stopped the consumer)
            await self.lease.register()
            self._keeper = group.create_task(self.lease.keep_alive(self.claims.lease_lost))
            group.create_task(self._consume_run_ends())
            group.create_task(watch_cancels(self.coord, self._cancel_run))

    async def drain(self, grace_s: float) -> list[str]:
        """Stop gracefully (at SIGTERM), handing back what cannot finish in time.

        Call it while ``run`` still runs (its lease keep-alive and cancel watch serve
        the jobs meanwhile), then cancel ``run`` and call ``close``:

        1. no new job: this worker leaves the job consumer group at once, so the
           messages it has not committed go to the other workers;
        2. the running jobs may finish, for up to ``grace_s`` seconds;
        3. the rest is handed back: stopped (containers killed) without reporting,
           their runs removed from this host, then the lease revoked, so etcd deletes
           their claims now and the event manager queues them again at once.

        Returns the ``run/job`` names handed back."""
        self._stopping = True
        self.lease.stop()
        await _stop(self._jobs_consumer)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, grace_s))
        self._handing_back = True
        handed = [f"{run_id}/{job}" for run_id, job in self.active]
        hand_back(self.active.values())
        for checkout in self._checkouts:
            checkout.cancel()  # its claim goes with the lease: the checkout is queued again
        await wait_handed_back(set(self._tasks))
        await self.host.destroy_all()  # before the claims go: the next attempt starts clean
        await _stop(self._keeper)
        await self.lease.revoke()
        if handed:
            log.warning("stopping: jobs handed back to the other workers",
                        extra={"worker": self.worker_id, "jobs": handed})
        return handed

    async def close(self) -> None:
        """Stop every running job (killing its step) and remove what this worker created."""
        self._stopping = True
        self.lease.stop()
        for entry in self.active.values():
            entry.job.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.host.finish_teardowns()
        await self.host.destroy_all()
        await self.lease.revoke()

    async def reap(self, is_over: Callable[[str], bool]) -> list[str]:
        """Remove what ended runs left on this host (after a crash); see ``Host.reap``."""
        return await self.host.reap(is_over)

    async def reap_own(self, label: str) -> list[str]:
        """Remove what an earlier incarnation of this worker left on its host, before
        ``run``; see ``Host.reap_own``."""
        return await self.host.reap_own(label)

    # --- loops -----------------------------------------------------------------------

    async def _consume_jobs(self, subscribed: Callable[[], None]) -> None:
        await consume(self.bus, TOPIC_JOBS, pool_group(self.labels), self._job_queued,
                      subscribed=subscribed)

    async def _job_queued(self, message: Message) -> None:
        queued = decode_event(message.value)
        if not await self._worth_taking(queued):
            return  # over, or another pool's (or no one's yet: see the module docstring)
        await self.capacity.acquire()  # take no more jobs than we can run
        taken = asyncio.Event()
        task = asyncio.create_task(self._take(queued, taken))
        self._tasks.add(task)
        task.add_done_callback(self._job_done)
        # The message is committed once the job is ours and started in the store (or
        # not ours to run): until then, a crash or a stop leaves it to the others.
        await taken.wait()

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._checkouts.discard(task)
        self.capacity.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("job handling failed", exc_info=task.exception())

    async def _consume_run_ends(self) -> None:
        # Every worker sees every run end (its own group): each cleans its own host.
        await consume(self.bus, TOPIC_EVENTS, f"workermanager-{self.worker_id}",
                      self._maybe_run_ended)

    async def _maybe_run_ended(self, message: Message) -> None:
        recorded = decode_event(message.value)
        if recorded.type in _TERMINAL_TYPES:
            run_id = run_id_of(recorded.stream)
            self._cancel_run(run_id)  # nothing should be running; make sure of it
            await self.host.run_ended(run_id)

    async def _worth_taking(self, queued: RecordedEvent) -> bool:
        """Whether the queued job is still queued and this worker's labels are enough for
        it (a checkout, and a job without ``runs-on:``, need none). A job no longer queued
        is let go before any claim: what a new pool reads first is the topic's history."""
        if queued.type != ev.JobQueued.TYPE:
            return True
        event = decode(queued)
        run = await self.runs.load(run_id_of(queued.stream))
        if run is None or not isinstance(event, ev.JobQueued):
            return True  # ``_take`` finds out what it is
        job = run.job(event.job)
        if run.done or job is None or job.status != JobStatus.QUEUED:
            return False  # started (a redelivery) or over: ``_take`` would let it go too
        return can_run(run.runs_on(event.job), self.labels)

    def _cancel_run(self, run_id: str) -> None:
        for (rid, _), entry in self.active.items():
            if rid == run_id:
                entry.job.cancel()

    # --- one job ---------------------------------------------------------------------

    async def _take(self, queued: RecordedEvent, taken: asyncio.Event) -> None:
        try:
            event = decode(queued)
            run_id = run_id_of(queued.stream)
            if isinstance(event, ev.CheckoutQueued):
                await self._take_checkout(run_id, taken)
            elif isinstance(event, ev.JobQueued):
                await self._take_job(run_id, event.job, taken)
        finally:
            taken.set()

    async def _take_checkout(self, run_id: str, taken: asyncio.Event) -> None:
        key = claim_key(run_id, CHECKOUT)
        generation = await self.lease.claim(key)
        taken.set()  # from here on the claim's deletion queues the checkout again
        if generation is None or self._handing_back:
            return
        task = asyncio.current_task()
        assert task is not None
        self._checkouts.add(task)
        try:
            await self.sources.resolve(run_id)
        finally:
            await self.lease.release(key, generation)

    async def _take_job(self, run_id: str, name: str, taken: asyncio.Event) -> None:
        generation = await self.claims.claim(run_id, name)
        if generation is None:
            return
        held: int | None = generation
        try:
            held = await self._start_and_run(run_id, name, generation, taken)
        finally:
            if held is not None:
                await self.lease.release(claim_key(run_id, name), held)

    async def _start_and_run(self, run_id: str, name: str, generation: int,
                             taken: asyncio.Event) -> int | None:
        """Start and run the job; returns the generation of the claim to release, or
        None when the claim must stay (handed back: the lease's end releases it)."""
        started = await self.claims.start(run_id, name, generation, taken)
        if isinstance(started, NotOurs):
            return started.release
        if self._handing_back:
            return None
        return await self._run(run_id, name, started)

    async def _run(self, run_id: str, name: str, started: Started) -> int | None:
        spec = effective_job(started.plan, name, self.step_resources)
        shipper = LogShipper(self.bus, run_id, attempt=started.attempt)
        secrets = await self._secrets(started.run)
        job = JobRun(started.run, spec, self.executor, RunContext(run_id=run_id),
                     report=self.claims.reporter(run_id, name, started.attempt),
                     logs=shipper, log_limit=self.log_limit, secrets=secrets,
                     registries=registries_for(started.plan, secrets), deployer=self.deployer,
                     artifacts=self.artifacts, caches=self.caches)
        try:
            with self.claims.running(job, started.generation) as entry:
                # The workspace (usually begun at the checkout) and the job's sandbox are
                # made at once; the cancel signal is read meanwhile.
                prepared = asyncio.ensure_future(self.host.prepare(started.run))
                read = functools.partial(self.coord.get, cancel_key(run_id))
                if await retrying(read, "read the cancel signal") is not None:
                    job.cancel()
                await job.execute(prepared)
        finally:
            await shipper.close()
        return entry.release()


    async def _secrets(self, run: RunView) -> JobSecrets:
        """Every secret the run's project sees, opened for the job (and its masking)."""
        if run.secrets_withheld:
            return JobSecrets(withheld=run.secrets_withheld)
        if self.secrets is None:
            return JobSecrets(withheld="this worker has no secret key")
        try:
            found = await self.secrets.visible(run.project)
            values = await self.secrets.values(run.project)
        except CycloneError as exc:  # a key rotated under a running worker
            log.error("cannot open the secrets", extra={"run": run.id, "error": str(exc)})
            return JobSecrets(withheld=f"the worker cannot open them ({exc})")
        return JobSecrets(values, frozenset(n for n, v in found.items() if v.implicit))


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
