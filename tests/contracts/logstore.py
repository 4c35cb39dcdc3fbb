"""The LogStore contract (``shared/ports/logstore.py``), run against every adapter.

Subclass ``LogStoreContract`` as ``Test<Adapter>`` and provide two fixtures:

* ``logs``: an open log store (closed by the fixture afterwards);
* ``reopen``: an async callable that closes the store it is given and returns a new
  one on the same storage (the fixture closes what it returned).

Run ids are unique per test, so an adapter may share its storage between tests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from shared.ports.logstore import LogLine, LogStore, StoredLine

__all__ = ["LogStoreContract", "ReopenLogs", "lines_of", "run_id"]

ReopenLogs = Callable[[LogStore], Awaitable[LogStore]]


def run_id() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"


def lines_of(*texts: str, job: str = "build", step: str = "test") -> list[LogLine]:
    return [
        LogLine(job=job, step=step, stream="stderr" if "err" in t else "stdout",
                ts=f"2024-05-01T12:00:{n % 60:02d}.000000+00:00", text=t)
        for n, t in enumerate(texts)
    ]


async def read_all(logs: LogStore, run: str, from_index: int = 0) -> list[StoredLine]:
    return [stored async for stored in logs.read(run, from_index)]


class LogStoreContract:
    @pytest.fixture
    async def logs(self) -> AsyncIterator[LogStore]:
        raise NotImplementedError("subclass provides the logs fixture")
        yield  # pragma: no cover

    @pytest.fixture
    def reopen(self) -> ReopenLogs:
        raise NotImplementedError("subclass provides the reopen fixture")

    async def test_indices_are_contiguous_across_batches(self, logs: LogStore) -> None:
        run = run_id()
        first = lines_of("cloning", "building ✓ ünïcødé 🚀", "err: warning")
        second = lines_of("tab\there", "", job="deploy", step="push")

        assert await logs.append(run, first, batch_id="b1") == 0
        assert await logs.append(run, second, batch_id="b2") == 3

        stored = await read_all(logs, run)
        assert [s.index for s in stored] == [0, 1, 2, 3, 4]
        assert [s.line for s in stored] == first + second
        assert stored[2].line.stream == "stderr"

    async def test_same_batch_twice_is_stored_once(
        self, logs: LogStore, reopen: ReopenLogs
    ) -> None:
        run = run_id()
        await logs.append(run, lines_of("a", "b"), batch_id="b1")
        await logs.append(run, lines_of("c"), batch_id="b2")

        assert await logs.append(run, lines_of("a", "b"), batch_id="b1") == 0
        assert await logs.count(run) == 3

        again = await reopen(logs)
        assert await again.append(run, lines_of("c"), batch_id="b2") == 2
        assert await again.append(run, lines_of("d"), batch_id="b3") == 3
        assert [s.line.text for s in await read_all(again, run)] == ["a", "b", "c", "d"]

    async def test_lines_survive_reopen(self, logs: LogStore, reopen: ReopenLogs) -> None:
        run = run_id()
        await logs.append(run, lines_of("a", "b"), batch_id="b1")

        again = await reopen(logs)

        assert await again.count(run) == 2
        assert [s.line.text for s in await read_all(again, run)] == ["a", "b"]
        assert await again.append(run, lines_of("c"), batch_id="b2") == 2

    @pytest.mark.parametrize("start", [0, 1, 999, 1000, 1001, 2345, 2499, 2500, 9999])
    async def test_read_from_index(self, logs: LogStore, start: int) -> None:
        run = run_id()
        for batch in range(5):
            texts = [f"line {batch * 500 + n}" for n in range(500)]
            await logs.append(run, lines_of(*texts), batch_id=f"b{batch}")

        stored = await read_all(logs, run, from_index=start)

        assert [s.index for s in stored] == list(range(start, 2500))
        assert [s.line.text for s in stored] == [f"line {n}" for n in range(start, 2500)]

    async def test_read_from_index_after_reopen(
        self, logs: LogStore, reopen: ReopenLogs
    ) -> None:
        run = run_id()
        for batch in range(3):
            texts = [f"line {batch * 900 + n}" for n in range(900)]
            await logs.append(run, lines_of(*texts), batch_id=f"b{batch}")

        again = await reopen(logs)

        for start in (0, 1000, 1999, 2001, 2699):
            stored = await read_all(again, run, from_index=start)
            assert [s.line.text for s in stored] == [f"line {n}" for n in range(start, 2700)]

    async def test_count(self, logs: LogStore) -> None:
        run = run_id()
        assert await logs.count(run) == 0
        await logs.append(run, lines_of("a", "b"), batch_id="b1")
        await logs.append(run, lines_of("c"), batch_id="b2")
        assert await logs.count(run) == 3

    async def test_unknown_run_reads_nothing(self, logs: LogStore) -> None:
        assert await read_all(logs, run_id()) == []

    async def test_delete_removes_the_lines(self, logs: LogStore) -> None:
        run, kept = run_id(), run_id()
        await logs.append(run, lines_of("a", "b"), batch_id="b1")
        await logs.append(kept, lines_of("k"), batch_id="b1")

        await logs.delete(run)

        assert await logs.count(run) == 0
        assert await read_all(logs, run) == []
        assert [s.line.text for s in await read_all(logs, kept)] == ["k"]
        assert await logs.append(run, lines_of("new"), batch_id="b2") == 0
        await logs.delete(run_id())  # deleting an unknown run is fine

    async def test_concurrent_appends_keep_batches_whole(self, logs: LogStore) -> None:
        run = run_id()
        firsts = await asyncio.gather(*(
            logs.append(run, lines_of(*(f"w{w}-{n}" for n in range(50))), batch_id=f"w{w}")
            for w in range(20)
        ))

        stored = await read_all(logs, run)
        assert [s.index for s in stored] == list(range(1000))
        assert sorted(firsts) == list(range(0, 1000, 50))
        for w, first in enumerate(firsts):
            batch = [s.line.text for s in stored[first:first + 50]]
            assert batch == [f"w{w}-{n}" for n in range(50)]

    async def test_reader_of_a_long_log_yields_every_line_in_order(
        self, logs: LogStore
    ) -> None:
        run = run_id()
        total, per_batch = 200_000, 10_000
        for b in range(total // per_batch):
            texts = [f"{b * per_batch + n}" for n in range(per_batch)]
            await logs.append(run, lines_of(*texts), batch_id=f"b{b}")

        expected = 0
        async for stored in logs.read(run):
            assert stored.index == expected
            assert stored.line.text == str(expected)
            expected += 1

        assert expected == total
