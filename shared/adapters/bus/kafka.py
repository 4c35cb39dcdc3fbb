"""Kafka bus: the distributed ``Bus`` adapter, on aiokafka.

``KafkaBus.connect("kafka://host:port[,host:port]")`` opens one producer and one admin
client; each ``subscribe`` opens its own consumer, a member of the named consumer group.

What the port's words mean here:

* Accepted (``publish`` returns): written to every in-sync replica (``acks=all``) by an
  idempotent producer, so a retried send is not duplicated. The message key is the
  Kafka record key: Kafka's default (murmur2) partitioner puts one key on one
  partition, hence per-key order. The partition is not ``MemoryBus``'s crc32 one.
* Topics are created on first use (publish or subscribe) with the bus's ``partitions``
  and ``replication``; a topic that already exists is used as it is. The broker's own
  auto-creation is not relied on (it is often disabled, and would pick its defaults).
* Groups: Kafka's consumer groups (classic protocol, eager rebalance). ``subscribe``
  returns once the member has joined and has its assignment (possibly empty when the
  group has more members than the topic has partitions). A group with no committed
  offset starts at the earliest retained message (``auto_offset_reset="earliest"``);
  retention is the broker's (time/size based), unlike ``MemoryBus``.
* ``commit(message)`` commits ``offset + 1`` of the message's partition, synchronously.
  A commit for a partition the member no longer owns, or one the broker rejects
  because the group rebalanced meanwhile, is dropped: the partition's owner reads from
  the last committed offset again, which is the at-least-once contract.
* ``Subscription.close()`` stops the consumer, which sends LeaveGroup: the others
  rebalance at once (no session timeout to wait for). A member that crashes instead is
  noticed after ``SESSION_TIMEOUT_MS``.
* ``tail(topic)`` opens a consumer in no group (``group_id=None``, so nothing is ever
  committed and no group sees it) assigned every partition the topic has when
  ``tail()`` is called, and returns once each partition's position is resolved to its
  end, so a message published after ``tail()`` returns is not missed. Partitions added
  to the topic later are not read. Its reset policy is "none": a tail that falls so far
  behind that the broker's retention deleted its next message ends with ``BusError``
  (the port's "fell behind") rather than silently skipping ahead.
* Every aiokafka error becomes ``BusError`` (chained); a bus that cannot reach any
  bootstrap server within ``connect_timeout`` seconds fails ``connect`` naming the URL.

Concurrency: one event loop. ``publish`` may be called by many tasks at once (the
producer batches them); a subscription is meant to be iterated by one task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, Self, TypeVar

from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    CommitFailedError,
    ConsumerStoppedError,
    IllegalStateError,
    KafkaError,
    OffsetOutOfRangeError,
    TopicAlreadyExistsError,
    for_code,
)

from shared.errors import BusClosed, BusError
from shared.ports.bus import Message

__all__ = [
    "HEARTBEAT_INTERVAL_MS", "SESSION_TIMEOUT_MS", "KafkaBus", "KafkaSubscription", "KafkaTail",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# A member learns that its group is rebalancing from a heartbeat response, so the
# heartbeat interval bounds how long a join or leave takes; heartbeats are cheap.
HEARTBEAT_INTERVAL_MS = 200
# How long a member that vanished without leaving (a crash) keeps its partitions.
# 6 s is the broker's default minimum (group.min.session.timeout.ms).
SESSION_TIMEOUT_MS = 6000
# Long-poll time of a fetch with nothing to return: the delivery latency of an idle topic.
FETCH_MAX_WAIT_MS = 20
LINGER_MS = 1  # batch concurrent publishes a little, without delaying a lone one noticeably
REQUEST_TIMEOUT_MS = 15000


def _bootstrap(url: str) -> list[str]:
    """``kafka://h1:p1,h2:p2`` -> ``["h1:p1", "h2:p2"]``; BusError naming the URL otherwise."""
    scheme, sep, rest = url.partition("://")
    servers = [s.strip() for s in rest.rstrip("/").split(",")] if sep else []
    valid = bool(servers) and all(
        host and port.isdigit() for host, _, port in (s.rpartition(":") for s in servers)
    )
    if scheme != "kafka" or not valid:
        raise BusError(f"malformed Kafka URL {url!r}: expected kafka://host:port[,host:port]")
    return servers


