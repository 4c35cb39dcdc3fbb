"""``cyclone audit verify`` and ``cyclone provenance``: the tamper-evident audit trail.

    cyclone audit verify RUN | --all [--local]     check the events' hash chain
    cyclone provenance RUN [--image NAME] [--local]  how the run's images were built

``audit verify`` prints one line per finding (stream, seq, event type, and what was
done to it: edited, removed, inserted, reordered; ``unchained`` for events stored
before the chain existed, which is not tampering), then a summary; ``--all`` reports
its progress on stderr. Exit 0: nothing tampered with; 1: something was (or the run
is unknown); 2: bad usage. ``provenance`` prints the in-toto Statements (SLSA
provenance v1 style, unsigned) of the images the run pushed as JSON; with ``--image``
the statement of that image alone.

Both ask the server (``--server``, ``--token``; ``audit verify`` needs the admin role)
or, with ``--local``, open the event store the ``CYCLONE_*`` settings name
(``$CYCLONE_HOME``'s SQLite file, or ``CYCLONE_STORE``'s MongoDB), as ``cyclone replay``
does: what to run on the machine that holds the store, server or not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from cyclone.client import CycloneClient
from shared.config import Settings
from shared.errors import ConfigError
from shared.events import run_stream

__all__ = ["add_audit_commands"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
PROGRESS_EVERY_S = 1.0
Json = dict[str, Any]
Local = Callable[[argparse.Namespace, Settings], int]


def add_audit_commands(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """``command(parent, name, handler, help)`` adds a client command (cli_client's)."""
    audit = sub.add_parser("audit", help="the tamper-evident audit trail")
    audit_sub = audit.add_subparsers(required=True, metavar="ACTION")
    verify = command(audit_sub, "verify", _verify, "check the events' hash chain: report "
                     "any event edited, removed, inserted or reordered (exit 1 if one was)")
    verify.add_argument("run", nargs="?", help="the run whose events to check")
    verify.add_argument("--all", action="store_true", help="check every stream")
    _with_local(verify, _verify_local, _one_target)
    prov = command(sub, "provenance", _provenance, "the provenance (SLSA v1 style, unsigned) "
                   "of the images a run pushed, as JSON")
    prov.add_argument("run")
    prov.add_argument("--image", metavar="NAME",
                      help="only this image (its name in the pipeline, or its repository)")
    _with_local(prov, _provenance_local)


def _with_local(parser: argparse.ArgumentParser, local: Local,
                check: Callable[[argparse.Namespace], str] = lambda args: "") -> None:
    """``--local`` (``local`` runs instead of asking the server); ``check``: what is
    wrong with the arguments ("": nothing), an exit 2 before anything is done."""
    parser.add_argument("--local", action="store_true",
                        help="open the event store of the CYCLONE_* settings instead of "
                             "asking a server")
    on_server: Local = parser.get_default("func")

    def run(args: argparse.Namespace, settings: Settings) -> int:
        if problem := check(args):
            print(f"cyclone: {problem}", file=sys.stderr)
            return EXIT_INVALID
        if not args.local:
            return on_server(args, settings)
        try:
            return local(args, settings)
        except ConfigError as exc:
            print(f"cyclone: {exc}", file=sys.stderr)
            return EXIT_INVALID

    parser.set_defaults(func=run)


# --- audit verify --------------------------------------------------------------------


def _one_target(args: argparse.Namespace) -> str:
    if bool(args.run) == args.all:
        return "give a RUN or --all (not both)"
    return ""


async def _verify(args: argparse.Namespace, client: CycloneClient) -> int:
    code = EXIT_OK
    async with contextlib.aclosing(client.audit_verify(None if args.all else args.run)) as items:
        async for item in items:
            code = max(code, _show(item, args.json))
    return code


def _verify_local(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_verify_store(args, settings))


async def _verify_store(args: argparse.Namespace, settings: Settings) -> int:
    from cyclone.cli_secrets import open_event_store  # the store's drivers: only here
    from shared.audit_verify import verify_store

    last = time.monotonic()

    async def progress(done: int, total: int, stream: str) -> None:
        nonlocal last
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            _show({"kind": "progress", "done": done, "total": total}, args.json)

    async with open_event_store(settings) as store:
        report = await verify_store(store, None if args.all else [run_stream(args.run)],
                                    progress)
    if args.run and not report.events and not report.findings:
        print(f"cyclone: no run {args.run!r} in the store", file=sys.stderr)
        return EXIT_FAILED
    code = EXIT_OK
    for item in [*({"kind": "finding", "finding": f.to_json()} for f in report.findings),
                 {"kind": "done", **report.to_json()}]:
        code = max(code, _show(item, args.json))
    return code


def _show(item: Json, as_json: bool) -> int:
    """Print one object of a verification; the exit code it means."""
    kind = item.get("kind")
    failed = kind == "error" or (kind == "done" and item.get("tampered"))
    if as_json:
        print(json.dumps(item), flush=True)
    elif kind == "progress":
        print(f"verified {item['done']} of {item['total']} streams ...", file=sys.stderr,
              flush=True)
    elif kind == "finding":
        print(_finding(item["finding"]), flush=True)
    elif kind == "done":
        print(_summary(item), flush=True)
    else:
        print(f"cyclone: the verification failed: {item.get('detail', item)}",
              file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _finding(item: Json) -> str:
    seqs = f"seq {item['seq']}" + (f"-{item['last_seq']}" if item["last_seq"] > item["seq"]
                                   else "")
    what = f" {item['type']}" if item.get("type") else ""
    detail = f" ({item['detail']})" if item.get("detail") else ""
    return f"{item['stream']} {seqs}{what}: {str(item['kind']).upper()}{detail}"


def _summary(item: Json) -> str:
    checked = f"{item['streams']} streams, {item['events']} events"
    if item["tampered"]:
        return f"TAMPERED: {item['findings']} findings in {checked}"
    if item["findings"]:
        return f"no tampering found in {checked} (some events predate the audit chain)"
    return f"no tampering found in {checked}"


# --- provenance ----------------------------------------------------------------------


async def _provenance(args: argparse.Namespace, client: CycloneClient) -> int:
    found = await client.provenance(args.run, args.image)
    return _print_statements(args, found.get("statements", []))


def _provenance_local(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_provenance_of_store(args, settings))


async def _provenance_of_store(args: argparse.Namespace, settings: Settings) -> int:
    from cyclone.cli_secrets import open_event_store
    from shared.projections.provenance import of_image, provenance

    async with open_event_store(settings) as store:
        events = await store.read(run_stream(args.run))
    if not events:
        print(f"cyclone: no run {args.run!r} in the store", file=sys.stderr)
        return EXIT_FAILED
    statements = provenance(args.run, events)
    if args.image:
        try:
            statements = of_image(statements, args.image)
        except LookupError as exc:
            print(f"cyclone: run {args.run!r}: {exc.args[0]}", file=sys.stderr)
            return EXIT_FAILED
    return _print_statements(args, statements)


def _print_statements(args: argparse.Namespace, statements: list[Json]) -> int:
    """With --image the (last) statement of that image alone: what tools take."""
    print(json.dumps(statements[-1] if args.image and statements else statements, indent=2))
    return EXIT_OK
