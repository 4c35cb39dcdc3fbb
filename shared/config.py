"""Settings from environment variables, declared in one place.

Every ``CYCLONE_*`` variable Cyclone reads is read here (``Settings.from_env``) and
nowhere else; the README's configuration table lists the same ones. Every setting has
a sane default so ``cyclone run`` / ``cyclone up`` work with nothing configured, but
the distributed mode's infrastructure (``Infra``), which ``cyclone service`` needs. A
malformed value fails at start-up with a ``ConfigError`` that names the variable and
what it expected.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from shared.adapters.artifacts.s3_url import S3Location, mask
from shared.errors import ConfigError
from shared.pipeline.resources import Resources, parse_cpus, parse_memory, parse_pids
from shared.workers import parse_labels

T = TypeVar("T")

__all__ = ["DEFAULT_STEP_LOG", "DEFAULT_STEP_RESOURCES", "Infra", "NotifySettings", "Settings",
           "SmtpSettings", "StepLogLimit", "positive_int", "step_resources"]


@dataclass(frozen=True)
class Settings:
    home: Path  # CYCLONE_HOME: the store, logs and workspaces of the embedded mode
    executor: str  # CYCLONE_EXECUTOR: auto | docker | shell
    max_parallel_jobs: int  # CYCLONE_MAX_PARALLEL_JOBS: jobs of one run running at once
    worker_capacity: int  # CYCLONE_WORKER_CAPACITY: jobs one workermanager runs at once
    worker_lease_s: int  # CYCLONE_WORKER_LEASE_S: a silent worker's jobs are re-queued after
    log_level: str  # CYCLONE_LOG_LEVEL
    log_format: str  # CYCLONE_LOG_FORMAT: text | json
    worker_id: str  # CYCLONE_WORKER_ID: defaults to host name and pid
    listen: tuple[str, int]  # CYCLONE_LISTEN: host:port of `cyclone up`'s HTTP server
    public_read: bool  # CYCLONE_PUBLIC_READ: reads need no token
    public_url: str  # CYCLONE_PUBLIC_URL: how users reach the API (links sent to forges)
    worker_drain_s: float  # CYCLONE_WORKER_DRAIN_S: at SIGTERM, running jobs' time to finish
    notify: NotifySettings  # CYCLONE_SMTP_*, CYCLONE_NOTIFY_*: how the notifier sends
    step_log: StepLogLimit  # CYCLONE_STEP_LOG_MAX_*: what one step may log
    # CYCLONE_STEP_MEMORY, _CPUS, _PIDS: each container's limits when its job asks nothing
    step_resources: Resources
    schedule_catch_up: bool  # CYCLONE_SCHEDULE_CATCHUP: one run for fires missed while down
    # CYCLONE_BUS, _STORE, _COORD, _LOG_STORE (and _ARTIFACT_STORE): None when none is set
    infra: Infra | None
    hook_secret: str = field(repr=False)  # CYCLONE_HOOK_SECRET: `cyclone hook install`'s
    server: str  # CYCLONE_SERVER: the client commands' server ("": the client's default)
    token: str = field(repr=False)  # CYCLONE_TOKEN: the API token the client commands send
    # CYCLONE_SECRET_KEY: base64 32-byte keys, comma-separated (the first encrypts); "":
    # the key file $CYCLONE_HOME/secret.key (shared.secretbox)
    secret_key: str = field(default="", repr=False)
    # CYCLONE_UI_DIST: the built web UI the api serves; None: the one in the package
    # (services/api/web/dist, built by `make ui`)
    ui_dist: Path | None = None
    # CYCLONE_CACHE_MAX_MB: a project's cache entries together, unless its cache_limit_mb
    # says otherwise (least recently used ones are evicted past it)
    cache_max_mb: int = 1024
    gc_interval_s: float = 3600.0  # CYCLONE_GC_INTERVAL_S: between retention passes
    # CYCLONE_WORKER_LABELS: comma-separated labels a workermanager offers to ``runs-on:``
    # (empty: its OS, architecture and executor kind, ``shared.workers.default_labels``)
    worker_labels: frozenset[str] = frozenset()
    # CYCLONE_AUDIT_CHECKPOINT_S: between audit checkpoints (shared.audit_checkpoints)
    audit_checkpoint_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        listen = _host_port(env, "CYCLONE_LISTEN", ("127.0.0.1", 8080))
        return cls(
            home=Path(env.get("CYCLONE_HOME") or Path.home() / ".cyclone").expanduser(),
            executor=_choice(env, "CYCLONE_EXECUTOR", "auto", ("auto", "docker", "shell")),
            max_parallel_jobs=positive_int(env, "CYCLONE_MAX_PARALLEL_JOBS", 4),
            worker_capacity=positive_int(env, "CYCLONE_WORKER_CAPACITY", 4),
            worker_lease_s=positive_int(env, "CYCLONE_WORKER_LEASE_S", 10),
            log_level=_choice(env, "CYCLONE_LOG_LEVEL", "WARNING",
                              ("DEBUG", "INFO", "WARNING", "ERROR"), upper=True),
            # People read the CLI's warnings: text unless JSON is asked for.
            log_format=_choice(env, "CYCLONE_LOG_FORMAT", "text", ("json", "text")),
            worker_id=env.get("CYCLONE_WORKER_ID") or f"{os.uname().nodename}-{os.getpid()}",
            listen=listen,
            public_read=_flag(env, "CYCLONE_PUBLIC_READ"),
            public_url=_url(env, "CYCLONE_PUBLIC_URL", f"http://{listen[0]}:{listen[1]}"),
            worker_drain_s=_seconds(env, "CYCLONE_WORKER_DRAIN_S", 10.0),
            notify=NotifySettings.from_env(env),
            step_log=StepLogLimit.from_env(env),
            step_resources=step_resources(env),
            schedule_catch_up=_flag(env, "CYCLONE_SCHEDULE_CATCHUP", default=True,
                                    meaning="1 (run one run for fires missed while Cyclone "
                                            "was down) or 0 (skip them)"),
            infra=Infra.from_env(env),
            hook_secret=env.get("CYCLONE_HOOK_SECRET", ""),
            server=env.get("CYCLONE_SERVER", ""),
            token=env.get("CYCLONE_TOKEN", ""),
            secret_key=env.get("CYCLONE_SECRET_KEY", ""),
            ui_dist=Path(env["CYCLONE_UI_DIST"]).expanduser() if env.get("CYCLONE_UI_DIST")
            else None,
            cache_max_mb=positive_int(env, "CYCLONE_CACHE_MAX_MB", 1024),
            gc_interval_s=_positive_seconds(env, "CYCLONE_GC_INTERVAL_S", 3600.0),
            worker_labels=_labels(env, "CYCLONE_WORKER_LABELS"),
            audit_checkpoint_s=_positive_seconds(env, "CYCLONE_AUDIT_CHECKPOINT_S", 60.0),
        )

    def require_infra(self) -> Infra:
        """The distributed mode's infrastructure; a ``ConfigError`` naming the first
        variable missing when none is set."""
        if self.infra is None:
            raise Infra.missing("CYCLONE_BUS", "", "kafka://")
        return self.infra

    @property
    def store_path(self) -> Path:
        return self.home / "events.db"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def work_dir(self) -> Path:
        return self.home / "work"

    @property
    def git_cache_dir(self) -> Path:
        return self.home / "git"

    @property
    def owners_dir(self) -> Path:
        return self.home / "owners"


_INFRA_URLS = (("bus", "CYCLONE_BUS", "kafka://"), ("store", "CYCLONE_STORE", "mongodb://"),
               ("coord", "CYCLONE_COORD", "etcd://"),
               ("log_store", "CYCLONE_LOG_STORE", "mongodb://"))
# Optional: the artifact store, a MongoDB (GridFS) or an S3 bucket; else CYCLONE_STORE's.
_ARTIFACT_STORE = "CYCLONE_ARTIFACT_STORE"


@dataclass(frozen=True)
class Infra:
    """The distributed mode's Kafka, MongoDB and etcd (``cyclone service``): all four URLs
    or none (the embedded mode needs no server)."""

    bus: str  # CYCLONE_BUS: kafka://host:9092[,host:9092]
    store: str  # CYCLONE_STORE: mongodb://... (the events, and the run views beside them)
    coord: str  # CYCLONE_COORD: etcd://host:2379[,host:2379]
    log_store: str  # CYCLONE_LOG_STORE: mongodb://...
    # CYCLONE_ARTIFACT_STORE: mongodb://... (GridFS) or s3://... (an S3 bucket, see
    # shared.adapters.artifacts.s3_url); "": CYCLONE_STORE's (``artifacts_url``)
    artifact_store: str = field(default="", repr=False)  # an s3:// URL may hold a secret
    partitions: int = 4  # CYCLONE_KAFKA_PARTITIONS: of each topic Cyclone creates
    replication: int = 1  # CYCLONE_KAFKA_REPLICATION: of each topic Cyclone creates

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Infra | None:
        env = os.environ if env is None else env
        # The artifact store's URL alone names a cluster too: the others' absence is an error.
        if not any(env.get(name) for name in (*(n for _, n, _ in _INFRA_URLS), _ARTIFACT_STORE)):
            return None
        urls = {}
        for field_name, name, scheme in _INFRA_URLS:
            raw = env.get(name, "")
            if not raw.startswith(scheme):
                raise cls.missing(name, raw, scheme)
            urls[field_name] = raw
        artifacts = _artifact_store(env.get(_ARTIFACT_STORE, ""))
        return cls(**urls, artifact_store=artifacts,
                   partitions=positive_int(env, "CYCLONE_KAFKA_PARTITIONS", 4),
                   replication=positive_int(env, "CYCLONE_KAFKA_REPLICATION", 1))

    @property
    def artifacts_url(self) -> str:
        """The artifact store's URL (mongodb:// or s3://): CYCLONE_ARTIFACT_STORE, else
        CYCLONE_STORE."""
        return self.artifact_store or self.store

    @staticmethod
    def missing(name: str, raw: str, scheme: str) -> ConfigError:
        return ConfigError(f"{name}={raw!r}: expected a {scheme}... URL (distributed mode "
                           "needs all of CYCLONE_BUS, CYCLONE_STORE, CYCLONE_COORD and "
                           "CYCLONE_LOG_STORE)")


def _artifact_store(url: str) -> str:
    """CYCLONE_ARTIFACT_STORE, checked: "", a mongodb:// URL or a well-formed s3:// one (a
    ``ConfigError`` says what is wrong, without the URL's secret)."""
    if not url or url.startswith(("mongodb://", "mongodb+srv://")):
        return url
    if url.startswith("s3://"):
        try:
            S3Location.parse(url)
        except ValueError as exc:
            raise ConfigError(f"{_ARTIFACT_STORE}={mask(url)!r}: {exc}") from None
        return url
    raise ConfigError(f"{_ARTIFACT_STORE}={mask(url)!r}: expected a mongodb://... or s3://... "
                      "URL (or nothing: CYCLONE_STORE's)")