async def _guard(what: str, operation: Awaitable[T]) -> T:
    """Await ``operation``, turning aiokafka's errors into BusError."""
    try:
        return await operation
    except KafkaError as exc:
        raise BusError(f"{what}: {exc}") from exc


class _AssignmentListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Sets ``assigned`` when the group gives the member its partitions."""

    def __init__(self) -> None:
        self.assigned = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass  # nothing buffered to flush: commits are synchronous

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned.set()


def _message(record: Any) -> Message:
    key: bytes | None = record.key
    value: bytes | None = record.value
    return Message(
        topic=record.topic,
        key="" if key is None else key.decode("utf-8", "replace"),
        value=b"" if value is None else value,
        partition=record.partition,
        offset=record.offset,
    )


class _Reader:
    """One consumer read as an async iterator of ``Message``: what a group member and a
    tail share. ``what`` names it in errors ("'topic' as 'group'", "the tail of 'topic'")."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str, what: str,
                 bus: KafkaBus) -> None:
        self._consumer = consumer
        self._topic = topic
        self._what = what
        self._bus = bus
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        if self._closed:
            raise StopAsyncIteration
        try:
            record: Any = await self._consumer.getone()
        except ConsumerStoppedError:
            raise StopAsyncIteration from None  # closed by another task meanwhile
        except OffsetOutOfRangeError as exc:  # only a tail has no reset policy to apply
            raise BusError(f"{self._what} fell behind the topic's retention, messages "
                           f"were missed; tail again to resynchronise: {exc}") from exc
        except KafkaError as exc:
            if self._closed:
                raise StopAsyncIteration from None
            raise BusError(f"reading {self._what}: {exc}") from exc
        return _message(record)

    async def close(self) -> None:
        """Stop the consumer (a group member leaves its group) and end iteration; safe
        to call twice."""
        if self._closed:
            return
        self._closed = True
        self._bus._forget(self)
        await _guard(f"closing {self._what}", self._consumer.stop())


class KafkaSubscription(_Reader):
    """One consumer, a member of ``group`` on ``topic``; an async iterator of ``Message``."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str, group: str,
                 bus: KafkaBus) -> None:
        super().__init__(consumer, topic, f"{topic!r} as {group!r}", bus)

    async def commit(self, message: Message) -> None:
        """Commit ``message.offset + 1`` on its partition for the group (see module doc)."""
        if message.topic != self._topic:
            raise BusError(
                f"commit of a message of topic {message.topic!r} "
                f"on a subscription to {self._topic!r}"
            )
        if self._closed:
            return  # we left: the partition's new owner redelivers
        partition = TopicPartition(message.topic, message.partition)
        if partition not in self._consumer.assignment():
            return  # moved to another member by a rebalance: it redelivers
        try:
            await self._consumer.commit({partition: message.offset + 1})
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced between the check and the commit; dropping the commit
            # only means redelivery from the previous committed offset.
            log.info("commit dropped after a rebalance", extra={
                "topic": message.topic, "partition": message.partition,
                "offset": message.offset, "reason": str(exc)})
        except KafkaError as exc:
            raise BusError(f"committing {self._what}: {exc}") from exc


class KafkaTail(_Reader):
    """One consumer in no group, reading every partition of ``topic`` from where it
    ended when the tail began; an async iterator of ``Message``."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str, bus: KafkaBus) -> None:
        super().__init__(consumer, topic, f"the tail of {topic!r}", bus)

    async def commit(self, message: Message) -> None:
        """Nothing to do: a tail belongs to no group, so it has no offsets to record."""


