"""Image references and registries for the Docker executor's builds, pushes, promotes and
pulls. Pure (no daemon, no I/O), so it is tested without one; ``docker_images`` does the
talking.

* ``parse_reference``: ``[registry/]path[:tag][@digest]`` as Docker reads it
  (``distribution/reference``): the registry is the first path component when it holds
  a "." or a ":" or is ``localhost``, else Docker Hub (``docker.io``). Raises
  ``ValueError`` on what Docker would refuse.
* ``credentials_for(registries, host)``: the pipeline's login for a registry (Docker Hub
  under any of its names); ``auth_header`` / ``registry_config_header``: Docker's
  ``X-Registry-Auth`` (one registry: pull, push) and ``X-Registry-Config`` (every
  registry: a build's base images) headers; ``auth_hint``: what a refusal says of the
  login.
* ``ProgressLog``: a pull's or push's JSON stream into compact log lines (a layer's
  line only when its status changes, never each progress tick), the pushed digest
  (the stream's ``aux`` item) and the error, if any.
* ``pushed_images``: what was pushed, one ``PushedImage`` per repository;
  ``digest_changes``: where a promote did not keep its source's digest, and why.
* ``redact``: a registry's message with the passwords taken out, before it is logged.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.ports.executor import PushedImage, Registries, RegistryAuth

__all__ = [
    "DOCKER_HUB",
    "ImageRef",
    "ProgressLog",
    "auth_header",
    "auth_hint",
    "credentials_for",
    "digest_changes",
    "parse_reference",
    "pull_params",
    "pushed_images",
    "redact",
    "registry_config_header",
]

DOCKER_HUB = "docker.io"
# What Docker Hub is also called (docker login's default server is the last one).
_HUB_ALIASES = (DOCKER_HUB, "index.docker.io", "registry-1.docker.io",
                "https://index.docker.io/v1/")
_HUB_SERVER = "https://index.docker.io/v1/"  # its key in a build's X-Registry-Config

# distribution/reference's grammar
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[_.]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_RE = re.compile(_DOMAIN)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_NAME_MAX = 255


@dataclass(frozen=True)
class ImageRef:
    """An image reference, split as Docker splits it."""

    registry: str  # host[:port]; ``docker.io`` for Docker Hub
    repository: str  # as written, without tag and digest: ``127.0.0.1:5000/team/app``
    path: str  # the repository in the registry's API: ``team/app`` (Hub: ``library/app``)
    tag: str = ""  # "" when none was written
    digest: str = ""  # ``sha256:...``; "" when none was written

    @property
    def reference(self) -> str:
        """The reference as Docker would write it back."""
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.repository}{tag}{digest}"

    @property
    def version(self) -> str:
        """What a pull or push names in the repository: the digest, else the tag
        (``latest`` when none was written)."""
        return self.digest or self.tag or "latest"


def parse_reference(reference: str) -> ImageRef:
    """``[registry/]path[:tag][@digest]``; ``ValueError`` saying why Docker would refuse it."""
    rest, at, digest = reference.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise ValueError(f"invalid image reference {reference!r}: bad digest {digest!r}")
    name, tag = rest, ""
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise ValueError(f"invalid image reference {reference!r}: bad tag {tag!r}")
    if not name:
        raise ValueError(f"invalid image reference {reference!r}: no repository")
    if len(name) > _NAME_MAX:
        raise ValueError(f"invalid image reference {reference!r}: a repository name is at "
                         f"most {_NAME_MAX} characters")
    first, slash, remainder = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"
                  or first.lower() != first):
        registry, path = first, remainder
        if not _DOMAIN_RE.fullmatch(registry):
            raise ValueError(f"invalid image reference {reference!r}: bad registry "
                             f"{registry!r}")
    else:
        registry, path = DOCKER_HUB, name
    if not _PATH.fullmatch(path):
        raise ValueError(f"invalid image reference {reference!r}: a repository is lowercase "
                         "letters, digits and separators (. _ __ -) between '/'")
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    return ImageRef(registry=registry, repository=name, path=path, tag=tag, digest=digest)


def pull_params(ref: ImageRef) -> dict[str, str]:
    """``POST /images/create``'s query for ``ref``: the repository and, in ``tag``, its tag
    or digest (the daemon takes a digest there too; an empty ``tag`` would pull them all)."""
    return {"fromImage": ref.repository, "tag": ref.version}


# -- credentials ------------------------------------------------------------------------

def credentials_for(registries: Registries, host: str) -> RegistryAuth | None:
    """The login for ``host`` (as ``ImageRef.registry`` names it); None: go anonymous."""
    if host == DOCKER_HUB:
        return next((registries[alias] for alias in _HUB_ALIASES if alias in registries), None)
    return registries.get(host)


def auth_header(auth: RegistryAuth | None, host: str) -> str:
    """``X-Registry-Auth`` for one registry: base64url JSON of the login, ``{}`` without
    one (a push must send the header even then)."""
    config: dict[str, str] = {}
    if auth is not None:
        config = {"username": auth.username, "password": auth.password,
                  "serveraddress": _HUB_SERVER if host == DOCKER_HUB else host}
    return _b64_json(config)


def registry_config_header(registries: Registries) -> str:
    """``X-Registry-Config`` for a build: every login, keyed as the daemon looks them up
    (Docker Hub under its index server's URL), for the base images it pulls."""
    config: dict[str, dict[str, str]] = {}
    for host, auth in registries.items():
        key = _HUB_SERVER if host in _HUB_ALIASES else host
        config[key] = {"username": auth.username, "password": auth.password,
                       "serveraddress": key}
    return _b64_json(config)


def _b64_json(value: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode("ascii")


# What a registry's refusal of a login (or of none) says, through the daemon.
_REFUSALS = ("unauthorized", "authentication required", "no basic auth credentials",
             "denied", "forbidden")


def auth_hint(error: str, host: str, logged_in: bool) -> str:
    """A word on the login to add to ``error`` when it is a registry's refusal: which
    login was refused, or that there was none for ``host``; "" for other errors."""
    if not any(word in error.lower() for word in _REFUSALS):
        return ""
    if logged_in:
        return f" (the login for {host} was refused)"
    return f" (the pipeline has no login for {host} in its registries)"


def redact(text: str, registries: Registries) -> str:
    """``text`` (a registry's or the daemon's message) with every password in
    ``registries`` replaced by ``***``."""
    for auth in registries.values():
        if auth.password:
            text = text.replace(auth.password, "***")
    return text


# -- progress streams ---------------------------------------------------------------------

class ProgressLog:
    """A pull's or push's JSON stream, item by item (``feed``), into log lines: a line
    without a layer as it comes, a layer's (``ID: status``) only when its status changes
    (``Pushing`` once, not at each tick). Keeps the pushed ``digest`` (the ``aux`` item)
    and the stream's ``error`` ("" while none)."""

    def __init__(self) -> None:
        self.digest = ""
        self.error = ""
        self._status: dict[str, str] = {}  # layer id -> its last status

    def feed(self, item: Mapping[str, Any]) -> str | None:
        """The log line ``item`` is worth, or None."""
        if "error" in item or "errorDetail" in item:
            detail = item.get("errorDetail")
            message = detail.get("message") if isinstance(detail, Mapping) else None
            self.error = str(message or item.get("error") or "unknown error")
            return None
        aux = item.get("aux")
        if isinstance(aux, Mapping):
            if aux.get("Digest"):
                self.digest = str(aux["Digest"])
            return None
        status = str(item.get("status") or "").strip()
        if not status:
            return None
        layer = item.get("id")
        if not layer:
            return status
        if self._status.get(str(layer)) == status:
            return None
        self._status[str(layer)] = status
        return f"{layer}: {status}"


# -- what was pushed ------------------------------------------------------------------------

def pushed_images(name: str, pushes: Iterable[tuple[ImageRef, str]]) -> tuple[PushedImage, ...]:
    """One ``PushedImage`` per repository of ``pushes`` ((reference, digest) in push
    order), with every reference pushed to it and the digest of its first push."""
    references: dict[str, list[str]] = {}
    digests: dict[str, str] = {}
    for ref, digest in pushes:
        pushed = references.setdefault(ref.repository, [])
        digests.setdefault(ref.repository, digest)
        if ref.reference not in pushed:
            pushed.append(ref.reference)
    return tuple(PushedImage(name=name, repository=repository, tags=tuple(pushed),
                             digest=digests[repository])
                 for repository, pushed in references.items())


def digest_changes(source: ImageRef, pushed: Iterable[PushedImage]) -> list[str]:
    """Why each image a promote of ``source`` pushed does not have its digest (none when
    every one has, or when ``source`` was named by tag: there is no digest to keep)."""
    if not source.digest:
        return []
    return [f"pushing {source.reference} to {image.repository} changed its digest to "
            f"{image.digest}: the registry was given a manifest made anew (its layers "
            "compressed again), not the one promoted"
            for image in pushed if image.digest != source.digest]
