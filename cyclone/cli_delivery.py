"""``cyclone`` commands of delivery: approvals, an environment's deployments, rollback.

    cyclone approve RUN [JOB] [--with-secrets] [--comment C]
        a job waiting for approval (JOB; or the run's only one), or a run that waits
        (a pull request from a fork: --with-secrets gives it its secrets)
    cyclone reject RUN [JOB] [--reason R]     the job fails / the run is cancelled
    cyclone deployments PROJECT [ENV]         newest first: image, commit, who approved
    cyclone rollback PROJECT ENV              deploy ENV's previous good image again

``cyclone show RUN`` prints a run's pushed images and deployments (``show_delivery``).
``cyclone project add|update`` take the delivery settings a ``caicloud.yml`` relies on
(``project_delivery_flags``, ``project_delivery_fields``, ``shown_project_delivery``):

    --registry HOST[:PORT][/PATH] [--registry-user U --registry-password-secret SECRET]
    --no-registry
    --cluster NAME=server=SECRET,token=SECRET[,ca=SECRET][,namespace=NS]   (repeatable)
    --no-clusters
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from cyclone.client import CycloneClient
from cyclone.output import print_json, report, table, when

__all__ = ["add_delivery_commands", "project_delivery_fields", "project_delivery_flags",
           "show_delivery", "shown_project_delivery"]

EXIT_OK, EXIT_FAILED = 0, 1
Json = dict[str, Any]
_CLUSTER_KEYS = ("server", "token", "ca", "namespace")


def add_delivery_commands(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """``command(parent, name, handler, help)`` adds a client command (cli_client's)."""
    approve = command(sub, "approve", _approve, "let a job that waits for approval run (or a "
                      "run that waits: a pull request from a fork)")
    approve.add_argument("run")
    approve.add_argument("job", nargs="?", help="the job (default: the run's only waiting one)")
    approve.add_argument("--with-secrets", action="store_true",
                         help="a fork's run: give its steps the secrets they ask for")
    approve.add_argument("--comment", default="", help="kept in the run's history")
    reject = command(sub, "reject", _reject, "reject a job that waits for approval (it fails), "
                     "or a run that waits (it is cancelled)")
    reject.add_argument("run")
    reject.add_argument("job", nargs="?", help="the job (default: the run's only waiting one)")
    reject.add_argument("--reason", default="", help="kept in the run's history")
    deployments = command(sub, "deployments", _deployments, "an environment's deployments, "
                          "newest first")
    deployments.add_argument("project")
    deployments.add_argument("environment", nargs="?")
    rollback = command(sub, "rollback", _rollback, "deploy an environment's previous good "
                       "image again (a new run)")
    rollback.add_argument("project")
    rollback.add_argument("environment")


async def _waiting_job(args: argparse.Namespace, client: CycloneClient) -> str | None:
    """The job to decide on: the one named, the run's only waiting one, or None for the
    run itself (it waits, no job does). Raises ``SystemExit`` when it cannot tell."""
    if args.job:
        return str(args.job)
    run = await client.get_run(args.run)
    waiting = [j["name"] for j in run.get("jobs") or []
               if j.get("awaiting_approval") and j.get("status") == "pending"]
    if run.get("awaiting_approval") or not waiting:
        return None  # the run's own approval (the server says when there is none)
    if len(waiting) > 1:
        print(f"cyclone: run {args.run} has several jobs waiting for approval: "
              f"{', '.join(waiting)}; name one", file=sys.stderr)
        raise SystemExit(2)
    return str(waiting[0])


async def _approve(args: argparse.Namespace, client: CycloneClient) -> int:
    job = await _waiting_job(args, client)
    if job is None:
        answer = await client.approve_run(args.run, args.with_secrets)
        given = "with its secrets" if args.with_secrets else "without secrets"
        return report(args, answer, f"run {args.run} approved: it runs {given}")
    answer = await client.decide_job(args.run, job, approve=True, comment=args.comment)
    return report(args, answer, f"job {job} of run {args.run} approved: it is queued")


async def _reject(args: argparse.Namespace, client: CycloneClient) -> int:
    job = await _waiting_job(args, client)
    if job is None:
        answer = await client.reject_run(args.run)
        return report(args, answer, f"run {args.run} rejected: it is cancelled")
    answer = await client.decide_job(args.run, job, approve=False, comment=args.reason)
    return report(args, answer, f"job {job} of run {args.run} rejected: it fails")


async def _deployments(args: argparse.Namespace, client: CycloneClient) -> int:
    found = await client.deployments(args.project, args.environment)
    if args.json:
        print_json({"deployments": found})
        return EXIT_OK
    table(["ENVIRONMENT", "STATE", "IMAGE", "COMMIT", "RUN", "APPROVED BY", "STARTED"],
          ([d["environment"], d["state"], _image(d["image"]), (d.get("commit") or "-")[:8],
            d["run"], d.get("approved_by") or "-", when(d.get("started_at"))]
           for d in found))
    return EXIT_OK


async def _rollback(args: argparse.Namespace, client: CycloneClient) -> int:
    answer = await client.rollback(args.project, args.environment)
    return report(args, answer, f"{answer['id']}: rolling {args.environment} back to "
                                f"{answer['image']} (as run {answer['from_run']} deployed it)")


def show_delivery(run: Json) -> None:
    """The images a run pushed and the deployments it made, under ``cyclone show``."""
    images = run.get("images") or []
    if images:
        print()
        table(["IMAGE", "DIGEST", "TAGS", "BY"],
              ([i["name"], i["digest"], ", ".join(i["tags"]), f"{i['job']}/{i['step']}"]
               for i in images))
    deployments = run.get("deployments") or []
    if deployments:
        print()
        table(["ENVIRONMENT", "TARGET", "STATE", "IMAGE", "REASON"],
              ([d["environment"], d["target"], d["state"], _image(d["image"]),
                d.get("reason") or ""] for d in deployments))


def _image(reference: str) -> str:
    """``registry/app@sha256:abcdef...`` shortened to ``registry/app@sha256:abcdef123456``."""
    repository, at, digest = reference.partition("@")
    return f"{repository}@{digest[:19]}" if at else reference


# -- a project's delivery settings (cyclone project add|update) ---------------------------

def project_delivery_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", metavar="HOST[:PORT][/PATH]",
                        help="where a caicloud.yml's build pushes (the image is "
                             "URL/PROJECT:COMMIT); replaces the project's registry")
    parser.add_argument("--registry-user", metavar="NAME", help="the registry login's user")
    parser.add_argument("--registry-password-secret", metavar="SECRET",
                        help="the project secret holding the registry password or token")
    parser.add_argument("--no-registry", action="store_true",
                        help="remove the project's registry")
    parser.add_argument("--cluster", action="append", type=_cluster, metavar="NAME=SETTINGS",
                        help="a Kubernetes cluster caicloud.yml's deploy entries name: "
                             "NAME=server=SECRET,token=SECRET[,ca=SECRET][,namespace=NS] "
                             "(secret names; repeatable; the given set replaces the "
                             "project's)")
    parser.add_argument("--no-clusters", action="store_true",
                        help="remove every cluster of the project")


