"""The log server's HTTP routes over real pieces: a FileLogStore, a MemoryBus carrying
batches as workers ship them, a LogServer consuming it, an aiohttp server on 127.0.0.1
and a real ClientSession. Run views are folded from real events."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.logserver.http import log_routes
from services.logserver.service import LogServer
from shared import events as ev
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.logstore.files import FileLogStore
from shared.events import RecordedEvent, new_event_id, run_stream, utc_now
from shared.pipeline.plan import JobSpec, Plan, StepSpec
from shared.ports.bus import TOPIC_LOGS
from shared.ports.logstore import LogLine
from shared.projections.runs import RunView, apply
from shared.status import JobStatus
from shared.wire import encode_log_batch
from tests.sse_support import Sse, sse_events
from tests.support import HANG_S, eventually

TIMEOUT = HANG_S  # no stream in these tests may take longer: past it, one hangs
JOB, STEP = "build", "test"
PLAN = Plan(source_file=".cyclone.yml",
            jobs=(JobSpec(name=JOB, image="img", steps=(StepSpec(name=STEP, image="img"),)),))
END_EVENTS: dict[JobStatus, ev.Event] = {JobStatus.SUCCESS: ev.RunSucceeded(),
                                         JobStatus.FAILURE: ev.RunFailed("x")}


class Runs:
    """Run views as the API's read model has them: real events folded by ``apply``."""

    def __init__(self) -> None:
        self.views: dict[str, RunView] = {}

    def record(self, run_id: str, *events: ev.Event) -> None:
        for event in events:
            current = self.views.get(run_id)
            recorded = RecordedEvent(
                id=new_event_id(), stream=run_stream(run_id),
                seq=current.last_seq + 1 if current else 1, type=event.TYPE,
                version=event.VERSION, ts=utc_now(), data=event.to_data(), meta={},
                position=0)
            self.views[run_id] = apply(current, recorded)

    def start(self, run_id: str) -> None:
        self.record(run_id,
                    ev.RunRequested(project="p", trigger="manual", branch="main", commit="",
                                    pipeline_file=".cyclone.yml", pipeline="", source="."),
                    ev.RunPlanned(plan=PLAN), ev.JobQueued(job=JOB),
                    ev.JobStarted(job=JOB, worker="w", executor="shell"))

    def lose_worker(self, run_id: str) -> None:
        """The job's worker was lost: it is queued again and started as attempt 2."""
        self.record(run_id, ev.JobQueued(job=JOB),
                    ev.JobStarted(job=JOB, worker="w2", executor="shell"))

    def finish(self, run_id: str, log_lines: int,
               status: JobStatus = JobStatus.SUCCESS) -> None:
        self.record(run_id, ev.JobFinished(job=JOB, status=status, duration_s=1.0,
                                           log_lines=log_lines), END_EVENTS[status])

    async def lookup(self, run_id: str) -> RunView | None:
        return self.views.get(run_id)


@dataclass
class Env:
    bus: MemoryBus
    logs: FileLogStore
    server: LogServer
    runs: Runs
    session: aiohttp.ClientSession
    base: str
    published: dict[str, int] = field(default_factory=dict)

    def url(self, run_id: str, suffix: str = "") -> str:
        return f"{self.base}/api/v1/runs/{run_id}/logs{suffix}"

    async def publish(self, run_id: str, count: int, text: str = "line {i}",
                      batch: int = 500, attempt: int = 1) -> list[str]:
        """Ship ``count`` lines as a worker's LogShipper does; returns their texts."""
        first = self.published.get(run_id, 0)
        texts = [text.format(i=i) for i in range(first, first + count)]
        for start in range(0, count, batch):
            lines = [LogLine(job=JOB, step=STEP, stream="stdout", ts=utc_now(), text=t,
                             attempt=attempt)
                     for t in texts[start:start + batch]]
            await self.bus.publish(TOPIC_LOGS, run_id,
                                   encode_log_batch(run_id, uuid.uuid4().hex, lines))
        self.published[run_id] = first + count
        return texts

    async def stored(self, run_id: str) -> None:
        """Wait until the log server has stored every line published for the run."""
        want = self.published.get(run_id, 0)

        async def done() -> bool:
            return await self.logs.count(run_id) >= want

        await eventually(done, timeout=TIMEOUT, what=f"{want} lines of {run_id} stored")


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    bus = MemoryBus()
    logs = FileLogStore(tmp_path / "logs")
    server = LogServer(bus, logs, recheck_s=0.05)
    consumer = asyncio.create_task(server.run())
    runs = Runs()
    app = web.Application()
    app.add_routes(log_routes(server, runs.lookup, keepalive_s=0.2, heartbeat_s=5.0))
    # Served as `cyclone up` serves it (web.AppRunner defaults: a handler is NOT cancelled
    # when its client goes away), not with TestServer, which cancels handlers.
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
    try:
        yield Env(bus, logs, server, runs, session, f"http://{host}:{port}")
    finally:
        await session.close()
        await runner.cleanup()
        consumer.cancel()
        await asyncio.wait({consumer})
        await bus.close()
        await logs.close()


