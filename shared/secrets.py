"""The secret store: secret values kept encrypted in the event store (stream ``secrets``).

``SecretStore(store, box)`` sets, removes, lists and opens secrets; its box
(``shared.secretbox.SecretBox``) seals each value before it is appended, so only
ciphertext reaches the event store and, through the outbox, the bus. A store
without a box (the event manager, which needs only the names) can list but not set
or open.

``open_secret_store(settings, store)`` is how a service that opens values starts:
it loads the key (``CYCLONE_SECRET_KEY`` or the key file) and refuses, with a
``SecretKeyError`` naming the variable or the file, a key that cannot open the
secrets stored (``check``).

A secret's name is an environment variable's name (it is given to steps as one); its
value has at least ``MIN_SECRET`` characters (shorter ones could not be masked
without masking ordinary text).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

from shared import events as ev
from shared.errors import ConcurrencyConflict, StoreError
from shared.events import NewEvent
from shared.masking import MIN_SECRET
from shared.ports.eventstore import EventStore
from shared.projections.secrets import (
    SECRETS_STREAM,
    Secrets,
    SecretView,
    fold_secrets,
    visible,
)
from shared.secretbox import SecretBox, SecretKeyError
from shared.streamcache import StreamCache

__all__ = ["SECRET_NAME", "SecretStore", "check_secret", "open_secret_store"]

SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_VALUE = 64 * 1024  # an env variable; a bigger file belongs in an artifact


def check_secret(name: str, value: str | None = None) -> str:
    """Why ``name`` (and ``value``) cannot be a secret; "" when they can."""
    if not SECRET_NAME.match(name) or len(name) > 128:
        return (f"{name!r} is not an environment variable name (letters, digits and _, "
                "not starting with a digit)")
    if value is None:
        return ""
    if len(value) < MIN_SECRET:
        return (f"the value has {len(value)} characters: a secret needs at least "
                f"{MIN_SECRET}, because a shorter one cannot be masked in logs without "
                "masking ordinary text")
    if "\0" in value:
        return "the value holds a NUL character, which no environment variable can"
    if len(value) > _MAX_VALUE:
        return f"the value is longer than {_MAX_VALUE // 1024} KiB"
    return ""


class SecretStore:
    def __init__(self, store: EventStore, box: SecretBox | None = None) -> None:
        self.store = store
        self.box = box
        self._folds: StreamCache[dict[tuple[str, str], SecretView]] = StreamCache(
            store, fold_secrets, capacity=1)

    async def all(self) -> Secrets:
        return await self._folds.load(SECRETS_STREAM) or {}

    async def listed(self, scope: str) -> list[SecretView]:
        """The secrets of ``scope`` (a project, or "" for the global ones), by name."""
        return sorted((v for (s, _), v in (await self.all()).items() if s == scope),
                      key=lambda v: v.name)

    async def visible(self, project: str) -> dict[str, SecretView]:
        """What a run of ``project`` may ask for, by name (see ``projections.secrets``)."""
        return visible(await self.all(), project)

    async def set(self, scope: str, name: str, value: str, *, implicit: bool = False,
                  actor: str = "") -> SecretView:
        """Seal and record ``value``; ValueError saying why for a name or value refused."""
        problem = check_secret(name, value)
        if problem:
            raise ValueError(problem)
        sealed = self._box().seal(scope, name, value)
        await self._append(ev.SecretSet(scope=scope, name=name, ciphertext=sealed.ciphertext,
                                        key_id=sealed.key_id, implicit=implicit), actor)
        return (await self.all())[(scope, name)]

    async def remove(self, scope: str, name: str, *, actor: str = "") -> bool:
        if (scope, name) not in await self.all():
            return False
        await self._append(ev.SecretRemoved(scope=scope, name=name), actor)
        return True

    async def values(self, project: str, names: Collection[str] | None = None,
                     ) -> dict[str, str]:
        """The plaintext of the secrets ``names`` a run of ``project`` sees (all of them
        when None), by name; a name that is not there is left out."""
        box = self._box()
        found = await self.visible(project)
        return {name: box.open(view.scope, name, view.sealed) for name, view in found.items()
                if names is None or name in names}

    async def check(self) -> None:
        """SecretKeyError when a stored secret was sealed with a key the box lacks."""
        box = self._box()
        unknown = {v.sealed.key_id for v in (await self.all()).values()} - set(box.key_ids)
        if unknown:
            raise SecretKeyError(
                f"{box.source}: the stored secrets were sealed with key {min(unknown)}, "
                f"which it does not hold (its keys: {', '.join(box.key_ids)}); set the key "
                "they were made with (a rotated key file is kept as secret.key.old)")

    async def reseal(self, box: SecretBox, actor: str = "") -> int:
        """Seal every secret again with ``box``'s first key (opened with this store's
        box); returns how many. What ``cyclone secret rotate-key`` does."""
        count = 0
        first = box.key_ids[0]
        for (scope, name), view in sorted((await self.all()).items()):
            if view.sealed.key_id == first:
                continue
            value = self._box().open(scope, name, view.sealed)
            sealed = box.seal(scope, name, value)
            await self._append(ev.SecretSet(scope=scope, name=name,
                                            ciphertext=sealed.ciphertext,
                                            key_id=sealed.key_id, implicit=view.implicit),
                               actor)
            count += 1
        return count

    def _box(self) -> SecretBox:
        if self.box is None:
            raise RuntimeError("this SecretStore has no key: it lists secrets only")
        return self.box

    async def _append(self, event: ev.Event, actor: str) -> None:
        meta = {"actor": actor} if actor else {}
        for _ in range(50):
            last = await self.store.read_last(SECRETS_STREAM, 1)
            try:
                await self.store.append(SECRETS_STREAM, [NewEvent(event, meta=meta)],
                                        last[0].seq if last else 0)
                return
            except ConcurrencyConflict:
                continue
        raise StoreError(f"{SECRETS_STREAM}: gave up after 50 concurrent-append conflicts")


async def open_secret_store(variable: str, home: Path, store: EventStore) -> SecretStore:
    """The store with the key of ``CYCLONE_SECRET_KEY`` (``variable``) or of the key file
    under ``home``, checked against the stored secrets. With secrets stored and neither
    a variable nor a file, no key is made up: it could not open them."""
    secrets = SecretStore(store)
    stored = bool(await secrets.all())
    secrets.box = SecretBox.load(variable, home, create=not stored)
    await secrets.check()
    return secrets
