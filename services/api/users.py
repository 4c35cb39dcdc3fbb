"""Users, their project roles, API tokens and browser sessions (``services.api.auth``);
who may call each route is in ``services.api.access.ROUTES``."""

from __future__ import annotations

from aiohttp import web

from services.api.access import Principal, principal_of
from services.api.auth import SESSION_COOKIE, SESSION_S, csrf_token
from services.api.context import CONTEXT
from services.api.errors import ApiError, read_json
from services.api.models import MemberSet, SessionCreate, TokenCreate, UserCreate, UserPatch
from services.api.projects import require_project
from shared.status import Role

__all__ = ["user_routes"]


def user_routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/session", _login),
        web.get("/api/v1/session", _whoami),
        web.delete("/api/v1/session", _logout),
        web.post("/api/v1/tokens", _token_create),
        web.get("/api/v1/tokens", _token_list),
        web.delete("/api/v1/tokens/{id}", _token_revoke),
        web.post("/api/v1/users", _user_add),
        web.get("/api/v1/users", _user_list),
        web.get("/api/v1/users/{user}", _user_show),
        web.patch("/api/v1/users/{user}", _user_change),
        web.delete("/api/v1/users/{user}", _user_remove),
        web.get("/api/v1/projects/{name}/members", _members),
        web.put("/api/v1/projects/{name}/members/{user}", _member_set),
        web.delete("/api/v1/projects/{name}/members/{user}", _member_remove),
    ]


# --- sessions -----------------------------------------------------------------------------


async def _login(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = SessionCreate.model_validate(await read_json(request))
    address = request.remote or ""
    wait = max(ctx.user_logins.wait_s(body.user), ctx.address_logins.wait_s(address))
    if wait > 0:
        raise ApiError(429, f"too many failed logins; try again in {wait:.0f} s",
                       headers={"Retry-After": str(int(wait) + 1)})
    user = await ctx.users.verify(body.user, body.password)
    if user is None:
        ctx.user_logins.failed(body.user)
        ctx.address_logins.failed(address)
        raise ApiError(401, "wrong user or password")
    ctx.user_logins.succeeded(body.user)
    view, secret = await ctx.tokens.create("session", user=user.name, session_s=SESSION_S,
                                           actor=user.name)
    response = web.json_response({"user": user.name, "admin": user.admin,
                                  "roles": dict(user.roles), "csrf_token": csrf_token(secret),
                                  "expires_at": view.expires_at}, status=201)
    response.set_cookie(SESSION_COOKIE, secret, max_age=SESSION_S, path="/", httponly=True,
                        samesite="Strict", secure=request.secure)
    return response


async def _whoami(request: web.Request) -> web.Response:
    principal = principal_of(request)
    answer = _principal_json(principal)
    if principal.session:
        answer["csrf_token"] = csrf_token(request.cookies.get(SESSION_COOKIE, ""))
    return web.json_response(answer)


def _principal_json(principal: Principal) -> dict[str, object]:
    return {"name": principal.name, "user": principal.user, "admin": principal.admin,
            "roles": dict(principal.roles), "every_project": principal.every_project,
            "read_only": principal.read_only, "session": principal.session}


async def _logout(request: web.Request) -> web.Response:
    principal = principal_of(request)
    if principal.session:
        await request.app[CONTEXT].tokens.revoke(principal.token_id, actor=principal.name)
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# --- tokens -------------------------------------------------------------------------------


async def _token_create(request: web.Request) -> web.Response:
    """A token of the caller's own (of any user, for an admin)."""
    ctx, principal = request.app[CONTEXT], principal_of(request)
    body = TokenCreate.model_validate(await read_json(request))
    user = principal.user if body.user is None else body.user
    if (user != principal.user or not user) and not principal.admin:
        raise ApiError(403, "a token of another user, or of no user, needs the admin role")
    if user and await ctx.users.get(user) is None:
        raise ApiError(404, f"no user {user!r}")
    view, secret = await ctx.tokens.create(body.name, user=user, read_only=body.read_only,
                                           actor=principal.name)
    return web.json_response({**view.to_json(), "token": secret}, status=201)


async def _token_list(request: web.Request) -> web.Response:
    ctx, principal = request.app[CONTEXT], principal_of(request)
    tokens = [t for t in (await ctx.tokens.all()).values() if not t.session
              and (principal.admin or (principal.user and t.user == principal.user))]
    return web.json_response({"tokens": [t.to_json() for t in tokens]})


async def _token_revoke(request: web.Request) -> web.Response:
    ctx, principal = request.app[CONTEXT], principal_of(request)
    token_id = request.match_info["id"]
    token = (await ctx.tokens.all()).get(token_id)
    if token is None or not (principal.admin or (principal.user and token.user == principal.user)):
        raise ApiError(404, f"no token {token_id!r}")
    await ctx.tokens.revoke(token_id, actor=principal.name)
    return web.Response(status=204)


# --- users --------------------------------------------------------------------------------


async def _user_add(request: web.Request) -> web.Response:
    """A user; without a password one that only uses tokens (a bot)."""
    ctx = request.app[CONTEXT]
    body = UserCreate.model_validate(await read_json(request))
    for project in body.roles:
        await require_project(ctx.store, project)
    user = await ctx.users.add(body.name, body.password, body.admin,
                               {p: Role(r) for p, r in body.roles.items()},
                               actor=principal_of(request).name)
    return web.json_response(user.to_json(), status=201)


async def _user_list(request: web.Request) -> web.Response:
    users = await request.app[CONTEXT].users.all()
    return web.json_response({"users": [u.to_json() for _, u in sorted(users.items())]})


async def _user_show(request: web.Request) -> web.Response:
    name = request.match_info["user"]
    user = await request.app[CONTEXT].users.get(name)
    if user is None:
        raise ApiError(404, f"no user {name!r}")
    return web.json_response(user.to_json())


async def _user_change(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = UserPatch.model_validate(await read_json(request))
    user = await ctx.users.change(request.match_info["user"], principal_of(request).name,
                                  password=body.password, admin=body.admin)
    return web.json_response(user.to_json())


async def _user_remove(request: web.Request) -> web.Response:
    ctx, actor = request.app[CONTEXT], principal_of(request).name
    name = request.match_info["user"]
    await ctx.users.remove(name, actor)
    await ctx.tokens.revoke_all_of(name, actor)
    return web.Response(status=204)


# --- project members ----------------------------------------------------------------------


async def _members(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    project = (await require_project(ctx.store, request.match_info["name"])).name
    members = {u.name: u.roles[project] for u in (await ctx.users.all()).values()
               if project in u.roles}
    return web.json_response({"members": dict(sorted(members.items()))})


async def _member_set(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    project = (await require_project(ctx.store, request.match_info["name"])).name
    body = MemberSet.model_validate(await read_json(request))
    await ctx.users.grant(request.match_info["user"], project, Role(body.role),
                          principal_of(request).name)
    return web.json_response({"user": request.match_info["user"], "role": body.role})


async def _member_remove(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    project = (await require_project(ctx.store, request.match_info["name"])).name
    await ctx.users.grant(request.match_info["user"], project, None, principal_of(request).name)
    return web.Response(status=204)
