"""The embedded mode: all five services as tasks of one process, on the embedded adapters.

This is the composition root: the only place that picks adapters and wires the
services together (services never import each other). Resources are entered in
an ``AsyncExitStack`` so whatever was opened is closed again, even when start-up
fails half-way (the same idea as aiohttp's cleanup contexts).

On start it recovers from an earlier crash: runs left unfinished by a process
that is gone are ended as errored ("interrupted"), and the containers, networks
and volumes they left behind are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from cyclone.ownership import RunOwnership
from services.api.live import LiveRuns
from services.api.readmodel import RunsReadModel
from services.eventmanager.scheduler import Scheduler, catch_up_from_env
from services.eventmanager.service import EventManager, abandon_run
from services.logserver.service import LogServer
from services.notifier.forge_status import CommitStatusReporter
from services.notifier.service import Notifier
from services.workermanager.service import WorkerManager
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.coordination.memory import MemoryCoordinator
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.adapters.executor import open_executor
from shared.adapters.logstore.files import FileLogStore
from shared.config import Settings
from shared.errors import ConfigError
from shared.events import (
    CheckoutQueued,
    JobQueued,
    RecordedEvent,
    RunRequested,
    is_run_stream,
    run_stream,
)
from shared.outbox import NotifyingStore, OutboxRelay
from shared.ports.bus import TOPIC_JOBS
from shared.ports.executor import Executor
from shared.projections.replay import replay_runs
from shared.projections.runs import RunView, run_id_of
from shared.wire import encode_event

__all__ = ["INTERRUPTED", "Embedded"]

log = logging.getLogger(__name__)

BUS_BACKLOG_BYTES = 16 * 1024 * 1024  # per partition of the in-process bus
INTERRUPTED = "interrupted: the Cyclone process running it stopped before it finished"


@dataclass
class Embedded:
    settings: Settings
    store: NotifyingStore
    bus: MemoryBus
    coord: MemoryCoordinator
    logs: FileLogStore
    executor: Executor
    ownership: RunOwnership
    relay: OutboxRelay
    eventmanager: EventManager
    workermanager: WorkerManager
    logserver: LogServer
    readmodel: RunsReadModel
    live: LiveRuns
    notifier: Notifier
    recovered: list[str] = field(default_factory=list)  # runs ended as interrupted
    resumed: list[RunView] = field(default_factory=list)  # queued runs taken over
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings, *, own_all_runs: bool) -> Embedded:
        """Open the adapters, recover from a crash, start every service.

        ``own_all_runs``: a server (``cyclone up``) is responsible for every run in
        the store; ``cyclone run`` only for the runs it starts itself.
        """
        stack = AsyncExitStack()
        try:
            return await cls._start(settings, own_all_runs, stack)
        except BaseException:
            await stack.aclose()
            raise

    @classmethod
    async def _start(cls, settings: Settings, own_all: bool, stack: AsyncExitStack) -> Embedded:
        # Read before anything opens: a bad value stops the start (only a server schedules).
        catch_up = catch_up_from_env() if own_all else True
        settings.home.mkdir(parents=True, exist_ok=True)
        inner = await SqliteEventStore.open(settings.store_path)
        stack.push_async_callback(inner.close)
        store = NotifyingStore(inner)
        # What every group has committed is dropped, and a producer faster than its
        # consumers (a step printing a huge log) waits: memory stays flat.
        bus = MemoryBus(trim=True, max_backlog_bytes=BUS_BACKLOG_BYTES)
        stack.push_async_callback(bus.close)
        coord = MemoryCoordinator()
        stack.push_async_callback(coord.close)
        logs = FileLogStore(settings.logs_dir)
        stack.push_async_callback(logs.close)
        executor = await open_executor(settings.executor, settings.work_dir,
                                       keep_out=(settings.home,))
        stack.push_async_callback(executor.close)
        ownership = RunOwnership(settings.owners_dir)
        stack.callback(ownership.release_all)

        owners = _Owners(ownership, server=own_all)
        relay = OutboxRelay(store, bus, checkpoint="outbox" if own_all else None,
                            owns=owners.publishes)
        eventmanager = EventManager(store, bus, coord, settings.max_parallel_jobs)
        workermanager = WorkerManager(store, bus, coord, executor, settings.worker_id,
                                      settings.worker_capacity, git_cache=settings.git_cache_dir,
                                      log_limit=settings.step_log)
        stack.push_async_callback(workermanager.close)
        reporter = CommitStatusReporter(store, settings.public_url)
        stack.push_async_callback(reporter.close)  # after the tasks stop, before the store
        notifier = Notifier(store, coord, logs, public_url=settings.public_url,
                            settings=settings.notify, me=settings.worker_id)
        stack.push_async_callback(notifier.close)
        runtime = cls(settings=settings, store=store, bus=bus, coord=coord, logs=logs,
                      executor=executor, ownership=ownership, relay=relay,
                      eventmanager=eventmanager, workermanager=workermanager,
                      logserver=LogServer(bus, logs), readmodel=RunsReadModel(),
                      live=LiveRuns(bus, store), notifier=notifier, _stack=stack)
        runtime.live.on_event(runtime.logserver.wake)
        if own_all:
            owners.claim_server()
        await runtime._recover(owners)
        await eventmanager.load()
        if own_all:
            runtime.readmodel = await RunsReadModel.rebuild(store)
        else:
            await relay.start_at(await store.last_position())
        if own_all:  # joins before the relay publishes: a late group could miss messages
            runtime._tasks.append(asyncio.create_task(reporter.run(bus),
                                                      name="CommitStatusReporter.run"))
            runtime._tasks.append(asyncio.create_task(notifier.run(bus), name="Notifier.run"))
        if own_all:  # cron schedules: a server's job (one per home), never `cyclone run`'s
            scheduler = Scheduler(store, catch_up=catch_up)
            runtime._tasks.append(asyncio.create_task(scheduler.run(), name="Scheduler.run"))
        for service in (runtime.live.run, relay.run, eventmanager.run, workermanager.run,
                        runtime.logserver.run, runtime._follow_readmodel):
            runtime._tasks.append(asyncio.create_task(service(), name=service.__qualname__))
        await runtime.live.ready.wait()  # streams see every event from here on
        stack.push_async_callback(runtime._stop_tasks)
        await runtime._resume()
        return runtime

    async def stop(self) -> None:
        await self._stack.aclose()

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow_readmodel(self) -> None:
        await self.readmodel.follow(self.bus)

    async def _recover(self, owners: _Owners) -> None:
        """After a crash: runs that were running end as errored (interrupted); a server
        takes over the runs that were only queued; what ended runs left is removed."""
        replayed = await replay_runs(self.store)
        for run in replayed.runs.values():
            if run.done or not owners.orphaned(run):
                continue
            if owners.server and _resumable(run):
                self.resumed.append(run)
            elif await abandon_run(self.store, run.id, INTERRUPTED):
                self.recovered.append(run.id)
                log.warning("run interrupted by an earlier crash; marked errored",
                            extra={"run": run.id})

        def is_over(run_id: str) -> bool:
            run = replayed.runs.get(run_id)
            return run is not None and (run.done or run_id in self.recovered)

        reaped = await self.workermanager.reap(is_over)
        if reaped:
            log.warning("removed containers, networks and volumes left by ended runs",
                        extra={"runs": reaped})

    async def _resume(self) -> None:
        """Put the taken-over runs' queued work back on the bus and move them on."""
        for run in self.resumed:
            for recorded in await self.store.read(run_stream(run.id)):
                if _still_queued(run, recorded):
                    await self.bus.publish(TOPIC_JOBS, run.id, encode_event(recorded))
            await self.eventmanager.advance(run.id)
            log.warning("resumed a queued run after a restart", extra={"run": run.id})


