"""The ``cyclone`` commands that talk to a Cyclone server over HTTP (``cyclone up``).

    cyclone project add|list|show|update|delete ...   manage projects
    cyclone trigger PROJECT [--set P=V] [--follow]      start a run (prints its id)
    cyclone runs [--project P] [--status S] ...         list runs, newest first
    cyclone show RUN                                    a run's jobs and steps
    cyclone report RUN [--job J] [--step S] [--local]   summed up (cyclone/cli_report.py)
    cyclone logs [-f] RUN                               a run's log, or follow it live
    cyclone cancel RUN | rerun RUN [--failed | --from JOB] [--follow] | events RUN
    cyclone approve|reject RUN [JOB]                    a run or a job waiting for approval
    cyclone deployments PROJECT [ENV] | rollback PROJECT ENV   (cyclone/cli_delivery.py)
    cyclone tests RUN                                   test reports (cyclone/cli_tests.py)
    cyclone token create NAME | list | revoke ID
    cyclone notify test PROJECT                         message every notification channel
    cyclone gc [--dry-run]                              a retention pass now (cyclone/cli_gc.py)
    cyclone audit verify RUN|--all | provenance RUN     the audit trail (cyclone/cli_audit.py)
    cyclone secret set|list|rm ... | rotate-key         secrets (cyclone/cli_secrets.py)
    cyclone user add|list|rm|passwd|grant|revoke ...    users and roles (cyclone/cli_users.py)

Every command takes ``--server URL`` (env ``CYCLONE_SERVER``, default
``http://127.0.0.1:8080``), ``--token T`` (env ``CYCLONE_TOKEN``) and ``--json`` (print
the server's JSON instead of a table; log streams become ndjson). Exit codes: 0 ok; 1
failure (server unreachable, 401/403/404, 5xx, a followed run that did not succeed); 2
bad usage or input the server rejected (other 4xx). Errors are printed as
``cyclone: <detail>`` on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from cyclone.cli_artifacts import add_artifact_commands, show_kept
from cyclone.cli_audit import add_audit_commands
from cyclone.cli_delivery import (
    add_delivery_commands,
    project_delivery_fields,
    project_delivery_flags,
    show_delivery,
    shown_project_delivery,
)
from cyclone.cli_gc import (
    add_gc_command,
    project_storage_fields,
    project_storage_flags,
    shown_project_storage,
)
from cyclone.cli_report import add_report_command
from cyclone.cli_secrets import add_secret_commands
from cyclone.cli_tests import add_test_commands
from cyclone.cli_users import add_user_commands
from cyclone.client import DEFAULT_SERVER, ClientError, ConnectionFailed, CycloneClient
from cyclone.display import Display
from cyclone.output import (
    duration,
    fields,
    first_line,
    print_json,
    report,
    short,
    table,
    when,
)
from shared.config import Settings
from shared.events import TERMINAL_RUN_EVENTS, RecordedEvent, decode
from shared.ports.logstore import LogLine
from shared.tasks import cancel_and_wait

__all__ = ["add_client_commands", "override_arg"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
FOLLOW_RETRIES = 5  # reconnections in a row without a single event before giving up
_BACKOFF_S, _BACKOFF_MAX_S = 0.5, 8.0
# The server's run read model is a projection fed by the bus, so a run it has just
# accepted (202) may be unknown to its reads for a moment: a follower of such a run
# takes a 404 as "not yet" for this long.
NEW_RUN_GRACE_S = 10.0
_PROGRESS_END_WAIT_S = 5.0  # at a run's end, how long its last events may take to come
_RUN_ENDS = TERMINAL_RUN_EVENTS
_NEW_RUN_POLL_S = 0.1
NOTIFY_TEST_TIMEOUT_S = 60.0  # each channel is tried twice, each try within ~30 s
_NOTIFY_POLL_S = 0.3
_OUTCOMES = {"success": "run succeeded", "failure": "run failed", "cancelled": "run cancelled",
             "errored": "run errored", "timeout": "run timed out"}

Json = dict[str, Any]
Handler = Callable[[argparse.Namespace, CycloneClient], Awaitable[int]]


def add_client_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the client commands to the ``cyclone`` parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", metavar="URL", help="Cyclone server (env CYCLONE_SERVER, "
                                                        f"default {DEFAULT_SERVER})")
    common.add_argument("--token", metavar="T", help="API token (env CYCLONE_TOKEN)")
    common.add_argument("--json", action="store_true", help="print the server's JSON")

    def command(parent: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=help)
        parser.set_defaults(func=_on_server(handler))
        return parser

    _add_project_commands(sub, command)

    trigger = command(sub, "trigger", _trigger, "start a run of a project")
    trigger.add_argument("project")
    trigger.add_argument("--ref", help="branch or tag (default: the project's branch)")
    trigger.add_argument("--commit", metavar="SHA", help="commit to build")
    trigger.add_argument("--param", action="append", default=[], type=_key_value,
                         metavar="K=V", help="environment variable for every step (repeatable)")
    trigger.add_argument("--set", dest="overrides", action="append", default=[],
                         type=override_arg, metavar="PATH=VALUE",
                         help="set a key of the pipeline file for this run, e.g. "
                              "jobs.test.image=python:3.13 (repeatable; recorded in the run)")
    _follow_flags(trigger)

    runs = command(sub, "runs", _runs, "list runs, newest first")
    runs.add_argument("--project")
    runs.add_argument("--status")
    runs.add_argument("--branch")
    runs.add_argument("--limit", type=_count, metavar="N", help="at most N runs")
    runs.add_argument("--cursor", help="the page after this cursor (printed by a previous "
                                       "page)")

    command(sub, "show", _show, "a run's jobs and steps").add_argument("run")

    logs = command(sub, "logs", _logs, "a run's log lines")
    logs.add_argument("run")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="stream live until the run ends; exit 0 if it succeeded")
    logs.add_argument("--no-color", action="store_true", help="plain output")

    command(sub, "cancel", _cancel, "cancel a run").add_argument("run")
    rerun = command(sub, "rerun", _rerun, "start a new run like an earlier one")
    rerun.add_argument("run")
    part = rerun.add_mutually_exclusive_group()
    part.add_argument("--failed", action="store_true", help="run again only the jobs that "
                      "failed and what needs them; the others' results are reused")
    part.add_argument("--from", dest="from_job", metavar="JOB", help="run again JOB and "
                      "what is downstream of it; the others' results are reused")
    _follow_flags(rerun)
    command(sub, "events", _events, "a run's event history").add_argument("run")

    notify = sub.add_parser("notify", help="notifications")
    notify_sub = notify.add_subparsers(required=True, metavar="ACTION")
    test = command(notify_sub, "test", _notify_test, "send a test message to every channel of "
                   "a project and report each result (exit 1 if one failed)")
    test.add_argument("project")
    test.add_argument("--timeout", type=float, default=NOTIFY_TEST_TIMEOUT_S, metavar="S",
                      help=f"give up waiting after S seconds (default {NOTIFY_TEST_TIMEOUT_S:.0f})")

    add_secret_commands(sub, command)
    add_delivery_commands(sub, command)
    add_artifact_commands(sub, command)
    add_test_commands(sub, command)
    add_report_command(sub, command)
    add_user_commands(sub, command)
    add_gc_command(sub, command)
    add_audit_commands(sub, command)

    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(required=True, metavar="ACTION")
    create = command(token_sub, "create", _token_create, "create a token (shown once)")
    create.add_argument("name")
    create.add_argument("--user", help="whose token (an admin's choice; default: yours)")
    create.add_argument("--read-only", action="store_true", help="narrowed to reads")
    command(token_sub, "list", _token_list, "list tokens")
    command(token_sub, "revoke", _token_revoke, "revoke a token").add_argument("id")


def _add_project_commands(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    project = sub.add_parser("project", help="manage projects")
    project_sub = project.add_subparsers(required=True, metavar="ACTION")
    add = command(project_sub, "add", _project_add, "add a project")
    add.add_argument("name")
    add.add_argument("repo", help="Git URL of the repository")
    _project_flags(add)
    command(project_sub, "list", _project_list, "list projects")
    command(project_sub, "show", _project_show, "show a project").add_argument("name")
    update = command(project_sub, "update", _project_update, "change a project")
    update.add_argument("name")
    update.add_argument("--repo", help="Git URL of the repository")
    _project_flags(update)
    command(project_sub, "delete", _project_delete, "delete a project").add_argument("name")


def _project_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--branch", help="default branch (server default: main)")
    parser.add_argument("--pipeline-file", help="pipeline file in the repository "
                                                "(server default: .cyclone.yml)")
    parser.add_argument("--env", action="append", type=_key_value, metavar="K=V",
                        help="environment variable for every run (repeatable; on update "
                             "the given set replaces the project's)")
    parser.add_argument("--max-concurrent", type=_count, metavar="N",
                        help="runs at once (0 = unlimited)")
    parser.add_argument("--fork-prs", choices=["approve", "run-without-secrets", "never"],
                        help="pull requests from forks: wait for a maintainer's approval "
                             "(the default), run without secrets, or never run")
    parser.add_argument("--trusted", action=argparse.BooleanOptionalAction, default=None,
                        help="admin only: its pipelines may run privileged containers and "
                             "mount host paths (the Docker socket among them)")
    for name, metavar, example in (("memory", "SIZE", "2GiB"), ("cpus", "N", "4"),
                                   ("pids", "N", "4096")):
        parser.add_argument(f"--max-{name}", metavar=metavar,
                            help=f"admin only: the most a job's resources: may ask for "
                                 f"{name} (e.g. {example}); those given replace the maximum")
    project_delivery_flags(parser)
    project_storage_flags(parser)


def _follow_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--follow", action="store_true",
                        help="stream the log live; exit 0 if the run succeeded, 1 if not")
    parser.add_argument("--no-color", action="store_true", help="plain output")


# --- argument types (argparse turns their ValueError into a usage error, exit 2) ---------


def _key_value(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {raw!r}")
    return key, value


def override_arg(raw: str) -> str:
    """``--set PATH=VALUE``, its syntax checked (what it sets is checked with the file)."""
    from shared.pipeline.overrides import syntax_problem  # the YAML reader: only when used
    problem = syntax_problem(raw)
    if problem:
        raise argparse.ArgumentTypeError(f"{raw!r}: {problem}")
    return raw


def _count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {raw!r}")
    return value


# --- running a handler against the server ------------------------------------------------


def _on_server(handler: Handler) -> Callable[[argparse.Namespace, Settings], int]:
    """The ``(args, settings) -> int`` entry of a handler: a client for the chosen server,
    errors printed as ``cyclone: <detail>`` and mapped to exit codes."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        token = args.token or settings.token or None
        server = args.server or settings.server or DEFAULT_SERVER
        try:
            return asyncio.run(_with_client(handler, args, server, token))
        except ClientError as exc:
            hint = " (pass --token or set CYCLONE_TOKEN)" if exc.status == 401 and not token \
                else ""
            print(f"cyclone: {exc.detail}{hint}", file=sys.stderr)
            return _exit_code(exc)
        except KeyboardInterrupt:
            print("cyclone: interrupted", file=sys.stderr)
            return EXIT_FAILED

    return run


