"""``cyclone secret``: a project's or the global secrets.

    cyclone secret set PROJECT NAME [--file F]   the value from stdin (or F)
    cyclone secret set --global NAME             a secret every project sees
    cyclone secret list PROJECT | --global       names and dates (never values)
    cyclone secret rm PROJECT NAME | --global NAME
    cyclone secret rotate-key                    seal every secret with a new key

``set``, ``list`` and ``rm`` go through the API (``--server``, ``--token``);
``rotate-key`` works on the event store itself, as ``cyclone replay`` does: with the
key file it writes a new key there (the old one kept as ``secret.key.old``); with
``CYCLONE_SECRET_KEY`` holding one key it prints a new one to prepend to it, and
holding several it seals every secret with the first. Restart the services after it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cyclone.client import CycloneClient
from shared.config import Settings
from shared.errors import ConfigError
from shared.ports.eventstore import EventStore
from shared.secretbox import KEY_FILE, new_key, write_key_file
from shared.secrets import SecretStore, check_secret, open_secret_store

__all__ = ["add_secret_commands", "open_event_store"]

EXIT_OK, EXIT_INVALID = 0, 2
Handler = Callable[[argparse.Namespace, CycloneClient], Any]


def add_secret_commands(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """``command(parent, name, handler, help)`` adds a client command (cli_client's)."""
    secret = sub.add_parser("secret", help="manage secrets (encrypted; never shown)")
    secret_sub = secret.add_subparsers(required=True, metavar="ACTION")
    set_ = command(secret_sub, "set", _set, "set a secret; its value from stdin or --file")
    _target(set_, named=True)
    set_.add_argument("--file", type=Path, help="read the value from this file")
    _target(command(secret_sub, "list", _list, "list secrets: names and dates"), named=False)
    _target(command(secret_sub, "rm", _remove, "remove a secret"), named=True)
    rotate = secret_sub.add_parser("rotate-key", help="seal every secret with a new key "
                                   "(on the event store; restart the services after)")
    rotate.set_defaults(func=_rotate)


def _target(parser: argparse.ArgumentParser, named: bool) -> None:
    parser.add_argument("--global", dest="everywhere", action="store_true",
                        help="a global secret (every project's) instead of a project's")
    parser.add_argument("names", nargs="+" if named else "*",
                        metavar="PROJECT NAME" if named else "PROJECT")


def _where(args: argparse.Namespace, named: bool) -> tuple[str | None, str]:
    """(project or None for global, secret name) from the positional arguments."""
    want = (1 if args.everywhere else 2) if named else (0 if args.everywhere else 1)
    if len(args.names) != want:
        usage = "[--global] NAME" if args.everywhere else "PROJECT NAME"
        print(f"cyclone: expected {usage if named else 'PROJECT or --global'}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID)
    project = None if args.everywhere else args.names[0]
    return project, args.names[-1] if named else ""


async def _set(args: argparse.Namespace, client: CycloneClient) -> int:
    project, name = _where(args, named=True)
    value = args.file.read_text() if args.file else sys.stdin.read()
    # A value typed or piped ends with the newline of its last line: not part of it.
    value = value.removesuffix("\n").removesuffix("\r")
    problem = check_secret(name, value)
    if problem:  # said before the value travels anywhere
        print(f"cyclone: {name}: {problem}", file=sys.stderr)
        return EXIT_INVALID
    shown = await client.set_secret(project, name, value)
    print(json.dumps(shown) if args.json else f"secret {name} set ({shown['scope']})")
    return EXIT_OK


async def _list(args: argparse.Namespace, client: CycloneClient) -> int:
    project, _ = _where(args, named=False)
    listed = await client.list_secrets(project)
    if args.json:
        print(json.dumps({"secrets": listed}, indent=2, sort_keys=True))
        return EXIT_OK
    for item in listed:
        implicit = "  (every step: moved from the env)" if item.get("implicit") else ""
        print(f"{item['name']:<32} updated {item['updated_at'][:19]}{implicit}")
    return EXIT_OK


async def _remove(args: argparse.Namespace, client: CycloneClient) -> int:
    project, name = _where(args, named=True)
    await client.remove_secret(project, name)
    if not args.json:
        print(f"secret {name} removed")
    return EXIT_OK


# --- rotate-key: on the store ------------------------------------------------------------


def _rotate(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(_rotate_async(settings))
    except ConfigError as exc:
        print(f"cyclone: {exc}", file=sys.stderr)
        return EXIT_INVALID


async def _rotate_async(settings: Settings) -> int:
    async with open_event_store(settings) as store:
        secrets = await open_secret_store(settings.secret_key, settings.home, store)
        assert secrets.box is not None
        if settings.secret_key and len(secrets.box.keys) > 1:
            count = await secrets.reseal(secrets.box, actor="rotate-key")
            print(f"{count} secrets sealed again with the first key of CYCLONE_SECRET_KEY; "
                  "the others can be removed from it once every service has restarted")
            return EXIT_OK
        key = new_key()
        if settings.secret_key:
            count = await secrets.reseal(secrets.box.with_first(key), actor="rotate-key")
            print(f"{count} secrets sealed with a new key. Prepend it to CYCLONE_SECRET_KEY "
                  f"of every service and restart them:\n\n    CYCLONE_SECRET_KEY={key},"
                  f"{settings.secret_key}\n", flush=True)
            return EXIT_OK
        return await _rotate_file(settings.home / KEY_FILE, secrets, key)


async def _rotate_file(path: Path, secrets: SecretStore, key: str) -> int:
    """The key file holds the new and the old keys while secrets are sealed again (a
    crash half-way leaves every secret openable), then the new one alone."""
    assert secrets.box is not None
    old = [base64.b64encode(k).decode() for k in secrets.box.keys]
    await asyncio.to_thread(shutil.copy2, path, path.with_name(KEY_FILE + ".old"))
    await asyncio.to_thread(write_key_file, path, [key, *old])
    count = await secrets.reseal(secrets.box.with_first(key), "rotate-key")
    await asyncio.to_thread(write_key_file, path, key)
    print(f"{count} secrets sealed with a new key in {path} (the old one is in "
          f"{path.name}.old); restart Cyclone")
    return EXIT_OK


@asynccontextmanager
async def open_event_store(settings: Settings) -> AsyncIterator[EventStore]:
    """The event store the settings name (as the services open it), closed after."""
    # imported here: the drivers (pymongo above all) cost every other command's start
    from shared.adapters.eventstore.mongo import MongoEventStore
    from shared.adapters.eventstore.sqlite import SqliteEventStore
    store: EventStore
    if settings.infra is None:
        settings.home.mkdir(parents=True, exist_ok=True)
        store = await SqliteEventStore.open(settings.store_path)
    else:
        store = await MongoEventStore.connect(settings.infra.store)
    try:
        yield store
    finally:
        await store.close()
