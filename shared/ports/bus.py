"""Bus port: topics of keyed messages, consumer groups, tails, per-key order.

Contract (every adapter; ``tests/contracts/bus.py`` checks it):

* ``publish(topic, key, value)`` returns once the message is accepted by the bus.
  Messages with the same key on the same topic are delivered in publish order.
* ``subscribe(topic, group)`` joins ``group``; each message of the topic reaches
  exactly one live member of each group (at least once: a message not committed
  by a member that leaves is delivered again to another member). A group that has
  committed nothing starts at the topic's beginning ("earliest").
* A ``Subscription`` is an async iterator of ``Message``; ``commit(message)``
  records that it and everything before it on its partition is done. Consumers
  must be idempotent: redelivery after a crash or rebalance is normal.
* ``Subscription.close()`` leaves the group; its uncommitted messages go to the
  remaining members. ``Bus.close()`` ends every subscription's iteration. Both are
  safe to call twice.
* ``tail(topic)`` is a broadcast subscription: it receives every message published to
  the topic (every partition) after ``tail()`` returned, in publish order per key, and
  nothing published before it was called (one published meanwhile may or may not
  come). It belongs to no group, so every tail (in this or another process) gets every
  message, and tails never change what groups get (nor, on ``MemoryBus``, trimming or
  backpressure). Its ``commit()`` is a no-op; its ``close()`` and ``Bus.close()`` end
  its iteration, safe twice. A tail whose reader falls too far behind for the adapter
  to keep its place ends with ``BusError`` after the messages it still holds: the
  reader has missed messages, and tails again to resynchronise from its own state.
  Use: a process that must learn of every event live (the API waking its
  Server-Sent-Event streams) without taking part in any group.
* Errors are ``BusError``; no driver exception escapes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

__all__ = ["TOPIC_EVENTS", "TOPIC_JOBS", "TOPIC_LOGS", "TOPIC_LOGS_STORED", "Bus", "Message",
           "Subscription"]

TOPIC_EVENTS = "cyclone.events"  # every domain event, key = run id
TOPIC_JOBS = "cyclone.jobs"  # jobs ready to run, key = run id
TOPIC_LOGS = "cyclone.logs"  # batches of log lines, key = run id
TOPIC_LOGS_STORED = "cyclone.logs.stored"  # how far a run's log is stored, key = run id


@dataclass(frozen=True)
class Message:
    topic: str
    key: str
    value: bytes
    partition: int
    offset: int


class Subscription(Protocol):
    def __aiter__(self) -> AsyncIterator[Message]: ...

    async def commit(self, message: Message) -> None: ...

    async def close(self) -> None: ...


class Bus(Protocol):
    async def publish(self, topic: str, key: str, value: bytes) -> None: ...

    async def subscribe(self, topic: str, group: str) -> Subscription: ...

    async def tail(self, topic: str) -> Subscription: ...

    async def close(self) -> None: ...
