"""Webhook ingestion: ``POST /api/v1/hooks/{provider}/{project}``.

The order matters and is the contract:

1. the delivery's authenticity is checked first, with the project's own secret: a bad or
   missing signature is a 401 and nothing is stored;
2. the payload becomes a ``ForgeEvent`` (``services/api/hooks``), or is ignored (an
   event or action that builds nothing: 202 ``{"ignored": why}``), or is a 400 naming
   what is malformed;
3. the delivery is recorded as a ``DeliveryReceived`` event (with its body's SHA-256) in
   a stream named by the delivery id, written with "expect empty": of a delivery and its
   redeliveries, racing on any api replica, exactly one records. A redelivery (the same
   body) answers 200 with the runs the first one started; the same id with another body
   is a 409, and changes nothing;
4. each run is requested (``RunRequested`` carrying the ``ForgeEvent``, so the
   pipeline's ``on:`` rules are judged once its file is checked out: a run they do not
   start ends ``skipped`` with the reason), then older runs of the same branch or pull
   request are cancelled (``auto_cancel``, on by default);
5. 202 only now: the trigger is durable. Should the process die between 3 and 4, the
   redelivery requests the runs the record names and that do not exist yet.

``GET /api/v1/hooks/deliveries[?project=NAME]`` lists recent deliveries and what became
of them (needs a token, like every read).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from aiohttp import web

from services.api.commands import record_request, request_cancel
from services.api.context import CONTEXT, ApiContext
from services.api.errors import ApiError
from services.api.hooks import (
    PROVIDERS,
    HookAuthError,
    Ignored,
    PayloadError,
    delivery_header,
    lower_headers,
    parse,
    verify,
)
from services.api.projects import get_project
from shared import events as ev
from shared.errors import ConcurrencyConflict
from shared.events import NewEvent, decode
from shared.forge import ForgeEvent
from shared.projections.projects import ProjectView
from shared.runstream import load_run, new_run_id

__all__ = ["delivery_stream", "webhook_routes"]

DELIVERIES_SHOWN = 100
# Where forges put the delivery id (GitLab's Idempotency-Key survives its retries).
_DELIVERY_HEADERS = ("X-GitHub-Delivery", "Idempotency-Key", "X-Gitlab-Event-UUID",
                     "X-Gitea-Delivery", "X-Forgejo-Delivery", "X-Gogs-Delivery",
                     "X-Cyclone-Delivery")


def webhook_routes() -> list[web.RouteDef]:
    return [web.get("/api/v1/hooks/deliveries", _deliveries),
            web.post("/api/v1/hooks/{provider}/{project}", _receive)]


def delivery_stream(project: str, provider: str, delivery: str) -> str:
    digest = hashlib.sha256(f"{provider}\0{delivery}".encode()).hexdigest()[:32]
    return f"delivery:{project}:{digest}"  # ":" is in no project name


async def _receive(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    provider, name = request.match_info["provider"], request.match_info["project"]
    if provider not in PROVIDERS:
        raise ApiError(404, f"unknown webhook provider {provider!r}: one of "
                            f"{', '.join(PROVIDERS)}")
    body = await request.read()
    project = await get_project(ctx.store, name)
    if project is None:
        raise ApiError(404, f"no project {name!r}")
    try:
        verify(provider, request.headers, body, project.hook_secret)
        parsed = parse(provider, request.headers, body)
        delivery = _delivery_id(parsed, request.headers, body)
    except HookAuthError as exc:
        raise ApiError(401, f"webhook not authentic: {exc}") from None
    except PayloadError as exc:
        raise ApiError(400, f"webhook payload: {exc}") from None
    stream = delivery_stream(name, provider, delivery)
    record = _record(project, provider, delivery, parsed, hashlib.sha256(body).hexdigest())
    try:
        await ctx.store.append(stream, [NewEvent(record)], expected_seq=0)
    except ConcurrencyConflict:
        return await _redelivered(ctx, project, stream, record.body_sha256)
    await _start(ctx, project, record)
    if record.ignored:
        return web.json_response({"delivery": delivery, "ignored": record.ignored},
                                 status=202)
    return web.json_response({"delivery": delivery, "runs": record.run_ids}, status=202)


def _delivery_id(parsed: ForgeEvent | Ignored, headers: Mapping[str, str],
                 body: bytes) -> str:
    """Raises ``PayloadError`` for a delivery header that is not a short line of text."""
    if isinstance(parsed, ForgeEvent) and parsed.delivery:
        return parsed.delivery
    found = delivery_header(lower_headers(headers), *_DELIVERY_HEADERS)
    return found or "sha256:" + hashlib.sha256(body).hexdigest()  # no id: same body, same


def _record(project: ProjectView, provider: str, delivery: str,
            parsed: ForgeEvent | Ignored, body_sha256: str) -> ev.DeliveryReceived:
    """What to record (and do) about a delivery: the runs to start, or why none."""
    if isinstance(parsed, Ignored):
        return ev.DeliveryReceived(project=project.name, provider=provider, delivery=delivery,
                                   ignored=parsed.reason, body_sha256=body_sha256)
    ignored = ""
    if parsed.kind == "ping":
        ignored = "ping: the webhook works; nothing to build"
    elif parsed.deleted:
        what = f"tag {parsed.tag!r}" if parsed.tag else f"branch {parsed.branch!r}"
        ignored = f"{what} deleted: nothing to build"
    else:
        ignored = project.fork_rule(parsed.to_json()).ignored  # fork_prs: never
    run_ids = () if ignored else (new_run_id(),)
    return ev.DeliveryReceived(project=project.name, provider=provider, delivery=delivery,
                               event=parsed.to_json(), run_ids=run_ids, ignored=ignored,
                               body_sha256=body_sha256)


async def _start(ctx: ApiContext, project: ProjectView, record: ev.DeliveryReceived) -> None:
    """Request the record's runs that do not exist yet, then supersede older ones."""
    if not record.run_ids:
        return
    event = ForgeEvent.from_json(record.event)
    for run_id in record.run_ids:
        if await load_run(ctx.store, run_id) is not None:
            continue
        # A pull request without its head commit (Gogs): the ref the forge keeps it under.
        pr_ref = event.kind == "pull_request" and not event.commit
        branch = event.ref if pr_ref else event.tag or event.branch
        requested = project.run_requested(
            trigger=event.kind, branch=branch, commit=event.commit,
            requested_by=f"webhook:{record.provider}", forge_event=record.event)
        await record_request(ctx.store, requested, run_id)
        if project.auto_cancel:
            await _supersede(ctx, project.name, event, run_id)