async def _with_client(handler: Handler, args: argparse.Namespace, server: str,
                       token: str | None) -> int:
    async with CycloneClient(server, token) as client:
        return await handler(args, client)


def _exit_code(exc: ClientError) -> int:
    if exc.status == 0:
        return EXIT_INVALID if exc.error == "invalid_url" else EXIT_FAILED
    if 400 <= exc.status < 500 and exc.status not in (401, 403, 404):
        return EXIT_INVALID
    return EXIT_FAILED


# --- projects ----------------------------------------------------------------------------


def _project_fields(args: argparse.Namespace) -> Json:
    changes: Json = {}
    for flag, key in (("branch", "default_branch"), ("pipeline_file", "pipeline_file"),
                      ("max_concurrent", "max_concurrent_runs"), ("repo", "repo")):
        if getattr(args, flag, None) is not None:
            changes[key] = getattr(args, flag)
    if args.env is not None:
        changes["env"] = dict(args.env)
    if args.trusted is not None:
        changes["trusted"] = args.trusted
    if args.fork_prs is not None:
        changes["fork_prs"] = args.fork_prs
    maximum = {name: _number(value) for name in ("memory", "cpus", "pids")
               if (value := getattr(args, f"max_{name}")) is not None}
    if maximum:
        changes["max_resources"] = maximum  # the server reads and checks each value
    return {**changes, **project_delivery_fields(args), **project_storage_fields(args)}


