"""The one consumer loop every service uses: handle a message, then commit it.

Committing only after ``handle`` returns gives at-least-once processing: a crash
mid-way redelivers the message, so every ``handle`` must be idempotent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from shared.ports.bus import Bus, Message

__all__ = ["consume"]


async def consume(bus: Bus, topic: str, group: str,
                  handle: Callable[[Message], Awaitable[None]]) -> None:
    sub = await bus.subscribe(topic, group)
    try:
        async for message in sub:
            await handle(message)
            await sub.commit(message)
    finally:
        await sub.close()
