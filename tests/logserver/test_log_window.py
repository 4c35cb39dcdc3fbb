"""Windows of a run's log and searching it, as a virtualised viewer of a huge log asks:
over a real 200,000-line FileLogStore (written once for the module), a LogServer reading
it and the log routes on a real HTTP server; then once through the MongoDB log store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.logserver.http import LINES_HEADER, log_routes
from services.logserver.service import LogServer
from services.logserver.window import LineFilter, Needle, plain, search
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.logstore.files import FileLogStore
from shared.adapters.logstore.mongo import MongoLogStore
from shared.ports.logstore import LogLine, LogStore
from shared.projections.runs import RunView
from tests.infra.mongo import mongo_database, mongo_url

__all__ = ["mongo_database", "mongo_url"]  # the fixtures this module uses

TOTAL = 200_000
RUN = "big"
RED, RESET = "\x1b[31m", "\x1b[0m"


def _where(i: int) -> tuple[str, str]:
    """Lines 0-49,999 build/compile, 50,000-99,999 build/test, the rest deploy/push."""
    if i < 50_000:
        return "build", "compile"
    return ("build", "test") if i < 100_000 else ("deploy", "push")


def _text(i: int) -> str:
    """Every 1000th line an error, coloured as a terminal shows it; the rest plain."""
    if i % 1000 == 999:
        return f"{RED}ERROR{RESET}: failed at step {i}"
    return f"line {i} " + "x" * 40


def lines(first: int, count: int) -> list[LogLine]:
    return [LogLine(*_where(i), "stdout", "2024-05-01T12:00:00+00:00", _text(i))
            for i in range(first, first + count)]


async def _fill(logs: LogStore, run: str, total: int, batch: int = 5000) -> None:
    for first in range(0, total, batch):
        await logs.append(run, lines(first, min(batch, total - first)), f"b{first}")


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory holding a 200,000-line log of run ``big``: written once."""
    root = tmp_path_factory.mktemp("logs")

    async def write() -> None:
        logs = FileLogStore(root)
        await _fill(logs, RUN, TOTAL)
        await logs.close()

    asyncio.run(write())
    yield root


class Runs:
    """The run views the routes look runs up in (only ``big`` exists)."""

    async def lookup(self, run_id: str) -> RunView | None:
        return RunView(id=run_id, project="p") if run_id == RUN else None


@contextlib.asynccontextmanager
async def serving(logs: LogStore) -> AsyncIterator[TestClient[Any, Any]]:
    bus = MemoryBus()
    app = web.Application()
    app.add_routes(log_routes(LogServer(bus, logs), Runs().lookup))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await bus.close()


@pytest.fixture
async def client(big_log: Path) -> AsyncIterator[TestClient[Any, Any]]:
    logs = FileLogStore(big_log)
    async with serving(logs) as client:
        yield client
    await logs.close()


async def _window(client: TestClient[Any, Any], query: str) -> tuple[list[dict[str, Any]], str]:
    async with client.get(f"/api/v1/runs/{RUN}/logs?{query}") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/x-ndjson"
        body = await resp.text()
        return [json.loads(line) for line in body.splitlines()], resp.headers[LINES_HEADER]


async def _search(client: TestClient[Any, Any], query: str) -> dict[str, Any]:
    async with client.get(f"/api/v1/runs/{RUN}/logs/search?{query}") as resp:
        assert resp.status == 200, await resp.text()
        found: dict[str, Any] = await resp.json()
        assert resp.headers[LINES_HEADER] == str(found["total"])
        return found


# --- windows -------------------------------------------------------------------------------


async def test_a_window_deep_in_the_log_is_its_lines_and_says_the_total(
        client: TestClient[Any, Any]) -> None:
    started = time.monotonic()
    got, total = await _window(client, "from=150000&limit=500")
    assert time.monotonic() - started < 2.0  # read from near the window, not from line 0
    assert total == str(TOTAL)
    assert [line["i"] for line in got] == list(range(150_000, 150_500))
    assert got[0] == {"i": 150_000, "job": "deploy", "step": "push", "stream": "stdout",
                      "ts": "2024-05-01T12:00:00+00:00", "text": _text(150_000)}


async def test_a_window_past_the_end_holds_what_there_is(client: TestClient[Any, Any]) -> None:
    got, _ = await _window(client, "from=199900&limit=10000")
    assert [line["i"] for line in got] == list(range(199_900, TOTAL))
    assert (await _window(client, "from=300000&limit=10"))[0] == []


async def test_a_window_keeps_one_jobs_or_steps_lines(client: TestClient[Any, Any]) -> None:
    deploy, _ = await _window(client, "job=deploy&limit=3")
    assert [line["i"] for line in deploy] == [100_000, 100_001, 100_002]
    tests, _ = await _window(client, "job=build&step=test&from=10&limit=2")
    assert [(line["i"], line["step"]) for line in tests] == [(50_000, "test"), (50_001, "test")]
    nothing, total = await _window(client, "job=nope&limit=5")
    assert (nothing, total) == ([], str(TOTAL))


