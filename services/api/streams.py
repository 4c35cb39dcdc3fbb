"""Push streams of run state (Server-Sent Events), fed by ``LiveRuns``:

* ``GET /api/v1/runs/{id}/events?follow=1`` (or ``Accept: text/event-stream``): the run's
  stored events after ``?after=SEQ`` (or after ``Last-Event-ID``, which wins), each as
  ``id: <seq>`` / ``event: event`` / ``data: <the recorded event>``, then each new one as
  it is appended, until the run has ended and every event stored by then is sent;
  then ``event: end`` with ``{"status": ...}``. A reconnect with ``Last-Event-ID``
  resumes without loss or repeat.
* ``GET /api/v1/changes`` (``?project=NAME`` to narrow it): every change of any run, as
  ``event: run`` with ``{"position", "type", "run": <run summary>}`` and ``id:
  <position>`` (the global order of events). It opens with ``event: ready``, whose id
  is the store's last position: a client subscribes first, then reads the run list,
  and misses nothing in between. With ``Last-Event-ID`` it first sends the runs changed
  since that position (each run's current summary once, read from the store), then
  goes on live. A change may come twice (after a reconnect, or when the bus is slower
  than the store); each carries the run's whole summary, so applying it again is
  harmless. A client that falls far behind is disconnected, and resumes.

The stream ends (without ``end``) when the client goes; keep-alive comments keep
proxies from dropping a quiet one.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from services.api.access import Listing, listing
from services.api.context import CONTEXT, ApiContext
from services.api.errors import ApiError
from services.api.live import LiveRuns, RunChange
from shared import sse
from shared.events import RecordedEvent, is_run_stream, run_stream
from shared.projections.runs import RunView, run_id_of
from shared.runstream import load_run

__all__ = ["follow_run_events", "seq_param", "stream_routes", "wants_stream"]

REPLAY_PAGE = 1000  # events read from the store at once when a client resumes


def stream_routes() -> list[web.RouteDef]:
    return [web.get("/api/v1/changes", _changes, allow_head=False)]


def wants_stream(request: web.Request) -> bool:
    return (request.query.get("follow", "").lower() in ("1", "true", "yes")
            or "text/event-stream" in request.headers.get("Accept", ""))


def _live(ctx: ApiContext) -> LiveRuns:
    if ctx.live is None:
        raise ApiError(503, "live streams are not served by this API process",
                       error="unavailable")
    return ctx.live


MAX_SEQ = 2**62  # stores keep seqs and positions as 64-bit integers


def seq_param(raw: str, name: str) -> int:
    """A seq or position the client sent (a query value, Last-Event-ID); 400 otherwise."""
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name}: expected a whole number (a seq)") from None
    if not 0 <= value <= MAX_SEQ:
        raise ApiError(400, f"{name}: expected a number from 0 to {MAX_SEQ}")
    return value


# --- one run's events ----------------------------------------------------------------


async def follow_run_events(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    live = _live(ctx)
    run_id = request.match_info["id"]
    resume = sse.last_event_id(request)
    after = (seq_param(resume, "Last-Event-ID") if resume
             else seq_param(request.query.get("after", "0"), "after"))
    if await live.view(run_id) is None:
        raise ApiError(404, f"no run {run_id!r}")
    resp = await sse.open_stream(request)
    with contextlib.suppress(ConnectionResetError):
        view = await _send_run_events(request, resp, ctx, live, run_id, after)
        if view is not None:
            await resp.write(sse.event("end", {"status": view.status}).encode())
    return resp


async def _send_run_events(request: web.Request, resp: web.StreamResponse, ctx: ApiContext,
                           live: LiveRuns, run_id: str, after: int) -> RunView | None:
    """Send the run's events after ``after`` until it has ended; its last view, or None
    when the client went away first."""
    pacer = sse.Pacer()
    first = True
    with live.watch(run_id) as watch:
        while True:
            woken = watch.event  # taken before reading: an event meanwhile sets it
            # The events the bus brought since, as kept for the watchers; the store is
            # read for the history, and whenever the run's view is ahead of what was
            # kept (folded from the store, or the bus skipped: see LiveRuns).
            recorded = watch.take(after)
            if not recorded and (first or await _ahead(live, run_id, after)):
                recorded = await ctx.store.read(run_stream(run_id), from_seq=after + 1)
            first = False
            if recorded:
                await resp.write("".join(_event_text(r) for r in recorded).encode())
                pacer.wrote()
                after = recorded[-1].seq
            view = await live.view(run_id)
            if view is None or (view.done and after >= view.last_seq):
                return view
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pacer.keepalive_s):  # wait_for: see outbox.py
                    await woken.wait()
            if sse.gone(request):
                return None
            await pacer.idle(resp)


async def _ahead(live: LiveRuns, run_id: str, after: int) -> bool:
    view = await live.view(run_id)
    return view is None or view.last_seq > after


def _event_text(recorded: RecordedEvent) -> str:
    return sse.event("event", recorded.to_json(), id=recorded.seq)


# --- every run's changes -------------------------------------------------------------


async def _changes(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    live = _live(ctx)
    shown = listing(request)
    resume = sse.last_event_id(request)
    since = seq_param(resume, "Last-Event-ID") if resume else None
    with live.changes() as listener:  # before anything is read: nothing falls in between
        resp = await sse.open_stream(request)
        with contextlib.suppress(ConnectionResetError):
            if since is None:
                ready = await ctx.store.last_position()
                await resp.write(sse.event("ready", {"position": ready}, id=ready).encode())
            else:
                await _replay(resp, ctx, live, since, shown)
            pacer = sse.Pacer()
            while not sse.gone(request):
                try:
                    change = await listener.next(pacer.keepalive_s)
                except TimeoutError:
                    await pacer.idle(resp)
                    continue
                if change is None:
                    break  # fell behind: the client resumes from its last id
                if shown.shows(change.run.project):
                    await resp.write(_change_text(change).encode())
                    pacer.wrote()
    return resp


async def _replay(resp: web.StreamResponse, ctx: ApiContext, live: LiveRuns, since: int,
                  shown: Listing) -> None:
    """The runs changed after position ``since``, each run's current summary once per
    page of events, in the order of their last change."""
    position = since
    while page := await ctx.store.read_all(position, REPLAY_PAGE):
        position = page[-1].position
        last: dict[str, RecordedEvent] = {}
        for recorded in page:
            if is_run_stream(recorded.stream):
                last.pop(run_id_of(recorded.stream), None)  # re-inserted: order by last
                last[run_id_of(recorded.stream)] = recorded
        for run_id, recorded in last.items():
            view = await live.view(run_id)
            if view is not None and view.last_seq < recorded.seq:
                # This process's bus is behind the store: the change's id says the client
                # has the run as of ``recorded``, so it must (it would not be sent again).
                view = await load_run(ctx.store, run_id)
            if view is not None and shown.shows(view.project):
                change = RunChange(recorded.position, recorded.type, view)
                await resp.write(_change_text(change).encode())


def _change_text(change: RunChange) -> str:
    data: dict[str, Any] = {"position": change.position, "type": change.type,
                            "run": change.run.summary()}
    return sse.event("run", data, id=change.position)
