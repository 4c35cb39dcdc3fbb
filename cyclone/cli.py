"""The ``cyclone`` command.

    cyclone run [FILE]      run the pipeline of the current directory, live (exit 0 / 1 / 2);
                            --set PATH=VALUE overrides a key, --dry-run prints the plan only
    cyclone lint FILE...    check pipeline files; every problem with file:line
    cyclone replay          rebuild the run projections from the event store, print counts
    cyclone up              the server: REST API, log streams, all services (see --help)
    cyclone project|trigger|runs|show|logs|cancel|rerun|events|token   server clients
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import inspect
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cyclone import SERVICES
from cyclone.cli_client import add_client_commands, override_arg
from cyclone.display import Display
from cyclone.githook import install_hook
from cyclone.output import print_json
from shared import events as ev
from shared.children import watch_children_with_pidfds
from shared.config import Settings
from shared.errors import ConfigError, CycloneError
from shared.events import decode
from shared.logging import configure_logging
from shared.ports.bus import TOPIC_EVENTS, TOPIC_LOGS, Message, Subscription
from shared.runstream import new_run_id
from shared.wire import decode_event, decode_log_batch

if TYPE_CHECKING:
    from cyclone.embedded import Embedded
    from shared.pipeline.diagnostics import Diagnostic
    from shared.pipeline.include import IncludedFile
    from shared.pipeline.resources import Policy

# The server side (every service, the ports, their drivers) is imported by the commands
# that run it (run, up, service, replay, lint), not at start: a client command such as
# `cyclone runs` then starts in 1.3 s instead of 2.9 s.

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
PIPELINE_FILES = (".cyclone.yml", ".cyclone.yaml", "caicloud.yml", "caicloud.yaml")
_RUN_ENDS = {t.TYPE: t for t in ev.TERMINAL_RUN_EVENTS}
_LOG_QUIET_S = 0.1  # after the run ends, lines still in flight arrive within this


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"cyclone: {exc}", file=sys.stderr)
        return EXIT_INVALID
    configure_logging(settings.log_level, settings.log_format)
    watch_children_with_pidfds()
    try:
        code: int = args.func(args, settings)
    except CycloneError as exc:
        print(f"cyclone: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cyclone", description="Container-native CI/CD")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the pipeline of the current directory")
    run.add_argument("file", nargs="?", help=f"pipeline file (default: {PIPELINE_FILES[0]}, "
                                             "then caicloud.yml)")
    run.add_argument("--branch", help="branch to run as (default: the checked-out one)")
    run.add_argument("--event", default="cli",
                     choices=["cli", "push", "tag", "pull_request", "manual", "schedule"],
                     help="trigger event that `when.event` sees (default: cli)")
    run.add_argument("--param", action="append", default=[], metavar="K=V",
                     help="extra environment variable for every step (repeatable)")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     type=override_arg, metavar="PATH=VALUE",
                     help="set a key of the pipeline file for this run, e.g. "
                          "jobs.test.image=python:3.13 or jobs.test.steps.0.retry=2 "
                          "(repeatable; recorded in the run's events)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan (jobs in order, images, what when: skips and "
                          "why) and run nothing")
    run.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    run.add_argument("--no-color", action="store_true", help="plain output")
    run.add_argument("--approve", action="store_true",
                     help="approve the jobs that wait for approval (you are the approver of "
                          "a local run); without it they are rejected")
    run.set_defaults(func=_run)

    lint_cmd = sub.add_parser("lint", help="check pipeline files")
    lint_cmd.add_argument("files", nargs="+")
    lint_cmd.add_argument("--untrusted", action="store_true",
                          help="check as for a project that is not trusted: privileged "
                               "containers and volumes are errors (by default warnings, as "
                               "no project is known)")
    lint_cmd.add_argument("--set", dest="overrides", action="append", default=[],
                          type=override_arg, metavar="PATH=VALUE",
                          help="check with this key set, as `cyclone run --set` would "
                               "(repeatable)")
    lint_cmd.set_defaults(func=_lint)

    up = sub.add_parser("up", help="run the Cyclone server (API, services) on this machine")
    up.add_argument("--listen", metavar="HOST:PORT",
                    help="address to serve on (default: CYCLONE_LISTEN or 127.0.0.1:8080)")
    up.set_defaults(func=_up)

    service = sub.add_parser("service", help="run one service as its own process "
                                             "(distributed mode: Kafka, etcd, MongoDB)")
    service.add_argument("name", choices=SERVICES)
    service.add_argument("--listen", metavar="HOST:PORT",
                         help="where /healthz and /metrics (and the api) are served")
    service.set_defaults(func=_service)

    add_client_commands(sub)

    hook = sub.add_parser("hook", help="webhooks for plain Git servers")
    hook_sub = hook.add_subparsers(dest="hook_command", required=True)
    install = hook_sub.add_parser(
        "install", help="install a post-receive hook into a bare repository",
        description=inspect.cleandoc(install_hook.__doc__ or "").split("\n\nReturns")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    install.add_argument("repo", type=Path, metavar="REPO", help="the bare repository")
    install.add_argument("--url", required=True,
                         help="the project's generic webhook URL, "
                              "https://<cyclone>/api/v1/hooks/generic/<project>")
    install.add_argument("--secret",
                         help="the project's webhook secret (default: $CYCLONE_HOOK_SECRET)")
    install.add_argument("--repo-url", help="the clone URL Cyclone fetches from")
    install.add_argument("--timeout", type=float, default=5.0,
                         help="seconds a push may wait for Cyclone (default 5)")
    install.add_argument("--force", action="store_true",
                         help="replace a post-receive hook Cyclone did not write")
    install.set_defaults(func=_hook_install)

    replay = sub.add_parser("replay", help="rebuild run projections from the event store")
    replay.add_argument("--runs", action="store_true", help="also list every run")
    replay.set_defaults(func=_replay)
    return parser


# --- hook install ------------------------------------------------------------------------


def _hook_install(args: argparse.Namespace, settings: Settings) -> int:
    secret = settings.hook_secret if args.secret is None else args.secret
    hook = install_hook(args.repo, args.url, secret, repo_url=args.repo_url,
                        timeout=args.timeout, force=args.force)
    print(f"installed {hook}: pushes to {args.repo} now notify {args.url}")
    return EXIT_OK


# --- lint --------------------------------------------------------------------------------


def _lint(args: argparse.Namespace, settings: Settings) -> int:
    from shared.pipeline.resources import UNKNOWN, Policy
    untrusted = Policy(trusted=False, project="NAME")  # `cyclone lint --untrusted`
    worst = EXIT_OK
    for name in args.files:
        diagnostics = _lint_file(Path(name), untrusted if args.untrusted else UNKNOWN,
                                 settings, args.overrides)
        for diagnostic in diagnostics:
            print(diagnostic)
        if any(d.severity == "error" for d in diagnostics):
            worst = EXIT_INVALID
        elif not diagnostics:
            print(f"{name}: ok")
    return worst


def _lint_file(path: Path, policy: Policy, settings: Settings,
               overrides: list[str]) -> list[Diagnostic]:
    from cyclone.includes import resolve_here
    from shared.pipeline.diagnostics import Diagnostic
    from shared.pipeline.lint import lint
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [Diagnostic(file=str(path), line=0, column=0, path="",
                           message=f"cannot read: {exc}")]
    # Included paths are the repository's: from the top of the work tree holding the file.
    root = _git_top(path.parent) or path.parent
    includes = asyncio.run(resolve_here(text, str(path), root, settings))
    return lint(text, str(path), policy, includes, overrides)


# --- run ---------------------------------------------------------------------------------


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from cyclone.includes import resolve_here
    from shared.pipeline.lint import lint
    path = Path(args.file) if args.file else _find_pipeline(Path.cwd())
    if path is None:
        print(f"cyclone: no pipeline file here (looked for {', '.join(PIPELINE_FILES)})",
              file=sys.stderr)
        return EXIT_INVALID
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"cyclone: {path}: cannot read: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.json and not args.dry_run:
        print("cyclone: --json goes with --dry-run (a run's events: cyclone events RUN "
              "--json)", file=sys.stderr)
        return EXIT_INVALID
    # The source is the current directory: its files are what an include reads.
    includes = asyncio.run(resolve_here(text, path.name, Path.cwd(), settings))
    diagnostics = lint(text, path.name, includes=includes, overrides=args.overrides)
    for diagnostic in diagnostics:
        print(diagnostic, file=sys.stderr)
    if any(d.severity == "error" for d in diagnostics):
        return EXIT_INVALID
    params = _parse_params(args.param)
    if params is None:
        return EXIT_INVALID
    if args.dry_run:
        return _dry_run(args, path.name, text, includes)
    display = Display(colour=False if args.no_color else None)
    return asyncio.run(_run_async(args, settings, path.name, text, params, display,
                                  includes))


async def _run_async(args: argparse.Namespace, settings: Settings, file_name: str,
                     text: str, params: dict[str, str], display: Display,
                     includes: tuple[IncludedFile, ...]) -> int:
    from cyclone.embedded import Embedded
    from services.api.commands import request_run
    source = Path.cwd()
    branch, commit = _git_head(source)
    branch = args.branch or branch
    runtime = await Embedded.start(settings, own_all_runs=False)
    try:
        run_id = new_run_id()
        runtime.ownership.claim(run_id)
        if runtime.executor.name == "shell":
            display.note("warning: no Docker daemon reachable: steps run on the host shell, "
                         "without isolation, and services are unavailable")
        display.header(run_id, file_name, branch, runtime.executor.name)
        for written in args.overrides:
            display.note(f"--set {written}")  # this run differs from the file: say how
        events = await runtime.bus.subscribe(TOPIC_EVENTS, f"cli-{run_id}")
        logs = await runtime.bus.subscribe(TOPIC_LOGS, f"cli-{run_id}")
        await request_run(
            runtime.store, run_id=run_id, project=source.name, trigger=args.event,
            branch=branch, commit=commit, pipeline_file=file_name, pipeline=text,
            source=str(source), params=params, overrides=args.overrides,
            requested_by="cli", includes=[f.to_data() for f in includes],
        )
        decide = _approver(runtime, run_id, args.approve)
        with _cancel_on_signals(runtime, run_id, display):
            outcome = await _follow(run_id, events, logs, display, decide)
        await events.close()
        await logs.close()
        return EXIT_OK if outcome == ev.RunSucceeded.TYPE else EXIT_FAILED
    finally:
        await runtime.stop()


def _dry_run(args: argparse.Namespace, file_name: str, text: str,
             includes: tuple[IncludedFile, ...]) -> int:
    """Print what ``cyclone run`` would run, judged as the run would judge it: the same
    file, includes, overrides, branch and event. Nothing runs, nothing is recorded."""
    from shared.pipeline import load
    from shared.pipeline.preview import lines, preview
    plan = load(text, file_name, includes=includes, overrides=args.overrides).plan
    branch = args.branch or _git_head(Path.cwd())[0]
    shown = preview(plan, branch, args.event, overrides=tuple(args.overrides))
    if args.json:
        print_json(shown.to_json())
    else:
        print("\n".join(lines(shown)))
    return EXIT_OK


def _approver(runtime: Embedded, run_id: str, approve: bool) -> Callable[[str], object]:
    """What ``cyclone run`` does with a job that waits for approval: nobody else can
    decide in a local run, so ``--approve`` approves it and its absence rejects it."""
    from services.api.commands import decide_job
    pending: set[asyncio.Task[object]] = set()

    def decide(job: str) -> None:
        note = "" if approve else "cyclone run without --approve"
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(
            decide_job(runtime.store, run_id, job, "cli", approve, note))
        pending.add(task)
        task.add_done_callback(pending.discard)

    return decide


async def _follow(run_id: str, events: Subscription, logs: Subscription,
                  display: Display, decide: Callable[[str], object]) -> str:
    """Print the run's events and log lines as they come; returns the run's end event type.

    Each message is committed once shown, so the embedded bus can let it go."""
    subscriptions = {"events": events, "logs": logs}
    streams = {name: aiter(sub) for name, sub in subscriptions.items()}
    waiting = {asyncio.ensure_future(anext(it)): name for name, it in streams.items()}
    outcome = ""
    try:
        while waiting:
            done, _ = await asyncio.wait(waiting, timeout=_LOG_QUIET_S if outcome else None,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break  # the run has ended and no more lines are arriving
            for future in sorted(done, key=lambda f: waiting[f] != "logs"):
                name = waiting.pop(future)
                message: Message | None = None
                with contextlib.suppress(StopAsyncIteration):
                    message = future.result()
                if message is None:
                    continue
                waiting[asyncio.ensure_future(anext(streams[name]))] = name
                await subscriptions[name].commit(message)
                if message.key != run_id:
                    continue
                if name == "logs":
                    for line in decode_log_batch(message.value)[2]:
                        display.log_line(line)
                    continue
                recorded = decode_event(message.value)
                event = decode(recorded)
                if event is not None and not outcome:
                    display.event(event)
                if isinstance(event, ev.JobAwaitingApproval):
                    decide(event.job)
                if recorded.type in _RUN_ENDS:
                    outcome = recorded.type
    finally:
        for future in waiting:
            future.cancel()
    return outcome


@contextlib.contextmanager
def _cancel_on_signals(runtime: Embedded, run_id: str, display: Display):  # type: ignore[no-untyped-def]
    """Ctrl-C or SIGTERM cancels the run (its containers are killed and removed)."""
    from services.api.commands import request_cancel
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[object]] = set()

    def cancel() -> None:
        display.note("cancelling the run (containers are being stopped)...")
        task = loop.create_task(request_cancel(runtime.store, run_id, "interrupted by user",
                                               requested_by="cli"))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, cancel)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _find_pipeline(directory: Path) -> Path | None:
    return next((directory / n for n in PIPELINE_FILES if (directory / n).is_file()), None)


def _parse_params(raw: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"cyclone: --param {item!r}: expected KEY=VALUE", file=sys.stderr)
            return None
        params[key] = value
    return params


def _git_top(directory: Path) -> Path | None:
    """The top of the Git work tree holding ``directory``; None outside Git."""
    try:
        done = subprocess.run(["git", "-C", str(directory), "rev-parse", "--show-toplevel"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else None


def _git_head(directory: Path) -> tuple[str, str]:
    """(branch, commit) of the checkout at ``directory``; ("", "") outside Git."""

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(directory), *argv], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    branch = git("symbolic-ref", "--short", "-q", "HEAD")
    return branch, git("rev-parse", "-q", "--verify", "HEAD")


# --- up ----------------------------------------------------------------------------------


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from cyclone.serve import up
    if args.listen:
        settings = dataclasses.replace(
            settings, listen=Settings.from_env({"CYCLONE_LISTEN": args.listen}).listen)
    asyncio.run(up(settings))
    return EXIT_OK


def _service(args: argparse.Namespace, settings: Settings) -> int:
    from cyclone.serve import service
    if args.listen:
        settings = dataclasses.replace(
            settings, listen=Settings.from_env({"CYCLONE_LISTEN": args.listen}).listen)
    asyncio.run(service(args.name, settings))
    return EXIT_OK


# --- replay ------------------------------------------------------------------------------


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_replay_async(args, settings))


async def _replay_async(args: argparse.Namespace, settings: Settings) -> int:
    from cyclone.embedded import Embedded
    from shared.projections.replay import replay_runs
    runtime = await Embedded.start(settings, own_all_runs=False)  # recovers crashed runs
    try:
        replayed = await replay_runs(runtime.store)
    finally:
        await runtime.stop()
    for run_id in runtime.recovered:
        print(f"run {run_id}: marked errored (interrupted)")
    counts = ", ".join(f"{status} {n}" for status, n in sorted(replayed.by_status().items()))
    print(f"{replayed.events} events, {len(replayed.runs)} runs" + (f": {counts}" if counts
                                                                      else ""))
    if replayed.skipped_events:
        print(f"{replayed.skipped_events} events of unknown types skipped")
    if args.runs:
        for run in sorted(replayed.runs.values(), key=lambda r: r.id):
            duration = f"{run.duration_s:.1f}s" if run.duration_s is not None else "-"
            print(f"{run.id}  {run.status:<10} {run.branch or '-':<16} {duration:>8}  "
                  f"{run.reason.splitlines()[0] if run.reason else ''}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
