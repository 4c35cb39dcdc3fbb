"""The workermanager: takes queued jobs off ``cyclone.jobs`` and runs them on its executor.

A ``CheckoutQueued`` run (from a Git project) is first resolved: the requested ref
becomes a commit and the pipeline file is read there (``RunSourceResolved``), or the
run errors with git's message in its log. For each job it (1) claims it in the
coordination service (create-if-absent, bound to this worker's lease, so a
redelivered job is not run twice), (2) appends ``JobStarted`` only if the run's
state still has the job queued and no cancel requested, (3) prepares the run's
network and workspace on this host once, (4) runs the job (``jobs.JobRun``),
shipping logs to ``cyclone.logs``. It watches the run cancel signals and removes a
run's containers, network and workspace when the run ends, however it ends.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from services.workermanager.appends import append_retrying
from services.workermanager.checkout import CheckoutError, GitCheckout
from services.workermanager.jobs import JobRun, Report
from services.workermanager.lease import WorkerLease
from services.workermanager.logship import LogShipper
from shared import events as ev
from shared.config import DEFAULT_STEP_LOG, StepLogLimit
from shared.consume import consume
from shared.errors import CoordinationError, ExecutorError
from shared.events import TERMINAL_RUN_EVENTS, RecordedEvent, decode, utc_now
from shared.keys import CANCEL_PREFIX, CHECKOUT, cancel_key, claim_key, run_of_cancel_key
from shared.ports.bus import TOPIC_EVENTS, TOPIC_JOBS, Bus, Message
from shared.ports.coordination import Coordinator
from shared.ports.eventstore import EventStore
from shared.ports.executor import Executor, RunContext
from shared.projections.runs import RunView, fold, run_id_of
from shared.retry import Backoff, retrying
from shared.runstream import AppendResult, Decide, RunStates
from shared.wire import decode_event

__all__ = ["WorkerManager"]

log = logging.getLogger(__name__)

_TERMINAL_TYPES = frozenset(t.TYPE for t in TERMINAL_RUN_EVENTS)
HANDBACK_WAIT_S = 15.0  # how long handed-back jobs get to kill their containers
CLAIM_RECHECK_S = 0.5  # while a queued job's claim is held by an attempt that is over


@dataclass
class _Active:
    job: JobRun
    task: asyncio.Task[None]  # the one handling the job
    generation: int  # of the lease its claim is bound to
    superseded: bool = False  # queued again as a new attempt: stopped, its claim released


class WorkerManager:
    def __init__(self, store: EventStore, bus: Bus, coord: Coordinator, executor: Executor,
                 worker_id: str, capacity: int, git_cache: Path,
                 lease_ttl: float = 10.0, log_limit: StepLogLimit = DEFAULT_STEP_LOG) -> None:
        self.log_limit = log_limit
        self.git_cache = git_cache
        self.store = store
        self.runs = RunStates(store)
        self.bus = bus
        self.coord = coord
        self.executor = executor
        self.worker_id = worker_id
        self.capacity = asyncio.Semaphore(capacity)
        self.lease = WorkerLease(coord, worker_id, executor.name.encode(), lease_ttl)
        self.active: dict[tuple[str, str], _Active] = {}  # (run id, job) -> running job
        self._tasks: set[asyncio.Task[None]] = set()
        self._checkouts: set[asyncio.Task[None]] = set()
        self._prepared: dict[str, asyncio.Task[None]] = {}  # run id -> prepare_run task
        self._teardowns: dict[str, asyncio.Task[None]] = {}  # run id -> destroy in progress
        self._stopping = False  # drain: no new lease, no new job
        self._handing_back = False  # drain: a job that starts now is handed back at once
        self._jobs_consumer: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None

    async def run(self) -> None:
        await self.lease.register()
        if self._stopping:
            return  # drained before it started
        async with asyncio.TaskGroup() as group:
            self._keeper = group.create_task(self.lease.keep_alive(self._lease_lost))
            self._jobs_consumer = group.create_task(self._consume_jobs())
            group.create_task(self._consume_run_ends())
            group.create_task(self._watch_cancels())

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
        self._hand_back(self.active.values())
        for checkout in self._checkouts:
            checkout.cancel()  # its claim goes with the lease: the checkout is queued again
        await _wait_bounded(set(self._tasks), HANDBACK_WAIT_S)
        for run_id in list(self._prepared):
            await self._destroy(run_id)  # before the claims go: the next attempt starts clean
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
        if self._teardowns:
            await asyncio.gather(*self._teardowns.values(), return_exceptions=True)
        for run_id in list(self._prepared):
            await self._destroy(run_id)
        await self.lease.revoke()

    def _hand_back(self, entries: Iterable[_Active]) -> None:
        for entry in entries:
            entry.job.hand_back()

    async def _lease_lost(self, generation: int) -> None:
        """Etcd deleted (or is about to delete) the claims of the lease of ``generation``
        and the event manager queues those jobs again: stop them without a word (the
        next attempts are other workers'), and give them time to kill their containers."""
        lost = [e for e in self.active.values() if e.generation <= generation]
        log.warning("lost the lease; stopping its jobs without reporting them",
                    extra={"worker": self.worker_id,
                           "jobs": [f"{e.job.run.id}/{e.job.job.name}" for e in lost]})
        self._hand_back(lost)
        await _wait_bounded({e.task for e in lost}, HANDBACK_WAIT_S)
        for entry in lost:
            await self._requeue_if_unclaimed(entry)

    async def _requeue_if_unclaimed(self, entry: _Active) -> None:
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
            mine = job is not None and job.status == "running" and job.attempt == attempt
            return [ev.JobQueued(job=name)] if run and not run.done and mine else []

        await self._append(run_id, requeue)

    # --- loops -----------------------------------------------------------------------

    async def _consume_jobs(self) -> None:
        await consume(self.bus, TOPIC_JOBS, "workermanager", self._job_queued)

    async def _job_queued(self, message: Message) -> None:
        await self.capacity.acquire()  # take no more jobs than we can run
        taken = asyncio.Event()
        task = asyncio.create_task(self._take(decode_event(message.value), taken))
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
            await self._run_ended(run_id_of(recorded.stream))

    async def _watch_cancels(self) -> None:
        """Cancel signals, watched again after etcd comes back (with the ones raised
        while the watch was broken read first)."""
        backoff = Backoff()
        while True:
            try:
                watch = self.coord.watch(CANCEL_PREFIX)
                try:
                    for key in await self.coord.get_prefix(CANCEL_PREFIX):
                        self._cancel_run(run_of_cancel_key(key))
                    backoff.reset()
                    async for change in watch:
                        if change.kind == "put":
                            self._cancel_run(run_of_cancel_key(change.key))
                finally:
                    await watch.aclose()
                return  # the coordinator was closed
            except CoordinationError as exc:
                log.warning("cancel watch broken; watching again", extra={"error": str(exc)})
            await backoff.wait()

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
            await self._checkout(run_id)
        finally:
            await self.lease.release(key, generation)

    async def _take_job(self, run_id: str, name: str, taken: asyncio.Event) -> None:
        key = claim_key(run_id, name)
        generation = await self.lease.claim(key)
        while generation is None:
            if not await self._held_while_queued(run_id, name, key):
                return  # another worker has it and started it (a redelivery)
            generation = await self.lease.claim(key)
        held: int | None = generation
        try:
            held = await self._start_and_run(run_id, name, generation, taken)
        finally:
            if held is not None:
                await self.lease.release(key, held)

    async def _held_while_queued(self, run_id: str, name: str, key: str) -> bool:
        """Someone holds the job's claim: wait until they start the job (False: theirs)
        or let the claim go while it is still queued (True: claim it). A claim can outlive
        its attempt: a worker that took the job before it was queued again holds it until
        it sees that its attempt is over. Until then this message stays uncommitted."""
        while True:
            run = await self._load(run_id)
            job = run.job(name) if run else None
            if run is None or run.done or job is None or job.status != "queued":
                return False
            if await retrying(functools.partial(self.coord.get, key), "read a claim") is None:
                return True
            await asyncio.sleep(CLAIM_RECHECK_S)  # polling: the store has no change feed

    async def _start_and_run(self, run_id: str, name: str, generation: int,
                             taken: asyncio.Event) -> int | None:
        """Start and run the job; returns the generation of the claim to release, or
        None when the claim must stay (handed back: the lease's end releases it)."""
        def start(run: RunView | None) -> list[ev.Event]:
            job = run.job(name) if run else None
            if run is None or run.done or run.cancel_requested or job is None:
                return []
            if job.status != "queued":
                return []
            return [ev.JobStarted(job=name, worker=self.worker_id, executor=self.executor.name)]

        result = await self._append(run_id, start)
        taken.set()  # the job runs in the store now: our claim's deletion re-queues it
        run = fold(result.appended, result.run)  # with our JobStarted: this attempt
        view = run.job(name) if run else None
        if not result.appended or run is None or run.plan is None or view is None:
            return generation
        while generation != self.lease.generation:
            # The lease was lost while the job started: its claim went with it. Claim it
            # again; if the event manager saw the claim gone once the job ran, it queued
            # the job again meanwhile: then this is a new attempt, started anew.
            regained = await self.lease.claim(claim_key(run_id, name))
            if regained is None:
                return None  # whoever holds the claim finds the job running: re-queued
            generation = regained
            now = await self._load(run_id)
            job_now = now.job(name) if now else None
            if job_now is not None and job_now.status == "queued":
                result = await self._append(run_id, start)
                run = fold(result.appended, result.run)
                view = run.job(name) if run else None
                if not result.appended or run is None or run.plan is None or view is None:
                    return generation
            elif job_now is None or (job_now.status, job_now.attempt) != ("running",
                                                                          view.attempt):
                return generation  # ended, cancelled or someone else's now: let it go
        if self._handing_back:
            return None
        assert run is not None and run.plan is not None and view is not None  # checked above
        spec = run.plan.job(name)
        shipper = LogShipper(self.bus, run_id, attempt=view.attempt)
        job = JobRun(run, spec, self.executor, RunContext(run_id=run_id),
                     report=self._reporter(run_id, name, view.attempt), logs=shipper,
                     log_limit=self.log_limit)
        task = asyncio.current_task()
        assert task is not None
        entry = _Active(job, task, generation)
        self.active[(run_id, name)] = entry
        try:
            # The workspace (usually begun at the checkout) and the job's sandbox are
            # made at once; the cancel signal is read meanwhile.
            prepared = asyncio.ensure_future(self._prepare(run))
            read = functools.partial(self.coord.get, cancel_key(run_id))
            if await retrying(read, "read the cancel signal") is not None:
                job.cancel()
            await job.execute(prepared)
        finally:
            if self.active.get((run_id, name)) is entry:
                del self.active[(run_id, name)]
            await shipper.close()
        return None if job.handed_back and not entry.superseded else entry.generation

    async def _prepare(self, run: RunView) -> str:
        """Prepare the run on this host once; returns an error message, or "" when ready."""
        try:
            await asyncio.shield(self._preparing(run))
        except Exception as exc:
            log.warning("prepare_run failed", extra={"run": run.id, "error": str(exc)})
            return f"could not prepare the run's workspace: {exc}"
        return ""

    def _preparing(self, run: RunView) -> asyncio.Task[None]:
        """The run's preparation on this host, started by the first to ask for it."""
        task = self._prepared.get(run.id)
        if task is None:
            task = asyncio.create_task(self._prepare_run(run))
            self._prepared[run.id] = task
        return task

    async def _prepare_run(self, run: RunView) -> None:
        if run.source_kind != "git":
            # A `cyclone run` copies the directory it was started in (it is on this host).
            source = run.source or None
            await self.executor.prepare_run(RunContext(run_id=run.id, source_dir=source))
            return
        # The commit's tree, streamed from this worker's mirror into the workspace.
        archive = functools.partial(GitCheckout(self.git_cache).archive, run.source, run.commit)
        await self.executor.prepare_run(RunContext(run_id=run.id, source_archive=archive))

    async def _checkout(self, run_id: str) -> None:
        """Resolve the run's ref to a commit and read its pipeline file there."""
        run = await retrying(functools.partial(self._load, run_id), "read the run")
        if run is None or run.done or run.checkout != "queued":
            return
        shipper = LogShipper(self.bus, run_id)
        sink = shipper.sink(CHECKOUT, "clone")

        async def on_line(text: str) -> None:
            await sink("stdout", utc_now(), text)

        outcome: ev.Event
        try:
            resolved = await GitCheckout(self.git_cache, on_line).resolve(
                run.source, ref=run.branch, commit=run.commit,
                pipeline_file=run.pipeline_file)
        except CheckoutError as exc:
            await on_line(f"error: {exc}")
            await shipper.close()
            outcome = ev.RunErrored(reason=f"checkout failed: {exc}", log_lines=shipper.shipped)
        else:
            await shipper.close()
            outcome = ev.RunSourceResolved(
                commit=resolved.commit, branch=resolved.branch,
                pipeline_file=resolved.pipeline_file, pipeline=resolved.pipeline,
                log_lines=shipper.shipped)
            # Its jobs will most often run here: fill the workspace while the run is
            # planned (if they go elsewhere, the run's end removes it all the same).
            self._preparing(replace(run, commit=resolved.commit))

        def record(current: RunView | None) -> list[ev.Event]:
            still = current is not None and not current.done and current.checkout == "queued"
            return [outcome] if still else []

        await self._append(run_id, record)

    def _reporter(self, run_id: str, name: str, attempt: int) -> Report:
        async def report(events: Sequence[ev.Event]) -> None:
            superseded = False

            def decide(run: RunView | None) -> Sequence[ev.Event]:
                nonlocal superseded
                job = run.job(name) if run else None
                superseded = job is not None and (job.attempt != attempt
                                                  or job.status == "queued")
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

    async def _load(self, run_id: str) -> RunView | None:
        return await self.runs.load(run_id)

    async def _append(self, run_id: str, decide: Decide) -> AppendResult:
        return await append_retrying(self.runs, run_id, decide)

    # --- cancel and clean-up -----------------------------------------------------------

    async def reap(self, is_over: Callable[[str], bool]) -> list[str]:
        """Remove what ended runs left on this host (after a crash).

        Only runs ``is_over`` vouches for are touched: the Docker host may be shared
        with other Cyclone installations whose runs this one knows nothing about.
        """
        reaped = []
        for run_id in sorted(await self.executor.leftover_runs()):
            if is_over(run_id) and run_id not in self._prepared:
                await self._destroy(run_id)
                reaped.append(run_id)
        return reaped

    async def reap_own(self, label: str) -> list[str]:
        """Remove what an earlier incarnation of this worker left on its host: what the
        executor labelled with ``label`` (the worker label it was opened with, the same
        across restarts). Call it at start, before ``run``: this incarnation has created
        nothing yet, so all of that is leftover. The runs may still go on elsewhere:
        only this worker's part of each is removed. Returns the run ids."""
        runs = sorted(await self.executor.leftover_runs(worker=label))
        reaped = []
        for run_id in runs:
            try:
                await self.executor.destroy_run(run_id, worker=label)
            except ExecutorError as exc:
                log.warning("could not remove a run's leftovers: %s", exc, extra={"run": run_id})
                continue
            reaped.append(run_id)
        if reaped:
            log.warning("removed what an earlier run of this worker left behind",
                        extra={"worker": label, "runs": reaped})
        return reaped

    def _cancel_run(self, run_id: str) -> None:
        for (rid, _), entry in self.active.items():
            if rid == run_id:
                entry.job.cancel()

    async def _run_ended(self, run_id: str) -> None:
        self._cancel_run(run_id)  # nothing should be running; make sure of it
        if run_id in self._prepared:
            await self._destroy(run_id)

    async def _destroy(self, run_id: str) -> None:
        """Remove the run's resources; the removal finishes even if our caller is cancelled
        (``close`` waits for it), so a run's end never leaves half its containers behind."""
        teardown = self._teardowns.get(run_id)
        if teardown is None:
            teardown = asyncio.create_task(self._teardown(run_id))
            self._teardowns[run_id] = teardown
            teardown.add_done_callback(lambda _: self._teardowns.pop(run_id, None))
        await asyncio.shield(teardown)

    async def _teardown(self, run_id: str) -> None:
        prepare = self._prepared.pop(run_id, None)
        if prepare is not None:
            await asyncio.gather(prepare, return_exceptions=True)
        try:
            await self.executor.destroy_run(run_id)
        except Exception:
            log.exception("could not remove a run's resources", extra={"run": run_id})


# --- helpers ---------------------------------------------------------------------------


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _wait_bounded(tasks: set[asyncio.Task[None]], within_s: float) -> None:
    """Wait for ``tasks`` for up to ``within_s``; then cancel the ones still going."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=within_s)
    for task in pending:
        log.warning("a handed-back job did not stop in %gs; cancelling it", within_s)
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=within_s)
