"""A job whose worker is gone is queued again: when its claim disappears under the event
manager's watch, when it disappeared while no event manager watched, and after etcd was
away longer than a watch survives on its own."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from services.eventmanager.service import EventManager
from shared import events as ev
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.coordination.etcd import EtcdCoordinator
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.errors import CoordinationError
from shared.events import run_stream
from shared.keys import claim_key
from shared.ports.coordination import Coordinator
from shared.ports.eventstore import EventStore
from shared.projections.runs import RunView
from shared.runstream import append_to_run
from tests.eventmanager.support import Replicas, connect, replicas, worker_reports
from tests.infra.etcd import EtcdServer, etcd_server, etcd_url, private_etcd
from tests.support import eventually

__all__ = ["connect", "etcd_server", "etcd_url", "private_etcd", "replicas"]  # fixtures


async def running_job(store: EventStore, manager: EventManager, project_run: str,
                      coord: Coordinator | None, worker: str = "w1") -> None:
    """Take the run to its job running on ``worker``, which claimed it first (as a worker
    does); with ``coord`` None the claim is left out (the worker is already gone)."""
    await manager.advance(project_run)  # plan
    await manager.advance(project_run)  # queue the job
    if coord is not None:
        assert await coord.create(claim_key(project_run, "work"), worker.encode())

    def start(run: RunView | None) -> list[ev.Event]:
        return [ev.JobStarted(job="work", worker=worker, executor="test")]

    await append_to_run(store, project_run, start)


async def queued_times(store: EventStore, run_id: str) -> int:
    return sum(1 for e in await store.read(run_stream(run_id)) if e.type == "JobQueued")


async def test_requeue_only_a_running_job_whose_claim_is_gone(replicas: Replicas) -> None:
    manager = await replicas.manager()
    run_id = await replicas.request(await replicas.project(limit=0))
    await running_job(replicas.store, manager, run_id, manager.coord)

    assert not await manager.requeue_if_abandoned(run_id, "work")  # its worker holds it
    assert await manager.coord.delete(claim_key(run_id, "work"))
    assert await manager.requeue_if_abandoned(run_id, "work")
    assert not await manager.requeue_if_abandoned(run_id, "work")  # queued already
    assert await queued_times(replicas.store, run_id) == 2

    await worker_reports(replicas, run_id, worker="w2")  # the job ran, and ended
    assert not await manager.requeue_if_abandoned(run_id, "work")
    assert await queued_times(replicas.store, run_id) == 2


async def test_a_claim_deleted_under_the_watch_queues_its_job_again(replicas: Replicas) -> None:
    manager = await replicas.manager(running=True)
    run_id = await replicas.request(await replicas.project(limit=0))
    await running_job(replicas.store, manager, run_id, manager.coord)
    assert await manager.coord.delete(claim_key(run_id, "work"))  # the worker's lease ended
    await eventually(lambda: _queued_at_least(replicas.store, run_id, 2), what="queued again")


async def test_a_job_abandoned_while_no_event_manager_watched_is_queued_at_start(
    replicas: Replicas,
) -> None:
    earlier = await replicas.manager()
    run_id = await replicas.request(await replicas.project(limit=0))
    await running_job(replicas.store, earlier, run_id, coord=None)  # the claim is gone
    await replicas.manager(running=True, catch_up_at_start=True)
    await eventually(lambda: _queued_at_least(replicas.store, run_id, 2), what="queued again")


async def _queued_at_least(store: EventStore, run_id: str, times: int) -> bool:
    return await queued_times(store, run_id) >= times


async def _until_it_works(coord: Coordinator, key: str) -> bool:
    with contextlib.suppress(CoordinationError):  # the client reconnects after the restart
        return await coord.delete(key) or await coord.get(key) is None
    return False


async def test_the_event_manager_outlives_an_etcd_outage_longer_than_a_watch_does(
    tmp_path: Path, private_etcd: EtcdServer, caplog: pytest.LogCaptureFixture,
) -> None:
    store = await SqliteEventStore.open(tmp_path / "store.db")
    bus = MemoryBus()
    coord = await EtcdCoordinator.connect(private_etcd.url, call_timeout=2, watch_retry=0.3)
    worker = await EtcdCoordinator.connect(private_etcd.url, call_timeout=2)
    manager = EventManager(store, bus, coord, max_parallel_jobs=4)
    task = asyncio.create_task(manager.run())
    try:
        harness = Replicas(store, lambda: _given(coord))
        run_id = await harness.request("")
        await running_job(store, manager, run_id, worker)

        private_etcd.stop()
        await eventually(lambda: "watch broken" in caplog.text,
                         what="the claims watch gives up while etcd is away")
        private_etcd.restart()
        # The worker's lease ended while etcd was away (as seen once it is back).
        await eventually(lambda: _until_it_works(worker, claim_key(run_id, "work")),
                         what="etcd is back")
        await eventually(lambda: _queued_at_least(store, run_id, 2),
                         what="the job is queued again")
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()
        await coord.close()
        await bus.close()
        await store.close()


async def _given(coord: Coordinator) -> Coordinator:
    return coord
