"""Test reports over HTTP: a run's tests, and one test's history in a project.

    GET /api/v1/runs/{id}/tests                      counts, failures, slowest, flaky
    GET /api/v1/projects/{name}/tests?name=T&limit=N  test T over the project's N latest runs

A run's summary is its view's ``test_reports`` summed (``shared.projections.tests``). A
failure is marked flaky when the test failed and passed on the run's commit in the same
job, judged from the whole results of this run and of the project's other runs on that
commit; a test's history reads the results of each of the latest runs. Whole results
are blobs in the artifact store (``TestReportRecorded.results_digest``); a blob that is
gone (retention) or unreadable leaves its report out, and the answer names those runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web

from services.api.context import CONTEXT, ApiContext
from services.api.errors import ApiError
from services.api.projects import require_project
from shared.errors import BlobCorrupted, BlobNotFound
from shared.ports.artifacts import ArtifactStore
from shared.projections.runs import RunView
from shared.projections.tests import (
    HistoryEntry,
    flaky,
    history_for,
    history_of,
    latest_reports,
    run_tests,
)
from shared.reports import TestCase, cases_from_json

__all__ = ["report_routes"]

log = logging.getLogger(__name__)

SAME_COMMIT_SCAN = 200  # the project's latest runs looked through for the run's commit
SAME_COMMIT_RUNS = 20  # of those, the most whose results are read to judge flakiness
DEFAULT_HISTORY, MAX_HISTORY = 20, 100  # runs a test's history covers (?limit=)
# A results blob larger than this is not read (a few hundred thousand cases): a request
# must not hold gigabytes.
MAX_RESULTS_BYTES = 64 * 1024 * 1024


def _artifacts(ctx: ApiContext) -> ArtifactStore:
    if ctx.artifacts is None:
        raise ApiError(503, "the artifact store, which holds the test results, is not open")
    return ctx.artifacts


async def _run_tests(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    run_id = request.match_info["id"]
    run = await ctx.find_run(run_id)
    if run is None:
        raise ApiError(404, f"no run {run_id!r}")
    summary = run_tests(run)
    failing = {f.id for f in summary.failures}
    unreadable: list[str] = []
    flaky_ids: set[str] = set()
    if failing and run.commit:
        runs = [run, *await _same_commit(ctx, run)]
        history, unreadable = await _history(_artifacts(ctx), runs)
        flaky_ids = flaky(history) & failing
    body = {"run": run.id, "project": run.project, "commit": run.commit,
            "status": run.status, **summary.to_json(flaky=flaky_ids),
            "unreadable": unreadable}
    return web.json_response(body)


async def _same_commit(ctx: ApiContext, run: RunView) -> list[RunView]:
    """The project's other runs on the run's commit that have test reports, newest
    first, among its ``SAME_COMMIT_SCAN`` latest runs (a rerun follows its run soon)."""
    if not run.project:  # ("" would page every project's runs)
        return []
    found: list[RunView] = []
    before: str | None = None
    for _ in range(0, SAME_COMMIT_SCAN, 50):
        page = await ctx.readmodel.views.page(project=run.project, before=before, limit=50)
        found += [r for r in page
                  if r.commit == run.commit and r.id != run.id and r.test_reports]
        if len(page) < 50 or len(found) >= SAME_COMMIT_RUNS:
            break
        before = page[-1].id
    return found[:SAME_COMMIT_RUNS]


async def _history(store: ArtifactStore,
                   runs: Sequence[RunView]) -> tuple[list[HistoryEntry], list[str]]:
    """Every test outcome of ``runs``, and the runs some of whose results were unreadable."""
    entries: list[HistoryEntry] = []
    unreadable: list[str] = []
    for run in runs:
        cases: dict[str, tuple[TestCase, ...]] = {}
        for report in latest_reports(run):
            read = await _cases(store, report.results_digest)
            if read is None:
                unreadable.append(run.id)
            else:
                cases[report.results_digest] = read
        entries += history_of(run, cases)
    return entries, sorted(set(unreadable), key=unreadable.index)


async def _cases(store: ArtifactStore, digest: str) -> tuple[TestCase, ...] | None:
    """The cases of the results blob ``digest``; None when it cannot be had."""
    if not digest:
        return None
    data = bytearray()
    try:
        async for chunk in store.get(digest):
            data += chunk
            if len(data) > MAX_RESULTS_BYTES:
                log.warning("test results too large to read", extra={"digest": digest})
                return None
        return cases_from_json(bytes(data))
    except (BlobNotFound, BlobCorrupted, ValueError) as exc:
        log.warning("test results unreadable", extra={"digest": digest, "error": str(exc)})
        return None


async def _test_history(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    project = await require_project(ctx.store, request.match_info["name"])
    name = request.query.get("name", "")
    if not name:
        raise ApiError(400, "name: expected the test's id (classname.name) or name")
    limit = _limit(request.query.get("limit"))
    runs = await ctx.readmodel.views.page(project=project.name, limit=limit)
    history, unreadable = await _history(_artifacts(ctx), [r for r in runs if r.test_reports])
    picked = history_for(history, name)
    return web.json_response({
        "project": project.name, "name": name, "runs": len(runs),
        "history": [entry.to_json() for entry in picked],
        "flaky": sorted(flaky(picked)), "unreadable": unreadable})


def _limit(given: str | None) -> int:
    if given is None:
        return DEFAULT_HISTORY
    try:
        limit = int(given)
    except ValueError:
        raise ApiError(400, "limit: expected a whole number") from None
    if not 1 <= limit <= MAX_HISTORY:
        raise ApiError(400, f"limit: expected 1 to {MAX_HISTORY}")
    return limit


def report_routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/runs/{id}/tests", _run_tests),
        web.get("/api/v1/projects/{name}/tests", _test_history),
    ]