def _number(raw: str) -> str | int | float:
    """``"4"`` -> 4, ``"0.5"`` -> 0.5, ``"2GiB"`` as written."""
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


async def _project_add(args: argparse.Namespace, client: CycloneClient) -> int:
    project = await client.create_project({"name": args.name, **_project_fields(args)})
    return _print_project(args, project)


async def _project_list(args: argparse.Namespace, client: CycloneClient) -> int:
    projects = await client.list_projects()
    if args.json:
        print_json({"projects": projects})
        return EXIT_OK
    table(["NAME", "REPO", "BRANCH", "PIPELINE FILE", "MAX RUNS"],
           ([p["name"], p["repo"], p["default_branch"], p["pipeline_file"],
             _max_runs(p["max_concurrent_runs"])] for p in projects))
    return EXIT_OK


async def _project_show(args: argparse.Namespace, client: CycloneClient) -> int:
    return _print_project(args, await client.get_project(args.name))


async def _project_update(args: argparse.Namespace, client: CycloneClient) -> int:
    changes = _project_fields(args)
    if not changes:
        print("cyclone: nothing to update: give at least one of --repo, --branch, "
              "--pipeline-file, --env, --max-concurrent, --fork-prs, --trusted, --max-memory, "
              "--max-cpus, --max-pids, --registry, --no-registry, --cluster, --no-clusters, "
              "--retention-days, --retention-runs, --retention-failed-days, --no-retention, "
              "--cache-limit-mb",
              file=sys.stderr)
        return EXIT_INVALID
    return _print_project(args, await client.update_project(args.name, changes))


