"""etcd coordination: the ``Coordinator`` port over etcd v3's gRPC API (aetcd client).

``await EtcdCoordinator.connect("etcd://host:2379[,host2:2379...]")`` talks to the
first endpoint that answers; when none does it raises ``CoordinationError`` naming
the URL. What the port's contract means here:

* Keys are UTF-8 strings, values bytes, both stored as they are (no namespace is
  added: callers choose their prefixes).
* Leases are etcd leases. A TTL is rounded up to whole seconds (etcd's unit), and
  etcd raises it further to its own minimum (about 2 s with the default election
  timeout); ``Lease.ttl`` is the TTL etcd granted. Nothing refreshes a lease in
  the background: the caller refreshes (``refresh`` sends one keep-alive). Expiry
  is etcd's: the server deletes the bound keys and watchers see the deletions,
  whether or not this process is alive. ``refresh`` of an expired or revoked lease,
  and ``put``/``create`` with one, raise ``LeaseExpired``; ``revoke`` is safe twice
  and after ``close()``.
* ``create`` is one etcd transaction (``create_revision == 0`` then put), so it
  succeeds for exactly one caller across every client of the cluster.
* ``watch(prefix)`` sees every change whose etcd revision follows the revision
  read when it was called: the watch reads the store's revision first, and every
  later operation of this coordinator waits for that read, so a change this
  process makes after ``watch()`` returns is always seen. The etcd stream then
  starts at that revision + 1 (etcd replays from its history), so nothing between
  the call and the stream's establishment is lost. When the stream breaks (etcd
  restarted, network cut), the watch resumes after the last revision it delivered,
  retrying for ``watch_retry`` seconds before ending with ``CoordinationError``
  (also raised if etcd compacted the history it needed: events would be lost, or
  if the start revision cannot be read at all).
* ``close()`` ends every watch (events already received are still delivered,
  then iteration stops) and closes the gRPC channel; safe twice. After it every
  operation raises ``CoordinationError``.
* Every etcd or gRPC failure is translated into ``CoordinationError``; each call
  has a deadline of ``call_timeout`` seconds.

Concurrency: one coordinator may be shared by any number of tasks of one event
loop; atomicity across clients is etcd's (linearizable reads and writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aetcd  # type: ignore[import-untyped]
import aetcd.rpc  # type: ignore[import-untyped]

from shared.errors import CoordinationError, LeaseExpired
from shared.ports.coordination import Lease, WatchEvent
from shared.tasks import cancel_and_wait

__all__ = ["EtcdCoordinator", "EtcdLease", "EtcdWatch", "parse_etcd_url"]

DEFAULT_PORT = 2379
# An empty key range: a range read of it costs nothing and its header carries the
# store's current revision.
_PROBE = b"\x00cyclone-revision-probe"
_DRIVER_ERRORS = (aetcd.ClientError, aetcd.rpc.BaseError, TimeoutError)


def parse_etcd_url(url: str) -> list[tuple[str, int]]:
    """``etcd://h1:p1,h2:p2`` -> ``[(h1, p1), (h2, p2)]`` (port 2379 when omitted)."""
    scheme, sep, rest = url.partition("://")
    if scheme != "etcd" or not sep:
        raise CoordinationError(f"not an etcd URL (etcd://host:port[,host:port]): {url!r}")
    endpoints = []
    for part in rest.split("/", 1)[0].split(","):
        host, port = _split_host_port(part.strip(), url)
        endpoints.append((host, port))
    return endpoints


def _split_host_port(part: str, url: str) -> tuple[str, int]:
    if part.startswith("["):  # [::1]:2379
        host, _, tail = part[1:].partition("]")
        port_text = tail.removeprefix(":")
    elif part.count(":") == 1:
        host, _, port_text = part.partition(":")
    else:
        host, port_text = part, ""
    if not host:
        raise CoordinationError(f"etcd URL {url!r} has an empty host")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise CoordinationError(f"etcd URL {url!r} has a bad port {port_text!r}")
    return host, int(port_text)


def _lease_gone(exc: BaseException) -> bool:
    return "lease not found" in str(exc)


class EtcdLease:
    """An etcd lease granted by an ``EtcdCoordinator``."""

    def __init__(self, coordinator: EtcdCoordinator, lease_id: int, ttl: float) -> None:
        self._coordinator = coordinator
        self._id = lease_id
        self._ttl = ttl

    @property
    def id(self) -> int:
        return self._id

    @property
    def ttl(self) -> float:
        """The TTL etcd granted (whole seconds, at least etcd's minimum)."""
        return self._ttl

    @property
    def coordinator(self) -> EtcdCoordinator:
        return self._coordinator

    async def refresh(self) -> None:
        """Send one keep-alive; ``LeaseExpired`` if the lease already ended."""
        await self._coordinator._refresh(self._id)

    async def revoke(self) -> None:
        """End the lease now (etcd deletes its keys); a no-op if already ended or closed."""
        await self._coordinator._revoke(self._id)


