"""The Bus contract (``shared/ports/bus.py``), one suite for every adapter.

Subclass ``BusContract`` in ``tests/adapters/test_bus_<adapter>.py`` and provide the
``bus`` fixture (a fresh, open bus; closed after the test). Every test uses its
own topic and group names, so the suite also runs against a shared real Kafka.

What an adapter needs for this suite beyond the port's docstring, all of which
Kafka has: topics with several partitions (at least 2, so two members of a group
both get some), and ``subscribe`` returning once the member has joined its group
(so messages published afterwards are not first consumed by a lone member).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from shared.errors import BusError
from shared.ports.bus import Bus, Message, Subscription
from tests.support import HANG_S, eventually

__all__ = ["BusContract", "Collector", "publish_all", "spread", "unique", "wait_total"]

TIMEOUT = HANG_S  # generous for a real Kafka's group rebalances on a loaded machine


def unique(kind: str) -> str:
    return f"test-{kind}-{uuid.uuid4().hex}"


class Collector:
    """Reads a subscription in a background task, optionally committing each message.

    A message is appended after its commit (when committing), so what ``messages``
    holds is committed: a test can close the member right after seeing it there.
    """

    def __init__(self, subscription: Subscription, *, commit: bool = False) -> None:
        self.subscription = subscription
        self.commit = commit
        self.messages: list[Message] = []
        self.ended = False
        self._closed = False
        self._task = asyncio.create_task(self._run())

    @property
    def values(self) -> list[bytes]:
        return [m.value for m in self.messages]

    async def _run(self) -> None:
        async for message in self.subscription:
            if self.commit:
                await self.subscription.commit(message)
            self.messages.append(message)
        self.ended = True

    async def wait_count(self, count: int) -> None:
        await eventually(lambda: len(self.messages) >= count, TIMEOUT, what=f"{count} messages")

    async def wait_ended(self) -> None:
        await asyncio.wait_for(asyncio.shield(self._task), TIMEOUT)

    async def stop(self) -> None:
        """Stop reading and leave the group (once)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if not self._closed:
            self._closed = True
            await self.subscription.close()


async def wait_total(readers: list[Collector], count: int) -> None:
    """Wait until the members of one group have received ``count`` messages between them."""
    await eventually(
        lambda: sum(len(r.messages) for r in readers) >= count, TIMEOUT,
        what=f"{count} messages between {len(readers)} members",
    )


async def publish_all(bus: Bus, topic: str, messages: list[tuple[str, bytes]]) -> None:
    for key, value in messages:
        await bus.publish(topic, key, value)


def spread(count: int, tag: str, keys: int | None = None) -> list[tuple[str, bytes]]:
    """``count`` messages over ``keys`` keys (one key each by default), values unique."""
    keys = keys or count
    return [(f"key-{i % keys}", f"{tag}-{i}".encode()) for i in range(count)]