async def take_lines(events: AsyncIterator[Sse], count: int) -> list[Sse]:
    """The next ``count`` line events (skipping comments)."""
    taken: list[Sse] = []
    async with asyncio.timeout(TIMEOUT):
        async for event in events:
            if event.event == "line":
                taken.append(event)
                if len(taken) == count:
                    break
            elif event.event != "comment":
                raise AssertionError(f"expected a line, got {event}")
    return taken


async def rest_of_stream(events: AsyncIterator[Sse]) -> tuple[list[Sse], Sse | None]:
    """(every line event until the stream closes, the end event)."""
    lines, end = [], None
    async with asyncio.timeout(TIMEOUT):
        async for event in events:
            if event.event == "line":
                lines.append(event)
            elif event.event == "end":
                end = event
    return lines, end


def texts(events: list[Sse]) -> list[str]:
    return [e.json()["text"] for e in events]


# --- following (LogServer.follow) ------------------------------------------------------


async def test_a_follower_is_woken_by_each_stored_batch_not_by_polling(env: Env) -> None:
    # Its own consumer group: this server stores (or finds stored) every batch too.
    server = LogServer(env.bus, env.logs, group="no-polling", recheck_s=3600)
    consumer = asyncio.create_task(server.run())
    done = False
    got: list[str] = []

    async def is_complete(next_index: int) -> bool:
        return done and next_index >= 6

    async def follow() -> None:
        async for stored in server.follow("r1", 0, is_complete):
            got.append(stored.line.text)

    follower = asyncio.create_task(follow())
    try:
        first = await env.publish("r1", 3)
        # A re-check comes in an hour: within the deadline, only a wake-up can do it.
        await eventually(lambda: got == first, timeout=TIMEOUT, what="lines while following")
        done = True
        rest = await env.publish("r1", 3)
        async with asyncio.timeout(TIMEOUT):
            await follower  # ends on the last batch's wake-up, long before any re-check
        assert got == first + rest
        assert not server.following()
    finally:
        follower.cancel()
        consumer.cancel()
        await asyncio.wait({follower, consumer})


# --- history ---------------------------------------------------------------------------


async def test_history_is_every_stored_line_in_order_as_ndjson(env: Env) -> None:
    env.runs.start("r1")
    sent = await env.publish("r1", 1200, batch=100)
    await env.stored("r1")
    async with env.session.get(env.url("r1")) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/x-ndjson"
        body = [json.loads(line) for line in (await resp.read()).splitlines()]
    assert [b["text"] for b in body] == sent
    assert [b["i"] for b in body] == list(range(1200))
    assert set(body[0]) == {"i", "job", "step", "stream", "ts", "text"}
    assert (body[0]["job"], body[0]["step"], body[0]["stream"]) == (JOB, STEP, "stdout")


async def test_every_route_sends_any_text_as_valid_json(env: Env) -> None:
    odd = ['say "hi"', "back\\slash", "tab\there", "ünïcödé €", "emoji 😀", "\x1b[31mred\x1b[0m"]
    env.runs.start("r1")
    for text in odd:
        await env.publish("r1", 1, text=text)
    env.runs.finish("r1", log_lines=len(odd))
    await env.stored("r1")
    async with env.session.get(env.url("r1")) as resp:
        history = [json.loads(line)["text"] for line in (await resp.read()).splitlines()]
    async with env.session.get(env.url("r1", "?follow=1")) as resp:
        streamed, _ = await rest_of_stream(sse_events(resp))
    async with env.session.ws_connect(env.url("r1", "/ws")) as ws:
        messages = [await ws.receive_json() for _ in range(len(odd) + 1)]
    assert history == odd
    assert texts(streamed) == odd
    assert [m.get("text") for m in messages[:-1]] == odd


async def test_history_from_starts_at_that_index(env: Env) -> None:
    env.runs.start("r1")
    sent = await env.publish("r1", 50)
    await env.stored("r1")
    async with env.session.get(env.url("r1"), params={"from": "42"}) as resp:
        body = [json.loads(line) for line in (await resp.read()).splitlines()]
    assert [b["i"] for b in body] == list(range(42, 50))
    assert [b["text"] for b in body] == sent[42:]