class EtcdWatch(AsyncIterator[WatchEvent]):
    """The changes under one prefix, in revision order, read by a background task."""

    def __init__(self, coordinator: EtcdCoordinator, prefix: str, retry: float) -> None:
        self.prefix = prefix
        self._coordinator = coordinator
        self._retry = retry
        # None ends the iteration; an error is raised once, then iteration ends.
        self._queue: asyncio.Queue[WatchEvent | CoordinationError | None] = asyncio.Queue()
        self._ended = False  # nothing more will be queued
        self._done = False  # iteration is over
        self._stream: Any = None  # the aetcd watch, to cancel it on aclose
        loop = asyncio.get_running_loop()
        # Resolved once the start revision is known: later operations wait for it.
        self.started: asyncio.Future[None] = loop.create_future()
        self._task = loop.create_task(self._run(), name=f"etcd watch {prefix}")

    def __aiter__(self) -> EtcdWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, WatchEvent):
            return item
        self._done = True
        if item is None:
            raise StopAsyncIteration
        raise item

    async def aclose(self) -> None:
        """Stop watching; iteration ends at once, dropping queued events. Safe twice."""
        self._done = True
        await self._stop()
        self._coordinator._unwatch(self)

    async def _stop(self) -> None:
        """End the background task and the etcd stream; queued events stay readable."""
        await cancel_and_wait(self._task)
        stream, self._stream = self._stream, None
        if stream is not None and not self._coordinator.closed:
            with contextlib.suppress(*_DRIVER_ERRORS):
                await stream.cancel()
        self._end(None)

    def _end(self, last: CoordinationError | None) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(last)

    async def _run(self) -> None:
        try:
            start = await self._coordinator._revision() + 1
        except CoordinationError as exc:
            self._end(exc)
            return
        finally:
            if not self.started.done():
                self.started.set_result(None)
        await self._follow(start)

    async def _follow(self, start: int) -> None:
        """Stream from ``start``; after a break, resume after the last delivered revision."""
        failing_since: float | None = None
        delay = 0.1
        while True:
            try:
                self._stream = await self._coordinator._watch_stream(self.prefix, start)
                failing_since, delay = None, 0.1
                async for event in self._stream:
                    self._queue.put_nowait(_to_event(event))
                    start = event.kv.mod_revision + 1
                self._end(None)  # the client shut the stream down: the watch is over
                return
            except aetcd.RevisionCompactedError as exc:
                self._end(CoordinationError(f"watch of {self.prefix!r} lost events: {exc}"))
                return
            except _DRIVER_ERRORS as exc:
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > self._retry:
                    self._end(CoordinationError(f"watch of {self.prefix!r} broke: {exc}"))
                    return
            self._stream = None
            await asyncio.sleep(delay)  # back-off between reconnection attempts
            delay = min(delay * 2, 1.0)


def _to_event(event: Any) -> WatchEvent:
    kv = event.kv
    key = bytes(kv.key).decode()
    if event.kind == "DELETE":
        return WatchEvent("delete", key, None)
    return WatchEvent("put", key, bytes(kv.value))


