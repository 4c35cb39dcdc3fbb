"""Projects: a stream per project (``project-<name>``), folded into ``ProjectView``.

A project's forge token is stored in its events (the notifier needs it) but never
answered: ``ProjectView.to_json`` shows ``token_set`` instead.

Notification rules (``notify``) are validated with the pipeline file's rule model and
stored as ``NotifyRule.to_data()`` (source "project"). Their chat URLs and webhook keys
are secrets too: the API shows a URL's scheme and host only (``https://hooks.slack.com/…``)
and ``secret_set``. A PATCH replaces the whole list, so every URL and key is sent in full
again; a URL sent back as the API showed it is refused (400, "send the full URL again")
rather than stored shortened or matched to a stored one. Rule names are unique (a rule
without one is named by its position), and every ``${NAME}`` a rule names must be set
in the project's env as it is after the request (checked when rules are sent; the
notifier reports a variable removed later). ``email_templates`` replaces all the
templates at once (``{}``: the shipped ones); each must compile.

``registry`` and ``clusters`` (a maintainer's, as the rest) are the delivery settings a
``caicloud.yml`` relies on; they name secrets (a registry password, a cluster's server,
token and CA), which are set with ``cyclone secret set``. A PATCH replaces the whole
registry block (``null``: none) and every cluster (``{}``: none).

``retention`` (a maintainer's: how long the project's runs' logs and artifacts are kept,
``shared.retention``) is replaced as a whole block (``{}``: forever). ``cache_limit_mb``
is an admin's, as ``trusted`` is: the caches of every project share one store.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from services.api.access import listing, principal_of
from services.api.context import CONTEXT, ApiContext
from services.api.errors import ApiError, field_problem, read_json
from services.api.models import ForgePatch, ProjectCreate, ProjectPatch
from shared import events as ev
from shared.email_templates import TEMPLATE_NAMES
from shared.errors import ConcurrencyConflict
from shared.events import NewEvent
from shared.logging import HIDDEN, secret_variable
from shared.pipeline.compile import notify_rules
from shared.pipeline.loader import format_path
from shared.pipeline.notify import VARIABLE, NotifyRule, rules_from_data, variables
from shared.pipeline.resources import Resources
from shared.pipeline.schema import NotifyRuleModel, ResourcesModel, duplicate_rules, explain
from shared.ports.eventstore import EventStore
from shared.projections.projects import ProjectView, fold_project, project_stream

__all__ = ["get_project", "project_routes", "require_admin", "require_project"]

_B = TypeVar("_B", bound=BaseModel)


async def get_project(store: EventStore, name: str) -> ProjectView | None:
    view = fold_project(await store.read(project_stream(name)))
    return None if view is None or view.deleted else view


async def require_project(store: EventStore, name: str) -> ProjectView:
    view = await get_project(store, name)
    if view is None:
        raise ApiError(404, f"no project {name!r}")
    return view


async def _append(request: web.Request, name: str, event: ev.Event, expected_seq: int) -> None:
    """Append ``event`` to the project's stream, naming who made the change."""
    store = request.app[CONTEXT].store
    meta = {"actor": principal_of(request).name}
    try:
        await store.append(project_stream(name), [NewEvent(event, meta=meta)], expected_seq)
    except ConcurrencyConflict:
        raise ApiError(409, f"project {name!r} was changed concurrently; retry") from None


