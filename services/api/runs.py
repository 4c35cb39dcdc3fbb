"""Runs: reads come from the read model (projections); writes only append events."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from services.api.access import listing, principal_of
from services.api.commands import (
    NotAwaitingApproval,
    RunNotFound,
    approve_run,
    record_request,
    request_cancel,
)
from services.api.context import CONTEXT, ApiContext
from services.api.errors import ApiError, read_json
from services.api.models import RunApprove, RunCreate
from services.api.projects import get_project, require_project
from services.api.reruns import rerun
from services.api.streams import follow_run_events, seq_param, wants_stream
from shared.errors import CoordinationError
from shared.events import run_stream
from shared.projections.runs import RunView
from shared.projections.waiting import Wait, waits_for_admission, why_waiting
from shared.status import RUN_DONE, JobStatus
from shared.workers import WorkerInfo, live_workers

__all__ = ["run_routes"]

_STATUSES = frozenset({"requested", "running"} | RUN_DONE)
# What can start a run (``RunRequested.trigger``), for the runs list's filter.
TRIGGERS = ("push", "tag", "pull_request", "manual", "schedule", "rerun", "rollback", "cli")


async def _run(ctx: ApiContext, run_id: str) -> RunView:
    run = await ctx.find_run(run_id)
    if run is None:
        raise ApiError(404, f"no run {run_id!r}")
    return run


def _accepted(run_id: str) -> web.Response:
    return web.json_response({"id": run_id, "url": f"/api/v1/runs/{run_id}"}, status=202)


async def _trigger(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    project = await require_project(ctx.store, request.match_info["name"])
    body = RunCreate.model_validate(await read_json(request) if request.can_read_body else {})
    branch = body.ref or ("" if body.commit else project.default_branch)
    event = project.run_requested(trigger="manual", branch=branch, commit=body.commit or "",
                                  params=body.params, requested_by=_who(request))
    event = dataclasses.replace(event, overrides=tuple(body.overrides))
    return _accepted(await record_request(ctx.store, event))


def _who(request: web.Request) -> str:
    return principal_of(request).name


async def _list(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    query = request.query
    status = query.get("status")
    if status is not None and status not in _STATUSES:
        raise ApiError(400, f"status: expected one of {', '.join(sorted(_STATUSES))}")
    trigger = query.get("trigger", "")
    if trigger and trigger not in TRIGGERS:
        raise ApiError(400, f"trigger: expected one of {', '.join(TRIGGERS)}")
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        raise ApiError(400, "limit: expected a whole number") from None
    if not 1 <= limit <= 500:
        raise ApiError(400, "limit: expected 1 to 500")
    # One more than asked: whether there is a next page, without counting.
    shown = listing(request)
    picked = await ctx.readmodel.views.page(
        project=shown.project, within=shown.within, status=status or "",
        branch=query.get("branch", ""), before=query.get("cursor"), limit=limit + 1,
        trigger=trigger)
    page = picked[:limit]
    next_cursor = page[-1].id if len(picked) > limit else None
    return web.json_response({"runs": [r.summary() for r in page], "next": next_cursor})


async def _show(request: web.Request) -> web.Response:
    """The run's view, and ``waiting``: what of it waits, and why (``waiting.py``)."""
    ctx = request.app[CONTEXT]
    run = await _run(ctx, request.match_info["id"])
    shown = run.to_json()
    shown["waiting"] = [wait.to_json() for wait in await _waiting(ctx, run)]
    return web.json_response(shown)


async def _waiting(ctx: ApiContext, run: RunView) -> list[Wait]:
    """``why_waiting`` with the project's limit and unfinished runs, read only for a run
    that waits to be admitted (the only wait they explain)."""
    limit, others = 0, []
    if run.project and waits_for_admission(run):
        project = await get_project(ctx.store, run.project)
        limit = project.max_concurrent_runs if project is not None else 0
        if limit > 0:
            others = await ctx.readmodel.views.unfinished(run.project)
    return why_waiting(run, others, max_concurrent_runs=limit,
                       max_parallel_jobs=ctx.max_parallel_jobs, workers=await _workers(ctx, run))


async def _workers(ctx: ApiContext, run: RunView) -> list[WorkerInfo] | None:
    """The live workers, read only for a run with a queued job (the only wait they
    explain); None when they cannot be read: the job then just waits for a worker."""
    if ctx.coord is None or not any(j.status == JobStatus.QUEUED for j in run.jobs):
        return None
    try:
        return await live_workers(ctx.coord)
    except CoordinationError:
        return None


async def _cancel(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    run_id = request.match_info["id"]
    try:
        run = await request_cancel(ctx.store, run_id, "cancelled through the API",
                                   requested_by=_who(request))
    except RunNotFound:
        raise ApiError(404, f"no run {run_id!r}") from None
    if run.done:
        raise ApiError(409, f"run {run_id!r} has already ended ({run.status})")
    return web.json_response({"id": run_id, "status": "cancelling"}, status=202)


async def _approve(request: web.Request) -> web.Response:
    """A run waiting for approval (a pull request from a fork) goes on; its steps get
    secrets only when the body says ``{"secrets": true}``."""
    ctx = request.app[CONTEXT]
    run_id = request.match_info["id"]
    body = RunApprove.model_validate(await read_json(request) if request.can_read_body else {})
    try:
        await approve_run(ctx.store, run_id, _who(request), body.secrets)
    except RunNotFound:
        raise ApiError(404, f"no run {run_id!r}") from None
    except NotAwaitingApproval as exc:
        raise ApiError(409, str(exc)) from None
    return web.json_response({"id": run_id, "approved": True, "secrets": body.secrets},
                             status=202)


async def _reject(request: web.Request) -> web.Response:
    """A run waiting for approval is cancelled, saying who rejected it."""
    ctx = request.app[CONTEXT]
    run_id = request.match_info["id"]
    run = await _run(ctx, run_id)
    if not run.awaiting_approval or run.done:
        raise ApiError(409, f"run {run_id!r} waits for no approval ({run.status})")
    who = _who(request)
    await request_cancel(ctx.store, run_id, f"rejected by {who}", requested_by=who)
    return web.json_response({"id": run_id, "status": "cancelling"}, status=202)


async def _events(request: web.Request) -> web.StreamResponse:
    if wants_stream(request):
        return await follow_run_events(request)
    ctx = request.app[CONTEXT]
    run_id = request.match_info["id"]
    after = seq_param(request.query.get("after", "0"), "after")
    recorded = await ctx.store.read(run_stream(run_id), from_seq=after + 1)
    if not recorded and not await ctx.store.read(run_stream(run_id)):
        raise ApiError(404, f"no run {run_id!r}")
    return web.json_response({"events": [r.to_json() for r in recorded]})


def run_routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/projects/{name}/runs", _trigger),
        web.get("/api/v1/runs", _list),
        web.get("/api/v1/runs/{id}", _show),
        web.post("/api/v1/runs/{id}/cancel", _cancel),
        web.post("/api/v1/runs/{id}/rerun", rerun),
        web.post("/api/v1/runs/{id}/approve", _approve),
        web.post("/api/v1/runs/{id}/reject", _reject),
        web.get("/api/v1/runs/{id}/events", _events),
    ]
