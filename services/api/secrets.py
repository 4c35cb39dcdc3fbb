"""Secrets over HTTP: set, list and remove; never read back.

    GET    /api/v1/projects/{name}/secrets            the project's secrets
    PUT    /api/v1/projects/{name}/secrets/{secret}   {"value": "..."}: set it
    DELETE /api/v1/projects/{name}/secrets/{secret}
    GET    /api/v1/secrets                            the global secrets (every project's)
    PUT    /api/v1/secrets/{secret}
    DELETE /api/v1/secrets/{secret}

Answers hold names, scopes and dates (``SecretView.to_json``), never a value. A name
that is not an environment variable's, or a value under 4 characters, is a 400
saying why. The acting token's name goes into the event's ``meta["actor"]``.

Startup (``migrate_env``): project env variables named like secrets
(``shared.logging.secret_variable``) become project secrets marked ``implicit``
(given to every step, as the env variable was) and leave the project's env.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from services.api.auth import actor
from services.api.context import CONTEXT
from services.api.errors import ApiError, read_json
from services.api.projects import require_project
from shared import events as ev
from shared.errors import ConcurrencyConflict
from shared.events import NewEvent
from shared.logging import secret_variable
from shared.pipeline.notify import variables
from shared.ports.eventstore import EventStore
from shared.projections.projects import fold_project, project_stream
from shared.projections.secrets import GLOBAL
from shared.secrets import SecretStore, check_secret

__all__ = ["migrate_env", "secret_routes"]

log = logging.getLogger(__name__)


def _store(request: web.Request) -> SecretStore:
    secrets = request.app[CONTEXT].secrets
    if secrets is None:
        raise ApiError(503, "the secret store is not open (no secret key)")
    return secrets


async def _scope(request: web.Request) -> str:
    name = request.match_info.get("name")
    if name is None:
        return GLOBAL
    return (await require_project(request.app[CONTEXT].store, name)).name


def _secret_name(request: web.Request) -> str:
    name = request.match_info["secret"]
    problem = check_secret(name)
    if problem:
        raise ApiError(400, problem, "invalid_body")
    return name


async def _list(request: web.Request) -> web.Response:
    scope = await _scope(request)
    listed = await _store(request).listed(scope)
    return web.json_response({"secrets": [view.to_json() for view in listed]})


async def _set(request: web.Request) -> web.Response:
    scope, name = await _scope(request), _secret_name(request)
    body: Any = await read_json(request)
    value = body.get("value") if isinstance(body, dict) else None
    if not isinstance(value, str) or set(body) != {"value"}:
        raise ApiError(400, 'expected {"value": "<the secret>"}', "invalid_body")
    try:
        view = await _store(request).set(scope, name, value, actor=actor(request))
    except ValueError as exc:
        raise ApiError(400, f"{name}: {exc}", "invalid_body") from None
    return web.json_response(view.to_json())


async def _remove(request: web.Request) -> web.Response:
    scope, name = await _scope(request), _secret_name(request)
    if not await _store(request).remove(scope, name, actor=actor(request)):
        raise ApiError(404, f"no secret {name!r}")
    return web.Response(status=204)


def secret_routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/projects/{name}/secrets", _list),
        web.put("/api/v1/projects/{name}/secrets/{secret}", _set),
        web.delete("/api/v1/projects/{name}/secrets/{secret}", _remove),
        web.get("/api/v1/secrets", _list),
        web.put("/api/v1/secrets/{secret}", _set),
        web.delete("/api/v1/secrets/{secret}", _remove),
    ]


async def migrate_env(store: EventStore, secrets: SecretStore) -> list[str]:
    """Move every project's env variables named like secrets into its secrets (implicit),
    then out of its env; returns ``project/NAME`` of each moved. Idempotent: what was
    moved is no longer in the env. A variable a notification rule names (``${NAME}``)
    stays where the rule finds it."""
    moved = []
    for stream in await store.streams("project-"):
        view = fold_project(await store.read(stream))
        if view is None or view.deleted:
            continue
        used = variables(view.notify)
        names = sorted(n for n, v in view.env.items()
                       if secret_variable(n) and n not in used and not check_secret(n, v))
        if not names:
            continue
        for name in names:
            await secrets.set(view.name, name, view.env[name], implicit=True,
                              actor="migration")
        env = {n: v for n, v in view.env.items() if n not in names}
        try:
            await store.append(project_stream(view.name),
                               [NewEvent(ev.ProjectUpdated(changes={"env": env}),
                                         meta={"actor": "migration"})], view.last_seq)
        except ConcurrencyConflict:  # changed meanwhile: the next start moves the rest
            continue
        moved += [f"{view.name}/{name}" for name in names]
    if moved:
        log.warning("project env variables named like secrets were moved to the projects' "
                    "secrets (given to every step as before)", extra={"moved": moved})
    return moved
