"""In-process bus: Kafka's model (partitions, offsets, consumer groups) inside one asyncio loop.

The embedded default of the ``Bus`` port. It copies Kafka's semantics closely so
that code written against it behaves the same on a real Kafka:

* A topic has ``partitions`` partitions; a message goes to partition
  ``crc32(key) % partitions`` (stable across processes, unlike ``hash()``), where it
  gets the next offset of that partition's append-only log. One key, one
  partition, so the messages of one key are delivered in publish order.
* A consumer group has a committed offset per partition (0 until something is
  committed: a new group reads from the beginning, "earliest").
* The partitions are spread round-robin over the group's live members, in join
  order, and spread again whenever a member joins or leaves. A member keeps its
  read position on a partition it keeps; a partition it gains is read from the
  group's committed offset, so whatever the previous owner had not committed is
  delivered again (at least once).
* ``commit(message)`` sets the group's committed offset of the message's partition
  to ``message.offset + 1``. A commit for a partition the member no longer owns
  (after a rebalance or after ``close``) is ignored — Kafka rejects it too; the
  new owner redelivers from the committed offset, which is the at-least-once
  contract.
* Iteration waits on an ``asyncio.Event`` (no polling) and ends with
  ``StopAsyncIteration`` once the subscription or the bus is closed.

Tails (``tail(topic)``): ``publish`` appends each new message to the queue of every
tail of its topic as well, so a tail needs no read position in the logs and holds
nothing back: trimming and ``max_backlog_bytes`` only look at groups. Instead each
tail's queue is bounded (``tail_limit`` messages): a publish that finds it full
drops the tail from the topic, and the tail's iteration, once it has yielded what
its queue still holds, raises ``BusError`` ("fell behind"), so a slow reader learns
that it missed messages (and can tail again and resynchronise) instead of either
growing memory without bound or slowing every publisher down to its pace. Closing
the tail or the bus ends its iteration at once, dropping what it had not read.

Retention: by default every message is kept for the life of the bus (unbounded
memory; fine for one process). ``MemoryBus(trim=True)`` drops the messages below
the lowest committed offset of the groups that have live members (a group whose
members all left no longer holds messages back). It is off by default because,
unlike Kafka's time-based retention, it means a group subscribing for the first
time (or again, after all its members left) starts at the earliest *retained*
message and misses older ones, and a live member that never commits stops all
trimming of the topic. ``max_backlog_bytes`` then bounds memory: ``publish`` waits
while its partition holds more than that, until consumers commit.

Concurrency: everything runs on one event loop and no method awaits in the middle
of a state change, so every operation is atomic with respect to other tasks.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import Callable

from shared.errors import BusClosed, BusError
from shared.ports.bus import Message

__all__ = ["TAIL_LIMIT", "MemoryBus", "MemorySubscription", "MemoryTail", "partition_for"]

TAIL_LIMIT = 10_000  # unread messages a tail may hold before it is ended as fallen behind


def partition_for(key: str, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``: stable across processes and runs."""
    return zlib.crc32(key.encode()) % partitions


class _Log:
    """One partition: an append-only list; ``base`` is the offset of ``messages[0]``."""

    def __init__(self) -> None:
        self.base = 0
        self.messages: list[Message] = []
        self.size = 0  # bytes of the retained messages' values
        self.trimmed = asyncio.Event()  # set when messages are dropped: publishers may go on

    @property
    def end(self) -> int:
        """The offset the next message will get."""
        return self.base + len(self.messages)

    def read(self, offset: int) -> Message | None:
        """The message at ``offset``, or the earliest retained one if ``offset`` was trimmed."""
        index = max(offset, self.base) - self.base
        return self.messages[index] if index < len(self.messages) else None

    def drop_below(self, offset: int) -> None:
        offset = min(offset, self.end)
        if offset > self.base:
            dropped = self.messages[: offset - self.base]
            self.size -= sum(len(m.value) for m in dropped)
            del self.messages[: offset - self.base]
            self.base = offset
            self.trimmed.set()


class _Group:
    def __init__(self, partitions: int) -> None:
        self.committed = [0] * partitions
        self.members: list[MemorySubscription] = []  # join order: the assignment order

    def rebalance(self, partitions: int) -> None:
        """Spread the partitions round-robin over the live members."""
        count = len(self.members)
        for index, member in enumerate(self.members):
            member._assign({p for p in range(partitions) if p % count == index})


