"""``cyclone report RUN [--job J] [--step S] [--json] [--local]``: a run, a job or a step
summed up (status, times, durations, attempts, exit codes; ``cyclone.report``).

    $ cyclone report 0193f... --job test
    run 0193f..., job test
    status    failure
    ...
    STEP  STATUS   EXIT  ATTEMPTS  DURATION  REASON
    unit  failure  3     2         4.1s

By default the run is asked of the server (as ``cyclone show`` does); ``--local`` reads
it from this machine's store (``CYCLONE_HOME``), where ``cyclone run`` and an embedded
``cyclone up`` record their runs, so a local run is reported without a server. A job or
a step the run does not have is an error listing those it has (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from cyclone.client import CycloneClient
from cyclone.output import print_json
from cyclone.report import NoSuchPart, lines, summary
from shared.config import Settings
from shared.errors import CycloneError

__all__ = ["add_report_command"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
Json = dict[str, Any]
Entry = Callable[[argparse.Namespace, Settings], int]


def add_report_command(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """``command(parent, name, handler, help)`` adds a client command (cli_client's)."""
    report = command(sub, "report", _from_server, "a run, a job or a step summed up: "
                     "status, durations, attempts, exit codes")
    report.add_argument("run")
    report.add_argument("--job", metavar="J", help="one job of the run (its name as "
                                                   "`cyclone show` lists it)")
    report.add_argument("--step", metavar="S", help="one step (of --job, or of the one job "
                                                    "that has a step so named)")
    report.add_argument("--local", action="store_true",
                        help="read the run from this machine's store (CYCLONE_HOME: "
                             "`cyclone run`'s runs), not from a server")
    report.set_defaults(func=_local_or(report.get_default("func")))


def _local_or(on_server: Entry) -> Entry:
    def entry(args: argparse.Namespace, settings: Settings) -> int:
        if not args.local:
            return on_server(args, settings)
        run = asyncio.run(_read_local(args.run, settings))
        if run is None:
            print(f"cyclone: no run {args.run!r} in {settings.store_path}", file=sys.stderr)
            return EXIT_FAILED
        return _print(args, run)

    return entry


async def _from_server(args: argparse.Namespace, client: CycloneClient) -> int:
    return _print(args, await client.get_run(args.run))


def _print(args: argparse.Namespace, run: Json) -> int:
    try:
        shown = summary(run, args.job, args.step)
    except NoSuchPart as exc:
        print(f"cyclone: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print_json(shown)
    else:
        print("\n".join(lines(shown)))
    return EXIT_OK


async def _read_local(run_id: str, settings: Settings) -> Json | None:
    """The run's view folded from the store under ``CYCLONE_HOME`` (None: no such run)."""
    from shared.adapters.eventstore.sqlite import SqliteEventStore
    from shared.events import run_stream
    from shared.projections.runs import fold
    if settings.infra is not None:
        raise NoLocalStore("--local reads the store under CYCLONE_HOME; with CYCLONE_STORE "
                           "set, ask the server (leave out --local)")
    if not settings.store_path.exists():
        return None  # opening it would create it
    store = await SqliteEventStore.open(settings.store_path)
    try:
        run = fold(await store.read(run_stream(run_id)))
    finally:
        await store.close()
    return None if run is None else run.to_json()


class NoLocalStore(CycloneError):
    """``--local`` where the runs are not in a local store."""
