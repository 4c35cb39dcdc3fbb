"""Retention in the api: ``POST /api/v1/gc`` (admins; ``cyclone gc``) and the periodic pass.

``POST /api/v1/gc`` with ``{"dry_run": true|false}`` (an empty body: false) runs a
retention pass now (``shared.collector``) and streams its progress as NDJSON, one object
per thing removed (``kind``: evicted, plan, run, blob) and a last ``done`` with the
totals; a pass that fails half-way ends with ``{"kind": "error", "detail"}`` (the status
is 200 by then). A client that hangs up does not stop the pass.

``start_retention`` adds to the api app: the collector (``ApiContext.gc``), the storage
figures of ``/metrics`` (``StorageUse``, read every ``STORAGE_REFRESH_S``), and, in the
process that answers for every run (``RunScope.server``), a pass every
``CYCLONE_GC_INTERVAL_S`` while it holds the ``gc`` leadership: one replica at a time.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from services.api.context import CONTEXT
from services.api.errors import ApiError, read_json
from services.api.models import GcRequest
from shared.app import run_in_background
from shared.caches import CacheIndex, project_cache_limit
from shared.collector import Collector, StorageUse
from shared.config import Settings
from shared.errors import CycloneError
from shared.infra import Ports
from shared.leader import run_as_leader

__all__ = ["STORAGE_REFRESH_S", "gc_routes", "start_retention"]

log = logging.getLogger(__name__)

STORAGE_REFRESH_S = 60.0  # how often /metrics' storage figures are read


def start_retention(app: web.Application, settings: Settings, ports: Ports) -> None:
    ctx = app[CONTEXT]
    caches = CacheIndex(ports.store, project_cache_limit(ports.store, settings.cache_max_mb))
    ctx.gc = Collector(ports.store, lambda: ctx.readmodel.views, ports.logs, ports.artifacts,
                       caches)
    ctx.storage = storage = StorageUse(ports.store, ports.artifacts, caches, ctx.gc)

    async def refreshing() -> None:
        await storage.refresh_every(STORAGE_REFRESH_S)

    run_in_background(app, refreshing, "storage metrics")
    if ports.scope.server:
        gc = ctx.gc

        async def passes() -> None:
            await gc.run_every(settings.gc_interval_s)

        async def leading() -> None:
            await run_as_leader(ports.coord, "gc", settings.worker_id, passes)

        run_in_background(app, leading, "gc leader")


async def _gc(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    raw = await request.read()
    body = GcRequest.model_validate(await read_json(request) if raw.strip() else {})
    if ctx.gc is None:
        raise ApiError(503, "retention is not running in this api (no artifact store)")
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    listening = True

    async def progress(item: dict[str, Any]) -> None:
        nonlocal listening
        if listening:
            try:
                await response.write(json.dumps(item).encode() + b"\n")
            except ConnectionError:  # the client hung up: the pass goes on
                listening = False

    try:
        await ctx.gc.collect(dry_run=body.dry_run, progress=progress)
    except CycloneError as exc:
        log.warning("retention pass failed", extra={"error": str(exc)})
        await progress({"kind": "error", "detail": str(exc)})
    if listening:
        await response.write_eof()
    return response


def gc_routes() -> list[web.RouteDef]:
    return [web.post("/api/v1/gc", _gc)]
