"""What a job's containers may use (memory, CPUs, processes), and what a project allows.

* ``Resources``: memory (bytes), cpus, pids; a field left None means "not said here"
  (a job that asks nothing gets the worker's default, ``CYCLONE_STEP_*``).
* ``parse_size``: sizes as people write them for containers. Units are read by
  pydantic's ``ByteSize`` (``512MiB``, ``1GiB``, ``1.5GB``: SI units are decimal), plus
  the two other spellings in common use, both binary: Docker's one letter (``512m``,
  ``1g``, as ``docker run -m``) and Kubernetes' (``512Mi``, ``1Gi``). A bare number is
  bytes.
* ``format_size``: ``536870912`` -> ``"512 MiB"`` (what messages show).
* ``Policy``: what the project a run belongs to lets its pipeline ask for: privileged
  containers and host volumes only when ``trusted``; resources up to ``max_resources``;
  and the project's delivery settings a ``caicloud.yml`` relies on (the original's were
  its server's): the ``registry`` its build pushes to (``RegistrySetting``) and the
  ``clusters`` its deploy entries name (``ClusterSetting``, secret names only).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ByteSize, TypeAdapter


__all__ = ["LOCAL", "MIN_MEMORY", "UNKNOWN", "ClusterSetting", "Policy", "RegistrySetting",
           "Resources", "clusters_from_data", "format_size", "oom_message", "parse_cpus",
           "parse_memory", "parse_pids", "parse_size", "trust_hint"]

MIN_MEMORY = 6 * 1024 * 1024  # Docker refuses a memory limit below 6 MiB
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def parse_size(value: object) -> int:
    """Bytes in ``value`` (an int, or a number with a unit); ``ValueError`` with a message
    meant for the user."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a size such as \"512MiB\" or \"2GiB\", got {value!r}")
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is None:
            raise ValueError(f"invalid size {value!r} (write e.g. \"512MiB\" or \"2GiB\")")
        number, unit = match.groups()
        value = number + _binary(unit)
    # pydantic is imported here, not with the module: every plan imports this module,
    # and pydantic's import took a third of each CLI command's start
    from pydantic import ValidationError
    try:
        return int(_bytes().validate_python(value))
    except ValidationError:
        raise ValueError(f"invalid size {value!r} (units: B, KiB, MiB, GiB, TiB; KB, MB, "
                         "GB, TB are decimal)") from None


@functools.cache
def _bytes() -> TypeAdapter[ByteSize]:
    from pydantic import ByteSize, TypeAdapter
    return TypeAdapter(ByteSize)


def _binary(unit: str) -> str:
    """Docker's ``m`` and Kubernetes' ``Mi`` as ByteSize's ``MiB``; others as written."""
    lower = unit.lower()
    if lower in ("k", "m", "g", "t"):
        return f"{lower}ib"
    if lower in ("ki", "mi", "gi", "ti"):
        return f"{lower}b"
    return unit


def format_size(size: int) -> str:
    """``536870912`` -> ``"512 MiB"``, ``1610612736`` -> ``"1.5 GiB"``."""
    value, unit = float(size), _UNITS[0]
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            break
        value /= 1024
    shown = f"{value:.1f}".removesuffix(".0")
    return f"{shown} {unit}"


def parse_memory(value: object) -> int:
    """A memory limit: a size (``parse_size``) of at least ``MIN_MEMORY``."""
    size = parse_size(value)
    if size < MIN_MEMORY:
        raise ValueError(f"must be at least {format_size(MIN_MEMORY)}, got {value!r}")
    return size


def parse_cpus(value: object) -> float:
    """A number of CPUs (``2``, ``0.5``, ``"1.5"``), at least 0.01 as Docker takes."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number of CPUs such as 2 or 0.5, got {value!r}")
    try:
        cpus = float(value)
    except ValueError:
        raise ValueError(f"expected a number of CPUs such as 2 or 0.5, got {value!r}") from None
    if not math.isfinite(cpus) or cpus < 0.01:
        raise ValueError(f"must be at least 0.01, got {value!r}")
    return cpus


def parse_pids(value: object) -> int:
    """A number of processes (and threads) a container may have at once, at least 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number of processes, got {value!r}")
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