async def _project_delete(args: argparse.Namespace, client: CycloneClient) -> int:
    await client.delete_project(args.name)
    if not args.json:
        print(f"project {args.name} deleted")
    return EXIT_OK


def _print_project(args: argparse.Namespace, project: Json) -> int:
    if args.json:
        print_json(project)
        return EXIT_OK
    env = project.get("env") or {}
    fields([("name", project["name"]), ("repo", project["repo"]),
             ("branch", project["default_branch"]), ("pipeline file", project["pipeline_file"]),
             ("max runs", _max_runs(project["max_concurrent_runs"])),
             ("trusted", "yes" if project.get("trusted") else "no"),
             ("fork PRs", project.get("fork_prs", "approve")),
             ("max resources", _max_resources(project.get("max_resources") or {})),
             *shown_project_delivery(project),
             *shown_project_storage(project),
             ("env", ", ".join(f"{k}={v}" for k, v in sorted(env.items())) or "-"),
             ("created", when(project.get("created_at"))),
             ("updated", when(project.get("updated_at")))])
    return EXIT_OK


def _max_resources(maximum: Json) -> str:
    shown = [f"memory {maximum['memory_shown']}" if "memory_shown" in maximum else "",
             f"cpus {maximum['cpus']:g}" if "cpus" in maximum else "",
             f"pids {maximum['pids']}" if "pids" in maximum else ""]
    return ", ".join(part for part in shown if part) or "none"


def _max_runs(value: object) -> str:
    return "unlimited" if not value else str(value)


# --- runs --------------------------------------------------------------------------------


async def _trigger(args: argparse.Namespace, client: CycloneClient) -> int:
    started = await client.trigger(args.project, ref=args.ref, commit=args.commit,
                                   params=dict(args.param), overrides=args.overrides)
    return await _started(args, client, started)


async def _rerun(args: argparse.Namespace, client: CycloneClient) -> int:
    started = await client.rerun(args.run, failed=args.failed, from_job=args.from_job)
    return await _started(args, client, started)


async def _started(args: argparse.Namespace, client: CycloneClient, started: Json) -> int:
    """Print a newly started run (its id alone, for scripts) and follow it if asked."""
    if args.json:
        print(json.dumps(started), flush=True)
    elif args.follow:
        print(f"run {started['id']}: started, following its log "
              "(Ctrl-C stops following, not the run)", flush=True)
    else:
        print(started["id"])
    if not args.follow:
        return EXIT_OK
    return await _follow(client, started["id"], args, new_run=True)


