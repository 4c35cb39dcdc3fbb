"""Coordination port: a small key-value space with leases, create-if-absent and watches.

It is what etcd gives, reduced to what Cyclone needs: worker registration
(a key bound to a lease), job claims (``create`` succeeds for one caller only),
per-project concurrency slots, and cancel signals that running workers watch.

Contract (every adapter; ``tests/contracts/coordination.py`` checks it):

* ``grant_lease(ttl)`` returns a lease that expires ``ttl`` seconds after its last
  ``refresh()``; when it expires or is revoked, every key bound to it is deleted
  (and watchers see the deletion). ``refresh`` on an expired lease raises
  ``LeaseExpired``.
* ``create(key, value, lease)`` writes the key only if it does not exist and
  returns whether it did; atomic across all clients.
* ``put`` overwrites; ``get`` returns the value or ``None``; ``delete`` returns
  whether the key existed; ``get_prefix`` returns ``{key: value}``.
* ``watch(prefix)`` yields a ``WatchEvent`` for every later put or delete of a key
  under ``prefix`` (from the moment ``watch`` is called), in order, until its
  ``aclose()`` or the coordinator's ``close()``.
* ``close()`` ends every watch and is safe to call twice.
* Safe for concurrent use; errors are ``CoordinationError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["Coordinator", "Lease", "Watch", "WatchEvent"]


@dataclass(frozen=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    key: str
    value: bytes | None


class Watch(Protocol):
    def __aiter__(self) -> AsyncIterator[WatchEvent]: ...

    async def __anext__(self) -> WatchEvent: ...

    async def aclose(self) -> None: ...


class Lease(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def ttl(self) -> float: ...

    async def refresh(self) -> None: ...

    async def revoke(self) -> None: ...


class Coordinator(Protocol):
    async def grant_lease(self, ttl: float) -> Lease: ...

    async def create(self, key: str, value: bytes, lease: Lease | None = None) -> bool: ...

    async def put(self, key: str, value: bytes, lease: Lease | None = None) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def get_prefix(self, prefix: str) -> dict[str, bytes]: ...

    async def delete(self, key: str) -> bool: ...

    def watch(self, prefix: str) -> Watch: ...

    async def close(self) -> None: ...
