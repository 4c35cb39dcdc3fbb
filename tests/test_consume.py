"""``shared.consume.consume`` with ``concurrency`` > 1, over the in-process bus."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from shared.adapters.bus.memory import MemoryBus
from shared.consume import consume
from shared.ports.bus import Message
from tests.support import HANG_S, eventually

TOPIC = "t"


async def _publish(bus: MemoryBus, *pairs: tuple[str, str]) -> None:
    for key, value in pairs:
        await bus.publish(TOPIC, key, value.encode())


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_slow_message_does_not_hold_up_other_keys() -> None:
    bus = MemoryBus(partitions=1)
    release = asyncio.Event()
    handled: list[str] = []

    async def handle(message: Message) -> None:
        if message.value == b"slow":
            await release.wait()
        handled.append(message.value.decode())

    await _publish(bus, ("a", "slow"), ("b", "quick"), ("c", "quick too"))
    task = asyncio.create_task(consume(bus, TOPIC, "g", handle, concurrency=4))
    await eventually(lambda: handled == ["quick", "quick too"])
    release.set()
    await eventually(lambda: handled == ["quick", "quick too", "slow"])
    await _stop(task)
    await bus.close()


async def test_messages_of_one_key_are_handled_in_order() -> None:
    bus = MemoryBus(partitions=1)
    first_may_end = asyncio.Event()
    handled: list[str] = []

    async def handle(message: Message) -> None:
        if message.value == b"1":
            await first_may_end.wait()
        handled.append(message.value.decode())

    await _publish(bus, ("run", "1"), ("run", "2"), ("other", "x"))
    task = asyncio.create_task(consume(bus, TOPIC, "g", handle, concurrency=4))
    await eventually(lambda: handled == ["x"])
    first_may_end.set()
    await eventually(lambda: handled == ["x", "1", "2"])
    await _stop(task)
    await bus.close()


async def test_only_what_everything_before_is_done_for_is_committed() -> None:
    bus = MemoryBus(partitions=1)
    stuck = asyncio.Event()
    seen: list[str] = []

    async def first_life(message: Message) -> None:
        seen.append(message.value.decode())
        if message.value == b"stuck":
            await stuck.wait()  # never set: this consumer "dies" with it in flight

    await _publish(bus, ("a", "done before"), ("b", "stuck"), ("c", "done after"))
    task = asyncio.create_task(consume(bus, TOPIC, "g", first_life, concurrency=4))
    await eventually(lambda: sorted(seen) == ["done after", "done before", "stuck"])
    await _stop(task)  # leaves the group with "stuck" unhandled

    again: list[str] = []

    async def second_life(message: Message) -> None:
        again.append(message.value.decode())

    task = asyncio.create_task(consume(bus, TOPIC, "g", second_life, concurrency=4))
    # "done before" was committed; "stuck" was not, so it and what came after it return
    await eventually(lambda: again == ["stuck", "done after"])
    await _stop(task)
    await bus.close()


async def test_a_handler_error_ends_the_loop_and_cancels_the_others() -> None:
    bus = MemoryBus(partitions=1)
    cancelled = asyncio.Event()

    async def handle(message: Message) -> None:
        if message.value == b"bad":
            raise RuntimeError("a bug")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await _publish(bus, ("a", "waits"), ("b", "bad"))
    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(consume(bus, TOPIC, "g", handle, concurrency=4), HANG_S)
    assert cancelled.is_set()
    await bus.close()


async def test_the_loop_ends_when_the_bus_closes_after_handling_what_it_took() -> None:
    bus = MemoryBus(partitions=2)
    handled: list[str] = []

    async def handle(message: Message) -> None:
        handled.append(message.value.decode())

    await _publish(bus, *((f"k{i}", str(i)) for i in range(20)))
    task = asyncio.create_task(consume(bus, TOPIC, "g", handle, concurrency=3))
    await eventually(lambda: len(handled) == 20)
    await bus.close()
    await asyncio.wait_for(task, HANG_S)
    assert sorted(handled, key=int) == [str(i) for i in range(20)]


class _SlowCommits(MemoryBus):
    """The in-process bus with commits as slow as a broker round trip, counted."""

    def __init__(self) -> None:
        super().__init__(partitions=1)
        self.commits = 0
        self.commit_may_end = asyncio.Event()

    async def subscribe(self, topic: str, group: str):  # type: ignore[no-untyped-def]
        sub = await super().subscribe(topic, group)
        plain = sub.commit

        async def commit(message: Message) -> None:
            self.commits += 1
            await self.commit_may_end.wait()
            await plain(message)

        sub.commit = commit  # type: ignore[method-assign]
        return sub


async def test_with_commit_behind_handling_does_not_wait_for_commits() -> None:
    bus = _SlowCommits()
    handled: list[str] = []

    async def handle(message: Message) -> None:
        handled.append(message.value.decode())

    await _publish(bus, *(("run", str(n)) for n in range(10)))
    task = asyncio.create_task(consume(bus, TOPIC, "g", handle, commit_behind=True))
    # The first commit hangs: all ten are handled meanwhile; it or the next covers them.
    await eventually(lambda: len(handled) == 10)
    assert bus.commits == 1
    bus.commit_may_end.set()
    await _stop(task)  # lets the commit in flight finish

    again: list[str] = []

    async def second_life(message: Message) -> None:
        again.append(message.value.decode())

    await _publish(bus, ("run", "new"))
    task = asyncio.create_task(consume(bus, TOPIC, "g", second_life))
    await eventually(lambda: again == ["new"])  # everything before it was committed
    await _stop(task)
    await bus.close()