async def _runs(args: argparse.Namespace, client: CycloneClient) -> int:
    page = await client.list_runs(project=args.project, status=args.status,
                                  branch=args.branch, limit=args.limit, cursor=args.cursor)
    if args.json:
        print_json(page)
        return EXIT_OK
    table(["ID", "PROJECT", "STATUS", "BRANCH", "COMMIT", "STARTED", "DURATION"],
           ([r["id"], r["project"], r["status"], r.get("branch") or "-",
             (r.get("commit") or "-")[:8], when(r.get("created_at")),
             duration(r.get("duration_s"))] for r in page["runs"]))
    if page.get("next"):
        print(f"(more: --cursor {page['next']})", file=sys.stderr)
    return EXIT_OK


async def _show(args: argparse.Namespace, client: CycloneClient) -> int:
    run = await client.get_run(args.run)
    if args.json:
        print_json(run)
        return EXIT_OK
    params = run.get("params") or {}
    rows = [("run", run["id"]), ("project", run["project"]), ("status", run["status"]),
            ("trigger", run.get("trigger") or "-"), ("branch", run.get("branch") or "-"),
            ("commit", run.get("commit") or "-"), ("pipeline", run.get("pipeline_file") or "-"),
            ("created", when(run.get("created_at"))),
            ("finished", when(run.get("finished_at"))),
            ("duration", duration(run.get("duration_s")))]
    if run.get("reason"):
        rows.append(("reason", run["reason"]))
    if run.get("rerun_of"):
        rows.append(("rerun of", run["rerun_of"]))
    if params:
        rows.append(("params", ", ".join(f"{k}={v}" for k, v in sorted(params.items()))))
    rows += [("set", written) for written in run.get("overrides") or []]
    if run.get("cancel_requested"):
        rows.append(("cancel", "requested"))
    if run.get("awaiting_approval"):
        rows.append(("waiting", run["awaiting_approval"]))
    if run.get("approved_by"):
        rows.append(("approved by", run["approved_by"]))
    if run.get("secrets_withheld"):
        rows.append(("secrets", f"withheld: {run['secrets_withheld']}"))
    fields(rows)
    jobs = run.get("jobs") or []
    if jobs:
        print()
        table(["JOB / STEP", "STATUS", "EXIT", "ATTEMPT", "DURATION", "REASON"],
               _job_rows(jobs))
    _show_waiting(run)
    show_delivery(run)
    show_kept(run)
    return EXIT_OK


def _show_waiting(run: Json) -> None:
    """What of the run waits, and why (the server's ``waiting``)."""
    waiting = run.get("waiting") or []
    if waiting:
        print()
        table(["WAITING", "WHY"], ([w.get("job") or "(the run)", w.get("text", "")]
                                  for w in waiting))


def _job_rows(jobs: Sequence[Json]) -> Iterable[list[str]]:
    for job in jobs:
        status = job["status"]
        if job.get("awaiting_approval") and status == "pending":
            status = f"waiting for approval ({job['awaiting_approval']})"
        if job.get("reused_from"):
            # not run here: its steps ran (and are shown) in that run
            yield [job["name"], status, "", "", "-", f"reused from {job['reused_from']}"]
            continue
        yield [job["name"], status, "", "", duration(job.get("duration_s")),
               first_line(job.get("reason"))]
        for step in job.get("steps") or []:
            code = step.get("exit_code")
            notes = "; ".join(n for n in (first_line(step.get("reason")),
                                          step.get("log_truncated") or "") if n)
            yield ["  " + step["name"], step["status"], "-" if code is None else str(code),
                   str(step.get("attempt") or "-"), duration(step.get("duration_s")), notes]


async def _cancel(args: argparse.Namespace, client: CycloneClient) -> int:
    answer = await client.cancel_run(args.run)
    return report(args, answer, f"run {answer.get('id', args.run)}: cancel requested "
                                 f"(status: {answer.get('status', '?')})")


async def _events(args: argparse.Namespace, client: CycloneClient) -> int:
    events = await client.run_events(args.run)
    if args.json:
        print_json({"events": events})
        return EXIT_OK
    table(["SEQ", "TS", "TYPE", "DATA"],
           ([str(e["seq"]), when(e.get("ts")), e["type"],
             short(json.dumps(e.get("data"), separators=(",", ":"), sort_keys=True))]
            for e in events))
    return EXIT_OK