@dataclass(frozen=True)
class StepLogLimit:
    """How much of one step's output is stored. Past either bound the rest is read (the
    step is never held up) but not stored, and the log and the run's events say so."""

    max_lines: int = 5_000_000  # CYCLONE_STEP_LOG_MAX_LINES
    max_bytes: int = 512 * 1024 * 1024  # CYCLONE_STEP_LOG_MAX_MB, in MiB

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StepLogLimit:
        env = os.environ if env is None else env
        return cls(max_lines=positive_int(env, "CYCLONE_STEP_LOG_MAX_LINES", cls.max_lines),
                   max_bytes=positive_int(env, "CYCLONE_STEP_LOG_MAX_MB", 512) * 1024 * 1024)

    def describe(self) -> str:
        return f"{self.max_lines} lines / {self.max_bytes // (1024 * 1024)} MB"


DEFAULT_STEP_LOG = StepLogLimit()
# Each step's and service's container limits when its job's ``resources:`` says nothing;
# the swap is limited to the memory (the limit is real, nothing is swapped past it).
DEFAULT_STEP_RESOURCES = Resources(memory=512 * 1024 * 1024, cpus=2.0, pids=4096)


def step_resources(env: Mapping[str, str] | None = None) -> Resources:
    """CYCLONE_STEP_MEMORY (a size: "512MiB", "2g"), CYCLONE_STEP_CPUS (2, 0.5) and
    CYCLONE_STEP_PIDS (processes and threads at once), over ``DEFAULT_STEP_RESOURCES``."""
    env = os.environ if env is None else env
    default = DEFAULT_STEP_RESOURCES
    return Resources(
        memory=_parsed(env, "CYCLONE_STEP_MEMORY", parse_memory, default.memory),
        cpus=_parsed(env, "CYCLONE_STEP_CPUS", parse_cpus, default.cpus),
        pids=_parsed(env, "CYCLONE_STEP_PIDS", parse_pids, default.pids))