async def test_unknown_run_is_a_404_with_a_json_error(env: Env) -> None:
    for url in (env.url("nope"), env.url("nope", "?follow=1")):
        async with env.session.get(url) as resp:
            assert resp.status == 404
            assert await resp.json() == {"error": "not_found", "detail": "no run 'nope'"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await env.session.ws_connect(env.url("nope", "/ws"))
    assert caught.value.status == 404


async def test_a_malformed_start_index_is_a_400(env: Env) -> None:
    env.runs.start("r1")
    async with env.session.get(env.url("r1"), params={"from": "-3"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "bad_request"
    headers = {"Last-Event-ID": "abc"}
    async with env.session.get(env.url("r1", "?follow=1"), headers=headers) as resp:
        assert resp.status == 400
        assert "Last-Event-ID" in (await resp.json())["detail"]


# --- server-sent events ------------------------------------------------------------------


async def test_sse_delivers_lines_live_then_ends_with_the_run_status(env: Env) -> None:
    env.runs.start("r1")
    async with env.session.get(env.url("r1"), params={"follow": "1"}) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["X-Accel-Buffering"] == "no"
        events = sse_events(resp)
        first = await env.publish("r1", 30)
        got = await take_lines(events, 30)  # the run is still running: these came live
        assert texts(got) == first
        assert [e.id for e in got] == [str(i) for i in range(30)]
        assert [e.json()["i"] for e in got] == list(range(30))
        second = await env.publish("r1", 20)
        env.runs.finish("r1", log_lines=50, status=JobStatus.FAILURE)
        rest, end = await rest_of_stream(events)
    assert texts(rest) == second
    assert end is not None and end.json() == {"status": "failure"}


async def test_sse_with_accept_header_follows_too(env: Env) -> None:
    env.runs.start("r1")
    sent = await env.publish("r1", 5)
    env.runs.finish("r1", log_lines=5)
    headers = {"Accept": "text/event-stream"}
    async with env.session.get(env.url("r1"), headers=headers) as resp:
        lines, end = await rest_of_stream(sse_events(resp))
    assert texts(lines) == sent
    assert end is not None and end.json() == {"status": "success"}


async def test_reconnecting_with_last_event_id_gives_every_line_exactly_once(env: Env) -> None:
    env.runs.start("r1")
    sent = await env.publish("r1", 40)
    async with env.session.get(env.url("r1", "?follow=1")) as resp:
        before = await take_lines(sse_events(resp), 25)  # then the connection drops
    sent += await env.publish("r1", 40)  # printed while nobody was connected
    await env.stored("r1")
    headers = {"Last-Event-ID": before[-1].id}
    async with env.session.get(env.url("r1", "?follow=1&from=0"), headers=headers) as resp:
        events = sse_events(resp)
        middle = await take_lines(events, 55)
        sent += await env.publish("r1", 10)
        env.runs.finish("r1", log_lines=90)
        after, end = await rest_of_stream(events)
    received = before + middle + after
    assert texts(received) == sent
    assert [int(e.id) for e in received] == list(range(90))
    assert end is not None and end.json() == {"status": "success"}


async def test_stream_of_a_finished_run_ends_right_after_its_history(env: Env) -> None:
    env.server.recheck_s = 3600  # an end that waited for a re-check would time out
    env.runs.start("r1")
    sent = await env.publish("r1", 300)
    await env.stored("r1")
    env.runs.finish("r1", log_lines=300)
    async with env.session.get(env.url("r1", "?follow=1&from=100")) as resp:
        lines, end = await rest_of_stream(sse_events(resp))
    assert texts(lines) == sent[100:]
    assert end is not None and end.json() == {"status": "success"}


async def test_a_live_stream_ends_when_its_run_ends_not_at_a_re_check(env: Env) -> None:
    env.server.recheck_s = 3600  # only a wake-up can end the stream within TIMEOUT
    env.runs.start("r1")
    async with env.session.get(env.url("r1", "?follow=1")) as resp:
        events = sse_events(resp)
        sent = await env.publish("r1", 20)
        await take_lines(events, 20)
        env.runs.finish("r1", log_lines=20)
        env.server.wake("r1")  # what LiveRuns does when it sees the run's end event
        lines, end = await rest_of_stream(events)
    assert lines == [] and sent
    assert end is not None and end.json() == {"status": "success"}


async def test_after_a_lost_worker_the_stream_waits_for_the_final_attempts_lines(
    env: Env,
) -> None:
    env.runs.start("r1")
    lost = await env.publish("r1", 5, text="lost {i}", attempt=1)  # the dead worker's
    env.runs.lose_worker("r1")
    async with env.session.get(env.url("r1", "?follow=1")) as resp:
        events = sse_events(resp)
        first = await env.publish("r1", 3, text="final {i}", attempt=2)
        await take_lines(events, 8)
        # The run ends with 5 lines counted for the final attempt: 8 are stored, more
        # than 5, but only 3 of them are the final attempt's. The stream must wait.
        env.runs.finish("r1", log_lines=5)
        env.server.wake("r1")
        await asyncio.sleep(0.5)  # the chance to end too early (re-checks every 0.05 s)
        rest = await env.publish("r1", 2, text="final {i}", attempt=2)
        lines, end = await rest_of_stream(events)
    assert texts(lines) == rest
    assert lost and first
    assert [e.json().get("attempt", 1) for e in lines] == [2, 2]
    assert end is not None and end.json() == {"status": "success"}


async def test_a_stream_that_gives_up_says_what_is_missing(tmp_path: Path, env: Env) -> None:
    app = web.Application()
    app.add_routes(log_routes(env.server, env.runs.lookup, grace_s=0.3))
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        env.runs.start("r1")
        sent = await env.publish("r1", 7)
        env.runs.finish("r1", log_lines=10)  # 3 lines that will never be stored
        url = f"http://{host}:{port}/api/v1/runs/r1/logs?follow=1"
        async with env.session.get(url) as resp:
            lines, end = await rest_of_stream(sse_events(resp))
    finally:
        await runner.cleanup()
    assert texts(lines) == sent
    assert end is not None and end.json() == {"status": "success", "missing": {"lines": 3}}


async def test_a_done_run_stream_waits_for_lines_still_in_flight(env: Env) -> None:
    env.runs.start("r1")
    env.runs.finish("r1", log_lines=3)  # the run's events got here before its lines
    async with env.session.get(env.url("r1", "?follow=1")) as resp:
        events = sse_events(resp)
        sent = await env.publish("r1", 3)
        lines, end = await rest_of_stream(events)
    assert texts(lines) == sent
    assert end is not None


async def test_a_quiet_stream_gets_keep_alive_comments(env: Env) -> None:
    env.runs.start("r1")  # keepalive_s is 0.2 in this app
    async with env.session.get(env.url("r1", "?follow=1")) as resp:
        async with asyncio.timeout(TIMEOUT):
            async for event in sse_events(resp):
                if event.event == "comment":
                    assert event.data == "keep-alive"
                    break


async def test_a_client_that_leaves_stops_being_followed(env: Env) -> None:
    env.runs.start("r1")
    await env.publish("r1", 3)
    async with env.session.get(env.url("r1", "?follow=1")) as resp:
        await take_lines(sse_events(resp), 3)
        assert env.server.following() == {"r1"}
    await eventually(lambda: not env.server.following(), timeout=TIMEOUT,
                     what="the follower of r1 to be dropped")


# --- websocket ---------------------------------------------------------------------------


async def test_websocket_streams_lines_then_end_and_a_normal_close(env: Env) -> None:
    env.runs.start("r1")
    sent = await env.publish("r1", 10)
    received: list[dict[str, Any]] = []
    async with env.session.ws_connect(env.url("r1", "/ws?from=2")) as ws:
        async with asyncio.timeout(TIMEOUT):
            while len(received) < 8:
                received.append(await ws.receive_json())
            sent += await env.publish("r1", 5)
            env.runs.finish("r1", log_lines=15)
            while "end" not in received[-1]:
                received.append(await ws.receive_json())
            closing = await ws.receive()
    assert [m["text"] for m in received[:-1]] == sent[2:]
    assert [m["i"] for m in received[:-1]] == list(range(2, 15))
    assert received[-1] == {"end": "success"}
    assert closing.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == aiohttp.WSCloseCode.OK


async def test_a_websocket_client_that_leaves_stops_being_followed(env: Env) -> None:
    env.runs.start("r1")
    await env.publish("r1", 3)
    async with env.session.ws_connect(env.url("r1", "/ws")) as ws:
        assert [(await ws.receive_json())["i"] for _ in range(3)] == [0, 1, 2]
        assert env.server.following() == {"r1"}
    await eventually(lambda: not env.server.following(), timeout=TIMEOUT,
                     what="the websocket follower of r1 to be dropped")


# --- big logs -----------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "?follow=1"], ids=["history", "sse"])
async def test_a_200000_line_log_streams_in_flat_memory(env: Env, query: str) -> None:
    total = 200_000
    env.runs.start("big")
    await env.publish("big", total, text="line {i} " + "x" * 60, batch=2000)
    await env.stored("big")
    env.runs.finish("big", log_lines=total)
    marker = b"event: line\n" if query else b"\n"
    count, size, tail = 0, 0, b""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        async with env.session.get(env.url("big", query)) as resp:
            async for chunk in resp.content.iter_chunked(64 * 1024):  # the client keeps none
                count += (tail + chunk).count(marker)
                tail = chunk[1 - len(marker):] if len(marker) > 1 else b""
                size += len(chunk)
        growth = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert count == total
    assert size > 16_000_000  # the whole log went through ...
    assert growth < 8_000_000, f"peak memory grew by {growth / 1e6:.1f} MB"  # ... not memory
