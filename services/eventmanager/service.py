"""The event manager: reacts to every run event by deciding what happens next.

It consumes ``cyclone.events`` in one consumer group (runs are split across
replicas by partition, keyed by run id) and appends its decisions to the run's
stream through ``RunStates.append`` (optimistic concurrency, so two replicas that
briefly both see a run after a rebalance cannot both queue a job). It also
raises and clears the run's cancel signal in the coordination service, which
the workers running the run's jobs watch.

Three watches on the coordination service run beside the consumer: job claims (a claim
deleted while its job still runs means the worker died: the job is queued again),
admission slots (a slot freed by any replica lets the project's waiting runs in, see
``admission``) and workers (one that registers gets the queued jobs that wait for its
labels offered again, see ``reoffer``). A watch that breaks (etcd away longer than the
watch's own retry window) is opened again with backoff, and what the gap may have hidden
is made up for: jobs whose claim is missing are queued again, waiting runs are advanced.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from services.eventmanager.admission import Admissions, started
from services.eventmanager.approval import ApprovalTimers
from services.eventmanager.decide import PipelineSource, decide
from services.eventmanager.reoffer import Reoffers
from shared import events as ev
from shared.consume import consume
from shared.events import decode, is_run_stream, run_stream, utc_now
from shared.keys import (
    CHECKOUT,
    CLAIMS_PREFIX,
    SLOTS_PREFIX,
    WAITING_PREFIX,
    WORKERS_PREFIX,
    cancel_key,
    claim_key,
)
from shared.metrics import FunctionCollector, Timings
from shared.pipeline.include import IncludedFile, included_files
from shared.pipeline.resources import LOCAL, Policy
from shared.ports.bus import TOPIC_EVENTS, Bus, Message
from shared.ports.coordination import Coordinator, Watch, WatchEvent
from shared.ports.eventstore import EventStore
from shared.projections.projects import ProjectView, fold_project, project_stream
from shared.projections.replay import Replayed, replay_runs
from shared.projections.runs import RunView, fold, run_id_of
from shared.rerun import reused_jobs
from shared.retry import Backoff, is_transient
from shared.runstream import RunStates, append_to_run, load_run
from shared.secrets import SecretStore
from shared.status import CheckoutState, JobStatus
from shared.streamcache import StreamCache
from shared.wire import decode_event
from shared.workers import WorkerInfo, live_workers

__all__ = ["EventManager", "abandon_run"]

log = logging.getLogger(__name__)


class EventManager:
    def __init__(self, store: EventStore, bus: Bus, coord: Coordinator,
                 max_parallel_jobs: int, group: str = "eventmanager", *,
                 catch_up_at_start: bool = False,
                 replay: Callable[[], Awaitable[Replayed]] | None = None) -> None:
        """``catch_up_at_start``: also make up, when ``run`` starts, for claim deletions
        and freed slots no replica watched (every event manager was down). Only with a
        coordinator shared by every process (etcd): with a per-process one (embedded
        mode, where a `cyclone run` process has its own) other processes' claims are
        invisible and their jobs would look abandoned."""
        self.store = store
        self.bus = bus
        self.coord = coord
        self.max_parallel_jobs = max_parallel_jobs
        self.group = group
        self.catch_up_at_start = catch_up_at_start
        # every run at start (load): the process's shared fold, else one of its own
        self.replay = replay or functools.partial(replay_runs, store)
        self._seen: dict[str, int] = {}  # run id -> highest seq handled (drops redeliveries)
        self.runs = RunStates(store)
        self.projects = StreamCache(store, fold_project)
        self.secrets = SecretStore(store)  # names only
        self.admissions = Admissions(coord)
        self.approvals = ApprovalTimers(self.advance)
        self.reoffers = Reoffers(store, bus, self.runs)  # jobs waiting for a worker's labels
        self.handling = Timings("cyclone_eventmanager_handle_seconds",
                                "Time the event manager took to handle one run event")

    def collector(self) -> FunctionCollector:
        return FunctionCollector(lambda: [self.handling.metric()])

    async def load(self) -> None:
        """Bring the admission slots and queue in line with the store (call at start)."""
        # Read before the replay: every run they name is in it (Admissions.reconcile).
        held = await self.coord.get_prefix(SLOTS_PREFIX)
        listed = await self.coord.get_prefix(WAITING_PREFIX)
        runs = (await self.replay()).runs
        self.reoffers.note(runs.values())
        for run in runs.values():
            self.approvals.watch(run)  # deadlines that passed while no event manager ran
        for project in sorted(await self.admissions.reconcile(held, listed, runs,
                                                              self._limit)):
            await self._wake(project)

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(consume(self.bus, TOPIC_EVENTS, self.group, self.handle))
                group.create_task(self._follow(CLAIMS_PREFIX, self._claim_changed,
                                               self._requeue_abandoned))
                group.create_task(self._follow(SLOTS_PREFIX, self._slot_changed,
                                               self._wake_all))
                group.create_task(self._follow(WORKERS_PREFIX, self._worker_changed,
                                               self._offer_to_all))
        finally:
            await self.approvals.close()

    # --- watches ---------------------------------------------------------------------

    async def _follow(self, prefix: str, on_change: Callable[[WatchEvent], Awaitable[None]],
                      catch_up: Callable[[], Awaitable[None]]) -> None:
        """Handle every change under ``prefix`` until the coordinator closes.

        When the watch (or handling a change) fails because etcd or the store is away,
        the watch is opened again after a backoff, then ``catch_up`` runs: the watch is
        open before it reads anything, so a change is seen by one or the other.
        """
        backoff = Backoff()
        behind = self.catch_up_at_start
        while True:
            watch: Watch | None = None
            try:
                watch = self.coord.watch(prefix)
                if behind:
                    await catch_up()
                    behind = False
                    backoff.reset()
                async for change in watch:
                    await on_change(change)
                    backoff.reset()
                return  # the coordinator was closed
            except Exception as exc:
                if not is_transient(exc):
                    raise
                behind = True
                delay = backoff.next_delay()
                log.warning("watch broken; opening it again", extra={
                    "prefix": prefix, "error": str(exc), "retry_in_s": round(delay, 2)})
            finally:
                if watch is not None:
                    await watch.aclose()
            await asyncio.sleep(delay)

    async def _claim_changed(self, change: WatchEvent) -> None:
        """A claim that disappears while its job still runs means the worker died (its
        lease expired): the job is queued again, for another worker."""
        if change.kind == "delete":
            run_id, _, job = change.key.removeprefix(CLAIMS_PREFIX).partition("/")
            await self.requeue_if_abandoned(run_id, job)

    async def _requeue_abandoned(self) -> None:
        """Queue again the work whose claim vanished while nobody watched."""
        # The states first, the claims after: requeue_if_abandoned says why.
        runs = (await self.replay()).runs.values()
        claims = await self.coord.get_prefix(CLAIMS_PREFIX)
        for run in runs:
            for job in _claimable(run):
                if claim_key(run.id, job) not in claims:
                    await self.requeue_if_abandoned(run.id, job)

    async def _slot_changed(self, change: WatchEvent) -> None:
        if change.kind == "delete":  # a slot was freed, maybe by another replica
            project = change.key.removeprefix(SLOTS_PREFIX).rpartition("/")[0]
            await self._wake(project)

    async def _worker_changed(self, change: WatchEvent) -> None:
        """A worker registered: the queued jobs that wait for its labels are offered
        again (``reoffer``)."""
        if change.kind == "put" and change.value is not None:
            worker = WorkerInfo.decode(change.key.removeprefix(WORKERS_PREFIX), change.value)
            await self.reoffers.offer_to([worker])

    async def _offer_to_all(self) -> None:
        await self.reoffers.offer_to(await live_workers(self.coord))

    async def _wake_all(self) -> None:
        for project in await self.admissions.waiting_projects():
            await self._wake(project)

    async def _wake(self, project: str) -> None:
        """Advance the project's waiting runs, oldest first, until one still has to wait
        (the ones after it wait too). Every replica may do this at once: admission and
        appends are safe against each other."""
        for run_id in await self.admissions.waiting(project):
            run = await self.advance(run_id, wake=False)
            if run is None:
                await self.admissions.forget(project, run_id)  # no such run: a stray key
            elif not run.done and not started(run):
                return

    # --- runs ------------------------------------------------------------------------

    async def requeue_if_abandoned(self, run_id: str, job: str) -> bool:
        """Queue ``job`` (or the run's checkout) again if the worker that took it is gone.

        Gone means: the run's state shows the job running (the checkout queued), and its
        claim is missing when read *after* that state. A worker creates its claim before
        it appends ``JobStarted`` and deletes it only after it appended ``JobFinished``
        (or gave up), so such a job was abandoned, unless it ended or was started again
        in the meantime: the append checks that the same start (worker and start time) is
        still running. (One exception on the worker's side: a worker whose lease ran out
        while it was appending ``JobStarted`` claims the job again just after; if the job
        was queued again in between, that worker must start it anew, not run it as the
        old attempt.) A checkout has no start event: one never claimed yet is queued a
        second time, which is harmless (a worker redoes it only while it is queued).
        Safe to call any number of times, from any replica.
        """
        seen = _taken(await self.runs.load(run_id), job)
        if seen is None or await self.coord.get(claim_key(run_id, job)) is not None:
            return False

        def requeue(run: RunView | None) -> list[ev.Event]:
            if _taken(run, job) != seen:
                return []
            return [ev.CheckoutQueued()] if job == CHECKOUT else [ev.JobQueued(job=job)]

        result = await self.runs.append(run_id, requeue)
        if result.appended:
            log.warning("worker lost; work queued again", extra={"run": run_id, "job": job})
            run = fold(result.appended, result.run)
            if run is not None:
                self.reoffers.note([run])
        return bool(result.appended)

    async def handle(self, message: Message) -> None:
        recorded = decode_event(message.value)
        if not is_run_stream(recorded.stream) or recorded.type in _NO_DECISION:
            return
        run_id = run_id_of(recorded.stream)
        if recorded.seq <= self._seen.get(run_id, 0):
            return
        started = time.perf_counter()
        run = await self.advance(run_id)
        self.handling.observe(time.perf_counter() - started)
        # Only once handled: a message whose handling failed comes again and must count.
        if run is not None and not run.done:
            self._seen[run_id] = max(recorded.seq, self._seen.get(run_id, 0))

    async def advance(self, run_id: str, wake: bool = True) -> RunView | None:
        """Append whatever the run's current state calls for; returns the new state.

        ``wake``: when the run ends, or waits behind older runs while slots are free,
        also advance its project's waiting runs (``False`` inside such a wake-up).
        """
        current = await self.runs.load(run_id)
        if current is None:
            return None
        project = await self._project(current)
        limit = project.max_concurrent_runs if project else 0
        verdict = await self.admissions.admit(current, limit)
        if verdict == "behind" and wake:
            await self._wake(current.project)  # the older runs first; this one is among them
            return await self.runs.load(run_id)
        # Only an unplanned run needs its pipeline file (the stream is read again for it),
        # and not while its checkout is queued: it then has none yet (a run requested
        # with its pipeline file is planned at once, and never queues a checkout).
        source, includes = (
            await self._pipeline_source(run_id)
            if current.plan is None and current.checkout != CheckoutState.QUEUED
            else (None, ()))
        secrets = await self._secret_names(current) if source is not None else None
        admitted = verdict == "admitted"
        reused = await self._reused(current) if source is not None and admitted else []
        result = await self.runs.append(
            run_id, lambda run: decide(run, source, self.max_parallel_jobs, admitted, secrets,
                                       _policy(current, project), now=utc_now(),
                                       reused=reused, includes=includes))
        run = fold(result.appended, result.run)  # the state after what was just appended
        if run is not None:
            self.reoffers.note([run])
            self.approvals.watch(run)
            await self._signal_cancel(run)
            if run.done:
                self._seen.pop(run_id, None)
                freed = await self.admissions.release(run)
                # Woken even when nothing was freed here: the release may have happened
                # before a crash that came before the wake-up (this is its redelivery).
                if wake and (freed or limit > 0):
                    await self._wake(run.project)
        return run

    async def _limit(self, run: RunView) -> int:
        """The run's project's max_concurrent_runs (0: none; `cyclone run` has no project)."""
        project = await self._project(run)
        return project.max_concurrent_runs if project else 0

    async def _project(self, run: RunView) -> ProjectView | None:
        """The run's project (None: deleted, unknown, or `cyclone run`, which has none)."""
        if run.trigger == "cli":
            return None
        project = await self.projects.load(project_stream(run.project))
        return project if project and not project.deleted else None

    async def _secret_names(self, run: RunView) -> dict[str, bool]:
        """The secrets the run may ask for by name (True: implicit): only names are read,
        this service holds no key."""
        return {name: view.implicit
                for name, view in (await self.secrets.visible(run.project)).items()}

    async def _reused(self, run: RunView) -> list[ev.JobReused]:
        """What a rerun takes from the run it reruns, as that run (read from the store:
        it has ended, so it changes no more) ended each job it reuses."""
        if not run.reuse:
            return []
        earlier = await load_run(self.store, run.rerun_of)
        if earlier is None:
            log.warning("rerun of a run the store does not have: every job runs again",
                        extra={"run": run.id, "rerun_of": run.rerun_of})
            return []
        return reused_jobs(earlier, run.reuse)

    async def _pipeline_source(self, run_id: str,
                               ) -> tuple[PipelineSource | None, tuple[IncludedFile, ...]]:
        """The pipeline file recorded for the run, and the files it includes: by its
        checkout, else by its request."""
        source: tuple[PipelineSource | None, tuple[IncludedFile, ...]] = None, ()
        for recorded in await self.store.read(run_stream(run_id)):
            if recorded.type not in _SOURCES:
                continue  # not decoded: only these three matter here
            event = decode(recorded)
            if isinstance(event, ev.RunSourceResolved):
                return (event.pipeline_file, event.pipeline), included_files(event.includes)
            if isinstance(event, ev.RunRequested) and event.pipeline:
                source = (event.pipeline_file, event.pipeline), included_files(event.includes)
            if isinstance(event, ev.RunPlanned):
                break
        return source

    async def _signal_cancel(self, run: RunView) -> None:
        key = cancel_key(run.id)
        if run.done:
            await self.coord.delete(key)
        elif run.cancel_requested and any(j.status == JobStatus.RUNNING for j in run.jobs):
            await self.coord.put(key, b"cancel")


def _policy(run: RunView, project: ProjectView | None) -> Policy:
    """What the run's pipeline may ask of the Docker host: `cyclone run` runs on its
    user's own machine and Docker (anything); a server's run, what its project allows
    (an unknown project: nothing extra)."""
    if run.trigger == "cli":
        return LOCAL
    return project.policy if project else Policy(trusted=False, project=run.project)


# Events after which the run's state machine has nothing to decide: its own queueing of
# a job and a job's start (only a job's end frees a slot or completes a need), a step's
# progress, its own wait for an approval, what a job delivered, and what the notifier
# records of its work.
_SOURCES = frozenset({ev.RunSourceResolved.TYPE, ev.RunRequested.TYPE, ev.RunPlanned.TYPE})
_NO_DECISION = frozenset(t.TYPE for t in (
    ev.JobQueued, ev.JobStarted, ev.StepStarted, ev.StepFinished, ev.StepSkipped,
    ev.StepLogTruncated, ev.JobAwaitingApproval, ev.ImagePushed, ev.DeploymentStarted,
    ev.DeploymentSucceeded, ev.DeploymentRolledBack, ev.DeploymentFailed,
    ev.NotificationSent, ev.NotificationFailed, ev.CommitStatusReported,
    ev.CommitStatusFailed))


def _taken(run: RunView | None, job: str) -> tuple[str, str] | None:
    """Which start of ``job`` a worker holds, by (worker, start time); None if none."""
    if run is None or run.done:
        return None
    if job == CHECKOUT:
        return (CHECKOUT, "") if run.checkout == CheckoutState.QUEUED else None
    view = run.job(job)
    running = view is not None and view.status == JobStatus.RUNNING
    return (view.worker, view.started_at) if view and running else None


def _claimable(run: RunView) -> list[str]:
    """The work of a run that a worker should hold a claim for."""
    if run.done:
        return []
    jobs = [j.name for j in run.jobs if j.status == JobStatus.RUNNING]
    return [CHECKOUT, *jobs] if run.checkout == CheckoutState.QUEUED else jobs


async def abandon_run(store: EventStore, run_id: str, reason: str) -> bool:
    """End a run whose owner died mid-way as errored; False if it had already ended."""

    def end(run: RunView | None) -> list[ev.Event]:
        return [] if run is None or run.done else [ev.RunErrored(reason=reason)]

    return bool((await append_to_run(store, run_id, end)).appended)
