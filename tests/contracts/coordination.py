"""The Coordinator contract (``shared/ports/coordination.py``), one suite for every adapter.

Subclass ``CoordinationContract`` in ``tests/adapters/test_coordination_<adapter>.py``
and provide the ``coord`` fixture (a fresh, open coordinator; closed after the
test). Every test uses its own key prefix, so the suite also runs against a shared
real etcd. TTLs are whole seconds (>= 1), etcd's granularity, and waits are
``eventually`` with deadlines well above them.

What an adapter needs beyond the port's docstring, all of which etcd has: the
iterator ``watch`` returns has ``aclose()``; ``close()`` may be called twice.
A watch may take a moment to be established (etcd), so tests first put a "ready"
key until the watch reports it, and only then do what they check.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from shared.errors import LeaseExpired
from shared.ports.coordination import Coordinator, Watch, WatchEvent
from tests.support import HANG_S, eventually

__all__ = ["CoordinationContract", "WatchLog", "unique_prefix"]

TIMEOUT = HANG_S  # only catches a hang
READY = "~ready"


def unique_prefix() -> str:
    return f"/test/{uuid.uuid4().hex}/"


class WatchLog:
    """Reads a watch in a background task; ``events`` leaves out the readiness probes."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.seen: list[WatchEvent] = []
        self.ended = False
        self._task = asyncio.create_task(self._run())

    @classmethod
    async def start(cls, coord: Coordinator, prefix: str) -> WatchLog:
        """Watch ``prefix`` and return once the watch is known to see new changes."""
        log = cls(coord.watch(prefix))

        async def probe() -> bool:
            await coord.put(prefix + READY, b"")
            return any(e.key == prefix + READY for e in log.seen)

        await eventually(probe, TIMEOUT, interval=0.1, what="the watch to start")
        return log

    @property
    def events(self) -> list[tuple[str, str, bytes | None]]:
        return [(e.kind, e.key, e.value) for e in self.seen if not e.key.endswith(READY)]

    async def _run(self) -> None:
        async for event in self.watch:
            self.seen.append(event)
        self.ended = True

    async def wait_for(self, event: tuple[str, str, bytes | None]) -> None:
        await eventually(lambda: event in self.events, TIMEOUT, what=f"watch event {event}")

    async def wait_ended(self) -> None:
        await asyncio.wait_for(asyncio.shield(self._task), TIMEOUT)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.watch.aclose()


