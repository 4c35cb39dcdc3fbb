"""Delivery in the API: approving or rejecting a job that waits for approval, a project's
deployment history per environment, and rolling an environment back.

* ``POST /api/v1/runs/{id}/jobs/{job}/approve`` and ``.../reject`` (body ``{"comment"}``):
  the access table lets developers through; the job's own ``approval.role`` is checked
  here (a maintainer's job refuses a developer with a 403 naming the role).
* ``GET /api/v1/projects/{name}/deployments[?environment=E]``: newest first, folded from
  the project's runs (``shared.projections.delivery.history``).
* ``POST /api/v1/projects/{name}/environments/{env}/rollback``: a new run (trigger
  ``rollback``) that deploys the environment's previous good image the way its
  deployment was made (``rollback.pipeline``), from that deployment's commit.
"""

from __future__ import annotations

from aiohttp import web

from services.api.access import principal_of
from services.api.commands import (
    JobNotAwaitingApproval,
    RunNotFound,
    decide_job,
    request_run,
)
from services.api.context import CONTEXT, ApiContext
from services.api.errors import ApiError, read_json
from services.api.models import JobDecision
from services.api.projects import require_project
from shared.pipeline.rollback import rollback_pipeline
from shared.projections.delivery import (
    DeploymentState,
    DeploymentView,
    EnvironmentDeployment,
    history,
)
from shared.projections.runs import RunView
from shared.status import Role

__all__ = ["delivery_routes", "environment_history"]

_PAGE = 500


async def _decide(request: web.Request, approve: bool) -> web.Response:
    ctx = request.app[CONTEXT]
    run_id, job = request.match_info["id"], request.match_info["job"]
    body = JobDecision.model_validate(await read_json(request) if request.can_read_body else {})
    run = await ctx.find_run(run_id)
    view = run.job(job) if run else None
    if run is None or view is None:
        raise ApiError(404, f"no job {job!r} in run {run_id!r}")
    principal = principal_of(request)
    if view.awaiting_approval and not principal.can(Role(view.awaiting_approval), run.project):
        raise ApiError(403, f"approving job {job!r} needs the {view.awaiting_approval} role "
                            f"in project {run.project!r}", "forbidden")
    try:
        await decide_job(ctx.store, run_id, job, principal.name, approve, body.comment)
    except RunNotFound:
        raise ApiError(404, f"no run {run_id!r}") from None
    except JobNotAwaitingApproval as exc:
        raise ApiError(409, str(exc)) from None
    return web.json_response({"id": run_id, "job": job, "approved": approve,
                              "by": principal.name}, status=202)


async def _approve(request: web.Request) -> web.Response:
    return await _decide(request, approve=True)


async def _reject(request: web.Request) -> web.Response:
    return await _decide(request, approve=False)


async def environment_history(ctx: ApiContext, project: str,
                              environment: str | None = None) -> list[EnvironmentDeployment]:
    """Every deployment of the project's runs (to ``environment``), newest first."""
    found: list[EnvironmentDeployment] = []
    before: str | None = None
    while True:
        page = await ctx.readmodel.views.page(project=project, before=before, limit=_PAGE)
        found += [_entry(run, d) for run in page for d in run.deployments]
        if len(page) < _PAGE:
            return history(found, environment)
        before = page[-1].id


def _entry(run: RunView, deployment: DeploymentView) -> EnvironmentDeployment:
    return EnvironmentDeployment(deployment=deployment, run_id=run.id, project=run.project,
                                 commit=run.commit, branch=run.branch,
                                 requested_by=run.requested_by)


async def _deployments(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    project = await require_project(ctx.store, request.match_info["name"])
    environment = request.query.get("environment") or None
    entries = await environment_history(ctx, project.name, environment)
    return web.json_response({"deployments": [e.to_json() for e in entries]})


async def _rollback(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    project = await require_project(ctx.store, request.match_info["name"])
    environment = request.match_info["env"]
    good = [e for e in await environment_history(ctx, project.name, environment)
            if e.deployment.state == DeploymentState.SUCCEEDED]
    if not good:
        raise ApiError(404, f"environment {environment!r} of project {project.name!r} has no "
                            "successful deployment")
    current = good[0]
    previous = next((e for e in good[1:] if e.deployment.image != current.deployment.image
                     or e.deployment.target != current.deployment.target), None)
    if previous is None:
        raise ApiError(409, f"environment {environment!r} has no earlier good image than "
                            f"{current.deployment.image} to roll back to")
    source = await ctx.find_run(previous.run_id)
    if source is None or source.plan is None:
        raise ApiError(409, f"run {previous.run_id} that deployed it can no longer be read")
    d = previous.deployment
    pipeline = rollback_pipeline(source.plan, d.job, d.step, environment, d.image)
    run_id = await request_run(
        ctx.store, project=project.name, trigger="rollback", branch=source.branch,
        commit=source.commit, pipeline_file=".cyclone.yml", pipeline=pipeline,
        source=source.source, source_kind=source.source_kind,
        requested_by=principal_of(request).name)
    return web.json_response({"id": run_id, "url": f"/api/v1/runs/{run_id}",
                              "image": previous.deployment.image,
                              "from_run": previous.run_id}, status=202)


def delivery_routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/runs/{id}/jobs/{job}/approve", _approve),
        web.post("/api/v1/runs/{id}/jobs/{job}/reject", _reject),
        web.get("/api/v1/projects/{name}/deployments", _deployments),
        web.post("/api/v1/projects/{name}/environments/{env}/rollback", _rollback),
    ]