class _Topic:
    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.logs = [_Log() for _ in range(partitions)]
        self.groups: dict[str, _Group] = {}
        self.tails: list[MemoryTail] = []  # the open tails not yet fallen behind


class MemorySubscription:
    """One member of a consumer group; an async iterator of its partitions' messages.

    Not meant to be iterated by several tasks at once (it works, each message going
    to one of them, but per-key order is then up to the tasks).
    """

    def __init__(
        self, topic: _Topic, group: _Group, on_commit: Callable[[_Topic, int], None]
    ) -> None:
        self._topic = topic
        self._group = group
        self._on_commit = on_commit  # the bus's trim
        self._positions: dict[int, int] = {}  # assigned partition -> next offset to deliver
        self._cursor = 0  # round-robin over partitions, so one busy partition starves none
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def partitions(self) -> frozenset[int]:
        """The partitions currently assigned to this member."""
        return frozenset(self._positions)

    def __aiter__(self) -> MemorySubscription:
        return self

    async def __anext__(self) -> Message:
        while True:
            if self._closed:
                raise StopAsyncIteration
            message = self._next_ready()
            if message is not None:
                return message
            # No await between the check and clear(): a publish cannot slip in between.
            self._wakeup.clear()
            await self._wakeup.wait()

    async def commit(self, message: Message) -> None:
        """Record ``message`` and everything before it on its partition as done for the group."""
        if message.topic != self._topic.name:
            raise BusError(
                f"commit of a message of topic {message.topic!r} "
                f"on a subscription to {self._topic.name!r}"
            )
        if message.partition not in self._positions:
            return  # partition moved to another member (or we left): it redelivers
        self._group.committed[message.partition] = message.offset + 1
        self._on_commit(self._topic, message.partition)

    async def close(self) -> None:
        """Leave the group (its partitions go to the other members) and end iteration.

        Safe to call twice.
        """
        if self._closed:
            return
        self._group.members.remove(self)
        self._group.rebalance(len(self._topic.logs))
        self._end()

    # --- used by the bus and the group -----------------------------------------------

    def _assign(self, partitions: set[int]) -> None:
        committed = self._group.committed
        self._positions = {p: self._positions.get(p, committed[p]) for p in sorted(partitions)}
        self._wakeup.set()

    def _wake_for(self, partition: int) -> None:
        if partition in self._positions:
            self._wakeup.set()

    def _end(self) -> None:
        self._closed = True
        self._positions = {}
        self._wakeup.set()

    def _next_ready(self) -> Message | None:
        owned = list(self._positions)
        for step in range(len(owned)):
            partition = owned[(self._cursor + step) % len(owned)]
            message = self._topic.logs[partition].read(self._positions[partition])
            if message is not None:
                self._positions[partition] = message.offset + 1
                self._cursor = (self._cursor + step + 1) % len(owned)
                return message
        return None


class MemoryTail:
    """A tail of one topic: the messages published after it began, fed by ``publish``.

    Holds at most ``limit`` unread messages; see the module docstring for what
    happens beyond that. Meant to be iterated by one task.
    """

    def __init__(self, topic: _Topic, limit: int) -> None:
        self._topic = topic
        self._limit = limit
        self._queue: deque[Message] = deque()
        self._wakeup = asyncio.Event()
        self._fell_behind = False
        self._closed = False

    def __aiter__(self) -> MemoryTail:
        return self

    async def __anext__(self) -> Message:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._queue:
                return self._queue.popleft()
            if self._fell_behind:
                raise BusError(
                    f"tail of {self._topic.name!r} fell behind: more than {self._limit} "
                    "messages unread, later ones were missed; tail again to resynchronise"
                )
            # No await between the checks and clear(): a publish cannot slip in between.
            self._wakeup.clear()
            await self._wakeup.wait()

    async def commit(self, message: Message) -> None:
        """Nothing to do: a tail belongs to no group, so it has no offsets to record."""

    async def close(self) -> None:
        """Stop receiving and end iteration (dropping unread messages); safe to call twice."""
        if self._closed:
            return
        if self in self._topic.tails:  # not if it fell behind: publish dropped it already
            self._topic.tails.remove(self)
        self._end()

    # --- used by the bus -------------------------------------------------------------

    def _feed(self, message: Message) -> None:
        if len(self._queue) >= self._limit:
            # Keep what it holds for the reader, take nothing more: memory stays bounded
            # and the reader gets BusError once it has caught up to the gap.
            self._fell_behind = True
            self._topic.tails.remove(self)
        else:
            self._queue.append(message)
        self._wakeup.set()

    def _end(self) -> None:
        self._closed = True
        self._queue.clear()
        self._wakeup.set()


