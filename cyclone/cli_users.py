"""``cyclone user``: local users and their roles (an admin's commands, through the API).

    cyclone user add NAME [--admin] [--role PROJECT=ROLE ...] [--no-password]
                                            the password from stdin (or asked for)
    cyclone user list                       users, admin flags and project roles
    cyclone user passwd NAME                a new password, from stdin (or asked for)
    cyclone user grant NAME PROJECT ROLE    viewer, developer or maintainer
    cyclone user revoke NAME PROJECT        no role in the project any more
    cyclone user rm NAME                    the user goes, and every token of theirs
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from typing import Any

from cyclone.client import CycloneClient
from shared.status import Role

__all__ = ["add_user_commands"]

EXIT_OK, EXIT_INVALID = 0, 2
ROLES = [str(r) for r in Role]


def add_user_commands(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """``command(parent, name, handler, help)`` adds a client command (cli_client's)."""
    user = sub.add_parser("user", help="manage users and their roles (admin)")
    user_sub = user.add_subparsers(required=True, metavar="ACTION")
    add = command(user_sub, "add", _add, "add a user; the password from stdin or a prompt")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="a global admin")
    add.add_argument("--role", action="append", default=[], type=_project_role,
                     metavar="PROJECT=ROLE", help=f"a role in a project ({', '.join(ROLES)}); "
                                                  "repeatable")
    add.add_argument("--no-password", action="store_true",
                     help="a user without a password: tokens only (a bot)")
    command(user_sub, "list", _list, "list users and their roles")
    command(user_sub, "passwd", _passwd, "set a user's password (from stdin or a prompt)"
            ).add_argument("name")
    grant = command(user_sub, "grant", _grant, "give a user a role in a project")
    grant.add_argument("name")
    grant.add_argument("project")
    grant.add_argument("role", choices=ROLES)
    revoke = command(user_sub, "revoke", _revoke, "take a user's role in a project away")
    revoke.add_argument("name")
    revoke.add_argument("project")
    command(user_sub, "rm", _remove, "remove a user and revoke their tokens").add_argument("name")


def _project_role(raw: str) -> tuple[str, str]:
    project, sep, role = raw.partition("=")
    if not sep or not project or role not in ROLES:
        raise argparse.ArgumentTypeError(f"expected PROJECT=ROLE with ROLE one of "
                                         f"{', '.join(ROLES)}, got {raw!r}")
    return project, role


def _password(name: str) -> str:
    """A password typed twice at a terminal, or the first line of stdin (scripts)."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    first = getpass.getpass(f"password for {name}: ")
    if getpass.getpass("again: ") != first:
        print("cyclone: the passwords differ", file=sys.stderr)
        raise SystemExit(EXIT_INVALID)
    return first


async def _add(args: argparse.Namespace, client: CycloneClient) -> int:
    password = None if args.no_password else _password(args.name)
    added = await client.add_user(args.name, password, args.admin, dict(args.role))
    print(json.dumps(added) if args.json else f"user {args.name} added")
    return EXIT_OK


async def _list(args: argparse.Namespace, client: CycloneClient) -> int:
    users = await client.list_users()
    if args.json:
        print(json.dumps({"users": users}, indent=2, sort_keys=True))
        return EXIT_OK
    for user in users:
        roles = ", ".join(f"{p}={r}" for p, r in user["roles"].items()) or "-"
        flags = "admin" if user["admin"] else ""
        login = "" if user["password_set"] else "  (no password: tokens only)"
        print(f"{user['name']:<24} {flags:<6} {roles}{login}")
    return EXIT_OK


async def _passwd(args: argparse.Namespace, client: CycloneClient) -> int:
    await client.change_user(args.name, {"password": _password(args.name)})
    if not args.json:
        print(f"password of {args.name} set")
    return EXIT_OK


async def _grant(args: argparse.Namespace, client: CycloneClient) -> int:
    await client.set_role(args.project, args.name, args.role)
    if not args.json:
        print(f"{args.name} is {args.role} in {args.project}")
    return EXIT_OK


async def _revoke(args: argparse.Namespace, client: CycloneClient) -> int:
    await client.set_role(args.project, args.name, None)
    if not args.json:
        print(f"{args.name} has no role in {args.project} any more")
    return EXIT_OK


async def _remove(args: argparse.Namespace, client: CycloneClient) -> int:
    await client.remove_user(args.name)
    if not args.json:
        print(f"user {args.name} removed, and their tokens revoked")
    return EXIT_OK
