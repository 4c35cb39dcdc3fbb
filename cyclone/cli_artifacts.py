"""``cyclone`` commands of a run's kept files: artifacts (and what ``cyclone show`` adds).

    cyclone artifacts RUN                          what the run's jobs kept
    cyclone artifacts RUN NAME [--job J] [-o FILE.tar | --extract DIR]
        download one: its SHA-256 is checked against the digest the run recorded, and a
        download that does not match is removed, never left looking complete

``show_kept`` prints, under ``cyclone show``, a run's artifacts, what its caches did, and
its jobs' outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cyclone.client import CycloneClient
from cyclone.output import print_json, table, when

__all__ = ["add_artifact_commands", "show_kept"]

EXIT_OK, EXIT_FAILED = 0, 1
Json = dict[str, Any]


def add_artifact_commands(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """``command(parent, name, handler, help)`` adds a client command (cli_client's)."""
    artifacts = command(sub, "artifacts", _artifacts, "list a run's artifacts, or download one")
    artifacts.add_argument("run")
    artifacts.add_argument("name", nargs="?", help="the artifact to download")
    artifacts.add_argument("--job", help="the job that kept it (when several kept one NAME)")
    where = artifacts.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", metavar="FILE", help="where the tar goes "
                                                             "(default: NAME.tar)")
    where.add_argument("--extract", metavar="DIR", help="extract it into DIR instead")


async def _artifacts(args: argparse.Namespace, client: CycloneClient) -> int:
    found = await client.artifacts(args.run)
    if args.name is None:
        if args.json:
            print_json(found)
        else:
            _list(found)
        return EXIT_OK
    chosen = [a for a in found["artifacts"]
              if a["name"] == args.name and (args.job is None or a["job"] == args.job)]
    if len(chosen) != 1:
        jobs = ", ".join(a["job"] for a in chosen)
        why = (f"is kept by several jobs ({jobs}): name one with --job" if chosen
               else "does not exist")
        print(f"cyclone: artifact {args.name!r} of run {args.run} {why}", file=sys.stderr)
        return EXIT_FAILED
    return await _download(args, client, chosen[0])


def _list(found: Json) -> None:
    from shared.pipeline.resources import format_size  # pydantic: not at start
    if found.get("collected"):
        print("(retention has removed this run's artifacts; their records are kept)")
    table(["JOB", "NAME", "SIZE", "FILES", "DIGEST", "KEPT"],
          ([a["job"], a["name"], format_size(a["size"]), str(a["files"]),
            a["digest"][:19],
            f"from run {a['from_run']}" if a.get("from_run") else when(a.get("uploaded_at"))]
           for a in found["artifacts"]))


async def _download(args: argparse.Namespace, client: CycloneClient, artifact: Json) -> int:
    from shared.pipeline.resources import format_size  # pydantic: not at start
    target = Path(args.output or f"{artifact['name']}.tar")
    if args.extract:
        target = Path(args.extract) / f".{artifact['name']}.tar.part"
        target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with target.open("wb") as out:
            async for chunk in client.download_artifact(args.run, artifact["job"],
                                                        artifact["name"]):
                digest.update(chunk)
                out.write(chunk)
        if f"sha256:{digest.hexdigest()}" != artifact["digest"]:
            raise ValueError(f"the download does not match its digest {artifact['digest']}")
        if args.extract:
            with tarfile.open(target) as tar:
                tar.extractall(args.extract, filter="data")
            target.unlink()
    except BaseException as exc:
        target.unlink(missing_ok=True)
        if isinstance(exc, ValueError):
            print(f"cyclone: {exc}; nothing kept", file=sys.stderr)
            return EXIT_FAILED
        raise
    print(f"{artifact['name']}: {artifact['files']} files, {format_size(artifact['size'])} "
          f"{'extracted into ' + args.extract if args.extract else 'saved as ' + str(target)}")
    return EXIT_OK


def show_kept(run: Json) -> None:
    """A run's artifacts, caches and job outputs, under ``cyclone show``."""
    from shared.pipeline.resources import format_size  # pydantic: not at start
    artifacts = run.get("artifacts") or []
    if artifacts:
        print()
        table(["ARTIFACT", "JOB", "SIZE", "FILES", "FROM"],
              ([a["name"], a["job"], format_size(a["size"]), str(a["files"]),
                a.get("from_run") or "this run"] for a in artifacts))
    caches = run.get("caches") or []
    if caches:
        print()
        table(["CACHE", "JOB", "OUTCOME", "SIZE"],
              ([c.get("restored_key") or c["key"], c["job"], c["outcome"],
                format_size(c["size"]) if c.get("size") else "-"] for c in caches))
    outputs = [(j["name"], key, value) for j in run.get("jobs") or []
               for key, value in j.get("outputs") or []]
    if outputs:
        print()
        table(["JOB", "OUTPUT", "VALUE"],
              ([job, key, value.splitlines()[0] if value else ""]
               for job, key, value in outputs))