class CoordinationContract:
    @pytest.fixture
    def coord(self) -> AsyncIterator[Coordinator]:
        raise NotImplementedError("a subclass provides an open coordinator, closing it afterwards")

    async def test_create_if_absent_succeeds_for_one_of_many_concurrent_callers(
        self, coord: Coordinator
    ) -> None:
        key = unique_prefix() + "claim"
        results = await asyncio.gather(*(coord.create(key, f"{i}".encode()) for i in range(20)))
        assert results.count(True) == 1
        winner = f"{results.index(True)}".encode()
        assert await coord.get(key) == winner
        assert await coord.create(key, b"later") is False
        assert await coord.get(key) == winner
        await coord.delete(key)

    async def test_put_get_delete_and_get_prefix(self, coord: Coordinator) -> None:
        prefix = unique_prefix()
        assert await coord.get(prefix + "a") is None
        await coord.put(prefix + "a", b"1")
        await coord.put(prefix + "b", b"2")
        await coord.put(prefix + "a", b"3")
        await coord.put(prefix.rstrip("/") + "-sibling", b"outside")
        assert await coord.get(prefix + "a") == b"3"
        assert await coord.get_prefix(prefix) == {prefix + "a": b"3", prefix + "b": b"2"}
        assert await coord.delete(prefix + "a") is True
        assert await coord.delete(prefix + "a") is False
        assert await coord.get(prefix + "a") is None
        assert await coord.get_prefix(prefix) == {prefix + "b": b"2"}
        for key in (prefix + "b", prefix.rstrip("/") + "-sibling"):
            await coord.delete(key)

    async def test_an_expired_lease_deletes_its_keys_and_watchers_see_it(
        self, coord: Coordinator
    ) -> None:
        prefix = unique_prefix()
        watch = await WatchLog.start(coord, prefix)
        try:
            lease = await coord.grant_lease(1)
            await coord.put(prefix + "worker", b"alive", lease)
            await coord.put(prefix + "kept", b"no lease")
            await watch.wait_for(("delete", prefix + "worker", None))
            assert await coord.get(prefix + "worker") is None
            assert await coord.get(prefix + "kept") == b"no lease"
            await coord.delete(prefix + "kept")
        finally:
            await watch.stop()

    async def test_refresh_keeps_a_lease_alive_past_its_ttl(self, coord: Coordinator) -> None:
        prefix = unique_prefix()
        # A ttl that a refresh every 0.2 s keeps alive even when a loaded machine stalls
        # this loop for a second or two (a ttl of 1 s would not be).
        kept = await coord.grant_lease(3)
        await coord.put(prefix + "kept", b"v", kept)
        # A second lease, never refreshed, measures the time: once its key is gone,
        # at least 6 s have passed since `kept` was granted with a ttl of 3 s.
        timer = await coord.grant_lease(6)
        await coord.put(prefix + "timer", b"v", timer)

        async def refresh_until_timer_ends() -> bool:
            await kept.refresh()
            return await coord.get(prefix + "timer") is None

        await eventually(refresh_until_timer_ends, TIMEOUT, interval=0.2, what="the 6 s lease")
        assert await coord.get(prefix + "kept") == b"v"
        # Left alone, it does expire (so the test above could have failed).
        await eventually(lambda: _gone(coord, prefix + "kept"), TIMEOUT, what="expiry")

    async def test_revoke_deletes_the_keys_at_once(self, coord: Coordinator) -> None:
        prefix = unique_prefix()
        watch = await WatchLog.start(coord, prefix)
        try:
            lease = await coord.grant_lease(60)
            await coord.put(prefix + "a", b"1", lease)
            assert await coord.create(prefix + "b", b"2", lease) is True
            await lease.revoke()
            assert await coord.get(prefix + "a") is None
            assert await coord.get(prefix + "b") is None
            await watch.wait_for(("delete", prefix + "a", None))
            await watch.wait_for(("delete", prefix + "b", None))
            with pytest.raises(LeaseExpired):
                await lease.refresh()
        finally:
            await watch.stop()

    async def test_an_expired_lease_cannot_be_refreshed_or_used(self, coord: Coordinator) -> None:
        prefix = unique_prefix()
        lease = await coord.grant_lease(1)
        await coord.put(prefix + "k", b"v", lease)
        await eventually(lambda: _gone(coord, prefix + "k"), TIMEOUT, what="expiry")
        with pytest.raises(LeaseExpired):
            await lease.refresh()
        with pytest.raises(LeaseExpired):
            await coord.put(prefix + "k", b"v", lease)
        with pytest.raises(LeaseExpired):
            await coord.create(prefix + "k", b"v", lease)
        assert await coord.get(prefix + "k") is None

    async def test_a_watch_sees_changes_under_its_prefix_in_order(
        self, coord: Coordinator
    ) -> None:
        prefix = unique_prefix()
        watch = await WatchLog.start(coord, prefix)
        try:
            await coord.put(prefix + "a", b"1")
            await coord.put(prefix + "b", b"2")
            await coord.put(prefix.rstrip("/") + "-sibling", b"outside")
            await coord.put(prefix + "a", b"3")
            await coord.delete(prefix + "missing")
            await coord.delete(prefix + "a")
            expected = [
                ("put", prefix + "a", b"1"),
                ("put", prefix + "b", b"2"),
                ("put", prefix + "a", b"3"),
                ("delete", prefix + "a", None),
            ]
            await eventually(lambda: len(watch.events) >= 4, TIMEOUT, what="4 watch events")
            assert watch.events == expected
        finally:
            await watch.stop()
            await coord.delete(prefix.rstrip("/") + "-sibling")

    async def test_a_closed_watch_ends_its_iteration(self, coord: Coordinator) -> None:
        prefix = unique_prefix()
        watch = coord.watch(prefix)
        await watch.aclose()
        await coord.put(prefix + "a", b"1")
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(watch), TIMEOUT)

    async def test_closing_the_coordinator_ends_its_watches(self, coord: Coordinator) -> None:
        watch = await WatchLog.start(coord, unique_prefix())
        await coord.close()
        await watch.wait_ended()
        assert watch.ended
        await watch.stop()


async def _gone(coord: Coordinator, key: str) -> bool:
    return await coord.get(key) is None
