"""Who may do what: one table maps every route to the role it needs, enforced in one place.

A request is made by a ``Principal``: a user (through an API token or a browser
session), a token of no user (made before users existed: the first start's admin token,
or one that acts as a maintainer of every project), or nobody (anonymous: a viewer of
every project when ``CYCLONE_PUBLIC_READ=1``, else nothing but the open routes).

``ROUTES`` names, for each method and route, what it needs: nothing (``OPEN``), any
identity (``SIGNED_IN``), the global ``ADMIN`` flag, a role in the project the route is
about (found from the route's ``{name}``, its run's ``{id}`` or its notification test's
``{id}``), or, for lists across projects (``LISTED``), nothing more than a role in some
project: the handler shows only what ``Principal.can(Role.VIEWER, project)`` allows. A
route missing from the table is refused (and a test walks every route against it).
A read-only token may only read; a session's writes need its CSRF token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aiohttp import web

from services.api.errors import ApiError
from shared.status import Role

__all__ = ["PRINCIPAL_KEY", "ROUTES", "Listing", "Need", "Principal", "ProjectOf", "Rule",
           "Scope", "access_middleware", "listing", "principal_of"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    name: str  # the user's name, a no-user token's name, or "anonymous"
    user: str = ""  # "" for no user (a no-user token, anonymous)
    admin: bool = False
    roles: Mapping[str, Role] = field(default_factory=dict)  # project -> role
    every_project: Role | None = None  # a role held in every project
    read_only: bool = False
    session: bool = False  # a browser session (its writes need the CSRF token)
    token_id: str = ""

    @property
    def anonymous(self) -> bool:
        return not self.token_id

    def role_in(self, project: str) -> Role | None:
        held = [r for r in (self.roles.get(project), self.every_project) if r is not None]
        if self.admin:
            held.append(Role.MAINTAINER)
        if not held:
            return None
        best = max(held, key=lambda r: r.rank)
        return Role.VIEWER if self.read_only else best

    def can(self, role: Role, project: str) -> bool:
        held = self.role_in(project)
        return held is not None and held.rank >= role.rank

    def visible(self) -> frozenset[str] | None:
        """The projects it may read; None: every project."""
        if self.admin or self.every_project is not None:
            return None
        return frozenset(self.roles)


@dataclass(frozen=True)
class Listing:
    """What a list across projects shows: ``project`` (the ``?project=`` asked for, ""
    for all), narrowed to ``within`` (the projects the caller may read; None: all)."""

    project: str
    within: frozenset[str] | None

    def shows(self, project: str) -> bool:
        return ((not self.project or project == self.project)
                and (self.within is None or project in self.within))


def listing(request: web.Request) -> Listing:
    """The request's ``Listing``; asking for a project one may not read is a 403."""
    principal, project = principal_of(request), request.query.get("project", "")
    if project and not principal.can(Role.VIEWER, project):
        raise ApiError(403, f"needs the viewer role in project {project!r}", "forbidden")
    within = principal.visible()
    return Listing(project, frozenset({project}) if project else within)


ANONYMOUS = Principal("anonymous")
PRINCIPAL_KEY = web.RequestKey("principal", Principal)


def principal_of(request: web.Request) -> Principal:
    principal: Principal = request.get(PRINCIPAL_KEY, ANONYMOUS)
    return principal


class Need(Enum):
    OPEN = "nothing"
    SIGNED_IN = "a token or a session"
    ADMIN = "the admin role"
    LISTED = "a role in a project"  # lists across projects, narrowed by the handler


class Scope(Enum):
    """Where a project-scoped route's project comes from."""

    NAME = "name"  # match_info["name"]
    RUN = "run"  # the run match_info["id"]
    NOTIFY_TEST = "test"  # the notification test match_info["id"]


@dataclass(frozen=True)
class Rule:
    need: Need | Role
    scope: Scope | None = None


_OPEN, _SIGNED_IN, _ADMIN, _LISTED = (Rule(Need.OPEN), Rule(Need.SIGNED_IN), Rule(Need.ADMIN),
                                      Rule(Need.LISTED))


def _in(role: Role, scope: Scope) -> Rule:
    return Rule(role, scope)


