"""A run's artifacts in the API: listed from its view, downloaded from the artifact store.

* ``GET /api/v1/runs/{id}/artifacts``: each artifact its jobs kept (or took from an
  earlier run by ``rerun --failed``): job, name, size, files, digest, and its download
  path; ``collected`` says when retention has removed them.
* ``GET /api/v1/runs/{id}/artifacts/{job}/{name}``: the artifact as the uncompressed tar it
  was stored as, streamed. ``Digest`` (RFC 3230, ``sha-256=`` base64) and
  ``X-Cyclone-Digest`` (``sha256:<hex>``) let a client check it; the store checks it too,
  on the way out: a blob found corrupt at its end aborts the response instead of ending
  it, so a client never takes a corrupt download as complete.
"""

from __future__ import annotations

import base64
import logging

from aiohttp import web

from services.api.context import CONTEXT, ApiContext
from services.api.errors import ApiError
from shared.errors import BlobCorrupted, BlobNotFound
from shared.ports.artifacts import ArtifactStore
from shared.projections.artifacts import ArtifactView
from shared.projections.runs import RunView

__all__ = ["artifact_json", "artifacts_routes"]

log = logging.getLogger(__name__)


def artifact_json(run_id: str, artifact: ArtifactView) -> dict[str, object]:
    return {"job": artifact.job, "name": artifact.name, "size": artifact.size,
            "files": artifact.files, "digest": artifact.digest, "paths": list(artifact.paths),
            "uploaded_at": artifact.uploaded_at, "from_run": artifact.from_run,
            "download": f"/api/v1/runs/{run_id}/artifacts/{artifact.job}/{artifact.name}"}


async def _run(ctx: ApiContext, run_id: str) -> RunView:
    run = await ctx.find_run(run_id)
    if run is None:
        raise ApiError(404, f"no run {run_id!r}")
    return run


async def _list(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    run = await _run(ctx, request.match_info["id"])
    return web.json_response({
        "run": run.id, "collected": "artifacts" in run.collected,
        "artifacts": [artifact_json(run.id, a) for a in run.artifacts]})


async def _download(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    run = await _run(ctx, request.match_info["id"])
    job, name = request.match_info["job"], request.match_info["name"]
    artifact = next((a for a in reversed(run.artifacts) if (a.job, a.name) == (job, name)), None)
    if artifact is None:
        raise ApiError(404, f"run {run.id} has no artifact {name!r} of job {job!r}")
    store = _store(ctx)
    if await store.stat(artifact.digest) is None:
        raise ApiError(410, f"artifact {name!r} of job {job!r} is no longer stored (removed "
                            "by retention)", "gone")
    response = web.StreamResponse(headers={
        "Content-Type": "application/x-tar",
        "Content-Disposition": f'attachment; filename="{name}.tar"',
        "Digest": f"sha-256={_base64(artifact.digest)}",
        "X-Cyclone-Digest": artifact.digest})
    response.content_length = artifact.size
    await response.prepare(request)
    try:
        async for chunk in store.get(artifact.digest):
            await response.write(chunk)
    except (BlobCorrupted, BlobNotFound) as exc:
        # Headers are sent: the only honest answer left is a connection cut short.
        log.error("artifact download aborted", extra={"run": run.id, "job": job,
                                                       "artifact": name, "why": str(exc)})
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


def _store(ctx: ApiContext) -> ArtifactStore:
    if ctx.artifacts is None:
        raise ApiError(503, "this server has no artifact store", "unavailable")
    return ctx.artifacts


def _base64(digest: str) -> str:
    return base64.b64encode(bytes.fromhex(digest.removeprefix("sha256:"))).decode()


def artifacts_routes() -> list[web.RouteDef]:
    return [web.get("/api/v1/runs/{id}/artifacts", _list),
            web.get("/api/v1/runs/{id}/artifacts/{job}/{name}", _download)]
