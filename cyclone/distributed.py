"""``cyclone service <name>``: one service as its own process, on the distributed adapters.

The composition root of the distributed mode, as ``cyclone/embedded.py`` is of the
embedded one: the only place that turns the infrastructure URLs into adapters.

    CYCLONE_BUS=kafka://host:9092        CYCLONE_COORD=etcd://host:2379
    CYCLONE_STORE=mongodb://host:27017   CYCLONE_LOG_STORE=mongodb://host:27017

Every service serves ``/healthz`` and ``/metrics`` on ``CYCLONE_LISTEN``; the api
service serves the whole REST API and the log streams there too. The outbox relay
and the cron scheduler run in the eventmanager replicas, each one at a time (leaders
elected in etcd, ``shared.leader``); ``CYCLONE_SCHEDULE_CATCHUP=0`` skips the fires
missed while no eventmanager ran instead of starting one run for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from cyclone.server import SHUTDOWN_TIMEOUT_S, until_signalled
from services.api.app import create_app
from services.api.auth import Tokens
from services.api.context import ApiContext
from services.api.live import LiveRuns
from services.api.readmodel import GROUP, RunsReadModel
from services.eventmanager.scheduler import Scheduler, catch_up_from_env
from services.eventmanager.service import EventManager
from services.logserver.http import log_routes
from services.logserver.service import LogServer
from services.notifier.forge_status import CommitStatusReporter
from services.notifier.service import Notifier
from services.workermanager.service import WorkerManager
from shared.adapters.bus.kafka import KafkaBus
from shared.adapters.coordination.etcd import EtcdCoordinator
from shared.adapters.eventstore.mongo import MongoEventStore
from shared.adapters.executor import open_executor
from shared.adapters.logstore.mongo import MongoLogStore
from shared.adapters.runviews.mongo import MongoRunViews
from shared.config import Settings, positive_int
from shared.errors import ConfigError
from shared.leader import run_as_leader
from shared.metrics import metrics_handler
from shared.outbox import NotifyingStore, OutboxRelay
from shared.ports.bus import TOPIC_EVENTS, TOPIC_JOBS, TOPIC_LOGS, TOPIC_LOGS_STORED

__all__ = ["SERVICES", "Infra", "run_service"]

log = logging.getLogger(__name__)

SERVICES = ("api", "eventmanager", "workermanager", "logserver", "notifier")
# Appends happen in other processes, so the relay polls the store (three small queries);
# each hop of a run through the relay costs up to this much latency.
RELAY_POLL_S = 0.02


@dataclass(frozen=True)
class Infra:
    bus: str
    store: str
    coord: str
    log_store: str
    partitions: int = 4  # of each topic Cyclone creates (CYCLONE_KAFKA_PARTITIONS)
    replication: int = 1  # of each topic Cyclone creates (CYCLONE_KAFKA_REPLICATION)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Infra:
        env = os.environ if env is None else env
        values = {}
        for field, name, scheme in (("bus", "CYCLONE_BUS", "kafka://"),
                                    ("store", "CYCLONE_STORE", "mongodb://"),
                                    ("coord", "CYCLONE_COORD", "etcd://"),
                                    ("log_store", "CYCLONE_LOG_STORE", "mongodb://")):
            raw = env.get(name, "")
            if not raw.startswith(scheme):
                raise ConfigError(f"{name}={raw!r}: expected a {scheme}... URL "
                                  "(distributed mode needs all of CYCLONE_BUS, CYCLONE_STORE, "
                                  "CYCLONE_COORD and CYCLONE_LOG_STORE)")
            values[field] = raw
        return cls(**values, partitions=positive_int(env, "CYCLONE_KAFKA_PARTITIONS", 4),
                   replication=positive_int(env, "CYCLONE_KAFKA_REPLICATION", 1))


async def run_service(name: str, settings: Settings, infra: Infra,
                      ready: asyncio.Event | None = None) -> None:
    if name not in SERVICES:
        raise ConfigError(f"unknown service {name!r}: expected one of {', '.join(SERVICES)}")
    async with AsyncExitStack() as stack:
        parts = await _open(stack, infra)
        tasks, app = await _STARTERS[name](parts, settings)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        host, port = settings.listen
        await web.TCPSite(runner, host, port).start()
        running = [asyncio.create_task(t, name=f"{name}-{i}") for i, t in enumerate(tasks)]
        stack.push_async_callback(_cancel, running)
        print(f"cyclone {name} is serving on http://{host}:{port}", flush=True)
        if ready is not None:
            ready.set()
        stopped = asyncio.create_task(until_signalled())
        await asyncio.wait([stopped, *running], return_when=asyncio.FIRST_COMPLETED)
        for task in running:
            if task.done() and not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]


@dataclass
class _Parts:
    store: NotifyingStore
    bus: KafkaBus
    coord: EtcdCoordinator
    logs: MongoLogStore
    open_run_views: Callable[[], Awaitable[MongoRunViews]]  # the api's alone: opened by it


async def _open(stack: AsyncExitStack, infra: Infra) -> _Parts:
    store = await MongoEventStore.connect(infra.store)
    stack.push_async_callback(store.close)
    bus = await KafkaBus.connect(infra.bus, infra.partitions, infra.replication)
    stack.push_async_callback(bus.close)
    await bus.ensure_topics(TOPIC_EVENTS, TOPIC_JOBS, TOPIC_LOGS, TOPIC_LOGS_STORED)
    coord = await EtcdCoordinator.connect(infra.coord)
    stack.push_async_callback(coord.close)
    logs = await MongoLogStore.connect(infra.log_store)
    stack.push_async_callback(logs.close)

    async def open_run_views() -> MongoRunViews:
        views = await MongoRunViews.connect(infra.store)  # beside the events it is made of
        stack.push_async_callback(views.close)
        return views

    return _Parts(NotifyingStore(store), bus, coord, logs, open_run_views)


Started = tuple[list[Coroutine[Any, Any, None]], web.Application]


def _health_app(check: Callable[[], Awaitable[object]],
                collectors: Iterable[Collector] = ()) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        try:
            await check()
        except Exception as exc:  # readiness: say what is not reachable
            return web.json_response({"status": "unavailable", "detail": str(exc)}, status=503)
        return web.json_response({"status": "ok"})

    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    app = web.Application()
    app.add_routes([web.get("/healthz", healthz),
                    web.get("/metrics", metrics_handler(registry))])
    return app


def _ready(parts: _Parts) -> Callable[[], Awaitable[object]]:
    async def check() -> None:
        await parts.store.last_position()
        await parts.coord.get("cyclone/health")
        await parts.logs.count("health")
        await parts.bus.partitions_of(TOPIC_EVENTS)

    return check


async def _api(parts: _Parts, settings: Settings) -> Started:
    # The replicas share the views in MongoDB and one consumer group that keeps them
    # current, so each event is applied once and a restart replays nothing; a new
    # group starts at the topic's beginning.
    readmodel = RunsReadModel(await parts.open_run_views(), store=parts.store)
    tokens = Tokens(parts.store)
    admin = await tokens.ensure_admin()
    if admin is not None:
        print(f"An admin API token was created (shown once):\n\n    export "
              f"CYCLONE_TOKEN={admin}\n", flush=True)
    # Push streams: this replica tails every event and every "log stored" notice.
    live = LiveRuns(parts.bus, parts.store)
    ctx = ApiContext(store=parts.store, readmodel=readmodel, tokens=tokens,
                     public_read=settings.public_read, live=live)
    reader = LogServer(parts.bus, parts.logs)  # reads only; stores nothing
    live.on_event(reader.wake)
    live.on_stored(reader.wake)  # the logserver replicas store in other processes
    app = create_app(ctx, extra_routes=log_routes(reader, live.view))
    return [readmodel.follow(parts.bus, group=GROUP), live.run()], app


async def _eventmanager(parts: _Parts, settings: Settings) -> Started:
    catch_up = catch_up_from_env()  # CYCLONE_SCHEDULE_CATCHUP, checked before any work
    # Catch up at start on what happened while no event manager ran (claims lost, slots
    # freed); only here: an embedded process's coordinator sees no other process's claims.
    manager = EventManager(parts.store, parts.bus, parts.coord, settings.max_parallel_jobs,
                           catch_up_at_start=True)
    await manager.load()
    relay = OutboxRelay(parts.store, parts.bus, poll_s=RELAY_POLL_S)
    relaying = run_as_leader(parts.coord, "outbox", settings.worker_id, relay.run)
    # Cron schedules fire from one replica at a time; a fire that two overlapping
    # leaders both decide is still started once (the scheduler's own concurrency control).
    scheduler = Scheduler(parts.store, catch_up=catch_up)
    scheduling = run_as_leader(parts.coord, "scheduler", settings.worker_id, scheduler.run)
    return [manager.run(), relaying, scheduling], _health_app(_ready(parts),
                                                              [manager.collector()])


async def _workermanager(parts: _Parts, settings: Settings) -> Started:
    # What the executor creates is labelled with this worker, so that its next
    # incarnation finds what a crash left. The id alone may be taken by a worker of
    # another cluster on the same Docker host: its home makes the label this worker's.
    label = f"{settings.worker_id}@{settings.work_dir}"
    executor = await open_executor(settings.executor, settings.work_dir, worker=label,
                                   keep_out=(settings.home,))
    worker = WorkerManager(parts.store, parts.bus, parts.coord, executor, settings.worker_id,
                           settings.worker_capacity, git_cache=settings.git_cache_dir,
                           lease_ttl=settings.worker_lease_s,
                           log_limit=settings.step_log)
    try:
        await worker.reap_own(label)  # before taking any job: all so labelled is leftover
    except BaseException:
        await executor.close()
        raise

    async def work() -> None:
        running = asyncio.create_task(worker.run(), name="workermanager-run")
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            # Stopping (run_service cancels us after SIGTERM): hand in-flight work back
            # while run()'s lease keep-alive and cancel watch still serve it.
            if not running.done():
                await worker.drain(settings.worker_drain_s)
            raise
        finally:
            await _cancel([running])
            await worker.close()
            await executor.close()

    return [work()], _health_app(_ready(parts))


async def _logserver(parts: _Parts, settings: Settings) -> Started:
    # Stores what workers ship; the api replicas serve the streams from the same store.
    server = LogServer(parts.bus, parts.logs)
    return [server.run()], _health_app(_ready(parts), [server.collector()])


async def _notifier(parts: _Parts, settings: Settings) -> Started:
    reporter = CommitStatusReporter(parts.store, settings.public_url)

    async def report_statuses() -> None:
        try:
            await reporter.run(parts.bus)
        finally:
            await reporter.close()

    notifier = Notifier(parts.store, parts.coord, parts.logs, public_url=settings.public_url,
                        settings=settings.notify, me=settings.worker_id)

    async def notify() -> None:
        try:
            await notifier.run(parts.bus)
        finally:
            await notifier.close()

    return [notify(), report_statuses()], _health_app(_ready(parts), [notifier.collector()])


_STARTERS: dict[str, Callable[[_Parts, Settings], Awaitable[Started]]] = {
    "api": _api, "eventmanager": _eventmanager, "workermanager": _workermanager,
    "logserver": _logserver, "notifier": _notifier,
}


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
