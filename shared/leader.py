"""Leader election on the coordination service: one replica at a time does a job.

``run_as_leader(coord, name, me, work)`` runs ``work()`` while this replica holds
the ``cyclone/leaders/<name>`` key, created only if absent and bound to a lease
that is kept alive beside the work. Contract:

* at most one replica holds a leadership at a time: ``work`` is cancelled as soon
  as the lease is lost (etcd unreachable for a whole TTL, or the key expired), so
  two leaders overlap at most for the time a cancelled task takes to stop;
* a replica that does not hold it stands by and tries again every half TTL (a dead
  leader's key expires with its lease, at most ``ttl`` seconds after it died);
* a leader that stops (its ``work`` failed or was cancelled) revokes its lease,
  handing over at once rather than after the TTL;
* ``work`` may be called many times over the replica's life (once per term): it
  must pick up from the store, not from memory of an earlier term;
* transient coordination errors (``shared.retry.is_transient``) and a lost lease
  mean "stand by and retry"; any other error from ``work`` is raised.

Runs until cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from shared.errors import LeaseExpired
from shared.ports.coordination import Coordinator
from shared.retry import Backoff, is_transient, keep_alive
from shared.tasks import cancel_and_wait

__all__ = ["LEADER_TTL_S", "leader_key", "run_as_leader"]

log = logging.getLogger(__name__)

LEADER_TTL_S = 5.0

Work = Callable[[], Coroutine[Any, Any, None]]


def leader_key(name: str) -> str:
    return f"cyclone/leaders/{name}"


async def run_as_leader(coord: Coordinator, name: str, me: str, work: Work,
                        ttl: float = LEADER_TTL_S) -> None:
    """Run ``work`` while this replica (``me``) holds the ``name`` leadership; stand by,
    and try again, while another replica holds it or the coordinator is unreachable."""
    backoff = Backoff()
    while True:
        try:
            await _lead_once(coord, leader_key(name), me, work, ttl)
            backoff.reset()
        except Exception as exc:
            if not is_transient(exc) and not isinstance(exc, LeaseExpired):
                raise
            log.warning("leadership lost or not reachable; standing by",
                        extra={"role": name, "error": str(exc)})
            await backoff.wait()


async def _lead_once(coord: Coordinator, key: str, me: str, work: Work, ttl: float) -> None:
    lease = await coord.grant_lease(ttl)
    try:
        if not await coord.create(key, me.encode(), lease):
            await asyncio.sleep(ttl / 2)  # poll: a dead leader's key expires
            return
        log.info("leader", extra={"key": key, "replica": me})
        working = asyncio.create_task(work())
        keeping = asyncio.create_task(keep_alive(lease))
        try:
            # A lost lease (etcd unreachable too long) stops the work: never two leaders.
            await asyncio.wait({working, keeping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(working, keeping)
        for task in (working, keeping):
            if not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]
    finally:
        with contextlib.suppress(Exception):  # hand over at once, not after the TTL
            await lease.revoke()

