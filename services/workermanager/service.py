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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from services.workermanager.checkout import CheckoutError, GitCheckout
from services.workermanager.jobs import JobRun, Report
from services.workermanager.logship import LogShipper
from shared import events as ev
from shared.consume import consume
from shared.events import TERMINAL_RUN_EVENTS, RecordedEvent, decode, utc_now
from shared.keys import (
    CANCEL_PREFIX,
    CHECKOUT,
    cancel_key,
    claim_key,
    run_of_cancel_key,
    worker_key,
)
from shared.pipeline.plan import Plan
from shared.ports.bus import TOPIC_EVENTS, TOPIC_JOBS, Bus, Message
from shared.ports.coordination import Coordinator, Lease
from shared.ports.eventstore import EventStore
from shared.ports.executor import Executor, RunContext
from shared.projections.runs import RunView, run_id_of
from shared.runstream import append_to_run, load_run
from shared.wire import decode_event

__all__ = ["WorkerManager"]

log = logging.getLogger(__name__)

_TERMINAL_TYPES = frozenset(t.TYPE for t in TERMINAL_RUN_EVENTS)



class WorkerManager:
    def __init__(self, store: EventStore, bus: Bus, coord: Coordinator, executor: Executor,
                 worker_id: str, capacity: int, git_cache: Path, exports: Path,
                 lease_ttl: float = 10.0) -> None:
        self.git_cache = git_cache
        self.exports = exports
        self.store = store
        self.bus = bus
        self.coord = coord
        self.executor = executor
        self.worker_id = worker_id
        self.capacity = asyncio.Semaphore(capacity)
        self.lease_ttl = lease_ttl
        self.lease: Lease | None = None
        self.active: dict[tuple[str, str], JobRun] = {}  # (run id, job) -> running job
        self._tasks: set[asyncio.Task[None]] = set()
        self._prepared: dict[str, asyncio.Task[None]] = {}  # run id -> prepare_run task
        self._teardowns: dict[str, asyncio.Task[None]] = {}  # run id -> destroy in progress

    async def run(self) -> None:
        self.lease = await self.coord.grant_lease(self.lease_ttl)
        await self.coord.put(worker_key(self.worker_id), self.executor.name.encode(), self.lease)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._keep_alive())
            group.create_task(self._consume_jobs())
            group.create_task(self._consume_run_ends())
            group.create_task(self._watch_cancels())

    async def close(self) -> None:
        """Stop every running job (killing its step) and remove what this worker created."""
        for job in self.active.values():
            job.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._teardowns:
            await asyncio.gather(*self._teardowns.values(), return_exceptions=True)
        for run_id in list(self._prepared):
            await self._destroy(run_id)
        if self.lease is not None:
            with contextlib.suppress(Exception):
                await self.lease.revoke()

    # --- loops -----------------------------------------------------------------------

    async def _keep_alive(self) -> None:
        assert self.lease is not None
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            await self.lease.refresh()

    async def _consume_jobs(self) -> None:
        await consume(self.bus, TOPIC_JOBS, "workermanager", self._job_queued)

    async def _job_queued(self, message: Message) -> None:
        await self.capacity.acquire()  # take no more jobs than we can run
        task = asyncio.create_task(self._take(decode_event(message.value)))
        self._tasks.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
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
        async for change in self.coord.watch(CANCEL_PREFIX):
            if change.kind == "put":
                self._cancel_run(run_of_cancel_key(change.key))

    # --- one job ---------------------------------------------------------------------

    async def _take(self, queued: RecordedEvent) -> None:
        event = decode(queued)
        run_id = run_id_of(queued.stream)
        if isinstance(event, ev.CheckoutQueued):
            if await self.coord.create(claim_key(run_id, CHECKOUT), self.worker_id.encode(),
                                       self.lease):
                try:
                    await self._checkout(run_id)
                finally:
                    await self.coord.delete(claim_key(run_id, CHECKOUT))
            return
        if not isinstance(event, ev.JobQueued):
            return
        name = event.job
        if not await self.coord.create(claim_key(run_id, name), self.worker_id.encode(),
                                       self.lease):
            return  # another worker has it (a redelivery)
        try:
            await self._start_and_run(run_id, name)
        finally:
            await self.coord.delete(claim_key(run_id, name))

    async def _start_and_run(self, run_id: str, name: str) -> None:
        def start(run: RunView | None) -> list[ev.Event]:
            job = run.job(name) if run else None
            if run is None or run.done or run.cancel_requested or job is None:
                return []
            if job.status != "queued":
                return []
            return [ev.JobStarted(job=name, worker=self.worker_id, executor=self.executor.name)]

        result = await append_to_run(self.store, run_id, start)
        run = result.run
        if not result.appended or run is None or run.plan is None:
            return
        spec = Plan.from_data(run.plan).job(name)
        ctx = RunContext(run_id=run_id)
        shipper = LogShipper(self.bus, run_id)
        job = JobRun(run, spec, self.executor, ctx, report=self._reporter(run_id),
                     logs=shipper)
        self.active[(run_id, name)] = job
        try:
            if await self.coord.get(cancel_key(run_id)) is not None:
                job.cancel()
            prepared = await self._prepare(run)
            if prepared:
                await self._report(run_id, [ev.JobFinished(job=name, status="errored",
                                                           duration_s=0.0, reason=prepared)])
                return
            await job.execute()
        finally:
            self.active.pop((run_id, name), None)
            await shipper.close()

    async def _prepare(self, run: RunView) -> str:
        """Prepare the run on this host once; returns an error message, or "" when ready."""
        task = self._prepared.get(run.id)
        if task is None:
            task = asyncio.create_task(self._prepare_run(run))
            self._prepared[run.id] = task
        try:
            await asyncio.shield(task)
        except Exception as exc:
            log.warning("prepare_run failed", extra={"run": run.id, "error": str(exc)})
            return f"could not prepare the run's workspace: {exc}"
        return ""

    async def _prepare_run(self, run: RunView) -> None:
        if run.source_kind != "git":
            # A `cyclone run` copies the directory it was started in (it is on this host).
            source = run.source or None
            await self.executor.prepare_run(RunContext(run_id=run.id, source_dir=source))
            return
        export = self.exports / run.id
        try:
            await GitCheckout(self.git_cache).export(run.source, run.commit, export)
            await self.executor.prepare_run(RunContext(run_id=run.id, source_dir=str(export)))
        finally:
            await asyncio.to_thread(shutil.rmtree, export, True)

    async def _checkout(self, run_id: str) -> None:
        """Resolve the run's ref to a commit and read its pipeline file there."""
        run = await load_run(self.store, run_id)
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

        def record(current: RunView | None) -> list[ev.Event]:
            still = current is not None and not current.done and current.checkout == "queued"
            return [outcome] if still else []

        await append_to_run(self.store, run_id, record)

    def _reporter(self, run_id: str) -> Report:
        async def report(events: Sequence[ev.Event]) -> None:
            await self._report(run_id, events)

        return report

    async def _report(self, run_id: str, events: Sequence[ev.Event]) -> None:
        await append_to_run(self.store, run_id, lambda run: events)

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

    def _cancel_run(self, run_id: str) -> None:
        for (rid, _), job in self.active.items():
            if rid == run_id:
                job.cancel()

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

