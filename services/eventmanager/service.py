"""The event manager: reacts to every run event by deciding what happens next.

It consumes ``cyclone.events`` in one consumer group (runs are split across
replicas by partition, keyed by run id) and appends its decisions to the run's
stream through ``append_to_run`` (optimistic concurrency, so two replicas that
briefly both see a run after a rebalance cannot both queue a job). It also
raises and clears the run's cancel signal in the coordination service, which
the workers running the run's jobs watch.
"""

from __future__ import annotations

import asyncio
import logging

from services.eventmanager.admission import Admissions
from services.eventmanager.decide import PipelineSource, decide
from shared import events as ev
from shared.consume import consume
from shared.events import decode, is_run_stream, run_stream
from shared.keys import CHECKOUT, CLAIMS_PREFIX, cancel_key
from shared.ports.bus import TOPIC_EVENTS, Bus, Message
from shared.ports.coordination import Coordinator
from shared.ports.eventstore import EventStore
from shared.projections.projects import fold_project, project_stream
from shared.projections.replay import replay_runs
from shared.projections.runs import RunView, fold, run_id_of
from shared.runstream import append_to_run, load_run
from shared.wire import decode_event

__all__ = ["EventManager", "abandon_run"]

log = logging.getLogger(__name__)


class EventManager:
    def __init__(self, store: EventStore, bus: Bus, coord: Coordinator,
                 max_parallel_jobs: int, group: str = "eventmanager") -> None:
        self.store = store
        self.bus = bus
        self.coord = coord
        self.max_parallel_jobs = max_parallel_jobs
        self.group = group
        self._seen: dict[str, int] = {}  # run id -> highest seq handled (drops redeliveries)
        self.admissions = Admissions()

    async def load(self) -> None:
        """Rebuild what the event manager keeps in memory from the store (call at start)."""
        self.admissions.load((await replay_runs(self.store)).runs.values())

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(consume(self.bus, TOPIC_EVENTS, self.group, self.handle))
            group.create_task(self._watch_claims())

    async def _watch_claims(self) -> None:
        """A claim that disappears while its job still runs means the worker died (its
        lease expired): the job is queued again, for another worker."""
        async for change in self.coord.watch(CLAIMS_PREFIX):
            if change.kind == "delete":
                run_id, _, job = change.key.removeprefix(CLAIMS_PREFIX).partition("/")
                await self.requeue_if_abandoned(run_id, job)

    async def requeue_if_abandoned(self, run_id: str, job: str) -> bool:
        def requeue(run: RunView | None) -> list[ev.Event]:
            if run is None or run.done:
                return []
            if job == CHECKOUT and run.checkout == "queued":
                return [ev.CheckoutQueued()]
            view = run.job(job)
            return [ev.JobQueued(job=job)] if view and view.status == "running" else []

        result = await append_to_run(self.store, run_id, requeue)
        if result.appended:
            log.warning("worker lost; work queued again", extra={"run": run_id, "job": job})
        return bool(result.appended)

    async def handle(self, message: Message) -> None:
        recorded = decode_event(message.value)
        if not is_run_stream(recorded.stream):
            return
        run_id = run_id_of(recorded.stream)
        if recorded.seq <= self._seen.get(run_id, 0):
            return
        self._seen[run_id] = recorded.seq
        await self.advance(run_id)

    async def advance(self, run_id: str) -> RunView | None:
        """Append whatever the run's current state calls for; returns the new state."""
        current = await load_run(self.store, run_id)
        if current is None:
            return None
        admitted = self.admissions.admit(current, await self._limit(current))
        # Only an unplanned run needs its pipeline file (the stream is read again for it).
        source = await self._pipeline_source(run_id) if current.plan is None else None
        result = await append_to_run(
            self.store, run_id,
            lambda run: decide(run, source, self.max_parallel_jobs, admitted))
        run = fold(result.appended, result.run)  # the state after what was just appended
        if run is not None:
            await self._signal_cancel(run)
            if run.done:
                self._seen.pop(run_id, None)
                for waiting in self.admissions.ended(run):
                    await self.advance(waiting)
        return run

    async def _limit(self, run: RunView) -> int:
        """The run's project's max_concurrent_runs (0: none; `cyclone run` has no project)."""
        if run.trigger == "cli":
            return 0
        project = fold_project(await self.store.read(project_stream(run.project)))
        return project.max_concurrent_runs if project and not project.deleted else 0

    async def _pipeline_source(self, run_id: str) -> PipelineSource | None:
        """The pipeline file recorded for the run: by its checkout, else by its request."""
        source = None
        for recorded in await self.store.read(run_stream(run_id)):
            event = decode(recorded)
            if isinstance(event, ev.RunSourceResolved):
                return event.pipeline_file, event.pipeline
            if isinstance(event, ev.RunRequested) and event.pipeline:
                source = event.pipeline_file, event.pipeline
            if isinstance(event, ev.RunPlanned):
                break
        return source

    async def _signal_cancel(self, run: RunView) -> None:
        key = cancel_key(run.id)
        if run.done:
            await self.coord.delete(key)
        elif run.cancel_requested and any(j.status == "running" for j in run.jobs):
            await self.coord.put(key, b"cancel")


async def abandon_run(store: EventStore, run_id: str, reason: str) -> bool:
    """End a run whose owner died mid-way as errored; False if it had already ended."""

    def end(run: RunView | None) -> list[ev.Event]:
        return [] if run is None or run.done else [ev.RunErrored(reason=reason)]

    return bool((await append_to_run(store, run_id, end)).appended)