class EtcdCoordinator:
    """The etcd ``Coordinator``; see the module docstring for its semantics."""

    def __init__(self, client: Any, url: str, *, watch_retry: float = 30.0) -> None:
        """Wrap a connected ``aetcd.Client``; use ``connect`` rather than this."""
        self._client = client
        self._url = url
        self._watch_retry = watch_retry
        self._watches: set[EtcdWatch] = set()
        self._closed = False

    @classmethod
    async def connect(
        cls, url: str, *, call_timeout: float = 10.0, watch_retry: float = 30.0
    ) -> EtcdCoordinator:
        """Connect to the first endpoint of ``url`` that answers a read within
        ``call_timeout`` seconds, the deadline of every later call too."""
        problems = []
        for host, port in parse_etcd_url(url):
            client = aetcd.Client(host=host, port=port, timeout=call_timeout)
            try:
                await asyncio.wait_for(client.get_prefix(_PROBE, keys_only=True), call_timeout)
            except _DRIVER_ERRORS as exc:
                problems.append(f"{host}:{port}: {exc or type(exc).__name__}")
                with contextlib.suppress(*_DRIVER_ERRORS):
                    await client.close()
                continue
            return cls(client, url, watch_retry=watch_retry)
        raise CoordinationError(f"cannot connect to etcd at {url}: {'; '.join(problems)}")

    @property
    def url(self) -> str:
        return self._url

    @property
    def closed(self) -> bool:
        return self._closed

    async def grant_lease(self, ttl: float) -> EtcdLease:
        await self._ready()
        if ttl <= 0:
            raise CoordinationError(f"a lease needs a positive ttl, got {ttl}")
        with self._translated("grant a lease"):
            granted = await self._client.lease(max(1, math.ceil(ttl)))
        return EtcdLease(self, int(granted.id), float(granted.ttl))

    async def create(self, key: str, value: bytes, lease: Lease | None = None) -> bool:
        await self._ready()
        lease_id = self._lease_id(lease)
        raw = key.encode()
        txn = self._client.transactions
        with self._translated(f"create {key!r}", lease_id):
            succeeded, _ = await self._client.transaction(
                compare=[txn.create(raw) == 0],
                success=[txn.put(raw, value, lease_id)],
                failure=[],
            )
        return bool(succeeded)

    async def put(self, key: str, value: bytes, lease: Lease | None = None) -> None:
        await self._ready()
        lease_id = self._lease_id(lease)
        with self._translated(f"put {key!r}", lease_id):
            await self._client.put(key.encode(), value, lease_id)

    async def get(self, key: str) -> bytes | None:
        await self._ready()
        with self._translated(f"get {key!r}"):
            found = await self._client.get(key.encode())
        return None if found is None else bytes(found.value)

    async def get_prefix(self, prefix: str) -> dict[str, bytes]:
        """The keys under ``prefix`` and their values, in key order."""
        await self._ready()
        with self._translated(f"read prefix {prefix!r}"):
            found = await self._client.get_prefix(
                prefix.encode(), sort_order="ascend"
            )
        return {bytes(kv.key).decode(): bytes(kv.value) for kv in found.kvs}

    async def delete(self, key: str) -> bool:
        await self._ready()
        with self._translated(f"delete {key!r}"):
            deleted = await self._client.delete(key.encode())
        return deleted is not None

    def watch(self, prefix: str) -> EtcdWatch:
        if self._closed:
            raise CoordinationError("the etcd coordinator is closed")
        watch = EtcdWatch(self, prefix, self._watch_retry)
        self._watches.add(watch)
        return watch

    async def close(self) -> None:
        """End every watch, then close the channel; later calls raise. Safe twice."""
        if self._closed:
            return
        self._closed = True
        watches, self._watches = list(self._watches), set()
        for watch in watches:
            await watch._stop()
        with contextlib.suppress(*_DRIVER_ERRORS):
            await self._client.close()

    # --- internals --------------------------------------------------------------

    async def _ready(self) -> None:
        """Every operation starts here: refuse after close, and wait until each watch
        opened before has read its start revision (so it sees this operation)."""
        if self._closed:
            raise CoordinationError("the etcd coordinator is closed")
        pending = [w.started for w in self._watches if not w.started.done()]
        if pending:
            await asyncio.wait(pending)

    @contextlib.contextmanager
    def _translated(self, what: str, lease_id: int = 0) -> Iterator[None]:
        try:
            yield
        except _DRIVER_ERRORS as exc:
            if lease_id and _lease_gone(exc):
                raise LeaseExpired(f"lease {lease_id} has expired or was revoked") from exc
            raise CoordinationError(f"etcd at {self._url}: cannot {what}: {exc}") from exc

    def _lease_id(self, lease: Lease | None) -> int:
        if lease is None:
            return 0
        if not isinstance(lease, EtcdLease) or lease.coordinator is not self:
            raise CoordinationError(f"lease {lease.id} was not granted by this coordinator")
        return lease.id

    async def _refresh(self, lease_id: int) -> None:
        await self._ready()
        with self._translated(f"refresh lease {lease_id}", lease_id):
            reply = await self._client.refresh_lease(lease_id)
        if reply is None or reply.TTL <= 0:
            raise LeaseExpired(f"lease {lease_id} has expired or was revoked")

    async def _revoke(self, lease_id: int) -> None:
        if self._closed:
            return  # revoke is cleanup, often in a finally: the lease will expire anyway
        try:
            await self._client.revoke_lease(lease_id)
        except _DRIVER_ERRORS as exc:
            if not _lease_gone(exc):
                raise CoordinationError(
                    f"etcd at {self._url}: cannot revoke lease {lease_id}: {exc}"
                ) from exc

    async def _revision(self) -> int:
        """The store's current revision (a linearizable read of an empty range)."""
        with self._translated("read the current revision"):
            found = await self._client.get_prefix(_PROBE, keys_only=True)
        return int(found.header.revision)

    async def _watch_stream(self, prefix: str, start: int) -> Any:
        """An aetcd watch of ``prefix`` from revision ``start`` (inclusive)."""
        stream = await self._client.watch_prefix(
            prefix.encode(), start_revision=start
        )
        return stream

    def _unwatch(self, watch: EtcdWatch) -> None:
        self._watches.discard(watch)
