"""The OpenAPI 3.1 document served at ``/api/v1/openapi.json``.

Kept next to the routes and checked against them by a test, so a route cannot be
added or removed without the document following.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.api.models import (
    GcRequest,
    JobDecision,
    MemberSet,
    ProjectCreate,
    ProjectPatch,
    RunApprove,
    RunCreate,
    RunRerun,
    SessionCreate,
    TokenCreate,
    UserCreate,
    UserPatch,
)

__all__ = ["openapi_document"]

_ERROR = {"type": "object", "required": ["error", "detail"],
          "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}}
_OBJECT = {"type": "object"}
# How a project's notification settings are written and shown (services/api/projects.py).
_NOTIFY = (
    "`notify`: notification rules, each as in the pipeline file's `notify:` "
    "(NotifyRuleModel: name, when, branches, email, slack, mattermost, discord, webhook); "
    "${NAME} is a variable of the project's env and must be set in it. Shown as "
    "{name, when, branches, source, channels: [{kind, id, target, secret_set?}]}: a chat or "
    "webhook URL only as its scheme and host (`https://hooks.slack.com/…`), a webhook key "
    "never. `email_templates`: Jinja2 sources for the mail's subject, text and html, each "
    "checked (a syntax error is a 400 naming the template and line).")
_PATCH = (
    f"{_NOTIFY} `notify` replaces the whole list ([] removes every rule): send every URL and "
    "key in full again; a URL sent as the API shows it is refused (400). `email_templates` "
    "replaces every template ({} restores the shipped ones).")


def _op(summary: str, ok: int, *, body: dict[str, Any] | None = None,
        params: list[dict[str, Any]] | None = None, content: str = "application/json",
        errors: tuple[int, ...] = (401, 403, 404), description: str = "",
        body_required: bool = True) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(ok): {"description": "OK",
                  **({"content": {content: {"schema": _OBJECT}}} if ok != 204 else {})}}
    # a route that needs credentials may also need a role the caller lacks (403)
    refused = (403,) if 401 in errors and 403 not in errors else ()
    for status in (*errors, *refused, *((400, 413) if body else ())):
        responses[str(status)] = {"description": "error", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if description:
        op["description"] = description
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {"application/json": {
            "schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind}}


def _body(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON schema, its nested models moved to ``components.schemas``."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    return schema


def openapi_document() -> dict[str, Any]:
    project, run, token, user = [_path("name")], [_path("id")], [_path("id")], [_path("user")]
    schemas: dict[str, Any] = {"Error": _ERROR}
    logs_query = [_path("id"), _query("follow"), _query("from", "integer")]
    window = [_query("limit", "integer"), _query("job"), _query("step")]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cyclone", "version": "1",
                 "description": "Container-native, event-sourced CI/CD. Authenticate with "
                                "`Authorization: Bearer <token>` or the session cookie of "
                                "POST /api/v1/session. Each route needs a role "
                                "(services/api/access.py); a 403 names the one missing."},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            **_ui_paths(),
            "/healthz": {"get": _op("Liveness and readiness", 200, errors=())},
            "/metrics": {"get": _op("Prometheus metrics", 200, content="text/plain",
                                    errors=())},
            "/api/v1/openapi.json": {"get": _op("This document", 200, errors=())},
            "/api/v1/projects": {
                "get": _op("List projects", 200, errors=(401,)),
                "post": _op("Register a project", 201, body=_body(ProjectCreate, schemas),
                            errors=(401, 409), description=_NOTIFY),
            },
            "/api/v1/projects/{name}": {
                "get": _op("Show a project", 200, params=project),
                "patch": _op("Change a project", 200, params=project,
                             body=_body(ProjectPatch, schemas), description=_PATCH),
                "delete": _op("Delete a project", 204, params=project),
            },
            "/api/v1/projects/{name}/notifications/test": {"post": _op(
                "Send a test message to every notification channel of the project (the "
                "notifier sends it; 202 with the test's id and url)", 202, params=project)},
            "/api/v1/notifications/tests/{id}": {"get": _op(
                "A notification test: each channel's outcome as it comes in", 200,
                params=[_path("id")])},
            "/api/v1/projects/{name}/runs": {
                "post": _op("Trigger a run (202 with its id)", 202, params=project,
                            body=_body(RunCreate, schemas)),
            },
            "/api/v1/runs": {
                "get": _op("List runs, newest first", 200, errors=(400, 401),
                           params=[_query("project"), _query("status"), _query("branch"),
                                   _query("trigger"), _query("limit", "integer"),
                                   _query("cursor")]),
            },
            "/api/v1/runs/{id}": {"get": _op(
                "Show a run: jobs, steps, timings, and what waits and why", 200, params=run,
                description=_WAITING)},
            "/api/v1/runs/{id}/cancel": {"post": _op("Cancel a run", 202, params=run,
                                                     errors=(401, 404, 409))},
            "/api/v1/runs/{id}/approve": {"post": _op(
                "Approve a run that waits for it (a pull request from a fork): it runs, its "
                "steps given secrets only with {\"secrets\": true} (maintainer)", 202,
                params=run, body=_body(RunApprove, schemas), errors=(401, 403, 404, 409))},
            "/api/v1/runs/{id}/reject": {"post": _op(
                "Reject a run that waits for approval: it is cancelled (maintainer)", 202,
                params=run, errors=(401, 403, 404, 409))},
            "/api/v1/runs/{id}/jobs/{job}/approve": {"post": _op(
                "Approve a job that waits for approval (approval: in the pipeline file): it is "
                "queued. Needs the role its approval names (developer or maintainer)", 202,
                params=[*run, _path("job")], body=_body(JobDecision, schemas),
                errors=(401, 403, 404, 409))},
            "/api/v1/runs/{id}/jobs/{job}/reject": {"post": _op(
                "Reject a job that waits for approval: it fails, with the comment as the "
                "reason", 202, params=[*run, _path("job")], body=_body(JobDecision, schemas),
                errors=(401, 403, 404, 409))},
            "/api/v1/projects/{name}/deployments": {"get": _op(
                "The project's deployments, newest first (environment=NAME: one "
                "environment's): image digest, commit, run, who approved, outcome", 200,
                params=[*project, _query("environment")])},
            "/api/v1/projects/{name}/environments/{env}/rollback": {"post": _op(
                "Deploy the environment's previous good image again, as it was deployed "
                "(202 with the new run's id)", 202, params=[*project, _path("env")],
                errors=(401, 403, 404, 409))},
            "/api/v1/runs/{id}/rerun": {"post": _op(
                "Run again: a new run on the same commit, params and pipeline file content "
                "(202 with its id)", 202, params=run, body=_body(RunRerun, schemas),
                body_required=False, errors=(401, 403, 404, 409),
                description="No body: every job runs again. {\"failed\": true}: the jobs that "
                            "failed (or were skipped because a need failed, or never ran) and "
                            "every job that needs one of them, transitively; {\"from_job\": "
                            "NAME}: that job (every expansion of a matrix job) and everything "
                            "downstream of it. The other jobs are not run: their results, "
                            "outputs and artifacts are taken from this run (JobReused, the "
                            "new run's rerun_of and reuse). 409: the run has not ended, has "
                            "no plan, or nothing of it failed; 400: an unknown from_job.")},
            "/api/v1/runs/{id}/artifacts": {"get": _op(
                "The artifacts the run's jobs kept (artifacts: in the pipeline file)", 200,
                params=run)},
            "/api/v1/runs/{id}/artifacts/{job}/{name}": {"get": _op(
                "Download an artifact: the tar it was kept as (Digest: sha-256 header). 410 "
                "when retention removed it", 200, params=[*run, _path("job"), _path("name")],
                content="application/x-tar", errors=(401, 403, 404, 410))},
            "/api/v1/runs/{id}/events": {"get": _op(
                "The run's raw event history (after=SEQ: only later events); with follow=1 "
                "(or Accept: text/event-stream) Server-Sent Events, live, until the run has "
                "ended (resume with Last-Event-ID)", 200,
                params=[*run, _query("after", "integer"), _query("follow")],
                errors=(400, 401, 404))},
            "/api/v1/changes": {"get": _op(
                "Server-Sent Events of every run's changes (project=NAME: one project's): "
                "event run with the run's summary, id = the event's position; opens with "
                "event ready (resume with Last-Event-ID)", 200, params=[_query("project")],
                content="text/event-stream", errors=(400, 401))},
            "/api/v1/runs/{id}/logs": {"get": _with_lines(_op(
                "Log lines as NDJSON; with follow=1 Server-Sent Events until the run ends "
                "(resume with Last-Event-ID)", 200, params=[*logs_query, *window],
                content="application/x-ndjson", errors=(400, 401, 404),
                description="A window: from=N&limit=M (M up to 10,000), job= and step= keep "
                            "one job's (step's) lines; for the history only (400 with "
                            "follow). X-Cyclone-Log-Lines: the lines stored."))},
            "/api/v1/runs/{id}/logs/search": {"get": _with_lines(_op(
                "Find the log lines holding a text: {matches: [line], next, scanned, total}",
                200, params=[*run, {**_query("q"), "required": True}, _query("from", "integer"),
                             _query("limit", "integer"), _query("job"), _query("step")],
                errors=(400, 401, 404),
                description="Case-insensitive, ANSI escapes ignored; at most limit matches "
                            "(default 100, up to 1,000), from index from on. next: the from "
                            "to go on with (null: the end of the stored log was reached); a "
                            "request reads at most 1,000,000 lines, so next may come with no "
                            "match."))},
            "/api/v1/runs/{id}/logs/ws": {"get": _op("Log lines over a websocket", 101,
                                                     params=logs_query)},
            "/api/v1/hooks/{provider}/{project}": {"post": _op(
                "A forge's webhook delivery (github, gitlab, gitea, forgejo, gogs, generic), "
                "authenticated by its signature with the project's hook_secret, not by a "
                "token; 202 once recorded ({\"runs\"} or {\"ignored\"}), 200 for a "
                "redelivery (the same body), 409 for a delivery id seen with another body",
                202, params=[_path("provider"), _path("project")],
                errors=(400, 401, 404, 409, 413))},
            "/api/v1/hooks/deliveries": {"get": _op(
                "Recent webhook deliveries and what became of them (?project=NAME)", 200,
                params=[_query("project")], errors=(401,))},
            **_secret_paths(project),
            **_test_paths(project, run),
            **_audit_paths(run),
            "/api/v1/tokens": {
                "get": _op("List API tokens: your own (every token, for an admin)", 200,
                           errors=(401,)),
                "post": _op("Create an API token, yours (of any user, for an admin); "
                            "read_only narrows it to reads; shown once", 201,
                            body=_body(TokenCreate, schemas), errors=(401, 403, 404)),
            },
            "/api/v1/tokens/{id}": {"delete": _op("Revoke an API token (yours; any, for an "
                                                  "admin)", 204, params=token)},
            "/api/v1/session": {
                "post": _op("Log in with user and password: sets the HttpOnly session "
                            "cookie; the answer holds the CSRF token that writes made with "
                            "the cookie send as X-CSRF-Token. Failed logins are limited per "
                            "user and address (429 with Retry-After)", 201,
                            body=_body(SessionCreate, schemas), errors=(401, 429)),
                "get": _op("Who you are: user, roles, (for a session) the CSRF token", 200,
                           errors=(401,)),
                "delete": _op("Log out: ends the session", 204, errors=(401,)),
            },
            "/api/v1/users": {
                "get": _op("List users and their roles (admin)", 200, errors=(401, 403)),
                "post": _op("Add a user (admin)", 201, body=_body(UserCreate, schemas),
                            errors=(401, 403, 404, 409)),
            },
            "/api/v1/users/{user}": {
                "get": _op("Show a user (admin)", 200, params=user),
                "patch": _op("Change a user's password or admin flag (admin)", 200,
                             params=user, body=_body(UserPatch, schemas)),
                "delete": _op("Remove a user and revoke their tokens (admin)", 204,
                              params=user),
            },
            "/api/v1/projects/{name}/badge.svg": {"get": _op(
                "A status badge (SVG) of the latest run of a branch (the default branch "
                "when none is given): passing, failing, running, ...", 200,
                params=[*project, _query("branch")], content="image/svg+xml",
                errors=(400, 401, 404),
                description="Readable by the project's viewers, by anyone when reads are "
                            "public (CYCLONE_PUBLIC_READ). Cache-Control: no-cache.")},
            "/api/v1/gc": {"post": _op(
                "Run a retention pass now (admin): cache entries over their project's limit "
                "evicted, the logs and artifacts of runs the projects' retention no longer "
                "keeps removed, blobs nothing live names deleted", 200,
                body=_body(GcRequest, schemas), content="application/x-ndjson",
                errors=(401, 403, 503), description=_GC)},
            "/api/v1/projects/{name}/members": {"get": _op(
                "The project's users and their roles", 200, params=project)},
            "/api/v1/projects/{name}/members/{user}": {
                "put": _op("Give a user a role in the project (admin)", 200,
                           params=[*project, *user], body=_body(MemberSet, schemas)),
                "delete": _op("Take a user's role in the project away (admin)", 204,
                              params=[*project, *user]),
            },
        },
    }


_WAITING = (
    "`waiting`: [{kind, text, job, since, on, role, deadline, labels?}], one per waiting "
    "thing (the "
    "run until it is planned, then each pending or queued job), in words (`text`). kind: "
    "approval (a fork's pull request; role: who may approve), slots (its project's "
    "max_concurrent_runs are held by the runs in `on`), queue (older runs in `on` go "
    "first), admission, checkout, plan, cancel; for a job: needs (the jobs in `on` have not "
    "ended), job_approval (role, deadline), parallel (the run's most jobs at once), ready, "
    "worker (queued since `since`; `labels`: its runs-on), no_worker (queued, and no live "
    "worker has its `labels`, or none is live).")


_GC = (
    "NDJSON as the pass goes: {kind: evicted, project, key, digest, size} per cache entry "
    "evicted, one {kind: plan, runs, blobs, bytes}, {kind: run, run, project, what, reason, "
    "freed_bytes} per run collected, {kind: blob, digest, size} per other blob deleted, and "
    "a last {kind: done, dry_run, runs, blobs, freed_bytes, evicted, seconds} (or {kind: "
    "error, detail}). dry_run: report only. Each run collected records RunDataCollected; "
    "its events are kept.")


def _with_lines(op: dict[str, Any]) -> dict[str, Any]:
    """``op`` whose answer says how many lines the run's log holds."""
    op["responses"]["200"]["headers"] = {"X-Cyclone-Log-Lines": {
        "description": "the lines the log store holds for the run",
        "schema": {"type": "integer"}}}
    return op


