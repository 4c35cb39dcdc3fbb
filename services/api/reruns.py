"""POST /api/v1/runs/{id}/rerun: a new run on the same commit and pipeline file content.

Without a body (or with neither field set) every job runs again, as a plain new run.
``{"failed": true}`` runs again what failed and what needs it; ``{"from_job": NAME}``
that job and everything downstream of it (``shared.rerun`` says exactly which jobs).
The new run's request then names the earlier run (``rerun_of``) and the jobs whose
results it takes from it (``reuse``); the event manager records those as ``JobReused``
when it plans the run. A rerun that cannot be made is a 4xx naming why.
"""

from __future__ import annotations

from aiohttp import web

from services.api.access import principal_of
from services.api.commands import record_request
from services.api.context import CONTEXT
from services.api.errors import ApiError, read_json
from services.api.models import RunRerun
from shared import events as ev
from shared.events import RecordedEvent, decode, run_stream
from shared.projections.runs import fold
from shared.rerun import RerunRefused, UnknownJob, jobs_to_reuse

__all__ = ["rerun"]


async def rerun(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    run_id = request.match_info["id"]
    body = RunRerun.model_validate(await read_json(request) if request.can_read_body else {})
    recorded = await ctx.store.read(run_stream(run_id))
    event = _request(run_id, recorded, body, principal_of(request).name)
    new_id = await record_request(ctx.store, event)
    return web.json_response({"id": new_id, "url": f"/api/v1/runs/{new_id}"}, status=202)


def _request(run_id: str, recorded: list[RecordedEvent], body: RunRerun,
             who: str) -> ev.RunRequested:
    """The new run's request: the earlier one's commit, params, overrides and pipeline
    file (as its checkout resolved them, when it had one), started by ``who``."""
    events = [e for r in recorded if (e := decode(r))]
    requested = next((e for e in events if isinstance(e, ev.RunRequested)), None)
    if requested is None:
        raise ApiError(404, f"no run {run_id!r}")
    resolved = next((e for e in events if isinstance(e, ev.RunSourceResolved)), None)
    partial = body.failed or body.from_job is not None
    return ev.RunRequested(
        project=requested.project, trigger="rerun", event=requested.event or requested.trigger,
        branch=resolved.branch if resolved else requested.branch,
        commit=resolved.commit if resolved else requested.commit,
        pipeline_file=resolved.pipeline_file if resolved else requested.pipeline_file,
        pipeline=resolved.pipeline if resolved else requested.pipeline,
        # the very files it included, not what their refs name now
        includes=resolved.includes if resolved else requested.includes,
        source=requested.source, params=requested.params, requested_by=who,
        overrides=requested.overrides,  # the same keys set (``--set``) as in that run
        source_kind=requested.source_kind,
        # a fork's code waits for approval again, and gets no secret it was not given
        approval=requested.approval, secrets_withheld=requested.secrets_withheld,
        rerun_of=run_id if partial else "",
        reuse=_reuse(recorded, body) if partial else (),
    )


def _reuse(recorded: list[RecordedEvent], body: RunRerun) -> tuple[str, ...]:
    """The jobs the rerun takes from the earlier run, read from its events (the store,
    not the read model: a run that has just ended is seen as ended)."""
    run = fold(recorded)
    assert run is not None  # the stream holds a RunRequested
    try:
        return jobs_to_reuse(run, failed=body.failed, from_job=body.from_job or "")
    except UnknownJob as exc:
        raise ApiError(400, f"from_job: {exc}") from None
    except RerunRefused as exc:
        raise ApiError(409, str(exc)) from None