async def _supersede(ctx: ApiContext, project: str, event: ForgeEvent, newer: str) -> None:
    """Cancel the older unfinished runs of the same branch (push) or pull request."""
    if event.kind not in ("push", "pull_request"):
        return
    for run in await ctx.readmodel.views.unfinished(project):
        older = run.forge_event or {}
        same = (run.id < newer and not run.cancel_requested  # asked once is enough
                and older.get("kind") == event.kind
                and (older.get("pr_number") == event.pr_number if event.kind == "pull_request"
                     else older.get("branch") == event.branch))
        if same:
            await request_cancel(ctx.store, run.id, reason=f"superseded by run {newer}",
                                 requested_by="auto-cancel")


async def _redelivered(ctx: ApiContext, project: ProjectView, stream: str,
                       body_sha256: str) -> web.Response:
    [first] = [decode(r) for r in await ctx.store.read(stream)][:1]
    assert isinstance(first, ev.DeliveryReceived)
    if first.body_sha256 and first.body_sha256 != body_sha256:  # "" : recorded before
        raise ApiError(409, f"delivery {first.delivery!r} was received before with another "
                            "body; a redelivery sends the same body, a new event a new id")
    await _start(ctx, project, first)  # in case the first delivery died half-way
    body = {"delivery": first.delivery, "redelivery": True, "runs": first.run_ids}
    if first.ignored:
        body["ignored"] = first.ignored
    return web.json_response(body, status=200)


async def _deliveries(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    project = request.query.get("project", "")
    streams = await ctx.store.streams(f"delivery:{project}:" if project else "delivery:")
    shown = []
    for stream in streams:
        for recorded in (await ctx.store.read(stream))[:1]:
            event = decode(recorded)
            if isinstance(event, ev.DeliveryReceived):
                shown.append(await _delivery_json(ctx, event, recorded.ts))
    shown.sort(key=lambda d: str(d["received_at"]), reverse=True)
    return web.json_response({"deliveries": shown[:DELIVERIES_SHOWN]})


async def _delivery_json(ctx: ApiContext, event: ev.DeliveryReceived,
                         ts: str) -> dict[str, object]:
    runs = []
    for run_id in event.run_ids:
        run = await ctx.find_run(run_id)
        runs.append({"id": run_id, "status": run.status if run else "unknown",
                     "reason": run.reason if run else ""})
    forge = event.event
    return {"delivery": event.delivery, "provider": event.provider,
            "project": event.project, "received_at": ts, "kind": forge.get("kind", ""),
            "branch": forge.get("branch", ""), "tag": forge.get("tag", ""),
            "commit": forge.get("commit", ""), "ignored": event.ignored, "runs": runs}
