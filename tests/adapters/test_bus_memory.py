"""MemoryBus: the Bus contract, plus what only the in-process bus has (partitioning, trim)."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator

import pytest

from shared.adapters.bus.memory import MemoryBus
from shared.errors import BusError
from tests.contracts.bus import BusContract, Collector, publish_all, spread, unique
from tests.support import HANG_S


class TestMemoryBus(BusContract):
    @pytest.fixture
    async def bus(self) -> AsyncIterator[MemoryBus]:
        bus = MemoryBus()
        yield bus
        await bus.close()


@pytest.fixture
async def trimming() -> AsyncIterator[MemoryBus]:
    bus = MemoryBus(partitions=2, trim=True)
    yield bus
    await bus.close()


async def test_a_key_goes_to_its_crc32_partition_with_consecutive_offsets() -> None:
    bus = MemoryBus(partitions=4)
    topic = unique("topic")
    reader = Collector(await bus.subscribe(topic, unique("group")))
    try:
        for i in range(3):
            await bus.publish(topic, "run-7", f"{i}".encode())
        await reader.wait_count(3)
        expected = zlib.crc32(b"run-7") % 4
        assert [(m.partition, m.offset) for m in reader.messages] == [
            (expected, 0), (expected, 1), (expected, 2)
        ]
    finally:
        await reader.stop()
        await bus.close()


async def test_partitions_move_to_a_joining_member_and_back_when_it_leaves() -> None:
    bus = MemoryBus(partitions=4)
    topic, group = unique("topic"), unique("group")
    first = await bus.subscribe(topic, group)
    second = await bus.subscribe(topic, group)
    assert (first.partitions, second.partitions) == (frozenset({0, 2}), frozenset({1, 3}))
    await second.close()
    assert first.partitions == frozenset(range(4))
    assert second.partitions == frozenset()
    await bus.close()
    assert first.partitions == frozenset()


async def test_a_commit_after_losing_the_partition_does_not_move_the_offset() -> None:
    bus = MemoryBus(partitions=1)
    topic, group = unique("topic"), unique("group")
    await bus.publish(topic, "k", b"0")
    old = Collector(await bus.subscribe(topic, group))
    await old.wait_count(1)
    await old.stop()
    # The member left; its late commit must not hide the message from the next owner.
    await old.subscription.commit(old.messages[0])
    new = Collector(await bus.subscribe(topic, group))
    try:
        await new.wait_count(1)
        assert new.values == [b"0"]
    finally:
        await new.stop()
        await bus.close()


async def test_commit_of_another_topics_message_raises_bus_error() -> None:
    bus = MemoryBus()
    topic = unique("topic")
    await bus.publish(topic, "k", b"v")
    reader = Collector(await bus.subscribe(topic, unique("group")))
    other = await bus.subscribe(unique("topic"), unique("group"))
    try:
        await reader.wait_count(1)
        with pytest.raises(BusError):
            await other.commit(reader.messages[0])
    finally:
        await reader.stop()
        await other.close()
        await bus.close()


async def test_subscribe_after_close_raises_bus_error() -> None:
    bus = MemoryBus()
    await bus.close()
    with pytest.raises(BusError):
        await bus.subscribe(unique("topic"), unique("group"))


async def test_everything_is_retained_without_trim() -> None:
    bus = MemoryBus()
    topic = unique("topic")
    reader = Collector(await bus.subscribe(topic, unique("group")), commit=True)
    try:
        await bus.publish(topic, "k", b"v")
        await reader.wait_count(1)
        assert bus.retained(topic) == 1
    finally:
        await reader.stop()
        await bus.close()


async def test_trim_drops_what_every_group_has_committed(trimming: MemoryBus) -> None:
    topic = unique("topic")
    fast = Collector(await trimming.subscribe(topic, unique("group")), commit=True)
    slow = Collector(await trimming.subscribe(topic, unique("group")))
    try:
        await trimming.publish(topic, "k", b"0")
        await trimming.publish(topic, "k", b"1")
        await fast.wait_count(2)
        await slow.wait_count(2)
        assert trimming.retained(topic) == 2, "trimmed below a group that committed nothing"
        await slow.subscription.commit(slow.messages[0])
        assert trimming.retained(topic) == 1
        await slow.subscription.commit(slow.messages[1])
        assert trimming.retained(topic) == 0
    finally:
        await fast.stop()
        await slow.stop()


async def test_offsets_continue_after_trim_and_late_groups_start_at_the_earliest_kept(
    trimming: MemoryBus,
) -> None:
    topic, group = unique("topic"), unique("group")
    first = Collector(await trimming.subscribe(topic, group), commit=True)
    try:
        await trimming.publish(topic, "k", b"old")
        await first.wait_count(1)
        await trimming.publish(topic, "k", b"new")
        await first.wait_count(2)
    finally:
        await first.stop()
    assert trimming.retained(topic) == 0
    await trimming.publish(topic, "k", b"newest")
    late = Collector(await trimming.subscribe(topic, unique("group")))
    try:
        await late.wait_count(1)
        assert [(m.value, m.offset) for m in late.messages] == [(b"newest", 2)]
    finally:
        await late.stop()


async def test_a_member_gaining_a_partition_rereads_what_was_not_committed() -> None:
    bus = MemoryBus(partitions=2)
    topic, group = unique("topic"), unique("group")
    first = Collector(await bus.subscribe(topic, group))
    await publish_all(bus, topic, spread(20, "m"))
    await first.wait_count(20)  # alone, so it had both partitions; it committed nothing
    second = Collector(await bus.subscribe(topic, group))
    try:
        assert second.subscription.partitions == frozenset({1})  # type: ignore[attr-defined]
        expected = [m.value for m in first.messages if m.partition == 1]
        assert expected, "no key landed on partition 1"
        await second.wait_count(len(expected))
        assert second.values == expected
    finally:
        await first.stop()
        await second.stop()
        await bus.close()


async def test_a_full_partition_makes_publish_wait_until_consumers_commit() -> None:
    bus = MemoryBus(partitions=1, trim=True, max_backlog_bytes=100)
    try:
        sub = await bus.subscribe("t", "g")
        for _ in range(3):
            await bus.publish("t", "k", b"x" * 40)  # 120 bytes retained: now over the limit
        blocked = asyncio.create_task(bus.publish("t", "k", b"y"))
        await asyncio.sleep(0)  # give it the chance to (wrongly) go through
        assert not blocked.done() and bus.retained("t") == 3
        first = await anext(aiter(sub))
        await sub.commit(first)  # 80 bytes left: room again
        await asyncio.wait_for(blocked, HANG_S)
        assert bus.retained("t") == 3
    finally:
        await bus.close()


async def test_a_group_whose_members_all_left_no_longer_holds_messages_back() -> None:
    bus = MemoryBus(partitions=1, trim=True)
    try:
        gone = await bus.subscribe("t", "gone")
        await gone.close()
        live = await bus.subscribe("t", "live")
        await bus.publish("t", "k", b"a")
        await live.commit(await anext(aiter(live)))
        assert bus.retained("t") == 0
    finally:
        await bus.close()


async def test_closing_the_bus_fails_a_publish_waiting_for_room() -> None:
    bus = MemoryBus(partitions=1, trim=True, max_backlog_bytes=1)
    await bus.subscribe("t", "g")
    await bus.publish("t", "k", b"xx")
    blocked = asyncio.create_task(bus.publish("t", "k", b"y"))
    await asyncio.sleep(0)
    await bus.close()
    with pytest.raises(BusError):
        await asyncio.wait_for(blocked, HANG_S)


async def test_a_tail_that_falls_behind_ends_with_bus_error_after_what_it_holds() -> None:
    bus = MemoryBus(partitions=1, tail_limit=3)
    try:
        tail = await bus.tail("t")
        for i in range(50):
            await bus.publish("t", "k", f"{i}".encode())  # never waits for the reader
        reader = aiter(tail)
        assert [(await anext(reader)).value for _ in range(3)] == [b"0", b"1", b"2"]
        with pytest.raises(BusError, match="fell behind"):
            await anext(reader)  # not b"3": what it could not hold is not kept either
        fresh = await bus.tail("t")  # the reader's way back: a new tail gets what follows
        await bus.publish("t", "k", b"50")
        assert (await anext(aiter(fresh))).value == b"50"
        await tail.close()
    finally:
        await bus.close()


async def test_a_tail_holds_back_neither_trimming_nor_publishers() -> None:
    bus = MemoryBus(partitions=1, trim=True, max_backlog_bytes=100)
    try:
        tail = await bus.tail("t")  # never read until the end
        member = await bus.subscribe("t", "g")
        for _ in range(3):
            await bus.publish("t", "k", b"x" * 40)  # 120 bytes: over the limit
        reader = aiter(member)
        for _ in range(3):
            await member.commit(await anext(reader))
        assert bus.retained("t") == 0, "the unread tail held back trimming"
        await asyncio.wait_for(bus.publish("t", "k", b"y"), HANG_S)  # room again: no waiting
        tailed = aiter(tail)
        assert [(await anext(tailed)).value for _ in range(4)] == [b"x" * 40] * 3 + [b"y"]
    finally:
        await bus.close()


def test_a_tail_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="tail_limit"):
        MemoryBus(tail_limit=0)
