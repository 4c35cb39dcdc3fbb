"""Riding out infrastructure outages: exponential backoff, and retrying an operation.

Kafka, etcd and MongoDB go away and come back (a restart, a failover, a network
blip). The adapters report that as ``BusError``, ``CoordinationError`` and
``StoreError``; callers that can simply try again later use ``retrying``, loops
that reconnect use ``Backoff``. ``keep_alive`` holds a lease through
such an outage. Other errors (bugs, bad input) are not retried:
retrying would hide them. Nor are the errors that mean "this will never work":
a closed bus, a lost lease, an append with a stale expected seq.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.errors import (
    BusClosed,
    BusError,
    ConcurrencyConflict,
    CoordinationError,
    LeaseExpired,
    StoreError,
)
from shared.ports.coordination import Lease

__all__ = ["Backoff", "is_transient", "keep_alive", "retrying"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an infrastructure failure that may go away by itself."""
    if isinstance(exc, BusClosed | LeaseExpired | ConcurrencyConflict):
        return False
    return isinstance(exc, BusError | CoordinationError | StoreError)


class Backoff:
    """Delays of ``first``, doubling up to ``cap`` seconds, each with +-25 % jitter (so
    replicas that lost a server at the same moment do not all return at the same moment).
    ``reset()`` after a success starts again from ``first``."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def reset(self) -> None:
        self._next = self.first

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay * random.uniform(0.75, 1.25)

    async def wait(self) -> None:
        await asyncio.sleep(self.next_delay())


async def retrying(operation: Callable[[], Awaitable[T]], what: str,
                   backoff: Backoff | None = None) -> T:
    """``await operation()`` until it succeeds or fails with a non-transient error,
    backing off between attempts; each failure is logged as a warning naming ``what``."""
    backoff = backoff or Backoff()
    while True:
        try:
            return await operation()
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = backoff.next_delay()
            log.warning("retrying", extra={"what": what, "error": str(exc),
                                           "retry_in_s": round(delay, 2)})
            await asyncio.sleep(delay)


async def keep_alive(lease: Lease, every: float | None = None) -> None:
    """Refresh ``lease`` every ``every`` seconds (a third of its TTL by default), forever.

    A refresh that fails because etcd is away is retried at the same pace: the lease
    lives on in etcd until its TTL has passed since the last refresh that got through.
    Returns never; raises ``LeaseExpired`` once the lease is gone (then the keys bound
    to it are gone too, and whoever relied on them must stop) or when no refresh got
    through for a whole TTL.
    """
    every = lease.ttl / 3 if every is None else every
    last_ok = time.monotonic()
    while True:
        await asyncio.sleep(every)
        try:
            await lease.refresh()
            last_ok = time.monotonic()
        except LeaseExpired:
            raise
        except CoordinationError as exc:
            if time.monotonic() - last_ok >= lease.ttl:
                raise LeaseExpired(f"lease {lease.id}: no refresh got through for "
                                   f"{lease.ttl:.0f} s ({exc})") from exc
            log.warning("lease refresh failed; retrying", extra={"lease": lease.id,
                                                                 "error": str(exc)})