def _ui_paths() -> dict[str, Any]:
    """The web UI's files (services/api/ui.py), open to all."""
    path = [_path("path")]
    return {
        "/": {"get": _op("The web UI (index.html); 503 until it is built (make ui)", 200,
                         content="text/html", errors=(503,))},
        "/assets/{path}": {"get": _op("A file of the web UI's build, cached for good (its "
                                      "name holds its hash)", 200, params=path,
                                      content="*/*", errors=(404, 503))},
        "/{path}": {"get": _op("Any other path outside /api/ (/healthz, /metrics): a file at "
                               "the root of the UI's build, else index.html (the app's "
                               "router shows the page)", 200, params=path, content="*/*",
                               errors=(404, 503))},
    }


_TESTS = (
    "Sums the JUnit reports of the run's jobs (`reports: {junit: ...}`): {run, project, "
    "commit, status, tests, passed, failed, errors, skipped, duration_s, jobs, warnings, "
    "failures: [{id, job, name, classname, message, file, flaky}], slowest: [{id, job, name, "
    "classname, duration_s}], unreadable}. A failure is flaky when the test also passed on "
    "the run's commit in the same job (this run or another of the project, checked out at "
    "that commit); `unreadable`: runs whose whole results are gone from the artifact store "
    "(retention).")