def _labels(env: Mapping[str, str], name: str) -> frozenset[str]:
    raw = env.get(name, "")
    try:
        return parse_labels(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from None


def _parsed(env: Mapping[str, str], name: str, parse: Callable[[object], T], default: T) -> T:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return parse(int(raw) if raw.isdigit() else raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from None


@dataclass(frozen=True)
class SmtpSettings:
    """Where notification mails go. ``host`` empty: no SMTP server (mails are recorded
    as failed, saying so). ``port`` 0: 25, 587 (starttls) or 465 (tls)."""

    host: str = ""  # CYCLONE_SMTP_HOST
    port: int = 0  # CYCLONE_SMTP_PORT
    tls: str = "none"  # CYCLONE_SMTP_TLS: none | starttls | tls (implicit TLS)
    user: str = ""  # CYCLONE_SMTP_USER: log in when set
    password: str = field(default="", repr=False)  # CYCLONE_SMTP_PASSWORD
    sender: str = "cyclone@localhost"  # CYCLONE_SMTP_FROM
    ca_file: str = ""  # CYCLONE_SMTP_CA_FILE: CAs (PEM) to trust besides the system's
    timeout_s: float = 30.0  # CYCLONE_SMTP_TIMEOUT_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SmtpSettings:
        env = os.environ if env is None else env
        port = env.get("CYCLONE_SMTP_PORT") or "0"
        if not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"CYCLONE_SMTP_PORT={port!r}: expected a port number")
        return cls(host=env.get("CYCLONE_SMTP_HOST", ""), port=int(port),
                   tls=_choice(env, "CYCLONE_SMTP_TLS", "none", ("none", "starttls", "tls")),
                   user=env.get("CYCLONE_SMTP_USER", ""),
                   password=env.get("CYCLONE_SMTP_PASSWORD", ""),
                   sender=env.get("CYCLONE_SMTP_FROM") or "cyclone@localhost",
                   ca_file=env.get("CYCLONE_SMTP_CA_FILE", ""),
                   timeout_s=_seconds(env, "CYCLONE_SMTP_TIMEOUT_S", 30.0))


@dataclass(frozen=True)
class NotifySettings:
    """How the notifier sends: SMTP, and how it retries a channel that fails."""

    smtp: SmtpSettings
    attempts: int = 6  # CYCLONE_NOTIFY_ATTEMPTS: tries per notification
    first_delay_s: float = 2.0  # CYCLONE_NOTIFY_RETRY_S: the wait after the first failure,
    max_delay_s: float = 60.0  # doubling up to CYCLONE_NOTIFY_RETRY_MAX_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotifySettings:
        env = os.environ if env is None else env
        return cls(smtp=SmtpSettings.from_env(env),
                   attempts=positive_int(env, "CYCLONE_NOTIFY_ATTEMPTS", 6),
                   first_delay_s=_seconds(env, "CYCLONE_NOTIFY_RETRY_S", 2.0),
                   max_delay_s=_seconds(env, "CYCLONE_NOTIFY_RETRY_MAX_S", 60.0))


def positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    """``env[name]`` as a whole number >= 1 (``default`` when unset); else ConfigError."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number") from None
    if value < 1:
        raise ConfigError(f"{name}={raw!r}: expected a number >= 1")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise ConfigError(f"{name}={raw!r}: expected seconds (>= 0)")
    return value


def _positive_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    value = _seconds(env, name, default)
    if value <= 0:
        raise ConfigError(f"{name}={env.get(name)!r}: expected seconds (> 0)")
    return value


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name) or default
    if not raw.startswith(("http://", "https://")) or len(raw.split("://", 1)[1]) == 0:
        raise ConfigError(f"{name}={raw!r}: expected an http:// or https:// URL")
    return raw.rstrip("/")


def _host_port(env: Mapping[str, str], name: str, default: tuple[str, int]) -> tuple[str, int]:
    raw = env.get(name)
    if not raw:
        return default
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}={raw!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host or default[0], int(port)


def _flag(env: Mapping[str, str], name: str, default: bool = False,
          meaning: str = "1 or 0") -> bool:
    raw = (env.get(name) or ("1" if default else "0")).lower()
    if raw not in ("0", "1", "true", "false", "yes", "no"):
        raise ConfigError(f"{name}={raw!r}: expected {meaning}")
    return raw in ("1", "true", "yes")


def _choice(
    env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...], upper: bool = False
) -> str:
    raw = env.get(name) or default
    value = raw.upper() if upper else raw.lower()
    if value not in allowed:
        raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(allowed)}")
    return value
