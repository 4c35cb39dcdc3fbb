"""KafkaBus: the Bus contract against a real Kafka 4 broker, plus what is Kafka's own.

The broker is the session's (``tests/infra/kafka.py``): skipped with a loud reason when
it cannot start locally, failed under ``CI``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from shared.adapters.bus.kafka import KafkaBus
from shared.errors import BusError
from tests.contracts.bus import BusContract, Collector, publish_all, spread, unique, wait_total
from tests.infra.kafka import KafkaBroker, kafka_broker, kafka_url, private_kafka
from tests.support import HANG_S

__all__ = ["kafka_broker", "kafka_url", "private_kafka"]  # fixtures, registered by import


class TestKafkaBus(BusContract):
    @pytest.fixture
    async def bus(self, kafka_url: str) -> AsyncIterator[KafkaBus]:
        bus = await KafkaBus.connect(kafka_url)
        yield bus
        await bus.close()


def _closed_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connecting_to_a_closed_port_fails_at_the_refusal_naming_the_url() -> None:
    url = f"kafka://127.0.0.1:{_closed_port()}"
    # A connect timeout far beyond the test's deadline: the error can only come from
    # the refused connection, not from waiting the timeout out.
    async with asyncio.timeout(HANG_S):
        with pytest.raises(BusError, match=url) as raised:
            await KafkaBus.connect(url, connect_timeout=10 * HANG_S)
    assert "timed out" not in str(raised.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9092", "kafka://", "kafka://host:port"])
async def test_a_malformed_url_is_a_bus_error_naming_it(url: str) -> None:
    with pytest.raises(BusError, match="malformed Kafka URL"):
        await KafkaBus.connect(url)


async def test_topics_are_created_with_the_configured_partition_count(kafka_url: str) -> None:
    bus = await KafkaBus.connect(kafka_url, partitions=3)
    topic = unique("topic")
    reader = Collector(await bus.subscribe(topic, unique("group")))
    try:
        assert await bus.partitions_of(topic) == 3
        await publish_all(bus, topic, spread(30, "m"))  # 30 keys: every partition gets some
        await reader.wait_count(30)
        assert {m.partition for m in reader.messages} == {0, 1, 2}
    finally:
        await reader.stop()
        await bus.close()


async def test_an_existing_topic_is_used_as_it_is(kafka_url: str) -> None:
    topic = unique("topic")
    first = await KafkaBus.connect(kafka_url, partitions=2)
    second = await KafkaBus.connect(kafka_url, partitions=5)
    try:
        await first.publish(topic, "run-1", b"one")
        await second.publish(topic, "run-1", b"two")  # "already exists" is not an error
        assert await second.partitions_of(topic) == 2
        reader = Collector(await second.subscribe(topic, unique("group")))
        try:
            await reader.wait_count(2)
            assert reader.values == [b"one", b"two"]
        finally:
            await reader.stop()
    finally:
        await first.close()
        await second.close()


async def test_a_member_beyond_the_partition_count_joins_with_nothing(kafka_url: str) -> None:
    bus = await KafkaBus.connect(kafka_url, partitions=2)
    topic, group = unique("topic"), unique("group")
    readers = [Collector(await bus.subscribe(topic, group)) for _ in range(3)]
    try:
        await publish_all(bus, topic, spread(20, "m"))
        await wait_total(readers, 20)
        assert sum(1 for r in readers if r.messages) == 2, "two partitions, two busy members"
    finally:
        for reader in readers:
            await reader.stop()
        await bus.close()


async def test_published_messages_survive_a_broker_restart(private_kafka: KafkaBroker) -> None:
    topic = unique("topic")
    bus = await KafkaBus.connect(private_kafka.url)
    try:
        await publish_all(bus, topic, spread(10, "m", keys=3))
    finally:
        await bus.close()
    await asyncio.to_thread(private_kafka.restart)
    bus = await KafkaBus.connect(private_kafka.url)
    reader = Collector(await bus.subscribe(topic, unique("group")))
    try:
        await reader.wait_count(10)
        assert sorted(reader.values) == sorted(v for _, v in spread(10, "m", keys=3))
    finally:
        await reader.stop()
        await bus.close()