def project_delivery_fields(args: argparse.Namespace) -> Json:
    """The request's ``registry`` and ``clusters``, from the flags given (the server checks
    the values); flags that do not go together are a usage error (exit 2)."""
    changes: Json = {}
    login = {"username": args.registry_user, "password_secret": args.registry_password_secret}
    if args.registry is not None and args.no_registry:
        _usage("--registry and --no-registry exclude each other")
    if args.registry is not None:
        changes["registry"] = {"url": args.registry,
                               **{k: v for k, v in login.items() if v is not None}}
    elif any(v is not None for v in login.values()):
        _usage("--registry-user and --registry-password-secret go with --registry (the "
               "whole setting is replaced)")
    elif args.no_registry:
        changes["registry"] = None
    if args.cluster and args.no_clusters:
        _usage("--cluster and --no-clusters exclude each other")
    if args.cluster:
        changes["clusters"] = dict(args.cluster)
    elif args.no_clusters:
        changes["clusters"] = {}
    return changes


def shown_project_delivery(project: Json) -> list[tuple[str, str]]:
    """The registry and clusters as ``cyclone project show`` lists them."""
    registry = project.get("registry") or {}
    login = (f" (login {registry['username']}, password in secret "
             f"{registry['password_secret']})" if registry.get("username") else "")
    clusters = project.get("clusters") or {}
    shown = [f"{name}: server {c['server']}, token {c['token']}"
             f"{', ca ' + c['ca'] if c.get('ca') else ''}, namespace {c['namespace']}"
             for name, c in sorted(clusters.items())]
    return [("registry", f"{registry['url']}{login}" if registry else "none"),
            ("clusters", "; ".join(shown) or "none")]


def _cluster(raw: str) -> tuple[str, dict[str, str]]:
    """``prod=server=KUBE_SERVER,token=KUBE_TOKEN,namespace=web`` -> ``("prod", {...})``."""
    name, sep, rest = raw.partition("=")
    settings: dict[str, str] = {}
    for part in rest.split(",") if rest else ():
        key, eq, value = part.partition("=")
        if not eq or key not in _CLUSTER_KEYS or not value or key in settings:
            raise argparse.ArgumentTypeError(
                f"expected NAME=server=SECRET,token=SECRET[,ca=SECRET][,namespace=NS], "
                f"got {raw!r} (at {part!r})")
        settings[key] = value
    if not sep or not name or "server" not in settings or "token" not in settings:
        raise argparse.ArgumentTypeError(f"expected NAME=server=SECRET,token=SECRET"
                                         f"[,ca=SECRET][,namespace=NS], got {raw!r}")
    return name, settings


def _usage(message: str) -> NoReturn:
    print(f"cyclone: {message}", file=sys.stderr)
    raise SystemExit(2)
