"""Notifier replicas never notify one run end twice, even when it is delivered twice."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from services.notifier.service import Notifier
from shared import events as ev
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.coordination.etcd import EtcdCoordinator
from shared.adapters.coordination.memory import MemoryCoordinator
from shared.events import NewEvent, RecordedEvent, run_stream
from shared.ports.bus import TOPIC_EVENTS, Message
from shared.ports.coordination import Coordinator
from shared.wire import encode_event
from tests.infra.etcd import etcd_server, etcd_url

__all__ = ["etcd_server", "etcd_url"]


def run_end(run_id: str, event: ev.Event, seq: int = 9) -> Message:
    new = NewEvent(event)
    recorded = RecordedEvent(id=new.id, stream=run_stream(run_id), seq=seq, type=event.TYPE,
                             version=1, ts=new.ts, data=event.to_data(), meta={},
                             position=seq)
    return Message(topic=TOPIC_EVENTS, key=run_id, value=encode_event(recorded),
                   partition=0, offset=seq)


@pytest.fixture(params=["memory", "etcd"])
async def coord(request: pytest.FixtureRequest) -> AsyncIterator[Coordinator]:
    if request.param == "memory":
        coordinator: Coordinator = MemoryCoordinator()
    else:
        coordinator = await EtcdCoordinator.connect(request.getfixturevalue("etcd_url"))
    yield coordinator
    await coordinator.close()


async def test_a_run_end_delivered_to_two_replicas_is_notified_once(coord: Coordinator) -> None:
    bus = MemoryBus()
    replicas = [Notifier(bus, coord), Notifier(bus, coord)]
    run_id = uuid.uuid4().hex[:20]
    message = run_end(run_id, ev.RunFailed(reason="job failed: test"))

    for replica in replicas:  # a redelivery after the first replica died uncommitted
        await replica.handle(message)
    await replicas[0].handle(message)

    assert sum(r.notified for r in replicas) == 1


async def test_each_outcome_of_each_run_is_notified(coord: Coordinator) -> None:
    notifier = Notifier(MemoryBus(), coord)
    first, second = uuid.uuid4().hex[:20], uuid.uuid4().hex[:20]

    await notifier.handle(run_end(first, ev.RunSucceeded()))
    await notifier.handle(run_end(second, ev.RunSucceeded()))
    await notifier.handle(run_end(second, ev.JobQueued(job="x"), seq=3))  # not an end

    assert notifier.notified == 2