class KafkaBus:
    """The Kafka ``Bus`` (see the module docstring); build it with ``KafkaBus.connect``."""

    def __init__(self, url: str, servers: list[str], producer: AIOKafkaProducer,
                 admin: AIOKafkaAdminClient, partitions: int, replication: int,
                 timeout: float) -> None:
        self._url = url
        self._servers = servers
        self._producer = producer
        self._admin = admin
        self._partitions = partitions
        self._replication = replication
        self._timeout = timeout
        self._topics: dict[str, asyncio.Task[None]] = {}  # created (or being created)
        self._subscriptions: set[_Reader] = set()  # group members and tails
        self._closed = False

    @classmethod
    async def connect(cls, url: str, partitions: int = 4, replication: int = 1, *,
                      connect_timeout: float = 10.0) -> KafkaBus:
        """Connect to the cluster at ``url`` (``kafka://host:port[,host:port]``).

        ``partitions`` and ``replication`` are used for the topics this bus creates.
        Raises BusError naming the URL when no bootstrap server answers within
        ``connect_timeout`` seconds (also the bound on topic creation and on joining).
        """
        if partitions < 1 or replication < 1:
            raise ValueError(f"partitions and replication must be >= 1, "
                             f"got {partitions} and {replication}")
        servers = _bootstrap(url)
        producer = AIOKafkaProducer(
            bootstrap_servers=servers, acks="all", enable_idempotence=True,
            linger_ms=LINGER_MS, request_timeout_ms=REQUEST_TIMEOUT_MS)
        admin = AIOKafkaAdminClient(bootstrap_servers=servers,
                                    request_timeout_ms=REQUEST_TIMEOUT_MS)
        try:
            async with asyncio.timeout(connect_timeout):
                await producer.start()
                await admin.start()
        except (KafkaError, TimeoutError) as exc:
            await _close_quietly(producer, admin)
            raise BusError(f"cannot connect to Kafka at {url}: {exc or 'timed out'}") from exc
        return cls(url, servers, producer, admin, partitions, replication, connect_timeout)

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Send to ``key``'s partition; returns once every in-sync replica has it."""
        self._check_open()
        await self._ensure_topic(topic)
        await _guard(f"publishing to {topic!r}",
                     self._producer.send_and_wait(topic, value=value, key=key.encode()))

    async def subscribe(self, topic: str, group: str) -> KafkaSubscription:
        """Join ``group`` on ``topic``; returns once the member has its assignment."""
        self._check_open()
        await self._ensure_topic(topic)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._servers, group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS, session_timeout_ms=SESSION_TIMEOUT_MS,
            request_timeout_ms=REQUEST_TIMEOUT_MS)
        listener = _AssignmentListener()
        consumer.subscribe([topic], listener=listener)
        try:
            async with asyncio.timeout(self._timeout + SESSION_TIMEOUT_MS / 1000):
                await consumer.start()
                # aiokafka 0.14's start() already waits for the first assignment; the
                # listener makes that guarantee ours rather than a driver detail.
                await listener.assigned.wait()
        except (KafkaError, TimeoutError) as exc:
            await _close_quietly(consumer)
            raise BusError(f"joining group {group!r} on {topic!r} at {self._url}: "
                           f"{exc or 'timed out'}") from exc
        subscription = KafkaSubscription(consumer, topic, group, self)
        if self._closed:  # closed while we were joining
            await subscription.close()
            raise BusClosed("the bus is closed")
        self._subscriptions.add(subscription)
        return subscription

    async def tail(self, topic: str) -> KafkaTail:
        """A tail of ``topic`` (see the module docstring); returns once it is positioned
        at the end of every partition."""
        self._check_open()
        await self._ensure_topic(topic)
        partitions = [TopicPartition(topic, p) for p in range(await self._partition_count(topic))]
        if not partitions:  # deleted since we created it
            raise BusError(f"topic {topic!r} has no partitions at {self._url}")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._servers, group_id=None, enable_auto_commit=False,
            auto_offset_reset="none", fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            request_timeout_ms=REQUEST_TIMEOUT_MS)
        try:
            async with asyncio.timeout(self._timeout):
                await consumer.start()
                await _position_at_end(consumer, partitions)
        except (KafkaError, TimeoutError) as exc:
            await _close_quietly(consumer)
            raise BusError(f"starting a tail of {topic!r} at {self._url}: "
                           f"{exc or 'timed out'}") from exc
        tail = KafkaTail(consumer, topic, self)
        if self._closed:  # closed while we were starting
            await tail.close()
            raise BusClosed("the bus is closed")
        self._subscriptions.add(tail)
        return tail

    async def close(self) -> None:
        """Close every subscription and tail (ending its iteration), then the producer;
        safe twice."""
        if self._closed:
            return
        self._closed = True
        for task in self._topics.values():
            task.cancel()
        for subscription in list(self._subscriptions):
            await subscription.close()
        await _close_quietly(self._producer, self._admin)

    async def ensure_topics(self, *topics: str) -> None:
        """Create the topics now (idempotent) rather than on first use: a service calls
        it at start, so a misconfigured cluster fails the start, not the first run."""
        self._check_open()
        await asyncio.gather(*(self._ensure_topic(topic) for topic in topics))

    async def partitions_of(self, topic: str) -> int:
        """How many partitions ``topic`` has on the cluster (0 if it does not exist)."""
        self._check_open()
        return await self._partition_count(topic)

    # --- internals -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed("the bus is closed")

    def _forget(self, subscription: _Reader) -> None:
        self._subscriptions.discard(subscription)

    async def _ensure_topic(self, topic: str) -> None:
        """Create ``topic`` once per bus; concurrent first uses share one creation."""
        task = self._topics.get(topic)
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            task = self._topics[topic] = asyncio.create_task(self._create_topic(topic))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():  # the bus closed, not our caller
                raise BusClosed("the bus is closed") from None
            raise

    async def _create_topic(self, topic: str) -> None:
        new = NewTopic(topic, num_partitions=self._partitions,
                       replication_factor=self._replication)
        response: Any = await _guard(f"creating topic {topic!r}",
                                     self._admin.create_topics([new]))
        for name, code, *rest in response.topic_errors:
            error = for_code(code)
            if code and error is not TopicAlreadyExistsError:
                detail = rest[0] if rest and rest[0] else error.__name__
                raise BusError(f"creating topic {name!r} at {self._url}: {detail}")
        # Creation is acknowledged by the controller before every broker serves the
        # topic's metadata; a consumer that joined before would get no partitions.
        deadline = time.monotonic() + self._timeout
        while await self._partition_count(topic) == 0:
            if time.monotonic() > deadline:
                raise BusError(f"topic {topic!r} created but not visible at {self._url}")
            await asyncio.sleep(0.02)

    async def _partition_count(self, topic: str) -> int:
        described: Any = await _guard(f"describing topic {topic!r}",
                                      self._admin.describe_topics([topic]))
        for entry in described:
            if entry["topic"] == topic and entry["error_code"] == 0:
                return len(entry["partitions"])
        return 0


async def _position_at_end(consumer: AIOKafkaConsumer,
                           partitions: list[TopicPartition]) -> None:
    """Assign ``partitions`` to a started, group-less consumer and resolve their end offsets.

    seek_to_end() only requests the offsets (it returns False, not an error, when they
    have not arrived within request_timeout_ms); position() waits until one has arrived,
    so a message published after we return is at or after the position. assign() and
    seek_to_end()'s request happen with no await between them, so the fetcher never
    sees the partitions with neither a position nor a pending reset (with reset policy
    "none", it could report that as an error).
    """
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for partition in partitions:
        await consumer.position(partition)


async def _close_quietly(*clients: Any) -> None:
    """Stop aiokafka clients, ignoring errors: used on paths that already fail or end."""
    for client in clients:
        try:
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        except (KafkaError, OSError) as exc:
            log.debug("error while closing a Kafka client: %s", exc)
