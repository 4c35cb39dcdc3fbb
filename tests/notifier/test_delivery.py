"""``Deliverer``: one notification is sent once and recorded once, across replicas,
restarts, retries and a replica that dies holding its claim.

Real parts: the SQLite event store, and both coordinators (in-memory and etcd). The
``send`` callables here stand for a channel; the channels themselves are tested
against real SMTP and HTTP servers in test_email.py and test_chat.py.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.notifier.delivery import Deliverer, Notification
from services.notifier.message import SendError
from shared import events as ev
from shared.adapters.coordination.etcd import EtcdCoordinator
from shared.adapters.coordination.memory import MemoryCoordinator
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.events import decode
from shared.keys import notifying_key
from shared.pipeline.notify import Channel
from shared.ports.coordination import Coordinator
from tests.infra.etcd import etcd_server, etcd_url
from tests.support import HANG_S, eventually

__all__ = ["etcd_server", "etcd_url"]

_counter = itertools.count()


@pytest.fixture(params=["memory", "etcd"])
async def coord(request: pytest.FixtureRequest) -> AsyncIterator[Coordinator]:
    if request.param == "memory":
        coordinator: Coordinator = MemoryCoordinator()
    else:
        coordinator = await EtcdCoordinator.connect(request.getfixturevalue("etcd_url"))
    yield coordinator
    await coordinator.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    opened = await SqliteEventStore.open(tmp_path / "events.db")
    yield opened
    await opened.close()


def note(channel: str = "a@example.com") -> Notification:
    run = f"run{next(_counter)}x{id(channel)}"
    key = f"{run}/ended/project:team/email:{channel}"
    return Notification(stream=f"run-{run}", key=key, rule="project:team",
                        channel=Channel("email", channel), send_to=Channel("email", channel),
                        moment="ended", reason="failure",
                        payload=None)


async def outcomes(store: SqliteEventStore, stream: str) -> list[ev.Event]:
    return [e for r in await store.read(stream)
            if isinstance(e := decode(r), ev.NotificationSent | ev.NotificationFailed)]


class ScriptedSend:
    """A channel that counts what it was sent; ``fail`` scripts SendErrors first;
    ``refuse`` addresses are refused for good."""

    def __init__(self, *fail: SendError, refuse: str = "") -> None:
        self.fail = list(fail)
        self.refuse = refuse
        self.sent: list[str] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, notification: Notification) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if notification.send_to.target == self.refuse:
            raise SendError("550 no such user", retry=False)
        if self.fail:
            raise self.fail.pop(0)
        self.sent.append(notification.key)


def deliverer(store: SqliteEventStore, coord: Coordinator, send: ScriptedSend, me: str,
              **options: Any) -> Deliverer:
    return Deliverer(store, coord, send, me=me, first_delay=0.01, max_delay=0.05, **options)


async def test_two_replicas_delivering_one_notification_send_it_once(
        store: SqliteEventStore, coord: Coordinator) -> None:
    channel = ScriptedSend()
    channel.gate = asyncio.Event()  # both are in flight before either sends
    replicas = [deliverer(store, coord, channel, "n1"), deliverer(store, coord, channel, "n2")]
    notification = note()
    both = asyncio.gather(*(r.deliver(notification) for r in replicas))
    await eventually(lambda: coord.get(notifying_key(notification.key)))
    channel.gate.set()
    await asyncio.wait_for(both, HANG_S)

    assert channel.sent == [notification.key]
    recorded = await outcomes(store, notification.stream)
    assert [type(e) for e in recorded] == [ev.NotificationSent]
    assert await coord.get(notifying_key(notification.key)) is None  # the claim is released
    for replica in replicas:
        await replica.close()


async def test_a_recorded_notification_is_not_sent_again_after_a_restart(
        store: SqliteEventStore, coord: Coordinator) -> None:
    channel = ScriptedSend()
    notification = note()
    first = deliverer(store, coord, channel, "n1")
    await first.deliver(notification)
    await first.close()

    restarted = deliverer(store, coord, channel, "n1")
    await restarted.deliver(notification)
    await restarted.close()

    assert channel.sent == [notification.key]
    assert len(await outcomes(store, notification.stream)) == 1


async def test_passing_errors_are_retried_and_the_attempt_recorded(
        store: SqliteEventStore, coord: Coordinator) -> None:
    channel = ScriptedSend(SendError("HTTP 503", retry=True), SendError("timeout", retry=True))
    sender = deliverer(store, coord, channel, "n1")
    notification = note()
    await sender.deliver(notification)
    await sender.close()

    [outcome] = await outcomes(store, notification.stream)
    assert isinstance(outcome, ev.NotificationSent)
    assert outcome.attempt == 3
    assert outcome.channel == "email:a@example.com" and outcome.rule == "project:team"


async def test_a_refusal_is_recorded_at_once_and_other_channels_still_go(
        store: SqliteEventStore, coord: Coordinator) -> None:
    refusing = ScriptedSend(refuse="nobody@example.com")
    sender = deliverer(store, coord, refusing, "n1")
    bad, good = note("nobody@example.com"), note("dev@example.com")
    await asyncio.gather(sender.deliver(bad), sender.deliver(good))
    await sender.close()

    [failed] = await outcomes(store, bad.stream)
    assert isinstance(failed, ev.NotificationFailed)
    assert (failed.error, failed.attempts) == ("550 no such user", 1)
    [sent] = await outcomes(store, good.stream)
    assert isinstance(sent, ev.NotificationSent)


async def test_a_channel_down_for_every_attempt_is_recorded_failed(
        store: SqliteEventStore, coord: Coordinator) -> None:
    down = ScriptedSend(*(SendError("connection refused", retry=True) for _ in range(10)))
    sender = deliverer(store, coord, down, "n1", attempts=4)
    notification = note()
    await sender.deliver(notification)
    await sender.close()

    [failed] = await outcomes(store, notification.stream)
    assert isinstance(failed, ev.NotificationFailed)
    assert (failed.error, failed.attempts) == ("connection refused", 4)
    assert down.sent == []


async def test_a_replica_that_died_holding_the_claim_is_taken_over_when_its_lease_ends(
        store: SqliteEventStore, coord: Coordinator) -> None:
    notification = note()
    dead = await coord.grant_lease(1.0)  # a replica that claimed, then was SIGKILLed
    assert await coord.create(notifying_key(notification.key), b"dead", dead)
    channel = ScriptedSend()
    survivor = deliverer(store, coord, channel, "n2")
    waiting = asyncio.create_task(survivor.deliver(notification))
    await asyncio.wait_for(waiting, HANG_S)  # returns once the dead replica's lease expired

    assert channel.sent == [notification.key]
    assert len(await outcomes(store, notification.stream)) == 1
    await survivor.close()