_VIEW_PROJECT, _DEVELOP_PROJECT, _MAINTAIN_PROJECT = (
    _in(Role.VIEWER, Scope.NAME), _in(Role.DEVELOPER, Scope.NAME),
    _in(Role.MAINTAINER, Scope.NAME))
_VIEW_RUN, _DEVELOP_RUN, _MAINTAIN_RUN = (
    _in(Role.VIEWER, Scope.RUN), _in(Role.DEVELOPER, Scope.RUN),
    _in(Role.MAINTAINER, Scope.RUN))

# (method, route) -> what it needs. HEAD is checked as GET.
ROUTES: Mapping[tuple[str, str], Rule] = {
    ("GET", "/healthz"): _OPEN,
    # the web UI's files (services/api/ui.py): the app's API calls carry the credentials
    ("GET", "/"): _OPEN,
    ("GET", "/assets/{path}"): _OPEN,
    ("GET", "/{path}"): _OPEN,
    ("GET", "/metrics"): _OPEN,
    ("GET", "/api/v1/openapi.json"): _OPEN,
    ("POST", "/api/v1/hooks/{provider}/{project}"): _OPEN,  # signed by the forge instead
    ("POST", "/api/v1/session"): _OPEN,  # user and password
    ("GET", "/api/v1/session"): _SIGNED_IN,
    ("DELETE", "/api/v1/session"): _SIGNED_IN,
    # tokens: a user's own (the handler checks); every token for an admin
    ("GET", "/api/v1/tokens"): _SIGNED_IN,
    ("POST", "/api/v1/tokens"): _SIGNED_IN,
    ("DELETE", "/api/v1/tokens/{id}"): _SIGNED_IN,
    ("GET", "/api/v1/users"): _ADMIN,
    ("POST", "/api/v1/users"): _ADMIN,
    ("GET", "/api/v1/users/{user}"): _ADMIN,
    ("PATCH", "/api/v1/users/{user}"): _ADMIN,
    ("DELETE", "/api/v1/users/{user}"): _ADMIN,
    ("GET", "/api/v1/projects"): _LISTED,
    ("POST", "/api/v1/projects"): _ADMIN,
    ("GET", "/api/v1/projects/{name}"): _VIEW_PROJECT,
    ("PATCH", "/api/v1/projects/{name}"): _MAINTAIN_PROJECT,
    ("DELETE", "/api/v1/projects/{name}"): _ADMIN,
    ("GET", "/api/v1/projects/{name}/members"): _VIEW_PROJECT,
    ("GET", "/api/v1/projects/{name}/badge.svg"): _VIEW_PROJECT,  # anonymous too: public reads
    ("PUT", "/api/v1/projects/{name}/members/{user}"): _ADMIN,
    ("DELETE", "/api/v1/projects/{name}/members/{user}"): _ADMIN,
    ("GET", "/api/v1/projects/{name}/secrets"): _MAINTAIN_PROJECT,  # names and dates
    ("PUT", "/api/v1/projects/{name}/secrets/{secret}"): _MAINTAIN_PROJECT,
    ("DELETE", "/api/v1/projects/{name}/secrets/{secret}"): _MAINTAIN_PROJECT,
    ("GET", "/api/v1/secrets"): _ADMIN,  # global: every project's steps may ask for them
    ("PUT", "/api/v1/secrets/{secret}"): _ADMIN,
    ("DELETE", "/api/v1/secrets/{secret}"): _ADMIN,
    ("POST", "/api/v1/projects/{name}/runs"): _DEVELOP_PROJECT,
    ("POST", "/api/v1/projects/{name}/notifications/test"): _MAINTAIN_PROJECT,
    ("GET", "/api/v1/notifications/tests/{id}"): _in(Role.VIEWER, Scope.NOTIFY_TEST),
    ("GET", "/api/v1/hooks/deliveries"): _LISTED,
    ("GET", "/api/v1/runs"): _LISTED,
    ("GET", "/api/v1/changes"): _LISTED,
    ("GET", "/api/v1/runs/{id}"): _VIEW_RUN,
    ("GET", "/api/v1/runs/{id}/events"): _VIEW_RUN,
    ("GET", "/api/v1/runs/{id}/tests"): _VIEW_RUN,
    ("GET", "/api/v1/runs/{id}/logs"): _VIEW_RUN,
    ("GET", "/api/v1/runs/{id}/logs/ws"): _VIEW_RUN,
    ("GET", "/api/v1/runs/{id}/logs/search"): _VIEW_RUN,
    ("POST", "/api/v1/runs/{id}/cancel"): _DEVELOP_RUN,
    ("POST", "/api/v1/runs/{id}/rerun"): _DEVELOP_RUN,
    ("GET", "/api/v1/runs/{id}/artifacts"): _VIEW_RUN,
    ("GET", "/api/v1/runs/{id}/artifacts/{job}/{name}"): _VIEW_RUN,
    ("POST", "/api/v1/runs/{id}/approve"): _MAINTAIN_RUN,  # a pull request from a fork
    ("POST", "/api/v1/runs/{id}/reject"): _MAINTAIN_RUN,
    # a job's approval: its own approval.role is checked by the handler (delivery.py)
    ("POST", "/api/v1/runs/{id}/jobs/{job}/approve"): _DEVELOP_RUN,
    ("POST", "/api/v1/runs/{id}/jobs/{job}/reject"): _DEVELOP_RUN,
    ("GET", "/api/v1/projects/{name}/deployments"): _VIEW_PROJECT,
    ("GET", "/api/v1/projects/{name}/tests"): _VIEW_PROJECT,  # a test's history
    ("POST", "/api/v1/projects/{name}/environments/{env}/rollback"): _MAINTAIN_PROJECT,
    ("POST", "/api/v1/gc"): _ADMIN,  # a retention pass now, over every project
    ("GET", "/api/v1/audit/verify"): _ADMIN,  # reads every project's events
    ("GET", "/api/v1/runs/{id}/provenance"): _VIEW_RUN,
}

