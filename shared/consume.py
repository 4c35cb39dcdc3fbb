"""The one consumer loop every service uses: handle a message, then commit it.

Committing only after ``handle`` returns gives at-least-once processing: a crash
mid-way redelivers the message, so every ``handle`` must be idempotent.

The loop outlives outages. When the bus fails, or ``handle`` fails because Kafka,
etcd or MongoDB is away (``shared.retry.is_transient``), the subscription is
dropped without committing and opened again after a backoff: the group hands the
uncommitted messages out again, to this member or another. Other errors end the
loop (a bug is not retried forever); so does a closed bus.

With ``concurrency`` > 1, up to that many messages are handled at once (for
handlers that wait on the outside world, like the notifier's deliveries), still in
order per key: a message waits for the one before it with the same key. A
partition is committed up to the last message before which every message is done,
so a crash redelivers exactly the messages not yet handled (and perhaps some that
were: handlers are idempotent anyway). The first handler error ends the
subscription as above; the other handlers in flight are cancelled.

With ``commit_behind=True`` (one message at a time), a message's commit does not hold
up the next message: commits run one after the other in the background, each for the
newest message handled by then, so a busy consumer commits every few messages instead
of paying a broker round trip (~10 ms on Kafka) for each. At-least-once holds all the
same: a crash redelivers what was handled but not yet committed (a few more messages),
which idempotent handlers take in their stride. What the log server uses: its batches
come faster than one commit a batch allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from shared.errors import BusError
from shared.ports.bus import Bus, Message, Subscription
from shared.retry import Backoff, is_transient

__all__ = ["consume"]

log = logging.getLogger(__name__)
T = TypeVar("T")


Handler = Callable[[Message], Awaitable[None]]


async def consume(bus: Bus, topic: str, group: str, handle: Handler,
                  concurrency: int = 1, commit_behind: bool = False,
                  subscribed: Callable[[], None] = lambda: None) -> None:
    """``subscribed`` is called each time the group is joined, before any message is
    handled (what has been published since then reaches the group)."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if commit_behind and concurrency > 1:
        raise ValueError("commit_behind is for one message at a time")
    backoff = Backoff()
    while True:
        try:
            await _consume_once(bus, topic, group, handle, backoff, concurrency,
                                commit_behind, subscribed)
            return  # the bus was closed: iteration ended
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = backoff.next_delay()
            log.warning("consumer interrupted; subscribing again", extra={
                "topic": topic, "group": group, "error": str(exc),
                "retry_in_s": round(delay, 2)})
        await asyncio.sleep(delay)


async def _consume_once(bus: Bus, topic: str, group: str, handle: Handler,
                        backoff: Backoff, concurrency: int, commit_behind: bool,
                        subscribed: Callable[[], None]) -> None:
    sub = await bus.subscribe(topic, group)
    subscribed()
    committer = _CommitBehind(sub) if commit_behind else None
    try:
        if concurrency > 1:
            await _Window(sub, handle, concurrency, backoff).run()
            return
        async for message in sub:
            await handle(message)
            if committer is None:
                await sub.commit(message)
            else:
                committer.handled(message)
            backoff.reset()
    finally:
        if committer is not None:
            await committer.close()
        with contextlib.suppress(BusError):  # leaving a broken connection may fail too
            await sub.close()


class _CommitBehind:
    """Commits in the background, one at a time, each for the newest message handled."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.latest: Message | None = None
        self.task: asyncio.Task[None] | None = None

    def handled(self, message: Message) -> None:
        self.latest = message
        if self.task is None or self.task.done():
            if self.task is not None:
                self.task.result()  # a failed commit ends the subscription
            self.task = asyncio.create_task(self._commit())

    async def _commit(self) -> None:
        while self.latest is not None:
            message, self.latest = self.latest, None
            await self.sub.commit(message)

    async def close(self) -> None:
        """Let the commit in flight (and the one it is behind) finish; its failure is
        the subscription's end anyway."""
        if self.task is not None:
            with contextlib.suppress(BusError, asyncio.CancelledError):
                await self.task



def _retrieve(task: asyncio.Future[Any]) -> None:
    """Take a finished task's outcome, so that asyncio does not report it as unretrieved."""
    if not task.cancelled():
        task.exception()


class _Window:
    """Handles up to ``limit`` messages of ``sub`` at once; see the module docstring."""

    def __init__(self, sub: Subscription, handle: Handler, limit: int, backoff: Backoff) -> None:
        self.sub = sub
        self.handle = handle
        self.backoff = backoff
        self.slots = asyncio.Semaphore(limit)
        self.taken: dict[int, deque[Message]] = {}  # per partition, in offset order
        self.done: set[tuple[int, int]] = set()  # (partition, offset) handled
        self.committed: dict[int, int] = {}
        self.last_of_key: dict[str, asyncio.Task[None]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.commit_lock = asyncio.Lock()

    async def run(self) -> None:
        messages = aiter(self.sub)
        try:
            while True:
                await self._wait_for(self.slots.acquire())
                try:
                    message = await self._wait_for(anext(messages))
                except StopAsyncIteration:
                    await self._wait_for(self._drain())
                    return
                self._start(message)
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            if self.failed.done():
                self.failed.exception()  # retrieved: re-raised by _wait_for already

    async def _wait_for(self, step: Awaitable[T]) -> T:
        """``await step``, unless a handler fails first: then raise its error."""
        task = asyncio.ensure_future(step)
        racing: list[asyncio.Future[Any]] = [task, self.failed]
        try:
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled (a shutdown): the step must not outlive us
            task.cancel()
            task.add_done_callback(_retrieve)
            raise
        if self.failed.done() and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await task
        if self.failed.done():
            self.failed.result()  # raises the handler's error
        return task.result()

    async def _drain(self) -> None:
        while self.tasks:
            await asyncio.wait(list(self.tasks))

    def _start(self, message: Message) -> None:
        self.taken.setdefault(message.partition, deque()).append(message)
        before = self.last_of_key.get(message.key)
        task = asyncio.create_task(self._handle(message, before))
        self.tasks.add(task)
        self.last_of_key[message.key] = task
        task.add_done_callback(lambda done: self._forget(message.key, done))

    def _forget(self, key: str, done: asyncio.Task[None]) -> None:
        self.tasks.discard(done)
        if self.last_of_key.get(key) is done:
            del self.last_of_key[key]

    async def _handle(self, message: Message, before: asyncio.Task[None] | None) -> None:
        try:
            if before is not None:
                await asyncio.wait([before])  # same key: keep the publish order
            await self.handle(message)
            self.done.add((message.partition, message.offset))
            await self._commit_ready(message.partition)
            self.backoff.reset()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self.failed.done():
                self.failed.set_exception(exc)
        finally:
            self.slots.release()

    async def _commit_ready(self, partition: int) -> None:
        async with self.commit_lock:
            queue, last = self.taken[partition], None
            while queue and (partition, queue[0].offset) in self.done:
                last = queue.popleft()
                self.done.discard((partition, last.offset))
            if last is not None and last.offset > self.committed.get(partition, -1):
                await self.sub.commit(last)
                self.committed[partition] = last.offset