class BusContract:
    @pytest.fixture
    def bus(self) -> AsyncIterator[Bus]:
        raise NotImplementedError("a subclass provides an open bus, closing it afterwards")

    async def test_a_published_message_reaches_a_subscriber(self, bus: Bus) -> None:
        topic = unique("topic")
        subscription = await bus.subscribe(topic, unique("group"))
        reader = Collector(subscription)
        try:
            await bus.publish(topic, "run-1", b"hello")
            await reader.wait_count(1)
            [message] = reader.messages
            assert (message.topic, message.key, message.value) == (topic, "run-1", b"hello")
        finally:
            await reader.stop()

    async def test_messages_of_one_key_arrive_in_publish_order(self, bus: Bus) -> None:
        topic = unique("topic")
        reader = Collector(await bus.subscribe(topic, unique("group")))
        # 10 keys, 20 messages each, published interleaved.
        sent = [(f"run-{i % 10}", f"{i % 10}:{i // 10}".encode()) for i in range(200)]
        try:
            await publish_all(bus, topic, sent)
            await reader.wait_count(200)
            for key in {k for k, _ in sent}:
                got = [m.value for m in reader.messages if m.key == key]
                assert got == [v for k, v in sent if k == key], key
        finally:
            await reader.stop()

    async def test_each_message_reaches_exactly_one_member_of_a_group(self, bus: Bus) -> None:
        topic, group = unique("topic"), unique("group")
        first = Collector(await bus.subscribe(topic, group))
        second = Collector(await bus.subscribe(topic, group))
        sent = spread(60, "m")
        try:
            await publish_all(bus, topic, sent)
            await wait_total([first, second], 60)
            both = first.values + second.values
            assert len(both) == 60
            assert sorted(both) == sorted(v for _, v in sent)
            assert first.messages and second.messages, "one member got every partition"
        finally:
            await first.stop()
            await second.stop()

    async def test_every_group_gets_every_message(self, bus: Bus) -> None:
        topic = unique("topic")
        readers = [Collector(await bus.subscribe(topic, unique("group"))) for _ in range(2)]
        sent = spread(20, "m")
        try:
            await publish_all(bus, topic, sent)
            for reader in readers:
                await reader.wait_count(20)
                assert sorted(reader.values) == sorted(v for _, v in sent)
        finally:
            for reader in readers:
                await reader.stop()

    async def test_uncommitted_messages_of_a_leaving_member_go_to_another(self, bus: Bus) -> None:
        topic, group = unique("topic"), unique("group")
        leaving = Collector(await bus.subscribe(topic, group), commit=True)
        staying = Collector(await bus.subscribe(topic, group), commit=True)
        committed, uncommitted = spread(40, "committed"), spread(40, "uncommitted")
        try:
            await publish_all(bus, topic, committed)
            await wait_total([leaving, staying], 40)
            leaving.commit = False
            done_before = set(leaving.values)
            await publish_all(bus, topic, uncommitted)
            await wait_total([leaving, staying], 80)
            dropped = set(leaving.values) - done_before
            assert dropped, "the leaving member got none of the uncommitted messages"
            await leaving.stop()

            await eventually(
                lambda: dropped <= set(staying.values), TIMEOUT,
                what="the leaving member's uncommitted messages at the other member",
            )
            assert not done_before & set(staying.values), "committed messages were redelivered"
        finally:
            await leaving.stop()
            await staying.stop()

    async def test_a_member_joining_later_starts_at_the_committed_offset(self, bus: Bus) -> None:
        topic, group = unique("topic"), unique("group")
        early = Collector(await bus.subscribe(topic, group), commit=True)
        late: Collector | None = None
        before, after = spread(40, "before"), spread(40, "after")
        try:
            await publish_all(bus, topic, before)
            await early.wait_count(40)
            late = joined = Collector(await bus.subscribe(topic, group), commit=True)
            await publish_all(bus, topic, after)
            expected = {v for _, v in after}
            await eventually(
                lambda: expected <= set(early.values) | set(joined.values), TIMEOUT,
                what="the second batch between the two members",
            )
            assert joined.messages, "the member that joined got no partition"
            assert not {v for _, v in before} & set(joined.values), "committed messages redelivered"
        finally:
            await early.stop()
            if late is not None:
                await late.stop()

    async def test_a_new_group_starts_at_the_beginning(self, bus: Bus) -> None:
        topic = unique("topic")
        sent = spread(10, "m", keys=3)
        await publish_all(bus, topic, sent)
        reader = Collector(await bus.subscribe(topic, unique("group")))
        try:
            await reader.wait_count(10)
            assert sorted(reader.values) == sorted(v for _, v in sent)
        finally:
            await reader.stop()

    async def test_closing_a_subscription_ends_its_iteration(self, bus: Bus) -> None:
        subscription = await bus.subscribe(unique("topic"), unique("group"))
        reader = Collector(subscription)
        await subscription.close()
        await reader.wait_ended()
        assert reader.ended

    async def test_closing_the_bus_ends_every_iteration(self, bus: Bus) -> None:
        topic = unique("topic")
        readers = [Collector(await bus.subscribe(topic, unique("group"))) for _ in range(2)]
        await bus.close()
        for reader in readers:
            await reader.wait_ended()
            assert reader.ended

    async def test_publish_after_close_raises_bus_error(self, bus: Bus) -> None:
        await bus.close()
        with pytest.raises(BusError):
            await bus.publish(unique("topic"), "run-1", b"late")

    # --- tails ------------------------------------------------------------------------

    async def test_every_tail_gets_every_message_in_per_key_order(self, bus: Bus) -> None:
        topic = unique("topic")
        tails = [Collector(await bus.tail(topic)) for _ in range(2)]
        # 5 keys (so several partitions), 10 messages each, published interleaved.
        sent = [(f"run-{i % 5}", f"{i % 5}:{i // 5}".encode()) for i in range(50)]
        try:
            await publish_all(bus, topic, sent)
            for tail in tails:
                await tail.wait_count(50)
                for key in {k for k, _ in sent}:
                    got = [m.value for m in tail.messages if m.key == key]
                    assert got == [v for k, v in sent if k == key], key
        finally:
            for tail in tails:
                await tail.stop()

    async def test_a_tail_gets_nothing_published_before_it_began(self, bus: Bus) -> None:
        topic = unique("topic")
        await publish_all(bus, topic, spread(20, "before"))
        tail = Collector(await bus.tail(topic))
        after = spread(20, "after")
        try:
            await publish_all(bus, topic, after)
            await tail.wait_count(20)
            # Per partition, an earlier message would have come before these, and been
            # counted in their place.
            assert sorted(tail.values) == sorted(v for _, v in after)
        finally:
            await tail.stop()

    async def test_tails_and_groups_do_not_take_messages_from_each_other(self, bus: Bus) -> None:
        topic = unique("topic")
        before, after = spread(20, "before"), spread(20, "after")
        await publish_all(bus, topic, before)
        tail = Collector(await bus.tail(topic), commit=True)  # commit: a no-op on a tail
        member = Collector(await bus.subscribe(topic, unique("group")), commit=True)
        try:
            await publish_all(bus, topic, after)
            await member.wait_count(40)
            await tail.wait_count(20)
            # The group still starts at the beginning; the tail got only what followed.
            assert sorted(member.values) == sorted(v for _, v in before + after)
            assert sorted(tail.values) == sorted(v for _, v in after)
        finally:
            await tail.stop()
            await member.stop()

    async def test_closing_a_tail_ends_its_iteration(self, bus: Bus) -> None:
        tail = await bus.tail(unique("topic"))
        reader = Collector(tail)
        await tail.close()
        await reader.wait_ended()
        assert reader.ended
        await tail.close()  # safe twice

    async def test_closing_the_bus_ends_every_tail(self, bus: Bus) -> None:
        topic = unique("topic")
        readers = [Collector(await bus.tail(topic)) for _ in range(2)]
        await bus.close()
        for reader in readers:
            await reader.wait_ended()
            assert reader.ended
            await reader.subscription.close()  # after the bus's close: still safe

    async def test_tail_after_close_raises_bus_error(self, bus: Bus) -> None:
        await bus.close()
        with pytest.raises(BusError):
            await bus.tail(unique("topic"))
