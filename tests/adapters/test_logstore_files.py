"""FileLogStore: the LogStore contract, plus crash repair, path safety and bounded memory."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.adapters.logstore.files import RECORD_CHARS, SPARSE_EVERY, FileLogStore
from shared.errors import StoreError
from shared.ports.logstore import LogStore
from shared.wire import groups_of
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


# --- the file format ------------------------------------------------------------------------

ODD = ['say "hi"', "back\\slash", "tab\there", "ünïcödé €", "emoji 😀", "\x1b[31mred\x1b[0m",
       "", "a lone surrogate \udcff", "nul \x00 and del \x7f", "line\u2028separator"]


async def test_a_batch_is_written_as_one_record_of_column_groups(root: Path) -> None:
    # The on-disk format is json.dumps(..., ensure_ascii=False) of a batch's record, its
    # lines as shared.wire's column groups: a line is a string in a list, not an object.
    run = run_id()
    lines = [line._replace(attempt=1 + n % 2) for n, line in enumerate(lines_of(*ODD))]
    logs = FileLogStore(root)
    try:
        await logs.append(run, lines[:3], batch_id="b1")
        await logs.append(run, lines[3:], batch_id="b2")
        stored = await read_all(logs, run)
    finally:
        await logs.close()

    expected = b"".join(
        json.dumps({"i": first, "n": len(batch), "batch": batch_id, "groups": groups_of(batch)},
                   ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
        + b"\n" for first, batch, batch_id in ((0, lines[:3], "b1"), (3, lines[3:], "b2")))
    assert (root / f"{run}.ndjson").read_bytes() == expected
    assert [s.line for s in stored] == lines
    assert [s.index for s in stored] == list(range(len(lines)))


async def test_a_run_stored_in_both_formats_is_read_whole(root: Path) -> None:
    # An upgrade in the middle of a run: a line a record (and a marker) before, whole
    # batches after. Count, indexes, reads from any index and redelivery all hold.
    run = run_id()
    root.mkdir(parents=True)
    (root / f"{run}.ndjson").write_bytes(b"".join(
        json.dumps({"i": i, **line.to_json()}).encode() + b"\n"
        for i, line in enumerate(lines_of(*[f"old {n}" for n in range(1500)]))
    ) + b'{"batch":"old"}\n')
    logs = FileLogStore(root)
    try:
        assert await logs.append(run, lines_of("new 0", "new 1"), batch_id="new") == 1500
        assert await logs.append(run, lines_of("ignored"), batch_id="old") == 0  # known
        assert await logs.count(run) == 1502
        every = await read_all(logs, run)
        later = await read_all(logs, run, 1499)
    finally:
        await logs.close()
    reopened = FileLogStore(root)
    try:
        assert await reopened.count(run) == 1502
        again = await read_all(reopened, run, 1000)
    finally:
        await reopened.close()

    assert [s.index for s in every] == list(range(1502))
    assert [s.line.text for s in later] == ["old 1499", "new 0", "new 1"]
    assert [s.line.text for s in again] == [f"old {n}" for n in range(1000, 1500)] + [
        "new 0", "new 1"]


async def test_a_long_batch_cut_between_its_records_is_dropped(root: Path) -> None:
    run = run_id()
    await write_then_close(root, run)
    path = root / f"{run}.ndjson"
    whole = path.stat().st_size
    long = lines_of(*[f"{n} " + "x" * 1000 for n in range(RECORD_CHARS // 1000 * 3)])
    logs = FileLogStore(root)
    try:
        await logs.append(run, long, batch_id="long")
    finally:
        await logs.close()
    records = path.read_bytes()[whole:].splitlines(keepends=True)
    assert len(records) >= 3 and [b'"batch"' in r for r in records[:-1]] == [False] * (
        len(records) - 1)  # split, the id on the last record only
    with open(path, "r+b") as file:  # the crash: the last record never written
        file.truncate(path.stat().st_size - len(records[-1]))

    logs = FileLogStore(root)
    try:
        assert await logs.count(run) == 5
        assert await logs.append(run, long, batch_id="long") == 5  # redelivered: stored
        texts = [s.line.text for s in await read_all(logs, run, 5)]
    finally:
        await logs.close()
    assert texts == [line.text for line in long]


@pytest.mark.parametrize("cut", [
    b'{"i":5,"n":1,"batch":"b9","groups":[["build","te',  # half written
    b'{"i":5,"n":2,"batch":"b9","groups":[["build","test","stdout",1,[["t",1]],["x"]]]}\n',
    b'{"i":9,"n":1,"batch":"b9","groups":[["build","test","stdout",1,[["t",1]],["x"]]]}\n',
    b'{"i":5,"n":1,"batch":"b9","groups":[["build","test","stdout",1,[["t",1]],[7]]]}\n',
], ids=["half-written", "n-disagrees", "index-gap", "text-not-a-string"])
async def test_a_damaged_last_batch_is_dropped_and_can_be_redelivered(
    root: Path, cut: bytes,
) -> None:
    run = run_id()
    await write_then_close(root, run)
    with open(root / f"{run}.ndjson", "ab") as file:
        file.write(cut)

    count, index, texts = await reopened_texts(root, run)

    assert (count, index) == (5, 5)
    assert texts == ["a", "b", "c", "d", "e", "after"]


async def test_a_file_in_the_older_spelling_is_read(root: Path) -> None:
    # Escaped non-ASCII (as json.dumps' default writes it), other key order, no marker
    # spacing: any JSON object with the fields is a line.
    run = run_id()
    root.mkdir(parents=True)
    (root / f"{run}.ndjson").write_bytes(
        b'{"i": 0, "job": "build", "step": "test", "stream": "stdout", '
        b'"ts": "2024-05-01T12:00:00+00:00", "text": "caf\\u00e9"}\n'
        b'{"text": "two", "ts": "2024-05-01T12:00:01+00:00", "attempt": 2, '
        b'"stream": "stderr", "step": "test", "job": "build", "i": 1}\n'
        b'{"batch": "old"}\n')
    logs = FileLogStore(root)
    try:
        stored = await read_all(logs, run)
        assert await logs.append(run, lines_of("three"), batch_id="old") == 0  # known
    finally:
        await logs.close()

    assert [(s.index, s.line.text, s.line.stream, s.line.attempt) for s in stored] == [
        (0, "café", "stdout", 1), (1, "two", "stderr", 2)]


async def test_a_record_with_fields_of_other_types_is_read_converted(root: Path) -> None:
    run = run_id()
    root.mkdir(parents=True)
    (root / f"{run}.ndjson").write_bytes(
        b'{"i":0,"job":"build","step":"test","stream":"stdout","ts":"t","text":"a"}\n'
        b'{"i":1,"job":"build","step":"test","stream":"stdout","ts":"t","text":42}\n'
        b'{"i":2,"job":"build","step":"test","stream":"stdout","ts":"t","text":"c"}\n'
        b'{"batch":"b1"}\n')
    logs = FileLogStore(root)
    try:
        stored = await read_all(logs, run)
    finally:
        await logs.close()

    assert [(s.index, s.line.text) for s in stored] == [(0, "a"), (1, "42"), (2, "c")]


@pytest.mark.parametrize("start", [0, 999, 1000, 1001, 1999, 2000, 2500, 3332])
async def test_multibyte_lines_are_read_from_any_index(root: Path, start: int) -> None:
    # The sparse offsets are byte offsets: wrong ones would land mid-line.
    run = run_id()
    texts = [f"{n} ünï €😀" * (1 + n % 3) for n in range(3333)]
    logs = FileLogStore(root)
    try:
        for at in range(0, len(texts), 700):  # batches across the 1000-line marks
            await logs.append(run, lines_of(*texts[at:at + 700]), batch_id=f"b{at}")
        stored = await read_all(logs, run, start)
        offsets = logs._states[run].offsets
    finally:
        await logs.close()

    data = (root / f"{run}.ndjson").read_bytes()
    holding = [json.loads(data[at:data.index(b"\n", at)]) for at in offsets]
    assert [(r["i"] <= k * SPARSE_EVERY < r["i"] + r["n"]) for k, r in enumerate(holding)] == [
        True] * 4  # each offset is the start of the batch holding every 1,000th line
    assert [s.index for s in stored] == list(range(start, len(texts)))
    assert [s.line.text for s in stored] == texts[start:]
