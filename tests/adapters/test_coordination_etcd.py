"""EtcdCoordinator: the Coordinator contract against a real etcd, plus what only etcd has
(connecting by URL, several clients on one cluster, server-side expiry, restarts).

etcd is started by ``tests/infra/etcd.py`` (skipped locally when it cannot be, failed in CI).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from shared.adapters.coordination.etcd import EtcdCoordinator, parse_etcd_url
from shared.errors import CoordinationError
from shared.ports.coordination import WatchEvent
from tests.contracts.coordination import CoordinationContract, WatchLog, unique_prefix
from tests.infra.etcd import EtcdServer, etcd_server, etcd_url, private_etcd
from tests.support import HANG_S, eventually

__all__ = ["etcd_server", "etcd_url", "private_etcd"]  # fixtures, registered by import

TIMEOUT = HANG_S  # only catches a hang


class TestEtcdCoordinator(CoordinationContract):
    @pytest.fixture
    async def coord(self, etcd_url: str) -> AsyncIterator[EtcdCoordinator]:
        coord = await EtcdCoordinator.connect(etcd_url)
        yield coord
        await coord.close()


@pytest.fixture
async def coord(etcd_url: str) -> AsyncIterator[EtcdCoordinator]:
    coord = await EtcdCoordinator.connect(etcd_url)
    yield coord
    await coord.close()


@pytest.fixture
async def other(etcd_url: str) -> AsyncIterator[EtcdCoordinator]:
    """A second client of the same cluster (another process, as far as etcd knows)."""
    coord = await EtcdCoordinator.connect(etcd_url)
    yield coord
    await coord.close()


def _closed_port() -> int:
    """A local port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connect_failure_names_the_url() -> None:
    url = f"etcd://127.0.0.1:{_closed_port()}"
    with pytest.raises(CoordinationError, match=url):
        await EtcdCoordinator.connect(url, call_timeout=5)


async def test_connect_uses_the_first_endpoint_that_answers(etcd_server: EtcdServer) -> None:
    url = f"etcd://127.0.0.1:{_closed_port()},127.0.0.1:{etcd_server.client_port}"
    coord = await EtcdCoordinator.connect(url, call_timeout=5)
    try:
        key = unique_prefix() + "k"
        await coord.put(key, b"v")
        assert await coord.get(key) == b"v"
        await coord.delete(key)
    finally:
        await coord.close()


def test_urls_are_parsed_and_bad_ones_refused() -> None:
    assert parse_etcd_url("etcd://a:1,b,[::1]:3") == [("a", 1), ("b", 2379), ("::1", 3)]
    for bad in ("http://a:2379", "a:2379", "etcd://a:port", "etcd://:2379"):
        with pytest.raises(CoordinationError, match="URL"):
            parse_etcd_url(bad)


async def test_a_change_made_right_after_watch_returns_is_seen(coord: EtcdCoordinator) -> None:
    # No readiness probe: the watch must start from the revision current at the call.
    prefix = unique_prefix()
    watch = coord.watch(prefix)
    try:
        await coord.put(prefix + "k", b"v")
        event = await asyncio.wait_for(anext(watch), TIMEOUT)
        assert event == WatchEvent("put", prefix + "k", b"v")
    finally:
        await watch.aclose()
        await coord.delete(prefix + "k")


async def test_create_is_atomic_across_clients(
    coord: EtcdCoordinator, other: EtcdCoordinator
) -> None:
    key = unique_prefix() + "claim"
    results = await asyncio.gather(
        *(client.create(key, name.encode()) for name, client in
          [("a", coord), ("b", other)] * 10)
    )
    assert results.count(True) == 1
    assert await other.get(key) in (b"a", b"b")
    await coord.delete(key)


async def test_expiry_is_the_servers_even_when_the_granting_client_is_gone(
    etcd_url: str, other: EtcdCoordinator
) -> None:
    prefix = unique_prefix()
    watch = await WatchLog.start(other, prefix)
    try:
        worker = await EtcdCoordinator.connect(etcd_url)
        lease = await worker.grant_lease(1)
        assert lease.ttl >= 1
        await worker.put(prefix + "worker", b"alive", lease)
        await worker.close()  # a dead worker: nobody refreshes, nobody revokes
        await watch.wait_for(("delete", prefix + "worker", None))
        assert await other.get(prefix + "worker") is None
    finally:
        await watch.stop()


async def test_operations_after_close_raise(coord: EtcdCoordinator) -> None:
    lease = await coord.grant_lease(60)
    await coord.close()
    with pytest.raises(CoordinationError):
        await coord.put("/k", b"v")
    with pytest.raises(CoordinationError):
        await coord.get("/k")
    with pytest.raises(CoordinationError):
        await lease.refresh()
    with pytest.raises(CoordinationError):
        coord.watch("/")
    await lease.revoke()  # cleanup stays quiet


async def test_a_lease_of_another_coordinator_is_refused(
    coord: EtcdCoordinator, other: EtcdCoordinator
) -> None:
    lease = await other.grant_lease(60)
    try:
        with pytest.raises(CoordinationError):
            await coord.put(unique_prefix() + "k", b"v", lease)
    finally:
        await lease.revoke()


async def test_data_survives_a_restart_and_clients_reconnect(private_etcd: EtcdServer) -> None:
    coord = await EtcdCoordinator.connect(private_etcd.url)
    try:
        await coord.put("/restart/k", b"kept")
        await asyncio.to_thread(private_etcd.restart)
        fresh = await EtcdCoordinator.connect(private_etcd.url)
        try:
            assert await fresh.get("/restart/k") == b"kept"
        finally:
            await fresh.close()

        async def old_client_reads() -> bool:
            try:
                return await coord.get("/restart/k") == b"kept"
            except CoordinationError:
                return False  # the channel is reconnecting

        await eventually(old_client_reads, TIMEOUT, interval=0.1, what="the old client")
    finally:
        await coord.close()


async def test_a_watch_survives_a_crash_of_etcd(private_etcd: EtcdServer) -> None:
    coord = await EtcdCoordinator.connect(private_etcd.url)
    try:
        watch = await WatchLog.start(coord, "/chaos/")
        try:
            await coord.put("/chaos/before", b"1")
            await watch.wait_for(("put", "/chaos/before", b"1"))
            await asyncio.to_thread(private_etcd.restart, kill=True)

            async def put_after() -> bool:
                try:
                    await coord.put("/chaos/after", b"2")
                    return True
                except CoordinationError:
                    return False  # the channel is reconnecting

            await eventually(put_after, TIMEOUT, interval=0.1, what="a put after the restart")
            await watch.wait_for(("put", "/chaos/after", b"2"))
            assert not watch.ended
            assert watch.events == [("put", "/chaos/before", b"1"), ("put", "/chaos/after", b"2")]
        finally:
            await watch.stop()
    finally:
        await coord.close()
