"""Lint checks of what a pipeline asks of the Docker host, against its project's ``Policy``.

Both formats use them: privileged containers and ``volumes`` (host paths, Docker
volumes, the Docker socket) need a trusted project: an error in an untrusted one, a
warning when no project is known (``cyclone lint``), nothing in a trusted one; a job's
``resources`` above the project's maximum are an error naming the maximum.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from shared.pipeline.loader import Path, Reporter
from shared.pipeline.resources import Policy, Resources, trust_hint

__all__ = ["DOCKER_SOCKETS", "check_privileged", "check_resources", "check_volume",
           "check_volumes", "mountable"]

DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]+")


def mountable(volume: str) -> bool:
    """Whether Docker can mount ``volume``'s source: an absolute host path or a volume
    name. A relative path (the original format's ``.:/src``) cannot be: it is dropped."""
    source = volume.split(":", 1)[0]
    return source.startswith("/") or bool(_VOLUME_NAME.fullmatch(source))


def check_privileged(report: Reporter, path: Path, privileged: bool | None,
                     policy: Policy) -> None:
    if privileged:
        _needs_trust(report, path, "a privileged container", policy)


def check_volumes(report: Reporter, path: Path, volumes: Sequence[str] | None,
                  policy: Policy) -> None:
    """Each volume (``path`` is the list's) needs trust (``check_volume``)."""
    for i, volume in enumerate(volumes or ()):
        check_volume(report, (*path, i), volume, policy)


def check_volume(report: Reporter, path: Path, volume: str, policy: Policy) -> None:
    """A volume (at ``path``) needs trust; the socket is named as such, as it hands the
    step the whole Docker host; a relative source is ignored."""
    source = volume.split(":", 1)[0]
    if not mountable(volume):
        report.warning(path, f"'{volume}' is ignored: a relative path cannot be mounted (the "
                       "repository is in the workspace already)")
        return
    what = ("mounting the Docker socket (control of the whole Docker host)"
            if source in DOCKER_SOCKETS else f"the volume '{volume}'")
    _needs_trust(report, path, what, policy)


def check_resources(report: Reporter, path: Path, resources: Resources,
                    policy: Policy) -> None:
    for name, asked, most in resources.above(policy.max_resources):
        whose = f"project '{policy.project}'" if policy.project else "the project"
        report.error((*path, name), f"{asked} is above the maximum of {whose} ({most}); an "
                     "admin can raise it with cyclone project update --max-" + name)


def _needs_trust(report: Reporter, path: Path, what: str, policy: Policy) -> None:
    if policy.trusted is True:
        return
    message = trust_hint(policy, what)
    if policy.trusted is None:
        report.warning(path, message)
    else:
        report.error(path, message)
