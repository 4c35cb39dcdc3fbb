"""This worker's registration in the coordination service: its lease, and the job claims
bound to it, kept through etcd blips.

* ``register()`` grants a lease and puts ``cyclone/workers/<id>`` under it, retrying
  while etcd is away.
* ``keep_alive(on_lost)`` refreshes it every ttl/3. A failed refresh is retried with
  backoff while the lease may still be alive (less than its ttl since the last good
  refresh). Once it is gone (``LeaseExpired``, or a whole ttl without a refresh),
  etcd has deleted its claims (or is about to) and the event manager queues those
  jobs again: ``generation`` goes up, ``on_lost(old generation)`` is awaited (the
  worker stops those jobs), the old lease is revoked in case etcd still holds it (it
  was etcd that was away, not us: its claims must go now), and a new lease is
  registered. After ``stop()`` a lost lease is not replaced and the loop ends.
* ``claim(key)`` creates a claim bound to the current lease, waiting while there is
  none, and returns the lease's generation (None: another worker holds the key);
  ``release(key, generation)`` deletes it only while that lease is still ours: a
  lost lease's claims were deleted by etcd, and the key may be someone else's now.
* ``revoke()`` ends the lease at once (etcd deletes its claims and the worker key).

One ``WorkerLease`` per worker; its methods are called from many tasks of one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from shared.errors import CoordinationError, LeaseExpired
from shared.keys import worker_key
from shared.ports.coordination import Coordinator, Lease
from shared.retry import Backoff, retrying

__all__ = ["WorkerLease"]

log = logging.getLogger(__name__)

REVOKE_WAIT_S = 5.0  # at a stop; past it the lease expires on its own


class WorkerLease:
    def __init__(self, coord: Coordinator, worker_id: str, value: bytes, ttl: float) -> None:
        self.coord = coord
        self.worker_id = worker_id
        self.value = value  # what the worker key holds (shared.workers.WorkerInfo.encode)
        self.ttl = ttl
        self.lease: Lease | None = None
        self.generation = 0  # goes up when a lease is lost
        self._ready = asyncio.Event()  # there is a live lease to claim with
        self._check = asyncio.Event()  # a claim found the lease gone: refresh now
        self._refreshed_at = 0.0
        self.stopping = False

    async def register(self) -> None:
        while True:
            lease = await retrying(functools.partial(self.coord.grant_lease, self.ttl),
                                   "grant the worker's lease")
            put = functools.partial(self.coord.put, worker_key(self.worker_id), self.value,
                                    lease)
            try:
                await retrying(put, "register the worker")
            except LeaseExpired:
                continue  # expired before we could use it (a very long blip): again
            self.lease = lease
            self._refreshed_at = time.monotonic()
            self._ready.set()
            return

    async def keep_alive(self, on_lost: Callable[[int], Awaitable[None]]) -> None:
        while self.lease is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.lease.ttl / 3):  # wait_for: see outbox.py
                    await self._check.wait()
            self._check.clear()
            if self.lease is None or await self._refresh(self.lease):
                continue
            old, lost = self.lease, self.generation
            self._ready.clear()
            self.generation += 1
            await on_lost(lost)
            # etcd may still hold it (it was etcd that was away): end it, its claims too
            await retrying(old.revoke, "revoke the lost lease")
            if self.stopping:
                self.lease = None
                return
            await self.register()

    async def _refresh(self, lease: Lease) -> bool:
        """Refresh, retrying while the lease may still be alive; False once it is gone."""
        backoff, failures = Backoff(), 0
        while True:
            left = lease.ttl - (time.monotonic() - self._refreshed_at)
            if left <= 0:
                log.warning("lease not refreshed for its ttl (%gs): taking it as lost",
                            lease.ttl, extra={"worker": self.worker_id})
                return False
            try:
                async with asyncio.timeout(left):
                    await lease.refresh()
            except LeaseExpired:
                log.warning("lease expired", extra={"worker": self.worker_id})
                return False
            except (CoordinationError, TimeoutError) as exc:
                failures += 1
                log.warning("cannot refresh the lease (%d tries), retrying: %s", failures,
                            exc, extra={"worker": self.worker_id})
                await asyncio.sleep(min(backoff.next_delay(), left))
                continue
            self._refreshed_at = time.monotonic()
            if failures:
                log.info("lease refreshed again", extra={"worker": self.worker_id})
            return True

    async def claim(self, key: str) -> int | None:
        while True:
            await self._ready.wait()
            lease, generation = self.lease, self.generation
            create = functools.partial(self.coord.create, key, self.worker_id.encode(), lease)
            try:
                created = await retrying(create, f"claim {key}")
            except LeaseExpired:
                self._check.set()  # the keep-alive replaces the lease; then claim again
                await asyncio.sleep(Backoff().first)
                continue
            return generation if created else None

    async def release(self, key: str, generation: int) -> None:
        if generation == self.generation and not self.stopping:
            await retrying(functools.partial(self.coord.delete, key), f"release {key}")

    def stop(self) -> None:
        """No more claims are released one by one (``revoke`` does it) or leases granted."""
        self.stopping = True

    async def revoke(self) -> None:
        """End the lease now; safe twice. Gives up after ``REVOKE_WAIT_S`` (then it
        expires on its own)."""
        lease, self.lease = self.lease, None
        self._ready.clear()
        if lease is None:
            return
        try:
            async with asyncio.timeout(REVOKE_WAIT_S):
                await retrying(lease.revoke, "revoke the worker's lease")
        except (TimeoutError, CoordinationError) as exc:
            log.warning("could not revoke the lease (it expires on its own): %s", exc)