# --- logs --------------------------------------------------------------------------------


async def _logs(args: argparse.Namespace, client: CycloneClient) -> int:
    if args.follow:
        return await _follow(client, args.run, args)
    display = Display(colour=False if args.no_color else None)
    async with contextlib.aclosing(client.log_lines(args.run)) as lines:
        async for raw in lines:
            if args.json:
                print(json.dumps(raw), flush=True)
            else:
                display.log_line(_log_line(raw))
    return EXIT_OK


async def _follow(client: CycloneClient, run_id: str, args: argparse.Namespace,
                  new_run: bool = False) -> int:
    """Print the run's log live until its ``end`` event; exit 0 if it succeeded.

    A dropped stream (or a 5xx) is resumed with ``Last-Event-ID`` after a growing pause,
    up to ``FOLLOW_RETRIES`` times in a row without an event in between. For a
    ``new_run`` (just accepted by the server) a 404 is retried for ``NEW_RUN_GRACE_S``."""
    display = Display(colour=False if getattr(args, "no_color", False) else None)
    progress = None if args.json else _Progress(client, run_id, display)
    try:
        return await _follow_logs(client, run_id, args, display, progress, new_run)
    finally:
        if progress is not None:
            await progress.cancel()


class _Progress:
    """Job and step status lines as the run's events are pushed (its event stream), while
    its log streams (the same lines `cyclone run` prints)."""

    def __init__(self, client: CycloneClient, run_id: str, display: Display) -> None:
        self.client = client
        self.run_id = run_id
        self.display = display
        self.last_id: str | None = None
        self.task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        failures = 0
        while failures <= FOLLOW_RETRIES:
            with contextlib.suppress(ClientError):  # ConnectionFailed too: reconnect
                events = self.client.follow_events(self.run_id, self.last_id)
                async with contextlib.aclosing(events) as stream:
                    async for event in stream:
                        failures = 0
                        if event.event == "end":
                            return
                        if event.event == "event":
                            self.last_id = event.id
                            self._show(_event_data(event.data))
            failures += 1
            await asyncio.sleep(min(_BACKOFF_S * 2 ** (failures - 1), _BACKOFF_MAX_S))

    def _show(self, raw: Json) -> None:
        event = decode(RecordedEvent.from_json(raw))
        if event is not None and not isinstance(event, _RUN_ENDS):
            self.display.event(event)

    async def stop(self) -> None:
        """The run has ended: let its event stream deliver the last events (it ends once
        they are sent), for a moment, before the run's outcome is printed."""
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self.task, _PROGRESS_END_WAIT_S)

    async def cancel(self) -> None:
        await cancel_and_wait(self.task)


async def _follow_logs(client: CycloneClient, run_id: str, args: argparse.Namespace,
                       display: Display, progress: _Progress | None, new_run: bool) -> int:
    last_id: str | None = None
    failures = 0
    unknown_until = time.monotonic() + NEW_RUN_GRACE_S if new_run else 0.0
    while True:
        try:
            async with contextlib.aclosing(client.follow_logs(run_id, last_id)) as stream:
                async for event in stream:
                    failures = 0
                    data = _event_data(event.data)
                    if event.event == "end":
                        if progress is not None:
                            await progress.stop()
                        return _finish(args, data)
                    if event.event == "line":
                        last_id = event.id if event.id is not None else last_id
                        if args.json:
                            print(json.dumps(data), flush=True)
                        else:
                            display.log_line(_log_line(data))
            problem = "the server ended the log stream before the run ended"
        except ConnectionFailed as exc:
            if exc.error == "invalid_url":
                raise
            problem = exc.detail
        except ClientError as exc:
            if exc.status == 404 and time.monotonic() < unknown_until:
                await asyncio.sleep(_NEW_RUN_POLL_S)  # not in the read model yet
                continue
            if exc.status < 500:
                raise
            problem = exc.detail
        failures += 1
        if failures > FOLLOW_RETRIES:
            raise ConnectionFailed("disconnected", f"{problem} (gave up after "
                                                   f"{FOLLOW_RETRIES} reconnections)")
        pause = min(_BACKOFF_S * 2 ** (failures - 1), _BACKOFF_MAX_S)
        print(f"cyclone: {problem}; reconnecting in {pause:.1f}s", file=sys.stderr)
        await asyncio.sleep(pause)