def _resumable(run: RunView) -> bool:
    """Nothing of it was running: it can simply go on (a checkout is safe to redo)."""
    return run.trigger != "cli" and not any(j.status == "running" for j in run.jobs)


def _still_queued(run: RunView, recorded: RecordedEvent) -> bool:
    if recorded.type == CheckoutQueued.TYPE:
        return run.checkout == "queued"
    if recorded.type == JobQueued.TYPE:
        job = run.job(str(recorded.data.get("job")))
        return job is not None and job.status == "queued"
    return False


class _Owners:
    """Which process is responsible for a run: the ``cyclone run`` process that started
    it (``trigger == "cli"``, locked by its run id), else the server (locked as
    ``server``). Runs of ``cyclone run`` are never published by a server's relay."""

    SERVER = "server"

    def __init__(self, ownership: RunOwnership, server: bool) -> None:
        self.ownership = ownership
        self.server = server
        self._cli_runs: set[str] = set()

    def claim_server(self) -> None:
        try:
            self.ownership.claim(self.SERVER)
        except BlockingIOError:
            raise ConfigError("another `cyclone up` is already serving this CYCLONE_HOME "
                              f"({self.ownership.directory.parent})") from None

    def orphaned(self, run: RunView) -> bool:
        """Whether the run's owner is gone. A server run is, for the server that has just
        taken the server lock (whoever held it is dead); a `cyclone run` leaves them be."""
        if run.trigger != "cli":
            return self.server
        return not self.ownership.owns(run.id) and self.ownership.is_orphan(run.id)

    def publishes(self, recorded: RecordedEvent) -> bool:
        if not is_run_stream(recorded.stream):
            return self.server
        run_id = run_id_of(recorded.stream)
        if recorded.type == RunRequested.TYPE and recorded.data.get("trigger") == "cli":
            self._cli_runs.add(run_id)
        if not self.server:
            return self.ownership.owns(run_id)
        return run_id not in self._cli_runs
