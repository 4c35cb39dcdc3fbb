"""MemoryCoordinator: the Coordinator contract, plus what only the in-process one has.

The memory-only tests use sub-second TTLs and an injected clock, which etcd cannot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared.adapters.coordination.memory import MemoryCoordinator
from shared.errors import CoordinationError, LeaseExpired
from shared.ports.coordination import WatchEvent
from tests.contracts.coordination import CoordinationContract, WatchLog, unique_prefix
from tests.support import HANG_S


class TestMemoryCoordinator(CoordinationContract):
    @pytest.fixture
    async def coord(self) -> AsyncIterator[MemoryCoordinator]:
        coord = MemoryCoordinator()
        yield coord
        await coord.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def coord() -> AsyncIterator[MemoryCoordinator]:
    coord = MemoryCoordinator()
    yield coord
    await coord.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def frozen(clock: FakeClock) -> AsyncIterator[MemoryCoordinator]:
    """A coordinator whose time only moves when the test moves ``clock``."""
    coord = MemoryCoordinator(clock)
    yield coord
    await coord.close()


async def test_a_lease_expires_on_its_timer_with_no_operation_happening(
    coord: MemoryCoordinator,
) -> None:
    prefix = unique_prefix()
    lease = await coord.grant_lease(0.05)
    await coord.put(prefix + "k", b"v", lease)
    watch = WatchLog(coord.watch(prefix))
    try:
        # Only the watch is awaited: nothing calls the coordinator, the timer must fire.
        await watch.wait_for(("delete", prefix + "k", None))
    finally:
        await watch.stop()


async def test_a_jump_of_the_clock_is_seen_by_the_next_operation(
    frozen: MemoryCoordinator, clock: FakeClock
) -> None:
    prefix = unique_prefix()
    lease = await frozen.grant_lease(30)
    await frozen.put(prefix + "k", b"v", lease)
    watch = frozen.watch(prefix)
    clock.now += 29.9
    await lease.refresh()
    clock.now += 29.9
    assert await frozen.get(prefix + "k") == b"v"
    clock.now += 0.2
    assert await frozen.get(prefix + "k") is None
    assert await asyncio.wait_for(anext(watch), HANG_S) == WatchEvent("delete", prefix + "k", None)
    with pytest.raises(LeaseExpired):
        await lease.refresh()
    await watch.aclose()


async def test_lease_ids_are_unique(coord: MemoryCoordinator) -> None:
    leases = [await coord.grant_lease(60) for _ in range(50)]
    assert len({lease.id for lease in leases}) == 50


async def test_a_put_without_lease_unbinds_the_key(coord: MemoryCoordinator) -> None:
    prefix = unique_prefix()
    lease = await coord.grant_lease(60)
    await coord.put(prefix + "k", b"leased", lease)
    await coord.put(prefix + "k", b"free")
    await lease.revoke()
    assert await coord.get(prefix + "k") == b"free"


async def test_a_watch_sees_changes_made_before_its_first_read(coord: MemoryCoordinator) -> None:
    prefix = unique_prefix()
    watch = coord.watch(prefix)
    await coord.put(prefix + "k", b"v")
    assert await asyncio.wait_for(anext(watch), HANG_S) == WatchEvent("put", prefix + "k", b"v")
    await watch.aclose()


async def test_a_watch_delivers_what_was_queued_before_close(coord: MemoryCoordinator) -> None:
    prefix = unique_prefix()
    watch = coord.watch(prefix)
    await coord.put(prefix + "k", b"v")
    await coord.close()
    assert [event async for event in watch] == [WatchEvent("put", prefix + "k", b"v")]


async def test_revoke_is_safe_twice_and_after_close(coord: MemoryCoordinator) -> None:
    lease = await coord.grant_lease(60)
    await lease.revoke()
    await lease.revoke()
    other = await coord.grant_lease(60)
    await coord.close()
    await other.revoke()


async def test_operations_after_close_raise(coord: MemoryCoordinator) -> None:
    lease = await coord.grant_lease(60)
    await coord.close()
    with pytest.raises(CoordinationError):
        await coord.put("/k", b"v")
    with pytest.raises(CoordinationError):
        await coord.get("/k")
    with pytest.raises(CoordinationError):
        await lease.refresh()
    with pytest.raises(CoordinationError):
        coord.watch("/")


async def test_a_lease_of_another_coordinator_is_refused(coord: MemoryCoordinator) -> None:
    other = MemoryCoordinator()
    try:
        lease = await other.grant_lease(60)
        with pytest.raises(CoordinationError):
            await coord.put("/k", b"v", lease)
    finally:
        await other.close()


async def test_a_non_positive_ttl_is_refused(coord: MemoryCoordinator) -> None:
    with pytest.raises(CoordinationError):
        await coord.grant_lease(0)
