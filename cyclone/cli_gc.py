"""``cyclone gc`` and the storage settings of ``cyclone project add|update``.

    cyclone gc [--dry-run]      a retention pass now (admin): prints each thing removed
    cyclone project update P --retention-days 30 --retention-runs 50 --cache-limit-mb 2048

``gc`` asks the server (``POST /api/v1/gc``) and prints its progress as it comes: cache
entries evicted, runs whose logs and artifacts were collected (and why), other blobs
deleted, then the totals; ``--json`` prints the server's NDJSON objects as they are.
Exit 1 when the pass failed half-way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from typing import Any

from cyclone.client import CycloneClient
from shared.retention import Retention, rules_text

__all__ = ["add_gc_command", "project_storage_fields", "project_storage_flags",
           "shown_project_storage"]

EXIT_OK, EXIT_FAILED = 0, 1
Json = dict[str, Any]


def add_gc_command(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """``command(parent, name, handler, help)`` adds a client command (cli_client's)."""
    gc = command(sub, "gc", _gc, "run a retention pass now (admin): remove the logs and "
                 "artifacts the projects' retention no longer keeps")
    gc.add_argument("--dry-run", action="store_true",
                    help="print what would be removed, remove nothing")


def project_storage_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retention-days", type=_count, metavar="N",
                        help="keep runs' logs and artifacts N days after they end (0: no "
                             "age rule); the retention flags given replace the whole rule")
    parser.add_argument("--retention-runs", type=_count, metavar="N",
                        help="keep those of the project's last N runs whatever their age")
    parser.add_argument("--retention-failed-days", type=_count, metavar="N",
                        help="failed runs' age rule (default: twice --retention-days)")
    parser.add_argument("--no-retention", action="store_true",
                        help="keep every run's logs and artifacts forever")
    parser.add_argument("--cache-limit-mb", type=_count, metavar="MB",
                        help="admin only: the size the project's cache entries may take "
                             "together, least recently used evicted past it (0: the "
                             "server's CYCLONE_CACHE_MAX_MB)")


def project_storage_fields(args: argparse.Namespace) -> Json:
    changes: Json = {}
    rule = {name: value for name in ("days", "runs", "failed_days")
            if (value := getattr(args, f"retention_{name}")) is not None}
    if rule and args.no_retention:
        print("cyclone: --no-retention and the --retention-* flags exclude each other",
              file=sys.stderr)
        raise SystemExit(2)
    if rule or args.no_retention:
        changes["retention"] = rule
    if args.cache_limit_mb is not None:
        changes["cache_limit_mb"] = args.cache_limit_mb
    return changes


def shown_project_storage(project: Json) -> list[tuple[str, str]]:
    limit = project.get("cache_limit_mb") or 0
    return [("retention", rules_text(Retention.from_data(project.get("retention")))),
            ("cache limit", f"{limit} MB" if limit else "the server's (CYCLONE_CACHE_MAX_MB)")]


async def _gc(args: argparse.Namespace, client: CycloneClient) -> int:
    code = EXIT_OK
    async with contextlib.aclosing(client.gc(dry_run=args.dry_run)) as progress:
        async for item in progress:
            failed = item.get("kind") == "error"
            code = EXIT_FAILED if failed else code
            print(json.dumps(item) if args.json else _line(item, args.dry_run), flush=True,
                  file=sys.stderr if failed and not args.json else sys.stdout)
    return code


def _line(item: Json, dry_run: bool) -> str:
    would = "would be " if dry_run else ""
    match item.get("kind"):
        case "evicted":
            return (f"cache entry {item['project']}/{item['key']} {would}evicted: over the "
                    f"project's limit ({size(item['size'])})")
        case "plan":
            return (f"{item['runs']} runs and {item['blobs']} blobs ({size(item['bytes'])}) "
                    f"to collect")
        case "run":
            return (f"run {item['run']} ({item['project']}): {', '.join(item['what'])} "
                    f"{would}removed, {item['reason']}; {size(item['freed_bytes'])} freed")
        case "blob":
            return f"blob {item['digest'][:19]} {would}deleted ({size(item['size'])})"
        case "done":
            tail = " (dry run: nothing was removed)" if item.get("dry_run") else ""
            return (f"done in {item['seconds']:.1f}s: {item['runs']} runs collected, "
                    f"{item['blobs']} blobs deleted, {size(item['freed_bytes'])} freed, "
                    f"{item['evicted']} cache entries evicted{tail}")
        case "error":
            return f"cyclone: the pass failed: {item.get('detail', '')}"
    return json.dumps(item)  # a kind this client does not know: as the server sent it


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _count(raw: str) -> int:
    if not raw.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {raw!r}")
    return int(raw)