_HISTORY = (
    "name: the test's id (classname.name) or its name alone (every class's); limit: how many "
    "of the project's latest runs (default 20, up to 100). {project, name, runs, history: "
    "[{test, name, classname, outcome, duration_s, run, commit, created_at, job, attempt, "
    "checked_out}] newest first, flaky: [test ids], unreadable: [run ids]}. checked_out: "
    "false for a run of a work tree (cyclone run), whose files may differ from its commit: "
    "such runs never make a test flaky.")


def _test_paths(project: list[dict[str, Any]], run: list[dict[str, Any]]) -> dict[str, Any]:
    """Test reports (services/api/testreports.py)."""
    return {
        "/api/v1/runs/{id}/tests": {"get": _op(
            "The run's tests: counts, failures (flaky marked), the slowest", 200, params=run,
            errors=(401, 404, 503), description=_TESTS)},
        "/api/v1/projects/{name}/tests": {"get": _op(
            "One test's history over the project's latest runs: outcome, duration, run, "
            "commit, time", 200,
            params=[*project, {**_query("name"), "required": True}, _query("limit", "integer")],
            errors=(400, 401, 404, 503), description=_HISTORY)},
    }


_VERIFY = (
    "run=ID: that run's event stream; all=1: every stream (and every stream a checkpoint "
    "names). NDJSON: {kind: progress, done, total} now and then, {kind: finding, finding: "
    "{stream, seq, last_seq, type, kind: edited|removed|inserted|reordered|unchained, "
    "detail}} each, "
    "then {kind: done, streams, events, findings, tampered}; {kind: error, detail} if it "
    "failed half-way. unchained: events stored before the audit chain (not tampering).")