@pytest.mark.parametrize(("query", "named"), [
    ("limit=0", "limit='0'"), ("limit=10001", "limit='10001'"), ("limit=many", "limit='many'"),
    ("from=-1&limit=5", "from='-1'"), ("follow=1&limit=5", "limit: for the history only"),
    ("follow=1&job=build", "job: for the history only"),
])
async def test_a_bad_window_is_a_400_naming_the_parameter(
        client: TestClient[Any, Any], query: str, named: str) -> None:
    async with client.get(f"/api/v1/runs/{RUN}/logs?{query}") as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["error"] == "bad_request" and body["detail"].startswith(named), body


# --- search --------------------------------------------------------------------------------


async def test_search_pages_through_every_match_with_its_cursor(
        client: TestClient[Any, Any]) -> None:
    found: list[int] = []
    cursor: int | None = 0
    pages = 0
    while cursor is not None:
        page = await _search(client, f"q=error:+FAILED&limit=60&from={cursor}")
        found += [m["i"] for m in page["matches"]]
        cursor, pages = page["next"], pages + 1
        assert page["total"] == TOTAL
    assert found == list(range(999, TOTAL, 1000))  # ANSI between "ERROR" and ":" ignored
    assert pages == 4  # 60 + 60 + 60 + 20, the last one reaching the end
    first = await _search(client, "q=Error&limit=1")
    assert first["matches"][0]["text"] == _text(999)  # the text as stored, escapes kept
    assert first["next"] == 1000


async def test_search_ignores_the_escape_codes_themselves(client: TestClient[Any, Any]) -> None:
    page = await _search(client, "q=31m&from=190000")
    assert page == {"matches": [], "next": None, "scanned": 10_000, "total": TOTAL}


async def test_search_keeps_one_jobs_lines(client: TestClient[Any, Any]) -> None:
    page = await _search(client, "q=failed&job=deploy&limit=2")
    assert [m["i"] for m in page["matches"]] == [100_999, 101_999]
    page = await _search(client, "q=failed&job=build&step=compile&from=45000&limit=1000")
    assert [m["i"] for m in page["matches"]] == list(range(45_999, 50_000, 1000))
    assert page["next"] is None  # every line to the end was read, deploy's too


async def test_a_search_reads_the_log_in_flat_memory(client: TestClient[Any, Any]) -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        page = await _search(client, "q=no+such+text")
        growth = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert page["scanned"] == TOTAL  # the whole log (about 10 MB) went through ...
    assert growth < 5_000_000, f"peak memory grew by {growth / 1e6:.1f} MB"  # ... not memory


async def test_a_search_stops_after_its_scan_bound_and_says_where_to_go_on(
        big_log: Path) -> None:
    logs = FileLogStore(big_log)
    server = LogServer(MemoryBus(), logs)
    try:
        async with contextlib.aclosing(server.chunks(RUN, 500)) as chunks:
            page = await search(chunks, Needle("failed"), LineFilter(), 100, scan_lines=10_000)
    finally:
        await logs.close()
    assert [s.index for s in page.matches] == list(range(999, 10_500, 1000))
    assert page.scanned == 10_000 and page.next == 10_500  # whole chunks of 500 lines


@pytest.mark.parametrize(("query", "named"), [
    ("", "q: required"), ("q=", "q: required"), ("q=" + "x" * 1001, "q: 1001 characters"),
    ("q=a&limit=0", "limit='0'"), ("q=a&limit=1001", "limit='1001'"),
    ("q=a&from=x", "from='x'"),
])
async def test_a_bad_search_is_a_400_naming_the_parameter(
        client: TestClient[Any, Any], query: str, named: str) -> None:
    async with client.get(f"/api/v1/runs/{RUN}/logs/search?{query}") as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["error"] == "bad_request" and body["detail"].startswith(named), body


async def test_searching_an_unknown_run_is_a_404(client: TestClient[Any, Any]) -> None:
    async with client.get("/api/v1/runs/nope/logs/search?q=x") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"] == "not_found"


def test_matching_ignores_case_and_every_kind_of_escape() -> None:
    link = "\x1b]8;;https://example.com\x1b\\Docs\x1b]8;;\x1b\\"
    assert plain(link) == "Docs"
    assert plain("\x1b[1;32mOK\x1b[0m \x1b[2K\x1b(Bdone") == "OK done"
    assert plain("\x1b]0;title\x07shown") == "shown"
    assert Needle("straße").found_in("STRASSE")  # casefold, not lower
    assert Needle("ok done").found_in("\x1b[1;32mOK\x1b[0m DONE")
    assert not Needle("[0m").found_in("\x1b[1;32mOK\x1b[0m")


# --- through MongoDB -------------------------------------------------------------------------


async def test_windows_and_search_through_the_mongo_log_store(
        mongo_url: str, mongo_database: str) -> None:
    logs = await MongoLogStore.connect(mongo_url, mongo_database)
    try:
        await _fill(logs, RUN, 20_000, batch=2000)
        async with serving(logs) as client:
            got, total = await _window(client, "from=12345&limit=3")
            assert total == "20000"
            assert [(line["i"], line["text"]) for line in got] == [
                (i, _text(i)) for i in (12_345, 12_346, 12_347)]
            page = await _search(client, "q=error:+failed&from=5000&limit=3")
            assert [m["i"] for m in page["matches"]] == [5999, 6999, 7999]
            assert page["next"] == 8000 and page["total"] == 20_000
    finally:
        await logs.close()
