"""The log server's HTTP side: a run's log as history, as a live SSE stream, over a websocket.

Routes (``log_routes``; the API app mounts them and authenticates them):

* ``GET /api/v1/runs/{id}/logs`` -- the stored lines as ``application/x-ndjson``, one
  ``{"i", "job", "step", "stream", "ts", "text"}`` object a line. ``?from=N`` starts at
  index N; ``limit=M`` (1 to 10,000) makes it a window of at most M lines, ``job=J`` and
  ``step=S`` keep that job's (step's) lines (``window.py``). ``X-Cyclone-Log-Lines`` says
  how many lines the store holds for the run (as the answer starts).
* ``GET /api/v1/runs/{id}/logs/search?q=TEXT`` -- JSON ``{"matches": [line, ...],
  "next", "scanned", "total"}``: the lines from ``from`` on whose text holds TEXT
  (case-insensitive, ANSI escapes ignored), at most ``limit`` (default 100, at most
  1,000); ``next`` is the ``from`` to go on with, null once the stored log's end was
  reached (a request reads at most ``window.SCAN_LINES`` lines: ``next`` may come with
  no match). ``job=`` and ``step=`` as above.
* the same with ``?follow=1`` or ``Accept: text/event-stream`` -- Server-Sent Events:
  ``id: <i>`` / ``event: line`` / ``data: <object>`` per line, live, until the run has
  ended and every line it logged is delivered; then ``event: end`` with
  ``{"status": ...}`` (and ``"missing"`` when it had to give up: see below).
  ``Last-Event-ID: <i>`` (sent by a reconnecting EventSource) resumes at ``i + 1`` and
  wins over ``?from=``: no gap, no repeat. A comment line is sent after ``keepalive_s``
  of silence so proxies keep the connection open. A browser should close its
  EventSource on ``end`` (else it reconnects, and gets ``end`` again).
* ``GET /api/v1/runs/{id}/logs/ws`` -- the same lines as websocket text messages, then
  ``{"end": "<status>"}`` (and ``"missing"``) and a normal close.

An unknown run is a 404 ``{"error": "not_found", ...}``; a malformed ``from``,
``Last-Event-ID``, ``limit`` or ``q`` a 400 ``{"error": "bad_request", ...}`` naming it
(``limit``, ``job`` and ``step`` are for the history: with ``follow`` they are a 400 too).

Every route reads the log store in chunks (``LogServer.chunks`` / ``follow_chunks``)
and writes a chunk in one write, awaiting the transport's drain, so memory stays
flat whatever the log's size and a slow client slows only its own stream.

A stream is complete when the run is done and every line of the final attempt of each
job (and of the checkout) is delivered: the counts its events report (``JobFinished``,
``RunSourceResolved``). A job that ran again after its worker was lost also has the
lines the lost attempt shipped, which no event counts; they are streamed too, and
told apart by their ``attempt``. Followers are woken when lines are stored and when
the run's events change (``LogServer.wake``), so a stream ends as soon as its run has
ended and its last line is stored. Should counted lines never arrive, the stream gives
up ``END_GRACE_S`` after its last progress, and its end says what is missing:
``"missing": {"lines": n, "jobs": {job: n, ...}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import WSMsgType, web

from services.logserver.service import LogServer
from services.logserver.window import Window, parse_search, parse_window, search
from shared.errors import CycloneError
from shared.keys import CHECKOUT
from shared.ports.logstore import StoredLine
from shared.projections.runs import RunView

__all__ = ["END_GRACE_S", "KEEPALIVE_S", "LINES_HEADER", "WS_HEARTBEAT_S", "RunLookup",
           "lines_json", "log_routes"]

log = logging.getLogger(__name__)

# The run's current view (the API passes its read model); None for an unknown run.
RunLookup = Callable[[str], Awaitable[RunView | None]]

KEEPALIVE_S = 15.0  # SSE comment after this much silence
END_GRACE_S = 60.0  # a done run's stream gives up on missing lines after this long
LINES_HEADER = "X-Cyclone-Log-Lines"  # the lines the store holds for the run
WS_HEARTBEAT_S = 30.0  # websocket ping interval; a peer that misses a pong is dropped
RETRY_MS = 2000  # tells an EventSource how long to wait before reconnecting

_encode = json.JSONEncoder(separators=(",", ":")).encode
_string = json.encoder.encode_basestring_ascii  # a str as a JSON string literal


def log_routes(server: LogServer, runs: RunLookup, *, keepalive_s: float = KEEPALIVE_S,
               heartbeat_s: float = WS_HEARTBEAT_S,
               grace_s: float = END_GRACE_S) -> list[web.RouteDef]:
    """The log routes over ``server``'s store; ``runs`` gives a run's current view by id
    (``LiveRuns.view``: current with the events that wake the followers)."""
    handlers = _Handlers(server, runs, keepalive_s, heartbeat_s, grace_s)
    return [
        web.get("/api/v1/runs/{id}/logs", handlers.logs, allow_head=False),
        web.get("/api/v1/runs/{id}/logs/ws", handlers.websocket, allow_head=False),
        web.get("/api/v1/runs/{id}/logs/search", handlers.search, allow_head=False),
    ]


def lines_json(chunk: Sequence[StoredLine]) -> list[str]:
    """The JSON object every route sends for each line (what ``json.dumps`` would give,
    compact and ASCII-escaped, with keys in this order)."""
    # Field by field with the json module's C string encoder (five times faster than a
    # dict through json.dumps; this runs for every line of every stream), and what the
    # lines of a chunk share -- job, step and stream; ts -- encoded once.
    heads: dict[tuple[str, str, str], str] = {}
    ts_was, ts_json = None, ""
    encoded = []
    for index, (job, step, stream, ts, text, attempt) in chunk:
        head = heads.get((job, step, stream))
        if head is None:
            head = heads[job, step, stream] = (
                f',"job":{_string(job)},"step":{_string(step)},"stream":{_string(stream)},')
        if ts != ts_was:
            ts_was, ts_json = ts, _string(ts)
        tail = "}" if attempt == 1 else f',"attempt":{attempt}}}'
        encoded.append(f'{{"i":{index}{head}"ts":{ts_json},"text":{_string(text)}{tail}')
    return encoded


class _Completion:
    """``is_complete`` for a follower: the run is done and every line it logged is here.

    Keeps the last view it saw (``run``) for the end message, and ``missing`` when it
    gave up. ``observe`` must see every chunk the follower delivers."""

    def __init__(self, runs: RunLookup, run: RunView, server: LogServer,
                 grace_s: float = END_GRACE_S) -> None:
        self.runs = runs
        self.run = run
        self.server = server
        self.grace_s = grace_s
        self.missing: dict[str, Any] | None = None
        self._tally: Counter[tuple[str, int]] | None = None  # lines by (job, attempt)
        self._progress = (-1, 0.0)  # (next index, when it was first seen)

    def end(self) -> dict[str, Any]:
        """What the stream's end says: the run's status, and what is missing, if any."""
        missing = {"missing": self.missing} if self.missing else {}
        return {"status": self.run.status, **missing}

    def observe(self, chunk: list[StoredLine]) -> None:
        if self._tally is not None:
            self._tally.update((s.line.job, s.line.attempt) for s in chunk)

    async def __call__(self, next_index: int) -> bool:
        run = await self.runs(self.run.id)
        if run is None:
            return True  # the run is gone: nothing more will come
        self.run = run
        if not run.done:
            return False
        missing = await self._missing(run, next_index)
        if not missing:
            return True
        if self._quiet_for(next_index, self.grace_s):
            self.missing = missing
            log.warning("log stream ends with lines missing",
                        extra={"run": run.id, "have": next_index, "missing": missing})
            return True
        return False

    async def _missing(self, run: RunView, next_index: int) -> dict[str, Any]:
        """What the final attempts logged that has not been delivered yet: ``{}`` when
        all has, else ``{"lines": n}`` (and ``"jobs"``, by job, when lost attempts' lines
        had to be told apart)."""
        if not any(job.attempt > 1 for job in run.jobs):
            short = run.log_lines - next_index
            return {"lines": short} if short > 0 else {}
        # Lines of lost attempts are stored too: count by attempt what was delivered.
        tally = await self._tallied(next_index)
        planned = {job.name for job in run.jobs}
        by_job = {job.name: job.log_lines - tally[(job.name, max(job.attempt, 1))]
                  for job in run.jobs}
        outside = run.log_lines - sum(job.log_lines for job in run.jobs)  # the checkout
        by_job[CHECKOUT] = outside - sum(n for (job, _), n in tally.items() if job not in planned)
        by_job = {job: n for job, n in by_job.items() if n > 0}
        return {"lines": sum(by_job.values()), "jobs": by_job} if by_job else {}

    async def _tallied(self, next_index: int) -> Counter[tuple[str, int]]:
        """The delivered lines (those before ``next_index``) by (job, attempt): read from
        the store the first time it is asked, then kept current by ``observe``."""
        if self._tally is None:
            tally: Counter[tuple[str, int]] = Counter()
            async with contextlib.aclosing(self.server.chunks(self.run.id, 0)) as chunks:
                async for chunk in chunks:
                    tally.update((s.line.job, s.line.attempt) for s in chunk
                                 if s.index < next_index)
                    if chunk[-1].index >= next_index - 1:
                        break
            self._tally = tally
        return self._tally

    def _quiet_for(self, next_index: int, seconds: float) -> bool:
        """Whether no line has arrived for ``seconds`` (counting from the first call)."""
        now = time.monotonic()
        if next_index != self._progress[0]:
            self._progress = (next_index, now)
        return now - self._progress[1] >= seconds


class _Handlers:
    def __init__(self, server: LogServer, runs: RunLookup, keepalive_s: float,
                 heartbeat_s: float, grace_s: float) -> None:
        self.server = server
        self.runs = runs
        self.keepalive_s = keepalive_s
        self.heartbeat_s = heartbeat_s
        self.grace_s = grace_s

    async def logs(self, request: web.Request) -> web.StreamResponse:
        run = await self.runs(request.match_info["id"])
        if run is None:
            return _not_found(request.match_info["id"])
        follow = (request.query.get("follow", "").lower() in ("1", "true", "yes")
                  or "text/event-stream" in request.headers.get("Accept", ""))
        try:
            start = _start_index(request, resume=follow)
            window = _history_only(request, follow, parse_window(request.query, start))
        except ValueError as exc:
            return _bad_request(exc)
        resp = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        try:
            if follow:
                await self._sse(request, resp, run, start)
            else:
                await self._history(request, resp, run.id, window)
        except ConnectionResetError:
            pass  # the client went away mid-stream
        except CycloneError as exc:
            log.error("log stream failed", extra={"run": run.id, "error": str(exc)})
            raise
        return resp

    async def _history(self, request: web.Request, resp: web.StreamResponse, run_id: str,
                       window: Window) -> None:
        resp.content_type = "application/x-ndjson"
        resp.headers[LINES_HEADER] = str(await self.server.logs.count(run_id))
        await resp.prepare(request)
        async with contextlib.aclosing(self.server.chunks(run_id, window.start)) as chunks:
            async with contextlib.aclosing(window.lines(chunks)) as lines:
                async for chunk in lines:
                    # write() awaits the transport's drain past 64 KiB: memory stays flat
                    await resp.write(("\n".join(lines_json(chunk)) + "\n").encode())
        await resp.write_eof()

    async def search(self, request: web.Request) -> web.Response:
        """The lines holding a text (``window.search``), for a viewer to jump to."""
        run = await self.runs(request.match_info["id"])
        if run is None:
            return _not_found(request.match_info["id"])
        try:
            needle, start, limit, only = parse_search(request.query)
        except ValueError as exc:
            return _bad_request(exc)
        total = await self.server.logs.count(run.id)
        async with contextlib.aclosing(self.server.chunks(run.id, start)) as chunks:
            page = await search(chunks, needle, only, limit)
        matches = ",".join(lines_json(page.matches))
        tail = _encode({"next": page.next, "scanned": page.scanned, "total": total})
        return web.Response(text=f'{{"matches":[{matches}],{tail[1:]}',
                            content_type="application/json",
                            headers={"Cache-Control": "no-cache", LINES_HEADER: str(total)})

    async def _sse(self, request: web.Request, resp: web.StreamResponse, run: RunView,
                   start: int) -> None:
        resp.headers["X-Accel-Buffering"] = "no"
        resp.content_type = "text/event-stream"
        await resp.prepare(request)
        await resp.write(f"retry: {RETRY_MS}\n\n".encode())  # headers out, before any line
        complete = _Completion(self.runs, run, self.server, self.grace_s)
        last_write = time.monotonic()
        follow = self.server.follow_chunks(run.id, start, complete)
        async with contextlib.aclosing(follow) as chunks:
            async for chunk in chunks:
                complete.observe(chunk)
                if chunk:
                    await resp.write(_sse_lines(chunk))
                    last_write = time.monotonic()
                elif _gone(request):
                    return
                elif time.monotonic() - last_write >= self.keepalive_s:
                    await resp.write(b": keep-alive\n\n")
                    last_write = time.monotonic()
        end = _encode(complete.end())
        await resp.write(f"event: end\ndata: {end}\n\n".encode())
        await resp.write_eof()

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        run = await self.runs(request.match_info["id"])
        if run is None:
            return _not_found(request.match_info["id"])
        try:
            start = _start_index(request, resume=False)
        except ValueError as exc:
            return _bad_request(exc)
        ws = web.WebSocketResponse(heartbeat=self.heartbeat_s)
        await ws.prepare(request)
        # Someone must read the socket: that is where pongs and the peer's close arrive.
        reader = asyncio.create_task(_ignore_incoming(ws))
        try:
            await self._send_ws(ws, run, start)
        except ConnectionResetError:
            pass  # the client went away
        finally:
            reader.cancel()
            await asyncio.wait({reader})
        return ws

    async def _send_ws(self, ws: web.WebSocketResponse, run: RunView, start: int) -> None:
        complete = _Completion(self.runs, run, self.server, self.grace_s)
        async with contextlib.aclosing(self.server.follow_chunks(run.id, start, complete)) as c:
            async for chunk in c:
                if ws.closed:
                    return
                complete.observe(chunk)
                for line in lines_json(chunk):
                    await ws.send_str(line)
        end = complete.end()
        await ws.send_str(_encode({"end": end.pop("status"), **end}))
        await ws.close()


async def _ignore_incoming(ws: web.WebSocketResponse) -> None:
    async for message in ws:
        if message.type == WSMsgType.ERROR:
            return


def _sse_lines(chunk: list[StoredLine]) -> bytes:
    return "".join(f"id: {stored.index}\nevent: line\ndata: {line}\n\n"
                   for stored, line in zip(chunk, lines_json(chunk), strict=True)).encode()


def _start_index(request: web.Request, *, resume: bool) -> int:
    """The first index to send: after ``Last-Event-ID`` (when resuming), else ``?from``."""
    last = request.headers.get("Last-Event-ID", "").strip() if resume else ""
    if last:
        return _index(last, "Last-Event-ID") + 1
    raw = request.query.get("from", "")
    return _index(raw, "from") if raw else 0


def _index(raw: str, name: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a line index (a whole number)") from None
    if not 0 <= value <= 2**62:  # stores keep indexes as 64-bit integers
        raise ValueError(f"{name}={raw!r}: expected a line index from 0 to 2**62")
    return value


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _history_only(request: web.Request, follow: bool, window: Window) -> Window:
    """``window``, unless it is asked of a live stream (which has no window)."""
    if follow:
        for name in ("limit", "job", "step"):
            if name in request.query:
                raise ValueError(f"{name}: for the history only, not with follow (a live "
                                 "stream sends every line)")
    return window


def _bad_request(exc: ValueError) -> web.Response:
    return web.json_response({"error": "bad_request", "detail": str(exc)}, status=400)


def _not_found(run_id: str) -> web.Response:
    return web.json_response({"error": "not_found", "detail": f"no run {run_id!r}"},
                             status=404)