_PROVENANCE = (
    "{run, statements: [in-toto Statement v1, predicateType https://slsa.dev/provenance/v1]}"
    ", one per image the run pushed, derived from its events; not signed. image=NAME: only "
    "the image of that name or repository (404 when the run pushed none).")


def _audit_paths(run: list[dict[str, Any]]) -> dict[str, Any]:
    """The audit trail (services/api/audit.py)."""
    return {
        "/api/v1/audit/verify": {"get": _op(
            "Verify the audit hash chain (admin): events edited, removed, inserted or "
            "reordered in the store", 200, params=[_query("run"), _query("all")],
            content="application/x-ndjson", errors=(400, 401, 403, 404),
            description=_VERIFY)},
        "/api/v1/runs/{id}/provenance": {"get": _op(
            "Provenance (SLSA v1 style) of the images the run pushed", 200,
            params=[*run, _query("image")], description=_PROVENANCE)},
    }


_SECRET_VALUE = {"type": "object", "required": ["value"], "additionalProperties": False,
                 "properties": {"value": {"type": "string", "minLength": 4}}}
_SECRETS = ("Answers hold each secret's name, scope and dates, never its value. A name is an "
            "environment variable's; a value has at least 4 characters (400 saying why).")


def _secret_paths(project: list[dict[str, Any]]) -> dict[str, Any]:
    """The project's and the global secrets (services/api/secrets.py)."""
    secret = [_path("secret")]
    paths: dict[str, Any] = {}
    for base, params, whose in (("/api/v1/projects/{name}/secrets", project, "the project's"),
                                ("/api/v1/secrets", [], "global (every project's)")):
        paths[base] = {"get": _op(f"List {whose} secrets: names and dates", 200,
                                  params=params or None, description=_SECRETS)}
        paths[f"{base}/{{secret}}"] = {
            "put": _op(f"Set one of {whose} secrets", 200, params=[*params, *secret],
                       body=_SECRET_VALUE, errors=(401, 403, 404), description=_SECRETS),
            "delete": _op(f"Remove one of {whose} secrets", 204,
                          params=[*params, *secret], errors=(400, 401, 403, 404)),
        }
    return paths