@dataclass(frozen=True)
class Resources:
    memory: int | None = None  # bytes; swap is limited to the same (no swapping past it)
    cpus: float | None = None
    pids: int | None = None

    def over(self, default: Resources) -> Resources:
        """These, with ``default``'s where these say nothing."""
        return Resources(**{f.name: _first(getattr(self, f.name), getattr(default, f.name))
                            for f in fields(self)})

    def capped(self, maximum: Resources) -> Resources:
        """These, each lowered to ``maximum``'s where it has one."""
        return Resources(**{f.name: _lowest(getattr(self, f.name), getattr(maximum, f.name))
                            for f in fields(self)})

    def above(self, maximum: Resources) -> list[tuple[str, str, str]]:
        """``(field, asked, maximum)`` as shown to people, for each field above ``maximum``."""
        out = []
        for f in fields(self):
            mine, most = getattr(self, f.name), getattr(maximum, f.name)
            if mine is not None and most is not None and mine > most:
                out.append((f.name, self.shown(f.name, mine), self.shown(f.name, most)))
        return out

    @staticmethod
    def shown(name: str, value: float) -> str:
        return format_size(int(value)) if name == "memory" else f"{value:g}"

    def to_data(self) -> dict[str, Any]:
        """The fields that are set (``{}`` for none)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}

    def to_json(self) -> dict[str, Any]:
        """As the API shows it: memory both in bytes and human-readable."""
        data = self.to_data()
        if self.memory is not None:
            data["memory_shown"] = format_size(self.memory)
        return data

    @classmethod
    def from_data(cls, data: Any) -> Resources:
        data = data or {}
        memory, cpus, pids = data.get("memory"), data.get("cpus"), data.get("pids")
        return cls(memory=None if memory is None else int(memory),
                   cpus=None if cpus is None else float(cpus),
                   pids=None if pids is None else int(pids))


def _first(value: Any, default: Any) -> Any:
    return default if value is None else value


def _lowest(value: Any, maximum: Any) -> Any:
    return value if maximum is None or value is None else min(value, maximum)


def oom_message(memory: int | None) -> str:
    """What a step killed for memory ends with."""
    return f"out of memory (limit {format_size(memory)})" if memory else "out of memory"


@dataclass(frozen=True)
class RegistrySetting:
    """Where a project's ``caicloud.yml`` build pushes: ``url`` is ``host[:port][/path]``
    (the image is ``<url>/<project>:<commit>``); with ``username`` and ``password_secret``
    (the name of a project secret holding the password or token) the worker logs in."""

    url: str
    username: str = ""
    password_secret: str = ""

    @property
    def host(self) -> str:
        """The registry's ``host[:port]``, as image references and logins name it."""
        return self.url.split("/", 1)[0]

    def to_data(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> RegistrySetting | None:
        """The setting an event recorded; ``None`` for none (``{}``)."""
        if not data:
            return None
        return cls(url=str(data["url"]), username=str(data.get("username") or ""),
                   password_secret=str(data.get("password_secret") or ""))


@dataclass(frozen=True)
class ClusterSetting:
    """A Kubernetes cluster a project's ``caicloud.yml`` deploys to: the names of the
    project secrets that hold its API server URL, a token and (optionally) the CA, and the
    namespace an entry that names none deploys in."""

    server: str
    token: str
    ca: str = ""  # "": the system's CAs
    namespace: str = "default"

    def to_data(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ClusterSetting:
        return cls(server=str(data["server"]), token=str(data["token"]),
                   ca=str(data.get("ca") or ""),
                   namespace=str(data.get("namespace") or "default"))


def clusters_from_data(data: Mapping[str, Any] | None) -> dict[str, ClusterSetting]:
    """Cluster name -> setting, as an event recorded them (``{}`` for none)."""
    return {str(name): ClusterSetting.from_data(value) for name, value in (data or {}).items()}


@dataclass(frozen=True)
class Policy:
    """What a run's project lets its pipeline ask for.

    ``trusted``: privileged containers and host volumes (the Docker socket among them)
    are passed through when True, errors when False; None is "no project known"
    (``cyclone lint``, ``cyclone run``): they are warned about and passed through, the
    person running it owns the Docker host anyway. ``max_resources``: a job asking for
    more is an error naming the maximum; the worker's defaults are lowered to it.
    ``registry`` and ``clusters``: the project's delivery settings (``caicloud.yml``'s
    build pushes to the registry, its deploy entries name clusters); none when no project
    is known."""

    trusted: bool | None = None
    max_resources: Resources = field(default_factory=Resources)
    project: str = ""
    registry: RegistrySetting | None = None
    clusters: Mapping[str, ClusterSetting] = field(default_factory=dict)


UNKNOWN = Policy()  # no project: warn about what needs trust
LOCAL = Policy(trusted=True)  # `cyclone run`: the user's own machine and Docker


def trust_hint(policy: Policy, what: str) -> str:
    """The message for ``what`` (e.g. "a privileged container") under ``policy``."""
    if policy.trusted is None:
        return (f"{what} needs a trusted project: on a server, a run of an untrusted "
                "project fails here (an admin marks a project trusted with: cyclone project "
                "update NAME --trusted)")
    return (f"{what} needs a trusted project, and project '{policy.project}' is not (an "
            f"admin can mark it trusted: cyclone project update {policy.project} --trusted)")
