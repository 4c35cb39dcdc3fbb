"""FileLogStore: the LogStore contract, plus crash repair, path safety and bounded memory."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.adapters.logstore.files import FileLogStore
from shared.errors import StoreError
from shared.ports.logstore import LogStore
from tests.contracts.logstore import LogStoreContract, ReopenLogs, lines_of, read_all, run_id


class TestFileLogStore(LogStoreContract):
    @pytest.fixture
    async def logs(self, tmp_path: Path) -> AsyncIterator[LogStore]:
        logs = FileLogStore(tmp_path / "logs")
        yield logs
        await logs.close()

    @pytest.fixture
    async def reopen(self, tmp_path: Path) -> AsyncIterator[ReopenLogs]:
        opened: list[FileLogStore] = []

        async def reopen(old: LogStore) -> LogStore:
            await old.close()
            opened.append(FileLogStore(tmp_path / "logs"))
            return opened[-1]

        yield reopen
        for logs in opened:
            await logs.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "logs"


async def write_then_close(root: Path, run: str) -> None:
    logs = FileLogStore(root)
    await logs.append(run, lines_of("a", "b", "c"), batch_id="b1")
    await logs.append(run, lines_of("d", "e"), batch_id="b2")
    await logs.close()


async def reopened_texts(root: Path, run: str) -> tuple[int, int, list[str]]:
    """(count, index of a new batch, every text) as seen by a fresh store."""
    logs = FileLogStore(root)
    try:
        count = await logs.count(run)
        index = await logs.append(run, lines_of("after"), batch_id="b3")
        texts = [s.line.text for s in await read_all(logs, run)]
    finally:
        await logs.close()
    return count, index, texts


async def test_a_half_written_last_line_is_repaired_on_reopen(root: Path) -> None:
    run = run_id()
    await write_then_close(root, run)
    with open(root / f"{run}.ndjson", "ab") as file:  # the crash: half a JSON line
        file.write(b'{"i":5,"job":"build","step":"test","stream":"std')

    count, index, texts = await reopened_texts(root, run)

    assert (count, index) == (5, 5)
    assert texts == ["a", "b", "c", "d", "e", "after"]
    for raw in (root / f"{run}.ndjson").read_text().splitlines():
        json.loads(raw)  # every line of the repaired file is whole


async def test_a_batch_cut_before_its_marker_is_dropped_and_can_be_redelivered(
    root: Path,
) -> None:
    run = run_id()
    await write_then_close(root, run)
    with open(root / f"{run}.ndjson", "ab") as file:  # whole lines, marker never written
        file.write(b'{"i":5,"job":"build","step":"test","stream":"stdout",'
                   b'"ts":"2024-05-01T12:00:00+00:00","text":"lost"}\n')

    count, index, texts = await reopened_texts(root, run)

    assert (count, index) == (5, 5)
    assert texts == ["a", "b", "c", "d", "e", "after"]


async def test_redelivered_batch_is_recognised_after_restart(root: Path) -> None:
    run = run_id()
    await write_then_close(root, run)
    logs = FileLogStore(root)
    try:
        assert await logs.append(run, lines_of("d", "e"), batch_id="b2") == 3
        assert await logs.count(run) == 5
    finally:
        await logs.close()


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", "", "run.1", "run\n", "ä"])
async def test_run_ids_cannot_leave_the_root(root: Path, bad: str) -> None:
    logs = FileLogStore(root)
    try:
        with pytest.raises(StoreError, match="invalid run id"):
            await logs.append(bad, lines_of("x"), batch_id="b1")
        with pytest.raises(StoreError, match="invalid run id"):
            await read_all(logs, bad)
        with pytest.raises(StoreError, match="invalid run id"):
            await logs.delete(bad)
    finally:
        await logs.close()
    assert not root.parent.joinpath("escape.ndjson").exists()


async def test_reading_a_long_log_does_not_load_it_into_memory(root: Path) -> None:
    run = run_id()
    logs = FileLogStore(root)
    try:
        for b in range(10):
            texts = [f"{b}-{n} " + "x" * 200 for n in range(10_000)]  # about 25 MB in all
            await logs.append(run, lines_of(*texts), batch_id=f"b{b}")
        tracemalloc.start()
        try:
            seen = 0
            async for _ in logs.read(run, 5):
                seen += 1
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        await logs.close()

    assert seen == 100_000 - 5
    assert peak < 8 * 1024 * 1024, f"reader peaked at {peak / 1e6:.1f} MB"


async def test_reader_picks_up_lines_appended_while_it_reads(root: Path) -> None:
    run = run_id()
    logs = FileLogStore(root)
    try:
        await logs.append(run, lines_of("a"), batch_id="b1")
        seen = []
        async for stored in logs.read(run):
            seen.append(stored.line.text)
            if stored.index == 0:
                await logs.append(run, lines_of("b"), batch_id="b2")
    finally:
        await logs.close()

    assert seen == ["a", "b"]


async def test_calls_after_close_are_store_errors(root: Path) -> None:
    logs = FileLogStore(root)
    await logs.close()

    with pytest.raises(StoreError, match="closed"):
        await logs.append(run_id(), lines_of("x"), batch_id="b1")


async def test_a_cancelled_append_leaves_the_log_consistent(root: Path) -> None:
    run = run_id()
    logs = FileLogStore(root)
    try:
        for k in range(40):  # cancel at a different point of the append each time
            task = asyncio.ensure_future(
                logs.append(run, lines_of(*(f"c{k}-{n}" for n in range(2000))), f"c{k}")
            )
            for _ in range(k):
                await asyncio.sleep(0)  # lets the append run k steps before the cancel
            task.cancel()
        end = await logs.append(run, lines_of("end"), batch_id="end")
        stored = await read_all(logs, run)
    finally:
        await logs.close()

    assert [s.index for s in stored] == list(range(end + 1))
    count, _, _ = await reopened_texts(root, run)
    assert count == end + 1
    batches: dict[str, list[str]] = {}
    for s in stored[:-1]:
        batches.setdefault(s.line.text.split("-")[0], []).append(s.line.text)
    for name, texts in batches.items():  # each cancelled batch is stored whole or not at all
        assert texts == [f"{name}-{n}" for n in range(2000)]
