"""LogServer's live tail: followers that keep up get new lines from memory, not from the
store; whoever falls behind it, joins late, or follows lines another writer stored reads
the store instead, and every line arrives once, in order. The tail stays bounded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from services.logserver import service
from services.logserver.service import CHUNK_CHARS, CHUNK_LINES, LogServer, _Tail
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.logstore.files import FileLogStore
from shared.ports.bus import TOPIC_LOGS
from shared.ports.logstore import LogLine, StoredLine
from shared.wire import encode_log_batch
from tests.support import HANG_S, eventually

TIMEOUT = HANG_S  # only catches a hang
TS = "2024-05-01T12:00:00.000000+00:00"


def lines_of(texts: Sequence[str]) -> list[LogLine]:
    return [LogLine("build", "test", "stdout", TS, text) for text in texts]


class CountingStore(FileLogStore):
    """A FileLogStore that counts the lines its readers were given."""

    read_lines = 0

    async def read(self, run_id: str, from_index: int = 0) -> AsyncIterator[StoredLine]:
        async for stored in super().read(run_id, from_index):
            self.read_lines += 1
            yield stored


class Follower:
    """Follows a run through ``server.follow`` until ``done`` and ``expected`` lines."""

    def __init__(self, server: LogServer, run_id: str, expected: int,
                 per_chunk_delay: float = 0.0) -> None:
        self.got: list[StoredLine] = []
        self.done = False
        self.idle = asyncio.Event()  # set each time it has read everything and waits
        self.expected = expected
        self.delay = per_chunk_delay
        self.task = asyncio.create_task(self._follow(server, run_id))

    async def _is_complete(self, next_index: int) -> bool:
        self.idle.set()
        return self.done and next_index >= self.expected

    async def _follow(self, server: LogServer, run_id: str) -> None:
        chunks = server.follow_chunks(run_id, 0, self._is_complete)
        async for chunk in chunks:
            self.got.extend(chunk)
            if self.delay and chunk:
                await asyncio.sleep(self.delay)

    async def end(self) -> list[StoredLine]:
        self.done = True
        async with asyncio.timeout(TIMEOUT):
            await self.task
        return self.got


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[MemoryBus, CountingStore, LogServer]]:
    bus = MemoryBus()
    logs = CountingStore(tmp_path / "logs")
    server = LogServer(bus, logs, recheck_s=0.05)
    consumer = asyncio.create_task(server.run())
    try:
        yield bus, logs, server
    finally:
        consumer.cancel()
        await asyncio.wait({consumer})
        await bus.close()
        await logs.close()


async def publish(bus: MemoryBus, run_id: str, texts: Sequence[str],
                  batch_id: str | None = None) -> None:
    value = encode_log_batch(run_id, batch_id or uuid.uuid4().hex, lines_of(texts))
    await bus.publish(TOPIC_LOGS, run_id, value)


def check_every_line_once(got: list[StoredLine], texts: list[str]) -> None:
    assert [s.index for s in got] == list(range(len(texts)))
    assert [s.line.text for s in got] == texts


async def test_a_follower_that_keeps_up_gets_new_lines_from_the_tail(
    setup: tuple[MemoryBus, CountingStore, LogServer],
) -> None:
    bus, logs, server = setup
    # No timed re-check meanwhile: under load one can land between the store's append
    # and the tail's, and rightly read those lines from the store.
    server.recheck_s = TIMEOUT
    follower = Follower(server, "r1", expected=2000)
    texts = [f"line {n}" for n in range(2000)]
    for at in range(0, 2000, 100):
        await asyncio.wait_for(follower.idle.wait(), TIMEOUT)
        follower.idle.clear()
        await publish(bus, "r1", texts[at:at + 100])
    await asyncio.wait_for(follower.idle.wait(), TIMEOUT)  # it has the last batch
    follower.done = True
    server.wake("r1")  # instead of the re-check: asks the follower whether it is done
    got = await follower.end()

    check_every_line_once(got, texts)
    assert logs.read_lines == 0  # each pass still looks at the store: nothing new there


async def test_a_follower_behind_the_tail_reads_the_store_and_misses_nothing(
    setup: tuple[MemoryBus, CountingStore, LogServer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "TAIL_LINES", 120)
    bus, logs, server = setup
    texts = [f"line {n}" for n in range(3000)]
    follower = Follower(server, "r1", expected=len(texts), per_chunk_delay=0.005)
    await asyncio.wait_for(follower.idle.wait(), TIMEOUT)
    tail = server._wakeups["r1"].tail
    for at in range(0, len(texts), 50):
        await publish(bus, "r1", texts[at:at + 50])
        await asyncio.sleep(0.001)
        assert len(tail.lines) <= 120
    got = await follower.end()

    check_every_line_once(got, texts)
    assert logs.read_lines > 0  # it did fall behind


async def test_lines_another_writer_stored_are_followed_in_order(
    setup: tuple[MemoryBus, CountingStore, LogServer],
) -> None:
    bus, logs, server = setup
    follower = Follower(server, "r1", expected=90)
    texts = [f"line {n}" for n in range(90)]
    for at in range(0, 90, 30):
        await asyncio.wait_for(follower.idle.wait(), TIMEOUT)
        follower.idle.clear()
        await publish(bus, "r1", texts[at:at + 10])  # this server, then the tail has a gap
        await eventually(lambda: len(follower.got) >= at + 10, timeout=TIMEOUT)  # noqa: B023
        await logs.append("r1", lines_of(texts[at + 10:at + 20]), uuid.uuid4().hex)
        server.wake("r1")  # what a stored notice from the other writer does
        await publish(bus, "r1", texts[at + 20:at + 30])
    got = await follower.end()

    check_every_line_once(got, texts)


async def test_lines_another_writer_stored_without_a_notice_are_found_at_a_re_check(
    setup: tuple[MemoryBus, CountingStore, LogServer],
) -> None:
    bus, logs, server = setup  # the server re-checks every 0.05 s
    follower = Follower(server, "r1", expected=20)
    texts = [f"line {n}" for n in range(20)]
    await publish(bus, "r1", texts[:10])
    await eventually(lambda: len(follower.got) == 10, timeout=TIMEOUT)
    await logs.append("r1", lines_of(texts[10:]), uuid.uuid4().hex)  # its notice is lost
    got = await follower.end()

    check_every_line_once(got, texts)


async def test_a_redelivered_batch_reaches_a_follower_once(
    setup: tuple[MemoryBus, CountingStore, LogServer],
) -> None:
    bus, _, server = setup
    follower = Follower(server, "r1", expected=30)
    texts = [f"line {n}" for n in range(30)]
    await publish(bus, "r1", texts[:10], batch_id="b1")
    await publish(bus, "r1", texts[:10], batch_id="b1")  # the bus delivers it again
    await publish(bus, "r1", texts[10:20], batch_id="b2")
    await publish(bus, "r1", texts[10:20], batch_id="b2")
    await publish(bus, "r1", texts[20:], batch_id="b3")
    got = await follower.end()

    check_every_line_once(got, texts)


async def test_the_tail_goes_with_the_last_follower(
    setup: tuple[MemoryBus, CountingStore, LogServer],
) -> None:
    bus, _, server = setup
    follower = Follower(server, "r1", expected=5)
    await publish(bus, "r1", ["a", "b", "c", "d", "e"])
    await follower.end()

    await publish(bus, "r1", ["not followed"])
    assert not server._wakeups  # nothing kept for a run nobody follows


# --- _Tail ----------------------------------------------------------------------------------


def test_the_tail_keeps_contiguous_lines_and_starts_afresh_after_a_gap() -> None:
    tail = _Tail()
    tail.add(0, lines_of(["a", "b"]))
    tail.add(2, lines_of(["c"]))
    tail.add(0, lines_of(["a", "b"]))  # redelivered: stored at 0 before
    assert [(s.index, s.line.text) for s in tail.chunk(0)] == [(0, "a"), (1, "b"), (2, "c")]
    assert tail.chunk(3) == [] and not tail.holds(3)

    tail.add(7, lines_of(["h"]))  # 3 .. 6 were stored by someone else

    assert (tail.start, tail.end) == (7, 8)
    assert tail.chunk(2) == [] and not tail.holds(2)
    assert [s.index for s in tail.chunk(7)] == [7]


def test_a_tail_that_joins_late_starts_at_its_first_batch() -> None:
    tail = _Tail()
    tail.add(500, lines_of(["x", "y"]))
    assert (tail.start, tail.end) == (500, 502)
    assert not tail.holds(0)


def test_the_tail_is_bounded_by_lines_and_by_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "TAIL_LINES", 100)
    monkeypatch.setattr(service, "TAIL_CHARS", 1000)
    tail = _Tail()
    for first in range(0, 1000, 10):
        tail.add(first, lines_of(["x"] * 10))
        assert len(tail.lines) <= 100
        assert tail.start + len(tail.lines) == tail.end == first + 10
    assert len(tail.lines) >= 50  # trimmed to half, not emptied

    long = _Tail()
    for first in range(0, 100, 2):
        long.add(first, lines_of(["y" * 150] * 2))
        assert long.chars[-1] - long.chars[0] <= 1000
    assert [s.index for s in long.chunk(long.start)] == list(range(long.start, 100))


def test_a_tail_chunk_is_at_most_chunk_lines_or_chunk_chars() -> None:
    tail = _Tail()
    tail.add(0, lines_of(["s"] * (CHUNK_LINES + 10)))
    assert len(tail.chunk(0)) == CHUNK_LINES
    assert len(tail.chunk(CHUNK_LINES)) == 10

    big = _Tail()
    size = CHUNK_CHARS // 4 + 1  # four of these pass CHUNK_CHARS: the fourth ends a chunk
    big.add(0, lines_of(["z" * size] * 10))
    assert [s.index for s in big.chunk(0)] == [0, 1, 2, 3]
    assert [s.index for s in big.chunk(4)] == [4, 5, 6, 7]
    assert [s.index for s in big.chunk(8)] == [8, 9]
