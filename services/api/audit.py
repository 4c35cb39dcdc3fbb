"""The audit trail in the api: verification, provenance, and the periodic checkpoint.

``GET /api/v1/audit/verify?run=ID`` (one run's stream) or ``?all=1`` (every stream),
admins only, answers NDJSON: ``{"kind": "progress", "done", "total"}`` now and then
(``all``), one ``{"kind": "finding", "finding": {...}}`` per finding
(``shared.audit_verify.Finding.to_json``), and a last ``{"kind": "done", "streams",
"events", "findings", "tampered"}``; a verification that fails half-way ends with
``{"kind": "error", "detail"}`` (the status is 200 by then).

``GET /api/v1/runs/{id}/provenance[?image=NAME]``: ``{"run", "statements": [...]}``, an
in-toto Statement per image the run pushed (``shared.projections.provenance``), only
those whose name or repository is NAME when it is given (404 when none is).

``start_audit_checkpoints`` runs ``shared.audit_checkpoints.checkpoint_every`` in the
process that answers for every run, while it holds the ``audit`` leadership.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiohttp import web

from services.api.context import CONTEXT
from services.api.errors import ApiError
from shared.app import run_in_background
from shared.audit_checkpoints import checkpoint_every
from shared.audit_verify import AuditReport, verify_store
from shared.config import Settings
from shared.errors import CycloneError
from shared.events import run_stream
from shared.infra import Ports
from shared.leader import run_as_leader
from shared.projections.provenance import of_image, provenance

__all__ = ["PROGRESS_EVERY_S", "audit_routes", "start_audit_checkpoints"]

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0  # a long verification says how far it got this often


def start_audit_checkpoints(app: web.Application, settings: Settings, ports: Ports) -> None:
    if not ports.scope.server:
        return

    async def checkpoints() -> None:
        await checkpoint_every(ports.store, settings.audit_checkpoint_s)

    async def leading() -> None:
        await run_as_leader(ports.coord, "audit", settings.worker_id, checkpoints)

    run_in_background(app, leading, "audit checkpoint leader")


async def _verify(request: web.Request) -> web.StreamResponse:
    store = request.app[CONTEXT].store
    run, every = request.query.get("run", ""), request.query.get("all", "") in ("1", "true")
    if bool(run) == every:
        raise ApiError(400, "give either run=ID (one run's events) or all=1 (every stream)")
    report: AuditReport | None = None
    if run:  # one stream: quick, and an unknown run is a 404 rather than a clean report
        report = await verify_store(store, [run_stream(run)])
        if not report.events and not report.findings:
            raise ApiError(404, f"no run {run!r}")
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    last = time.monotonic()

    async def progress(done: int, total: int, stream: str) -> None:
        nonlocal last
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            await _line(response, {"kind": "progress", "done": done, "total": total})

    try:
        try:
            await _report(response, report or await verify_store(store, None, progress))
        except CycloneError as exc:
            log.warning("audit verification failed", extra={"error": str(exc)})
            await _line(response, {"kind": "error", "detail": str(exc)})
        await response.write_eof()
    except ConnectionError:  # the client hung up: nobody to tell
        pass
    return response


async def _report(response: web.StreamResponse, report: AuditReport) -> None:
    for finding in report.findings:
        await _line(response, {"kind": "finding", "finding": finding.to_json()})
    await _line(response, {"kind": "done", **report.to_json()})


async def _line(response: web.StreamResponse, item: dict[str, Any]) -> None:
    await response.write(json.dumps(item).encode() + b"\n")


async def _provenance(request: web.Request) -> web.Response:
    run_id = request.match_info["id"]
    events = await request.app[CONTEXT].store.read(run_stream(run_id))
    if not events:
        raise ApiError(404, f"no run {run_id!r}")
    statements = provenance(run_id, events)
    image = request.query.get("image", "")
    if image:
        try:
            statements = of_image(statements, image)
        except LookupError as exc:
            raise ApiError(404, f"run {run_id!r}: {exc.args[0]}") from None
    return web.json_response({"run": run_id, "statements": statements})


def audit_routes() -> list[web.RouteDef]:
    return [web.get("/api/v1/audit/verify", _verify),
            web.get("/api/v1/runs/{id}/provenance", _provenance)]
