"""In-process coordination: etcd's key space, leases and watches inside one asyncio loop.

The embedded default of the ``Coordinator`` port, with etcd's semantics:

* A lease expires ``ttl`` seconds (measured with the injected ``clock``) after it
  was granted or last refreshed. Expiry is noticed two ways: a timer
  (``loop.call_later``) fires at the deadline, so bound keys are deleted and
  watchers told even when nothing else happens; and every operation first
  expires whatever is due, so a clock that jumps (a test's fake clock) is seen
  at once. Expiry or ``revoke`` deletes every key bound to the lease, and each
  deletion is a watch event.
* ``put``/``create`` with a lease binds the key to it; a later ``put`` without a
  lease unbinds it (as in etcd, where a put replaces the key's lease). Using an
  expired or revoked lease raises ``LeaseExpired``; ``revoke`` is safe twice.
* ``watch(prefix)`` registers at once (events after the ``watch()`` call are
  seen, even before the first ``__anext__``), queues events without bound, and
  ends after ``aclose()`` or the coordinator's ``close()`` (events already queued
  at ``close()`` are still delivered).
* Deleting a key that does not exist is not an event.
* After ``close()`` every operation raises ``CoordinationError``, except
  ``Lease.revoke`` (cleanup), which does nothing.

Concurrency: one event loop, and no operation awaits in the middle of a change,
so each one (``create`` in particular) is atomic with respect to other tasks.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable

from shared.errors import CoordinationError, LeaseExpired
from shared.ports.coordination import Lease, WatchEvent

__all__ = ["MemoryCoordinator", "MemoryLease", "MemoryWatch"]


class _LeaseState:
    def __init__(self, lease_id: int, ttl: float, deadline: float) -> None:
        self.id = lease_id
        self.ttl = ttl
        self.deadline = deadline
        self.keys: set[str] = set()
        self.timer: asyncio.TimerHandle | None = None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class MemoryLease:
    """A handle on a lease of a ``MemoryCoordinator``; the state lives in the coordinator."""

    def __init__(self, coordinator: MemoryCoordinator, lease_id: int, ttl: float) -> None:
        self._coordinator = coordinator
        self._id = lease_id
        self._ttl = ttl

    @property
    def id(self) -> int:
        return self._id

    @property
    def ttl(self) -> float:
        return self._ttl

    @property
    def coordinator(self) -> MemoryCoordinator:
        return self._coordinator

    async def refresh(self) -> None:
        """Push the deadline to ``ttl`` s from now; ``LeaseExpired`` if it already ended."""
        self._coordinator._refresh(self._id)

    async def revoke(self) -> None:
        """End the lease now, deleting its keys; a no-op if it already ended or after close."""
        self._coordinator._revoke(self._id)


class MemoryWatch(AsyncIterator[WatchEvent]):
    """The events under one prefix, in order; registered with the coordinator on creation."""

    def __init__(self, coordinator: MemoryCoordinator, prefix: str) -> None:
        self.prefix = prefix
        self._coordinator = coordinator
        self._queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()  # None: the end
        self._ended = False  # no more events will be queued
        self._done = False  # iteration is over

    def __aiter__(self) -> MemoryWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        if self._done:
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            self._done = True
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        """Stop watching; iteration ends at once, dropping queued events. Safe twice."""
        self._coordinator._unwatch(self)
        self._done = True
        self._end()  # wakes a task blocked in __anext__

    def _push(self, event: WatchEvent) -> None:
        if not self._ended and event.key.startswith(self.prefix):
            self._queue.put_nowait(event)

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(None)


class MemoryCoordinator:
    """The in-process ``Coordinator``: see the module docstring for its semantics."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, bytes] = {}
        self._key_lease: dict[str, int] = {}  # key -> the lease it is bound to
        self._leases: dict[int, _LeaseState] = {}  # live leases only
        self._watches: list[MemoryWatch] = []
        self._ids = itertools.count(1)
        self._closed = False

    async def grant_lease(self, ttl: float) -> MemoryLease:
        self._begin()
        if ttl <= 0:
            raise CoordinationError(f"a lease needs a positive ttl, got {ttl}")
        state = _LeaseState(next(self._ids), ttl, self._clock() + ttl)
        self._leases[state.id] = state
        self._schedule(state)
        return MemoryLease(self, state.id, ttl)

    async def create(self, key: str, value: bytes, lease: Lease | None = None) -> bool:
        self._begin()
        lease_id = self._live_lease(lease)
        if key in self._values:
            return False
        self._write(key, value, lease_id)
        return True

    async def put(self, key: str, value: bytes, lease: Lease | None = None) -> None:
        self._begin()
        self._write(key, value, self._live_lease(lease))

    async def get(self, key: str) -> bytes | None:
        self._begin()
        return self._values.get(key)

    async def get_prefix(self, prefix: str) -> dict[str, bytes]:
        """The keys under ``prefix`` and their values, in key order."""
        self._begin()
        return {k: v for k, v in sorted(self._values.items()) if k.startswith(prefix)}

    async def delete(self, key: str) -> bool:
        self._begin()
        return self._remove(key)

    def watch(self, prefix: str) -> MemoryWatch:
        self._begin()
        watch = MemoryWatch(self, prefix)
        self._watches.append(watch)
        return watch

    async def close(self) -> None:
        """Stop the lease timers and end every watch; later calls raise. Safe twice."""
        self._closed = True
        for state in self._leases.values():
            state.cancel_timer()
        for watch in self._watches:
            watch._end()
        self._watches.clear()

    # --- leases ---------------------------------------------------------------------

    def _refresh(self, lease_id: int) -> None:
        self._begin()
        state = self._leases.get(lease_id)
        if state is None:
            raise LeaseExpired(f"lease {lease_id} has expired or was revoked")
        state.deadline = self._clock() + state.ttl
        self._schedule(state)

    def _revoke(self, lease_id: int) -> None:
        if self._closed:
            return  # revoke is cleanup, often in a finally: nothing is left to clean up
        self._expire_due()
        self._end_lease(lease_id)

    def _live_lease(self, lease: Lease | None) -> int | None:
        if lease is None:
            return None
        if not isinstance(lease, MemoryLease) or lease.coordinator is not self:
            raise CoordinationError(f"lease {lease.id} was not granted by this coordinator")
        if lease.id not in self._leases:
            raise LeaseExpired(f"lease {lease.id} has expired or was revoked")
        return lease.id

    def _schedule(self, state: _LeaseState) -> None:
        state.cancel_timer()
        delay = max(state.deadline - self._clock(), 0.0)
        state.timer = asyncio.get_running_loop().call_later(delay, self._on_timer, state.id)

    def _on_timer(self, lease_id: int) -> None:
        state = self._leases.get(lease_id)
        if state is None:
            return
        state.timer = None
        if self._clock() >= state.deadline:
            self._end_lease(lease_id)
        else:
            # Refreshed meanwhile, the loop's timer fired a little early, or a fake clock.
            self._schedule(state)

    def _expire_due(self) -> None:
        now = self._clock()
        for state in [s for s in self._leases.values() if s.deadline <= now]:
            self._end_lease(state.id)

    def _end_lease(self, lease_id: int) -> None:
        state = self._leases.pop(lease_id, None)
        if state is None:
            return
        state.cancel_timer()
        for key in sorted(state.keys):
            self._remove(key)

    # --- keys -----------------------------------------------------------------------

    def _begin(self) -> None:
        """Every operation starts here: refuse after close, then expire what is due."""
        if self._closed:
            raise CoordinationError("the coordinator is closed")
        self._expire_due()

    def _write(self, key: str, value: bytes, lease_id: int | None) -> None:
        self._unbind(key)
        self._values[key] = value
        if lease_id is not None:
            self._key_lease[key] = lease_id
            self._leases[lease_id].keys.add(key)
        self._notify(WatchEvent("put", key, value))

    def _remove(self, key: str) -> bool:
        if key not in self._values:
            return False
        self._unbind(key)
        del self._values[key]
        self._notify(WatchEvent("delete", key, None))
        return True

    def _unbind(self, key: str) -> None:
        lease_id = self._key_lease.pop(key, None)
        state = None if lease_id is None else self._leases.get(lease_id)
        if state is not None:
            state.keys.discard(key)

    def _notify(self, event: WatchEvent) -> None:
        for watch in self._watches:
            watch._push(event)

    def _unwatch(self, watch: MemoryWatch) -> None:
        if watch in self._watches:
            self._watches.remove(watch)