def _finish(args: argparse.Namespace, end: Json) -> int:
    status = str(end.get("status", ""))
    if args.json:
        print(json.dumps(end), flush=True)
    else:
        missing = end.get("missing")
        if isinstance(missing, dict):
            jobs = ", ".join(f"{job}: {n}" for job, n in (missing.get("jobs") or {}).items())
            print(f"cyclone: the log is incomplete: {missing.get('lines')} lines the run "
                  f"reported never reached the log store{f' ({jobs})' if jobs else ''}",
                  file=sys.stderr, flush=True)
        print(_OUTCOMES.get(status, f"run {status or 'ended'}"), flush=True)
    return EXIT_OK if status == "success" else EXIT_FAILED


def _event_data(text: str) -> Json:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ClientError(0, "bad_response", f"the server sent a log event that is not a "
                                             f"JSON object: {text[:200]!r}")
    return value


def _log_line(raw: Json) -> LogLine:
    try:
        return LogLine.from_json(raw)
    except KeyError as exc:
        raise ClientError(0, "bad_response", f"the server sent a log line without "
                                             f"{exc}: {raw!r}") from exc


# --- notify test -------------------------------------------------------------------------


async def _notify_test(args: argparse.Namespace, client: CycloneClient) -> int:
    started = await client.test_notifications(args.project)
    deadline = time.monotonic() + args.timeout
    shown: set[str] = set()
    test = await client.notification_test(started["id"])
    while not test["done"] and time.monotonic() < deadline:
        if not args.json:
            _print_results(test, shown)
        await asyncio.sleep(_NOTIFY_POLL_S)  # polling the API: it has no change feed here
        test = await client.notification_test(started["id"])
    if args.json:
        print_json(test)
    else:
        _print_results(test, shown)
    if not test["listed"]:
        print(f"cyclone: no notifier took the test within {args.timeout:.0f} s (is the "
              "notifier service running?)", file=sys.stderr)
        return EXIT_FAILED
    if not test["channels"]:
        print(f"project {args.project} has no notification channels", file=sys.stderr)
        return EXIT_FAILED
    if not test["done"]:
        print(f"cyclone: gave up after {args.timeout:.0f} s with channels still pending",
              file=sys.stderr)
    ok = test["done"] and all(c["status"] == "sent" for c in test["channels"])
    return EXIT_OK if ok else EXIT_FAILED


def _print_results(test: Json, shown: set[str]) -> None:
    """Print each channel's outcome once, as it comes in."""
    for channel in test["channels"]:
        if channel["status"] == "pending" or channel["id"] in shown:
            continue
        shown.add(channel["id"])
        mark = "ok    " if channel["status"] == "sent" else "FAILED"
        error = f": {channel['error']}" if channel.get("error") else ""
        print(f"{mark}  {channel['kind']:<10}  {channel['target']}  (rule "
              f"{channel['rule']}){error}", flush=True)


# --- tokens ------------------------------------------------------------------------------


async def _token_create(args: argparse.Namespace, client: CycloneClient) -> int:
    created = await client.create_token(args.name, args.user, args.read_only)
    if args.json:
        print_json(created)
        return EXIT_OK
    # The secret alone on stdout (so `T=$(cyclone token create ci)` works), the note aside.
    print(f"token {created['id']} ({created['name']}) created; it is shown only this once",
          file=sys.stderr)
    print(created["token"])
    return EXIT_OK


async def _token_list(args: argparse.Namespace, client: CycloneClient) -> int:
    tokens = await client.list_tokens()
    if args.json:
        print_json({"tokens": tokens})
        return EXIT_OK
    table(["ID", "NAME", "CREATED"],
           ([str(t["id"]), t["name"], when(t.get("created_at"))] for t in tokens))
    return EXIT_OK


async def _token_revoke(args: argparse.Namespace, client: CycloneClient) -> int:
    await client.revoke_token(args.id)
    if not args.json:
        print(f"token {args.id} revoked")
    return EXIT_OK
