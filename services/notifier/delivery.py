"""Delivering one notification exactly once in effect: claim, send with retries, record.

A notification is identified by its idempotency key ``<run>/<moment>/<rule>/<channel>``
and its outcome is recorded in a stream (the run's, or a notification test's) as
``NotificationSent`` or ``NotificationFailed``. ``Deliverer.deliver``:

1. claims ``cyclone/notifying/<key>`` (``shared.keys.notifying_key``) in the
   coordination service, bound to this replica's lease; while another live replica
   holds the claim it waits for the claim to go (sent and recorded, or that replica
   died and its lease expired) and claims again;
2. returns (releasing the claim) when the stream already records the key (a
   redelivered event, a restarted notifier, another replica that got there first);
3. sends, retrying what may pass (timeouts, 5xx, SMTP 4xx) with exponential backoff
   up to ``attempts`` tries, and records the outcome; a channel that refuses for good
   (a 4xx, SMTP 5xx, a bad template) is recorded as failed at once;
4. releases the claim.

The guarantee. Every notification due is sent or recorded as failed, whatever dies
(the consumer commits an event only once its notifications are recorded). A
notification is never sent again once it is recorded. The one gap: a notifier that
dies after the channel accepted a message and before the record is stored (a few
milliseconds) leaves it unrecorded, and the next delivery sends it again. That copy
carries the same key - the mail's ``Message-ID``, the generic webhook's
``Idempotency-Key`` - so a mail client or a receiver that checks the key shows it
once; Slack, Mattermost and Discord webhooks have no such key, and show it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from services.notifier.message import SendError
from shared import events as ev
from shared.events import decode
from shared.keys import notifying_key
from shared.pipeline.notify import Channel
from shared.ports.coordination import Coordinator, Lease
from shared.ports.eventstore import EventStore
from shared.retry import Backoff, keep_alive, retrying
from shared.runstream import append_to_stream

__all__ = ["Deliverer", "Notification", "Send", "recorded_keys"]

log = logging.getLogger(__name__)

Send = Callable[["Notification"], Awaitable[None]]  # raises SendError


@dataclass(frozen=True)
class Notification:
    """One notification to deliver, recorded in ``stream`` under ``key``: ``channel``
    as the rule wrote it (its id and how it is shown go into the record), ``send_to``
    the same channel with its ``${VAR}``s replaced (the URL and key to use)."""

    stream: str
    key: str
    rule: str
    channel: Channel
    send_to: Channel
    moment: str
    reason: str
    payload: object  # what the channel's sender takes (a Summary and its templates)


def recorded_keys(events: list[ev.RecordedEvent]) -> set[str]:
    """The idempotency keys whose outcome ``events`` record."""
    keys: set[str] = set()
    for recorded in events:
        event = decode(recorded)
        if isinstance(event, ev.NotificationSent | ev.NotificationFailed):
            keys.add(event.key)
    return keys


class Deliverer:
    """See the module docstring. ``send(notification)`` does one try and raises
    ``SendError`` when it does not go through."""

    def __init__(self, store: EventStore, coord: Coordinator, send: Send, *, me: str,
                 attempts: int = 6, first_delay: float = 2.0, max_delay: float = 60.0,
                 claim_ttl: float = 10.0) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.store = store
        self.coord = coord
        self.send = send
        self.me = me
        self.attempts = attempts
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.claim_ttl = claim_ttl
        self._lease: Lease | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._lease_lock = asyncio.Lock()
        self.sent = 0  # notifications this replica sent (a metric)
        self.failed = 0

    async def deliver(self, note: Notification, attempts: int | None = None) -> None:
        claim = notifying_key(note.key)
        while not await self.coord.create(claim, self.me.encode(), await self._own_lease()):
            await self._until_released(claim)
        try:
            if await self._is_recorded(note):
                return
            outcome = await self._send_with_retries(note, attempts or self.attempts)
            await retrying(lambda: self._record(note, outcome), "recording a notification")
        finally:
            with contextlib.suppress(Exception):  # the lease ends it anyway
                await self.coord.delete(claim)

    async def close(self) -> None:
        """Give up the claims (revoke the lease): what was not recorded is sent again by
        whoever gets its event next."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(BaseException):
                await self._keeper
        if self._lease is not None:
            with contextlib.suppress(Exception):
                await self._lease.revoke()
        self._lease = self._keeper = None

    async def _own_lease(self) -> Lease:
        """This replica's lease for its claims, kept alive in the background; a new one
        when the old one was lost (etcd was away longer than its TTL)."""
        async with self._lease_lock:
            if self._lease is None or self._keeper is None or self._keeper.done():
                self._lease = await self.coord.grant_lease(self.claim_ttl)
                self._keeper = asyncio.create_task(keep_alive(self._lease),
                                                   name="notifier-claims-lease")
                self._keeper.add_done_callback(_lease_ended)
            return self._lease

    async def _until_released(self, claim: str) -> None:
        """Wait until nobody holds ``claim`` (its holder recorded, or its lease expired)."""
        watch = self.coord.watch(claim)
        try:
            if await self.coord.get(claim) is None:
                return
            async for change in watch:
                if change.kind == "delete" and change.key == claim:
                    return
        finally:
            await watch.aclose()

    async def _is_recorded(self, note: Notification) -> bool:
        return note.key in recorded_keys(await self.store.read(note.stream))

    async def _send_with_retries(self, note: Notification, attempts: int) -> ev.Event:
        backoff = Backoff(self.first_delay, self.max_delay)
        error, tried = "", 0
        while tried < attempts:
            tried += 1
            try:
                await self.send(note)
            except SendError as exc:
                error = exc.reason
                log.warning("notification not accepted", extra=_fields(
                    note, attempt=tried, error=error, retry=exc.retry))
                if not exc.retry:
                    break
                if tried < attempts:
                    await asyncio.sleep(backoff.next_delay())  # backoff, not synchronisation
                continue
            self.sent += 1
            log.info("notification sent", extra=_fields(note, attempt=tried))
            return ev.NotificationSent(key=note.key, rule=note.rule, channel=note.channel.id,
                                       target=note.channel.shown, moment=note.moment,
                                       reason=note.reason, attempt=tried)
        self.failed += 1
        return ev.NotificationFailed(key=note.key, rule=note.rule, channel=note.channel.id,
                                     target=note.channel.shown, moment=note.moment,
                                     reason=note.reason, error=error, attempts=tried)

    async def _record(self, note: Notification, outcome: ev.Event) -> None:
        """Append ``outcome`` at the stream's end, whatever else is being appended to it
        (a key already recorded cannot happen while the claim is held; harmless if it does)."""
        def record(events: list[ev.RecordedEvent]) -> list[ev.Event]:
            return [] if note.key in recorded_keys(events) else [outcome]

        await append_to_stream(self.store, note.stream, record)


def _lease_ended(keeper: asyncio.Task[None]) -> None:
    if not keeper.cancelled() and keeper.exception() is not None:
        log.warning("the notifier's claims lease was lost; taking a new one",
                    extra={"error": str(keeper.exception())})


def _fields(note: Notification, **more: object) -> Mapping[str, object]:
    return {"stream": note.stream, "notification": note.key, "channel": note.channel.id,
            "target": note.channel.shown, **more}
