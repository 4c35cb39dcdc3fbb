"""Projects: a stream per project (``project-<name>``), folded into ``ProjectView``.

A project's forge token is stored in its events (the notifier needs it) but never
answered: ``ProjectView.to_json`` shows ``token_set`` instead.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from services.api.context import CONTEXT, ApiContext
from services.api.errors import ApiError
from services.api.models import ForgePatch, ProjectCreate, ProjectPatch
from shared import events as ev
from shared.errors import ConcurrencyConflict
from shared.events import NewEvent
from shared.ports.eventstore import EventStore
from shared.projections.projects import ProjectView, fold_project, project_stream

__all__ = ["get_project", "project_routes", "require_project"]


async def get_project(store: EventStore, name: str) -> ProjectView | None:
    view = fold_project(await store.read(project_stream(name)))
    return None if view is None or view.deleted else view


async def require_project(store: EventStore, name: str) -> ProjectView:
    view = await get_project(store, name)
    if view is None:
        raise ApiError(404, f"no project {name!r}")
    return view


async def _append(store: EventStore, name: str, event: ev.Event, expected_seq: int) -> None:
    try:
        await store.append(project_stream(name), [NewEvent(event)], expected_seq)
    except ConcurrencyConflict:
        raise ApiError(409, f"project {name!r} was changed concurrently; retry") from None


async def _create(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = ProjectCreate.model_validate(await request.json())
    existing = fold_project(await ctx.store.read(project_stream(body.name)))
    if existing is not None and not existing.deleted:
        raise ApiError(409, f"project {body.name!r} already exists")
    fields = body.model_dump(exclude={"forge", "hook_secret"})
    forge = body.forge.model_dump() if body.forge else {}
    # The webhook secret is shown this once when Cyclone made it up (as a token is).
    generated = "" if body.hook_secret else secrets.token_urlsafe(24)
    await _append(ctx.store, body.name,
                  ev.ProjectRegistered(**fields, forge=forge,
                                       hook_secret=body.hook_secret or generated),
                  existing.last_seq if existing else 0)
    shown = (await require_project(ctx.store, body.name)).to_json()
    if generated:
        shown["hook_secret"] = generated
    return web.json_response(shown, status=201)


async def _list(request: web.Request) -> web.Response:
    ctx: ApiContext = request.app[CONTEXT]
    names = [s.removeprefix("project-") for s in await ctx.store.streams("project-")]
    views = [v for n in names if (v := await get_project(ctx.store, n)) is not None]
    return web.json_response({"projects": [v.to_json() for v in views]})


async def _show(request: web.Request) -> web.Response:
    view = await require_project(request.app[CONTEXT].store, request.match_info["name"])
    return web.json_response(view.to_json())


async def _update(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    view = await require_project(ctx.store, request.match_info["name"])
    body = ProjectPatch.model_validate(await request.json())
    changes = body.model_dump(exclude_none=True, exclude={"forge"})
    if "forge" in body.model_fields_set:
        changes["forge"] = _forge_change(view, body.forge)
    if changes:
        await _append(ctx.store, view.name, ev.ProjectUpdated(changes=changes), view.last_seq)
    return web.json_response((await require_project(ctx.store, view.name)).to_json())


def _forge_change(view: ProjectView, patch: ForgePatch | None) -> dict[str, Any]:
    """The forge block to record: ``{}`` removes it; a block without a token keeps the
    stored one, unless it would then be sent to another forge."""
    if patch is None:
        return {}
    forge = patch.model_dump()
    if patch.token is None:
        old = view.forge
        if old is None or (old.kind, old.api_url) != (patch.kind, patch.api_url):
            raise ApiError(400, "forge.token: required (the project has no token for this "
                                "forge yet)", "invalid_body")
        forge["token"] = old.token
    return forge


async def _delete(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    view = await require_project(ctx.store, request.match_info["name"])
    await _append(ctx.store, view.name, ev.ProjectDeleted(), view.last_seq)
    return web.Response(status=204)


def project_routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/projects", _create),
        web.get("/api/v1/projects", _list),
        web.get("/api/v1/projects/{name}", _show),
        web.patch("/api/v1/projects/{name}", _update),
        web.delete("/api/v1/projects/{name}", _delete),
    ]
