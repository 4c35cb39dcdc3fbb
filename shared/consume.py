"""The one consumer loop every service uses: handle a message, then commit it.

Committing only after ``handle`` returns gives at-least-once processing: a crash
mid-way redelivers the message, so every ``handle`` must be idempotent.

The loop outlives outages. When the bus fails, or ``handle`` fails because Kafka,
etcd or MongoDB is away (``shared.retry.is_transient``), the subscription is
dropped without committing and opened again after a backoff: the group hands the
uncommitted messages out again, to this member or another. Other errors end the
loop (a bug is not retried forever); so does a closed bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from shared.errors import BusError
from shared.ports.bus import Bus, Message
from shared.retry import Backoff, is_transient

__all__ = ["consume"]

log = logging.getLogger(__name__)


async def consume(bus: Bus, topic: str, group: str,
                  handle: Callable[[Message], Awaitable[None]]) -> None:
    backoff = Backoff()
    while True:
        try:
            await _consume_once(bus, topic, group, handle, backoff)
            return  # the bus was closed: iteration ended
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = backoff.next_delay()
            log.warning("consumer interrupted; subscribing again", extra={
                "topic": topic, "group": group, "error": str(exc),
                "retry_in_s": round(delay, 2)})
        await asyncio.sleep(delay)


async def _consume_once(bus: Bus, topic: str, group: str,
                        handle: Callable[[Message], Awaitable[None]], backoff: Backoff) -> None:
    sub = await bus.subscribe(topic, group)
    try:
        async for message in sub:
            await handle(message)
            await sub.commit(message)
            backoff.reset()
    finally:
        with contextlib.suppress(BusError):  # leaving a broken connection may fail too
            await sub.close()