# (request, scope) -> the project the request is about; None when there is no such thing
# (the handler answers 404).
ProjectOf = Callable[[web.Request, Scope], Awaitable[str | None]]
# request -> who makes it (raises ApiError 401 for credentials that do not hold)
Identify = Callable[[web.Request], Awaitable[Principal]]


def rule_for(request: web.Request) -> Rule | None:
    """The rule of the request's route; None when no route matched (the handler then
    answers 404 or 405)."""
    route = request.match_info.route
    if request.match_info.http_exception is not None or route.resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    rule = ROUTES.get((method, route.resource.canonical))
    if rule is None:  # fail closed: a route somebody forgot to put in the table
        raise ApiError(403, f"{method} {route.resource.canonical} is in no access rule")
    return rule


def access_middleware(identify: Identify, project_of: ProjectOf,
                      public_read: bool) -> Any:
    @web.middleware
    async def check_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        rule = rule_for(request)
        if rule is None or rule.need is Need.OPEN:
            return await handler(request)
        principal = await identify(request)
        if principal.anonymous and public_read and request.method in SAFE_METHODS:
            principal = Principal("anonymous", every_project=Role.VIEWER)
        request[PRINCIPAL_KEY] = principal
        await _check(request, rule, principal, project_of)
        return await handler(request)

    return check_access


async def _check(request: web.Request, rule: Rule, principal: Principal,
                 project_of: ProjectOf) -> None:
    if principal.anonymous and principal.every_project is None:
        raise ApiError(401, "missing credentials: a bearer token (Authorization: Bearer "
                            "<token>) or a session cookie (POST /api/v1/session)")
    writes = request.method not in SAFE_METHODS
    if writes and principal.read_only and request.path != "/api/v1/session":
        raise ApiError(403, "this token is read-only", "read_only")
    if rule.need is Need.ADMIN and not principal.admin:
        raise ApiError(403, "needs the admin role", "forbidden")
    if rule.need is Need.SIGNED_IN and principal.anonymous:
        raise ApiError(401, "needs a token or a session")
    if isinstance(rule.need, Role) and rule.scope is not None:
        project = await project_of(request, rule.scope)
        if project is not None and not principal.can(rule.need, project):
            held = principal.role_in(project)
            raise ApiError(403, f"needs the {rule.need} role in project {project!r} "
                                f"({'you have ' + held if held else 'you have none'})",
                           "forbidden")