async def _create(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = _validated(ProjectCreate, await read_json(request))
    if body.trusted or body.max_resources is not None or body.cache_limit_mb:
        require_admin(request, "trusted, max_resources, cache_limit_mb")
    existing = fold_project(await ctx.store.read(project_stream(body.name)))
    if existing is not None and not existing.deleted:
        raise ApiError(409, f"project {body.name!r} already exists")
    fields = body.model_dump(exclude={"forge", "hook_secret", "notify", "email_templates",
                                      "max_resources", "registry", "clusters", "retention"})
    fields["retention"] = body.retention.to_data() if body.retention else {}
    fields["max_resources"] = _resources_data(body.max_resources)
    fields["registry"] = body.registry.to_data() if body.registry else {}
    fields["clusters"] = {name: c.to_data() for name, c in body.clusters.items()}
    forge = body.forge.model_dump() if body.forge else {}
    fields["notify"] = _rules_data(body.notify, body.env)
    _refuse_secret_env(body.name, body.env, rules_from_data(fields["notify"]))
    fields["email_templates"] = body.email_templates.to_data() if body.email_templates else {}
    # The webhook secret is shown this once when Cyclone made it up (as a token is).
    generated = "" if body.hook_secret else secrets.token_urlsafe(24)
    await _append(request, body.name,
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
    shown = listing(request)
    views = [v for n in names
             if shown.shows(n) and (v := await get_project(ctx.store, n)) is not None]
    return web.json_response({"projects": [v.to_json() for v in views]})


async def _show(request: web.Request) -> web.Response:
    view = await require_project(request.app[CONTEXT].store, request.match_info["name"])
    return web.json_response(view.to_json())


async def _update(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    view = await require_project(ctx.store, request.match_info["name"])
    body = _validated(ProjectPatch, await read_json(request))
    if (body.trusted is not None or body.max_resources is not None
            or body.cache_limit_mb is not None):
        require_admin(request, "trusted, max_resources, cache_limit_mb")
    changes = body.model_dump(exclude_none=True, exclude={"forge", "notify", "email_templates",
                                                         "max_resources", "registry",
                                                         "clusters", "retention"})
    if body.retention is not None:
        changes["retention"] = body.retention.to_data()
    if body.max_resources is not None:
        changes["max_resources"] = _resources_data(body.max_resources)
    if "registry" in body.model_fields_set:
        changes["registry"] = body.registry.to_data() if body.registry else {}
    if body.clusters is not None:
        changes["clusters"] = {name: c.to_data() for name, c in body.clusters.items()}
    if body.env is not None:
        changes["env"] = _env_change(view, body.env)
    if "forge" in body.model_fields_set:
        changes["forge"] = _forge_change(view, body.forge)
    if body.notify is not None:
        changes["notify"] = _rules_data(body.notify, changes.get("env", view.env))
    if body.email_templates is not None:
        changes["email_templates"] = body.email_templates.to_data()
    if body.env is not None:
        rules = rules_from_data(changes["notify"]) if "notify" in changes else view.notify
        _refuse_secret_env(view.name, {n: v for n, v in body.env.items()
                                       if view.env.get(n) != changes["env"][n]
                                       or n not in view.env}, rules)
    if changes:
        await _append(request, view.name, ev.ProjectUpdated(changes=changes), view.last_seq)
    return web.json_response((await require_project(ctx.store, view.name)).to_json())


def _refuse_secret_env(project: str, env: Mapping[str, str],
                       rules: Sequence[NotifyRule]) -> None:
    """A new env variable named like a secret belongs in the secret store (encrypted, given
    only to the steps that ask), not in the env (plaintext in every run's request). One a
    notification rule names (``${NAME}``) stays where the notifier reads it."""
    used = variables(rules)
    for name in env:
        if secret_variable(name) and name not in used:
            raise ApiError(400, f"env.{name}: named like a secret: set it as one, `cyclone "
                                f"secret set {project} {name}`, and list it under `secrets:` "
                                "where a step needs it", "invalid_body")


def require_admin(request: web.Request, what: str) -> None:
    """Who may change what a project's pipelines may do on the Docker host (``what``): an
    admin, not a project's maintainer (the route's own rule)."""
    if not principal_of(request).admin:
        raise ApiError(403, f"changing {what} needs the admin role")


def _resources_data(model: ResourcesModel | None) -> dict[str, Any]:
    if model is None:
        return {}
    return Resources(memory=model.memory, cpus=model.cpus, pids=model.pids).to_data()


def _env_change(view: ProjectView, env: Mapping[str, str]) -> dict[str, str]:
    """The env to record: a value sent back as the API shows a secret (``***``) keeps the
    stored one, so a client can send back what it read."""
    kept = dict(env)
    for name, value in env.items():
        if value == HIDDEN:
            if name not in view.env:
                raise ApiError(400, f"env.{name}: '***' is how the API shows a secret value; "
                                    "send the value itself", "invalid_body")
            kept[name] = view.env[name]
    return kept


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


def _validated(model: type[_B], data: Any) -> _B:
    """``data`` as ``model``, or a 400 naming every problem's field. Problems in rules and
    templates are worded as the linter words them (``notify[0].email[1]: not an email
    address``); the rest as ``services.api.errors`` words pydantic's."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = "; ".join(_problem(error) for error in exc.errors())
        raise ApiError(400, detail, "invalid_body") from None


def _problem(error: ErrorDetails) -> str:
    loc = error["loc"]
    if loc[:1] == ("notify",) and len(loc) > 1 and isinstance(loc[1], int):
        where, message = explain(NotifyRuleModel, error, below=2)
        return f"{format_path(('notify', loc[1], *where))}: {message}"
    if loc[:1] == ("email_templates",) and len(loc) > 1:
        message = str((error.get("ctx") or {}).get("error", error["msg"]))
        if error["type"] == "extra_forbidden":
            message = (f"unknown template '{loc[1]}' (expected one of: "
                       f"{', '.join(TEMPLATE_NAMES)})")
        return f"{format_path(loc)}: {message}"
    return field_problem(error)


def _rules_data(models: Sequence[NotifyRuleModel], env: Mapping[str, str],
                ) -> list[dict[str, Any]]:
    """The rules to record, or a 400 for a name used twice or a ``${NAME}`` that ``env``
    (the project's, as it is after the request) does not set."""
    given = [model.name for model in models]
    problems = [
        f"notify[{i}].name: duplicate rule name '{name}' (as notify[{first}])" if given[i]
        else f"notify[{i}]: named '{name}' by its position, as notify[{first}] is; give it a name"
        for i, first, name in duplicate_rules(given)]
    rules = notify_rules(models, "project")
    for i, rule in enumerate(rules):
        for channel in rule.channels:
            for suffix, text in (("", channel.target), (".secret", channel.secret)):
                problems += [f"notify[{i}].{channel.kind}{suffix}: ${{{name}}} is not set in "
                             "the project's env" for name in VARIABLE.findall(text)
                             if name not in env]
    if problems:
        raise ApiError(400, "; ".join(problems), "invalid_body")
    return [rule.to_data() for rule in rules]


async def _delete(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    view = await require_project(ctx.store, request.match_info["name"])
    await _append(request, view.name, ev.ProjectDeleted(), view.last_seq)
    return web.Response(status=204)


def project_routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/projects", _create),
        web.get("/api/v1/projects", _list),
        web.get("/api/v1/projects/{name}", _show),
        web.patch("/api/v1/projects/{name}", _update),
        web.delete("/api/v1/projects/{name}", _delete),
    ]