class MemoryBus:
    """The in-process ``Bus``: see the module docstring for the model and its retention."""

    def __init__(self, partitions: int = 4, *, trim: bool = False,
                 max_backlog_bytes: int | None = None, tail_limit: int = TAIL_LIMIT) -> None:
        """``trim``: drop what every group with live members has committed.
        ``max_backlog_bytes`` (with ``trim``): ``publish`` waits while a partition holds
        more than this, so a fast producer is slowed to its consumers' pace instead of
        filling memory (as a Kafka producer blocks when its buffer is full).
        ``tail_limit``: the unread messages a tail may hold before it has fallen behind."""
        if partitions < 1:
            raise ValueError(f"a topic needs at least one partition, got {partitions}")
        if max_backlog_bytes is not None and not trim:
            raise ValueError("max_backlog_bytes needs trim=True")
        if tail_limit < 1:
            raise ValueError(f"tail_limit must be >= 1, got {tail_limit}")
        self._partitions = partitions
        self._trim_enabled = trim
        self._max_backlog = max_backlog_bytes
        self._tail_limit = tail_limit
        self._topics: dict[str, _Topic] = {}
        self._closed = False

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Append the message to its key's partition, wake the members that own it and
        hand it to the topic's tails."""
        self._check_open()
        log_topic = self._topic(topic)
        partition = partition_for(key, self._partitions)
        log = log_topic.logs[partition]
        while self._max_backlog is not None and log.size > self._max_backlog:
            log.trimmed.clear()
            await log.trimmed.wait()
            self._check_open()
        message = Message(topic, key, value, partition, log.end)
        log.messages.append(message)
        log.size += len(value)
        for group in log_topic.groups.values():
            for member in group.members:
                member._wake_for(partition)
        for tail in list(log_topic.tails):  # a tail that falls behind removes itself
            tail._feed(message)

    async def subscribe(self, topic: str, group: str) -> MemorySubscription:
        """Join ``group`` on ``topic``; returns once the member has its partitions."""
        self._check_open()
        log_topic = self._topic(topic)
        members = log_topic.groups.setdefault(group, _Group(self._partitions))
        subscription = MemorySubscription(log_topic, members, self._trim)
        members.members.append(subscription)
        members.rebalance(self._partitions)
        return subscription

    async def tail(self, topic: str) -> MemoryTail:
        """A tail of ``topic``: every message published from now on, in no group."""
        self._check_open()
        log_topic = self._topic(topic)
        tail = MemoryTail(log_topic, self._tail_limit)
        log_topic.tails.append(tail)
        return tail

    async def close(self) -> None:
        """End every subscription's and tail's iteration; later publishes, subscribes and
        tails raise BusError.

        Safe to call twice.
        """
        self._closed = True
        for log_topic in self._topics.values():
            for log in log_topic.logs:
                log.trimmed.set()  # a publisher waiting for room wakes up and fails
            for group in log_topic.groups.values():
                for member in group.members:
                    member._end()
                group.members.clear()
            for tail in log_topic.tails:
                tail._end()
            log_topic.tails.clear()

    def retained(self, topic: str) -> int:
        """How many messages of ``topic`` are held in memory (all partitions)."""
        log_topic = self._topics.get(topic)
        return 0 if log_topic is None else sum(len(log.messages) for log in log_topic.logs)

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed("the bus is closed")

    def _topic(self, name: str) -> _Topic:
        log_topic = self._topics.get(name)
        if log_topic is None:
            log_topic = self._topics[name] = _Topic(name, self._partitions)
        return log_topic

    def _trim(self, topic: _Topic, partition: int) -> None:
        if self._trim_enabled:
            live = [g.committed[partition] for g in topic.groups.values() if g.members]
            if live:
                topic.logs[partition].drop_below(min(live))
