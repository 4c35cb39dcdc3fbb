"""``open_ports(settings)``: the port adapters of this process, opened once and closed
on exit. The only place that turns settings into adapters; the settings choose:

* embedded (no ``CYCLONE_BUS`` etc.): the SQLite event store, the in-process bus and
  coordinator, log files, artifact files, all under ``CYCLONE_HOME``; run views folded
  from the store;
* distributed (``Settings.infra``): MongoDB events (run views beside them), Kafka (the
  topics are created at start, ``CYCLONE_KAFKA_PARTITIONS``), etcd, MongoDB logs, and
  artifacts in an S3 bucket when ``CYCLONE_ARTIFACT_STORE`` is an ``s3://`` URL, else in
  GridFS (in ``CYCLONE_ARTIFACT_STORE``'s database, else ``CYCLONE_STORE``'s).

    CYCLONE_BUS=kafka://host:9092        CYCLONE_COORD=etcd://host:2379
    CYCLONE_STORE=mongodb://host:27017   CYCLONE_LOG_STORE=mongodb://host:27017
    CYCLONE_ARTIFACT_STORE=mongodb://host:27017 or s3://KEY:SECRET@host/bucket (optional)

``scope``: the runs this process answers for (``shared.infra.RunScope``); every run,
unless an embedded process says otherwise (``cyclone.ownership.HomeScope``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from shared.adapters.artifacts.files import FileArtifactStore
from shared.adapters.artifacts.gridfs import GridFsArtifactStore
from shared.adapters.artifacts.s3 import S3ArtifactStore
from shared.adapters.bus.kafka import KafkaBus
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.coordination.etcd import EtcdCoordinator
from shared.adapters.coordination.memory import MemoryCoordinator
from shared.adapters.eventstore.mongo import MongoEventStore
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.adapters.logstore.files import FileLogStore
from shared.adapters.logstore.mongo import MongoLogStore
from shared.adapters.runviews.memory import MemoryRunViews
from shared.adapters.runviews.mongo import MongoRunViews
from shared.config import Infra, Settings
from shared.infra import EVERY_RUN, Ports, RunScope
from shared.outbox import NotifyingStore
from shared.ports.artifacts import ArtifactStore
from shared.ports.bus import TOPIC_EVENTS, TOPIC_JOBS, TOPIC_LOGS, TOPIC_LOGS_STORED
from shared.ports.runviews import RunViews
from shared.projections.replay import SharedReplay

__all__ = ["BUS_BACKLOG_BYTES", "open_artifact_store", "open_ports"]

BUS_BACKLOG_BYTES = 16 * 1024 * 1024  # per partition of the in-process bus
_NO_BLOB = "sha256:" + "0" * 64  # what the readiness check asks the artifact store for


@asynccontextmanager
async def open_ports(settings: Settings, scope: RunScope = EVERY_RUN) -> AsyncIterator[Ports]:
    async with AsyncExitStack() as stack:
        if settings.infra is None:
            yield await _embedded(stack, settings, scope)
        else:
            yield await _distributed(stack, settings.infra, scope)


async def _embedded(stack: AsyncExitStack, settings: Settings, scope: RunScope) -> Ports:
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
    artifacts = FileArtifactStore(settings.artifacts_dir)
    stack.push_async_callback(artifacts.close)

    replay = SharedReplay(store)

    async def run_views() -> RunViews:
        return MemoryRunViews((await replay()).runs)

    # Nothing behind these ports can be away but the store's file.
    return Ports(store=store, bus=bus, coord=coord, logs=logs, artifacts=artifacts,
                 scope=scope, open_run_views=run_views, ready=store.last_position,
                 distributed=False, replay=replay)


async def _distributed(stack: AsyncExitStack, infra: Infra, scope: RunScope) -> Ports:
    events = await MongoEventStore.connect(infra.store)
    stack.push_async_callback(events.close)
    bus = await KafkaBus.connect(infra.bus, infra.partitions, infra.replication)
    stack.push_async_callback(bus.close)
    await bus.ensure_topics(TOPIC_EVENTS, TOPIC_JOBS, TOPIC_LOGS, TOPIC_LOGS_STORED)
    coord = await EtcdCoordinator.connect(infra.coord)
    stack.push_async_callback(coord.close)
    logs = await MongoLogStore.connect(infra.log_store)
    stack.push_async_callback(logs.close)
    artifacts = await open_artifact_store(infra.artifacts_url)
    stack.push_async_callback(artifacts.close)
    store = NotifyingStore(events)

    async def run_views() -> RunViews:
        return await MongoRunViews.connect(infra.store)  # beside the events they are made of

    async def ready() -> None:
        await store.last_position()
        await coord.get("cyclone/health")
        await logs.count("health")
        await artifacts.stat(_NO_BLOB)  # one indexed lookup, not a sum over every blob
        await bus.partitions_of(TOPIC_EVENTS)

    return Ports(store=store, bus=bus, coord=coord, logs=logs, artifacts=artifacts,
                 scope=scope, open_run_views=run_views, ready=ready, distributed=True,
                 replay=SharedReplay(store))


async def open_artifact_store(url: str) -> ArtifactStore:
    """An S3 bucket for an ``s3://`` URL, else GridFS in the URL's MongoDB."""
    if url.startswith("s3://"):
        return await S3ArtifactStore.connect(url)
    return await GridFsArtifactStore.connect(url)
