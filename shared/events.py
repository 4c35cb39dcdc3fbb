"""The event schema: every state change of a run, as a frozen, versioned dataclass.

A run is one stream (``run-<id>``). Events are facts in the past tense; the
event manager decides, the workers report, the projections fold them.

Each type has a stable ``TYPE`` name and a ``VERSION``. Stored data of an older
version is upcast explicitly (``UPCASTERS``) before it is decoded. A reader
that meets a type it does not know (written by a newer Cyclone) skips it with a
warning: ``decode`` returns ``None``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Self, TypeVar

from frozendict import deepfreeze

from shared.pipeline.plan import Plan
from shared.status import JobStatus, Role, StepStatus

__all__ = [
    "EVENT_TYPES",
    "TERMINAL_RUN_EVENTS",
    "UPCASTERS",
    "ArtifactUploaded",
    "AuditCheckpoint",
    "BranchRunEnded",
    "CacheEntryEvicted",
    "CacheEntrySaved",
    "CacheEntryUsed",
    "CacheMissed",
    "CacheRestored",
    "CacheSaved",
    "CheckoutQueued",
    "CommitStatusFailed",
    "CommitStatusReported",
    "DeliveryReceived",
    "DeploymentFailed",
    "DeploymentRolledBack",
    "DeploymentStarted",
    "DeploymentSucceeded",
    "Event",
    "ImagePushed",
    "JobApproved",
    "JobAwaitingApproval",
    "JobFinished",
    "JobQueued",
    "JobRejected",
    "JobReused",
    "JobSkipped",
    "JobStarted",
    "NewEvent",
    "NotificationFailed",
    "NotificationSent",
    "NotificationTestRequested",
    "NotificationTestStarted",
    "ProjectDeleted",
    "ProjectRegistered",
    "ProjectRoleGranted",
    "ProjectRoleRevoked",
    "ProjectUpdated",
    "RecordedEvent",
    "RunApproved",
    "RunCancelRequested",
    "RunCancelled",
    "RunDataCollected",
    "RunErrored",
    "RunFailed",
    "RunPlanned",
    "RunRequested",
    "RunSkipped",
    "RunSourceResolved",
    "RunSucceeded",
    "ScheduleFired",
    "ScheduleMissed",
    "SecretRemoved",
    "SecretSet",
    "StepFinished",
    "StepLogTruncated",
    "StepOutputs",
    "StepSkipped",
    "StepStarted",
    "TestReportRecorded",
    "TokenCreated",
    "TokenRevoked",
    "UserAdded",
    "UserChanged",
    "UserRemoved",
    "caches_stream",
    "decode",
    "is_run_stream",
    "new_event_id",
    "notify_test_stream",
    "run_stream",
    "utc_now",
]

log = logging.getLogger(__name__)

E = TypeVar("E", bound="Event")

EVENT_TYPES: dict[str, type[Event]] = {}

# (type name, stored version) -> function turning that version's data into the next version's.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def utc_now() -> str:
    """The current time as an ISO 8601 UTC timestamp with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def new_event_id() -> str:
    return uuid.uuid4().hex


def run_stream(run_id: str) -> str:
    """The stream name that holds a run's events."""
    return f"run-{run_id}"


def caches_stream(project: str) -> str:
    """The stream of a project's cache entries (``CacheEntrySaved`` ...)."""
    return f"caches-{project}"


def notify_test_stream(test_id: str) -> str:
    """The stream of one ``cyclone notify test`` (``NotificationTestRequested`` ...)."""
    return f"notifytest-{test_id}"


def is_run_stream(stream: str) -> bool:
    return stream.startswith("run-")


@dataclass(frozen=True)
class Event:
    """Base of all domain events. Subclasses register with ``@_register``."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    def __post_init__(self) -> None:
        # Deeply immutable: the JSON payloads (forge events, params, env, rules) become
        # frozendicts and tuples, so no reader of an event can change what another sees.
        for name, value in vars(self).items():
            if isinstance(value, dict | list) or (
                    isinstance(value, tuple) and any(isinstance(v, dict) for v in value)):
                object.__setattr__(self, name, deepfreeze(value))

    def to_data(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Self:
        """The event ``to_data`` gave (of this version); keys it does not know are left
        out (a newer writer's optional fields). A status field gets its enum member
        (``ValueError`` for a value the enum does not have)."""
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in known}
        for name, enum in _enum_fields(cls).items():
            if name in fields:
                fields[name] = enum(fields[name])
        return cls(**fields)


_ENUM_FIELDS: dict[type[Event], dict[str, type[StrEnum]]] = {}


def _enum_fields(cls: type[Event]) -> dict[str, type[StrEnum]]:
    """The fields of ``cls`` typed by an enum (read from its annotations once)."""
    found = _ENUM_FIELDS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = {f.name: hint for f in dataclasses.fields(cls)
                 if isinstance(hint := hints[f.name], type) and issubclass(hint, StrEnum)}
        _ENUM_FIELDS[cls] = found
    return found


def _register(cls: type[E]) -> type[E]:
    if not cls.TYPE:
        raise TypeError(f"{cls.__name__} has no TYPE")
    if cls.TYPE in EVENT_TYPES:
        raise TypeError(f"event type {cls.TYPE!r} registered twice")
    EVENT_TYPES[cls.TYPE] = cls
    return cls


# --- webhook deliveries ----------------------------------------------------------------


@_register
@dataclass(frozen=True)
class DeliveryReceived(Event):
    """A forge's webhook delivery, verified, and what was decided about it. Its stream is
    named by the delivery id, so a redelivery finds it instead of starting runs again."""

    TYPE: ClassVar[str] = "DeliveryReceived"
    project: str
    provider: str
    delivery: str
    event: Mapping[str, Any] = field(default_factory=dict)  # shared.forge.ForgeEvent as JSON
    run_ids: tuple[str, ...] = ()
    ignored: str = ""  # why nothing was started ("" when runs were)
    # The body's SHA-256 hex digest: a redelivery sends the same body ("" in deliveries
    # recorded before it was kept; those are not compared).
    body_sha256: str = ""


# --- run lifecycle --------------------------------------------------------------------


@_register
@dataclass(frozen=True)
class RunRequested(Event):
    """Someone asked for a run. Records everything needed to reproduce it."""

    TYPE: ClassVar[str] = "RunRequested"
    project: str
    trigger: str  # "cli", "manual", "push", "tag", "pull_request", "schedule", "rerun"
    branch: str
    commit: str
    pipeline_file: str  # file name, as shown in diagnostics
    pipeline: str  # the file's content, so a rerun uses exactly the same pipeline
    source: str  # where the source comes from: a local directory or a Git URL
    params: Mapping[str, str] = field(default_factory=dict)
    requested_by: str = ""
    source_kind: str = "dir"  # "dir": copy the directory; "git": check out ``commit`` of it
    # What a forge's webhook said (``shared.forge.ForgeEvent`` as JSON): the pipeline's
    # ``on:`` rules are judged against it once the pipeline file is known.
    forge_event: Mapping[str, Any] = field(default_factory=dict)
    # Why the run's steps get no secret (e.g. a pull request from a fork); "": they may.
    secrets_withheld: str = ""
    # Why the run waits for a maintainer's ``RunApproved`` before anything of it runs
    # (a pull request from a fork, under the project's ``fork_prs: approve``); "": it
    # does not wait.
    approval: str = ""
    # A rerun of ``rerun_of`` (same commit, same pipeline content): the jobs in ``reuse``
    # are not run again, their results are taken from it (``JobReused``).
    rerun_of: str = ""
    reuse: tuple[str, ...] = ()
    # The event ``when:`` and ``CYCLONE_EVENT`` see when it is not ``trigger``: a rerun's is
    # the event of the run it reruns, so a push-only job runs again in a rerun of a push.
    event: str = ""
    # The files the pipeline's ``include:`` names, as read (``shared.pipeline.include.
    # IncludedFile.to_data``): planning reads them here and fetches nothing.
    includes: tuple[Mapping[str, Any], ...] = ()
    # Keys of the pipeline file set for this run (``--set PATH=VALUE``, as written;
    # ``shared.pipeline.overrides``): planning applies them, a rerun keeps them.
    overrides: tuple[str, ...] = ()


@_register
@dataclass(frozen=True)
class RunPlanned(Event):
    """The pipeline compiled into a job graph (stored as ``Plan.to_data``)."""

    TYPE: ClassVar[str] = "RunPlanned"
    plan: Plan
    warnings: tuple[str, ...] = ()

    def to_data(self) -> dict[str, Any]:
        return {"plan": self.plan.to_data(), "warnings": list(self.warnings)}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Self:
        return cls(plan=Plan.from_data(data["plan"]),
                   warnings=tuple(str(w) for w in data.get("warnings", ())))


@_register
@dataclass(frozen=True)
class CheckoutQueued(Event):
    """The run's source must be fetched (from ``RunRequested.source``) before planning."""

    TYPE: ClassVar[str] = "CheckoutQueued"


@_register
@dataclass(frozen=True)
class RunSourceResolved(Event):
    """The checkout resolved the requested ref to a commit and read the pipeline file there."""

    TYPE: ClassVar[str] = "RunSourceResolved"
    commit: str
    branch: str
    pipeline_file: str
    pipeline: str
    log_lines: int = 0  # lines the checkout logged (job "checkout")
    # The files the pipeline's ``include:`` names, read at their commits (or why one
    # could not be): ``shared.pipeline.include.IncludedFile.to_data`` of each.
    includes: tuple[Mapping[str, Any], ...] = ()


@_register
@dataclass(frozen=True)
class JobQueued(Event):
    TYPE: ClassVar[str] = "JobQueued"
    job: str


@_register
@dataclass(frozen=True)
class JobStarted(Event):
    TYPE: ClassVar[str] = "JobStarted"
    job: str
    worker: str
    executor: str


@_register
@dataclass(frozen=True)
class JobSkipped(Event):
    TYPE: ClassVar[str] = "JobSkipped"
    job: str
    reason: str


@_register
@dataclass(frozen=True)
class JobFinished(Event):
    """A job ended: success, failure, cancelled or errored."""

    TYPE: ClassVar[str] = "JobFinished"
    job: str
    status: JobStatus
    duration_s: float
    reason: str = ""
    log_lines: int = 0  # lines shipped for the job: a log stream is complete when it has them all


@_register
@dataclass(frozen=True)
class StepStarted(Event):
    TYPE: ClassVar[str] = "StepStarted"
    job: str
    step: str
    attempt: int = 1


@_register
@dataclass(frozen=True)
class StepFinished(Event):
    """A step ended: success, failure, timeout, cancelled or errored."""

    TYPE: ClassVar[str] = "StepFinished"
    job: str
    step: str
    status: StepStatus
    exit_code: int | None
    duration_s: float
    attempt: int = 1
    reason: str = ""


@_register
@dataclass(frozen=True)
class StepLogTruncated(Event):
    """A step printed more than the per-step log limit; what is past it was not stored.

    Recorded before the step's ``StepFinished``; the log itself says so too, at the
    point where it was cut."""

    TYPE: ClassVar[str] = "StepLogTruncated"
    job: str
    step: str
    kept_lines: int
    kept_bytes: int
    dropped_lines: int
    dropped_bytes: int
    attempt: int = 1

    @property
    def message(self) -> str:
        return (f"log truncated after {self.kept_lines} lines / {_mb(self.kept_bytes)}: "
                f"{self.dropped_lines} more lines ({_mb(self.dropped_bytes)}) not stored")


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


@_register
@dataclass(frozen=True)
class StepSkipped(Event):
    TYPE: ClassVar[str] = "StepSkipped"
    job: str
    step: str
    reason: str


# --- delivery: images pushed, approvals of jobs, deployments ------------------------------


@_register
@dataclass(frozen=True)
class ImagePushed(Event):
    """A build or promote step pushed an image: later jobs use it as ``${{ images.NAME }}``,
    pinned to ``repository@digest``."""

    TYPE: ClassVar[str] = "ImagePushed"
    job: str
    step: str
    name: str
    repository: str
    tags: tuple[str, ...]
    digest: str
    promoted_from: str = ""  # the reference a promote step re-tagged ("": built here)

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"


@_register
@dataclass(frozen=True)
class JobAwaitingApproval(Event):
    """A job with ``approval:`` is ready to run and waits for a user with ``role`` in the
    project; rejected at ``deadline`` (ISO 8601 UTC; "": it waits as long as it takes)."""

    TYPE: ClassVar[str] = "JobAwaitingApproval"
    job: str
    role: Role
    environment: str = ""
    deadline: str = ""


@_register
@dataclass(frozen=True)
class JobApproved(Event):
    TYPE: ClassVar[str] = "JobApproved"
    job: str
    by: str
    comment: str = ""


@_register
@dataclass(frozen=True)
class JobRejected(Event):
    """A job waiting for approval will not run: rejected by a user, or its time ran out
    (``by`` ""). The job fails with the reason."""

    TYPE: ClassVar[str] = "JobRejected"
    job: str
    by: str
    reason: str = ""


@_register
@dataclass(frozen=True)
class DeploymentStarted(Event):
    """A deploy step began to put ``image`` at ``target`` (``DeploySpec.where``) in
    ``environment``; ``approved_by``: who approved its job ("": it needed no approval)."""

    TYPE: ClassVar[str] = "DeploymentStarted"
    job: str
    step: str
    environment: str
    target: str
    image: str
    approved_by: str = ""


@_register
@dataclass(frozen=True)
class DeploymentSucceeded(Event):
    TYPE: ClassVar[str] = "DeploymentSucceeded"
    job: str
    step: str
    environment: str
    target: str
    image: str
    previous: str = ""  # what ran there before ("": nothing)


@_register
@dataclass(frozen=True)
class DeploymentRolledBack(Event):
    """The new image did not become healthy; ``previous`` runs there again."""

    TYPE: ClassVar[str] = "DeploymentRolledBack"
    job: str
    step: str
    environment: str
    target: str
    image: str
    previous: str
    reason: str


@_register
@dataclass(frozen=True)
class DeploymentFailed(Event):
    """The deploy could not be made, or did not become healthy with nothing to roll back to
    (or the rollback failed too: ``reason`` says)."""

    TYPE: ClassVar[str] = "DeploymentFailed"
    job: str
    step: str
    environment: str
    target: str
    image: str
    reason: str


# --- artifacts, caches, step outputs, test reports, reruns --------------------------------
# A blob's bytes are in the artifact store (``shared.ports.artifacts``), named by digest;
# what it is, for which run, job and project, is recorded here.


@_register
@dataclass(frozen=True)
class ArtifactUploaded(Event):
    """A job's ``artifacts:``, a tar of the workspace files ``paths`` matched, stored as
    ``digest``: jobs that ``need`` this one get it extracted into their workspace."""

    TYPE: ClassVar[str] = "ArtifactUploaded"
    job: str
    name: str
    digest: str
    size: int  # bytes of the tar
    files: int
    paths: tuple[str, ...] = ()  # the patterns, as the pipeline wrote them


@_register
@dataclass(frozen=True)
class CacheRestored(Event):
    """A job's ``cache:`` found: ``restored_key`` is ``key`` itself (an exact hit) or the
    newest entry one of its ``restore_keys`` prefixes matched (a partial hit)."""

    TYPE: ClassVar[str] = "CacheRestored"
    job: str
    key: str
    restored_key: str
    digest: str
    size: int

    @property
    def exact(self) -> bool:
        return self.key == self.restored_key


@_register
@dataclass(frozen=True)
class CacheMissed(Event):
    TYPE: ClassVar[str] = "CacheMissed"
    job: str
    key: str


@_register
@dataclass(frozen=True)
class CacheSaved(Event):
    """After the job's success, under a key the project had no entry for."""

    TYPE: ClassVar[str] = "CacheSaved"
    job: str
    key: str
    digest: str
    size: int
    files: int = 0


@_register
@dataclass(frozen=True)
class StepOutputs(Event):
    """What a step wrote to ``$CYCLONE_OUTPUT``: later steps of its job and jobs that
    ``need`` it get them as env and in ``when: {outputs: ...}``. A value holding a secret
    is recorded masked; ``masked`` names those keys."""

    TYPE: ClassVar[str] = "StepOutputs"
    job: str
    step: str
    outputs: Mapping[str, str] = field(default_factory=dict)
    masked: tuple[str, ...] = ()


@_register
@dataclass(frozen=True)
class TestReportRecorded(Event):
    """A job's ``reports: {junit: ...}`` parsed: the counts, the failures (messages cut to
    a few KB) and the slowest tests; every test case's outcome and duration is the JSON
    blob ``results_digest`` in the artifact store (``shared.reports``). ``warnings``:
    files that could not be read (a malformed or huge report fails nothing)."""

    TYPE: ClassVar[str] = "TestReportRecorded"
    job: str
    tests: int
    passed: int
    failed: int
    errors: int
    skipped: int
    duration_s: float
    failures: tuple[Mapping[str, Any], ...] = ()  # {"name", "classname", "message", "file"}
    slowest: tuple[Mapping[str, Any], ...] = ()  # {"name", "classname", "duration_s"}
    results_digest: str = ""
    files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@_register
@dataclass(frozen=True)
class JobReused(Event):
    """``cyclone rerun --failed``: the job is not run again; its result, outputs and
    artifacts are taken from the same job of ``from_run`` (same commit, same pipeline)."""

    TYPE: ClassVar[str] = "JobReused"
    job: str
    from_run: str
    status: JobStatus
    outputs: Mapping[str, str] = field(default_factory=dict)
    artifacts: tuple[Mapping[str, Any], ...] = ()  # ArtifactUploaded.to_data() of each


@_register
@dataclass(frozen=True)
class RunDataCollected(Event):
    """Retention removed some of the run's data (its events are kept): ``what`` among
    "logs" and "artifacts"; ``reason`` names the project's rule that did it."""

    TYPE: ClassVar[str] = "RunDataCollected"
    what: tuple[str, ...]
    reason: str
    freed_bytes: int = 0


# --- the cache entries of a project (stream "caches-<project>") --------------------------


@_register
@dataclass(frozen=True)
class CacheEntrySaved(Event):
    TYPE: ClassVar[str] = "CacheEntrySaved"
    key: str
    digest: str
    size: int
    run: str
    job: str


@_register
@dataclass(frozen=True)
class CacheEntryUsed(Event):
    """A restore took the entry: its last use, for least-recently-used eviction."""

    TYPE: ClassVar[str] = "CacheEntryUsed"
    key: str
    run: str


@_register
@dataclass(frozen=True)
class CacheEntryEvicted(Event):
    TYPE: ClassVar[str] = "CacheEntryEvicted"
    key: str
    digest: str
    reason: str


@_register
@dataclass(frozen=True)
class RunSkipped(Event):
    """The pipeline's ``on:`` rules do not start a run for what triggered it."""

    TYPE: ClassVar[str] = "RunSkipped"
    reason: str
    log_lines: int = 0


@_register
@dataclass(frozen=True)
class RunApproved(Event):
    """A maintainer let a run that waited for approval go on: ``secrets`` True gives its
    steps the secrets they ask for, False keeps them withheld."""

    TYPE: ClassVar[str] = "RunApproved"
    by: str
    secrets: bool = False


@_register
@dataclass(frozen=True)
class RunCancelRequested(Event):
    TYPE: ClassVar[str] = "RunCancelRequested"
    reason: str = ""
    requested_by: str = ""


@_register
@dataclass(frozen=True)
class RunSucceeded(Event):
    TYPE: ClassVar[str] = "RunSucceeded"


@_register
@dataclass(frozen=True)
class RunFailed(Event):
    TYPE: ClassVar[str] = "RunFailed"
    reason: str = ""


@_register
@dataclass(frozen=True)
class RunCancelled(Event):
    TYPE: ClassVar[str] = "RunCancelled"
    reason: str = ""


@_register
@dataclass(frozen=True)
class RunErrored(Event):
    """The run could not complete for a reason outside the pipeline (bad file, crash, ...)."""

    TYPE: ClassVar[str] = "RunErrored"
    reason: str
    log_lines: int = 0  # lines logged on the way to the error (e.g. a failed checkout)


# --- commit statuses reported to the forge (the notifier; in the run's stream) ----------
# They tell what the forge was told; they change nothing about the run itself (the run
# projection and the state machine pass over them).


@_register
@dataclass(frozen=True)
class CommitStatusReported(Event):
    """The forge accepted the commit status ``state`` (pending, success, failure or error,
    as Cyclone says it; ``forge_state`` is the word the forge's API was sent)."""

    TYPE: ClassVar[str] = "CommitStatusReported"
    state: str
    forge: str  # github, gitlab, gitea
    sha: str
    target_url: str
    attempt: int  # the attempt that got through (1: the first)
    forge_state: str = ""


@_register
@dataclass(frozen=True)
class CommitStatusFailed(Event):
    """The forge could not be told ``state``: it refused (a 4xx) or stayed unreachable
    for every attempt. ``reason`` never holds the forge token."""

    TYPE: ClassVar[str] = "CommitStatusFailed"
    state: str
    forge: str
    sha: str
    reason: str
    attempts: int


# --- notifications (the notifier; in the run's stream, or "notifytest-<id>") ---------------
# ``key`` is the idempotency key "<run>/<moment>/<rule>/<channel>": at most one of
# NotificationSent / NotificationFailed is recorded per key, and a key recorded is
# never sent again. ``channel`` is ``Channel.id`` and ``target`` ``Channel.shown``:
# neither holds a secret.


@_register
@dataclass(frozen=True)
class NotificationSent(Event):
    TYPE: ClassVar[str] = "NotificationSent"
    key: str
    rule: str  # "project:<name>" or "file:<name>"
    channel: str
    target: str
    moment: str  # started, ended, test
    reason: str  # the rule's "when" that matched (fixed, failure, ...) or "test"
    attempt: int  # the attempt that got through (1: the first)


@_register
@dataclass(frozen=True)
class NotificationFailed(Event):
    """The channel refused for good, or stayed unreachable for every attempt."""

    TYPE: ClassVar[str] = "NotificationFailed"
    key: str
    rule: str
    channel: str
    target: str
    moment: str
    reason: str
    error: str  # why, secret-free
    attempts: int


@_register
@dataclass(frozen=True)
class BranchRunEnded(Event):
    """The notifier's ledger of a branch (stream "outcomes-<project>/<branch>"): runs in
    the order their ends were handled, so ``fixed`` and ``changed`` know the previous
    outcome. ``outcome`` is ``shared.pipeline.notify.outcome_of`` of the run's status."""

    TYPE: ClassVar[str] = "BranchRunEnded"
    run_id: str
    outcome: str


@_register
@dataclass(frozen=True)
class NotificationTestRequested(Event):
    """``cyclone notify test``: the notifier sends a test message to every channel of
    ``project`` and records each outcome in this stream ("notifytest-<id>")."""

    TYPE: ClassVar[str] = "NotificationTestRequested"
    project: str


@_register
@dataclass(frozen=True)
class NotificationTestStarted(Event):
    """The channels the notifier is about to try (each ``Channel.to_json`` plus its rule)."""

    TYPE: ClassVar[str] = "NotificationTestStarted"
    channels: tuple[Mapping[str, Any], ...]


# --- projects and API tokens (streams "project-<name>" and "tokens") ----------------------


@_register
@dataclass(frozen=True)
class ProjectRegistered(Event):
    TYPE: ClassVar[str] = "ProjectRegistered"
    name: str
    repo: str
    default_branch: str = "main"
    pipeline_file: str = ".cyclone.yml"
    env: Mapping[str, str] = field(default_factory=dict)
    max_concurrent_runs: int = 0  # 0: no limit
    # Where commit statuses go: {"kind", "api_url", "repo", "token"}; {} for none. The
    # token is a secret: projections keep it out of every API answer and log.
    forge: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Signs the forges' webhook deliveries (HMAC key or GitLab token): a secret, too.
    hook_secret: str = field(default="", repr=False)
    auto_cancel: bool = True  # a new push to a branch / PR cancels its older runs
    schedules: tuple[str, ...] = ()  # cron lines (shared.cron), UTC
    # Notification rules (shared.pipeline.notify.NotifyRule.to_data); their chat URLs and
    # webhook keys are secrets. Email templates overriding the shipped ones, by name
    # (subject, text, html).
    notify: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)
    email_templates: Mapping[str, str] = field(default_factory=dict)
    # An admin's say-so: the pipeline may run privileged containers and mount host paths
    # (the Docker socket among them). The most a job's ``resources:`` may ask, as
    # ``shared.pipeline.resources.Resources.to_data`` ({} : no maximum).
    trusted: bool = False
    max_resources: Mapping[str, Any] = field(default_factory=dict)
    # Pull requests from forks: "approve" (they wait for a maintainer), "run-without-secrets"
    # or "never" (shared.projections.projects.FORK_PRS).
    fork_prs: str = "approve"
    # Delivery settings a caicloud.yml relies on: the registry its build pushes to
    # (``shared.pipeline.resources.RegistrySetting.to_data``; {}: none) and the Kubernetes
    # clusters its deploy entries name (name -> ``ClusterSetting.to_data``). Secret names
    # only: the values are the project's secrets.
    registry: Mapping[str, str] = field(default_factory=dict)
    clusters: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # How long its runs' logs and artifacts are kept (``shared.retention.Retention.to_data``:
    # days, runs, failed_days; {}: forever), and the size its cache entries may take
    # together, in MiB (0: CYCLONE_CACHE_MAX_MB).
    retention: Mapping[str, int] = field(default_factory=dict)
    cache_limit_mb: int = 0


@_register
@dataclass(frozen=True)
class ProjectUpdated(Event):
    """Only the fields that changed, by name."""

    TYPE: ClassVar[str] = "ProjectUpdated"
    changes: Mapping[str, Any] = field(repr=False)  # may hold the forge token, chat URLs


@_register
@dataclass(frozen=True)
class ProjectDeleted(Event):
    TYPE: ClassVar[str] = "ProjectDeleted"


@_register
@dataclass(frozen=True)
class TokenCreated(Event):
    """An API token; only its SHA-256 is ever stored."""

    TYPE: ClassVar[str] = "TokenCreated"
    token_id: str
    name: str
    token_hash: str
    admin: bool = False  # a token of no user (``user`` ""): the first start's admin token
    user: str = ""  # whose token it is; "" for a token made before users existed
    read_only: bool = False  # narrowed to reads, whatever its user may do
    # A browser session (``POST /api/v1/session``) rather than an API token: it ends at
    # ``expires_at`` (ISO UTC) and its writes need the CSRF token.
    session: bool = False
    expires_at: str = ""


@_register
@dataclass(frozen=True)
class TokenRevoked(Event):
    TYPE: ClassVar[str] = "TokenRevoked"
    token_id: str


# --- users and their roles (stream "users"); who made a change is in the envelope's meta


@_register
@dataclass(frozen=True)
class UserAdded(Event):
    """A local user; ``password_hash`` is argon2's (``""``: no password, no login)."""

    TYPE: ClassVar[str] = "UserAdded"
    name: str
    password_hash: str = field(default="", repr=False)
    admin: bool = False


@_register
@dataclass(frozen=True)
class UserChanged(Event):
    """Only the fields that changed (``password_hash``, ``admin``), by name."""

    TYPE: ClassVar[str] = "UserChanged"
    name: str
    changes: Mapping[str, Any] = field(repr=False)


@_register
@dataclass(frozen=True)
class UserRemoved(Event):
    TYPE: ClassVar[str] = "UserRemoved"
    name: str


@_register
@dataclass(frozen=True)
class ProjectRoleGranted(Event):
    """``user`` has ``role`` (shared.access.Role) in ``project`` from now on."""

    TYPE: ClassVar[str] = "ProjectRoleGranted"
    user: str
    project: str
    role: Role


@_register
@dataclass(frozen=True)
class ProjectRoleRevoked(Event):
    TYPE: ClassVar[str] = "ProjectRoleRevoked"
    user: str
    project: str


# --- secrets (stream "secrets"; shared.secrets) ----------------------------------------
# Only ciphertext is recorded (shared.secretbox: AES-GCM, associated data scope + name).


@_register
@dataclass(frozen=True)
class SecretSet(Event):
    """A secret was set (or re-encrypted by a key rotation). ``scope``: the project's name,
    or "" for a global secret. ``implicit``: migrated from the project's env, so given to
    every step as the env variable was (not only to those that list it in ``secrets:``)."""

    TYPE: ClassVar[str] = "SecretSet"
    scope: str
    name: str
    ciphertext: str = field(repr=False)
    key_id: str
    implicit: bool = False


@_register
@dataclass(frozen=True)
class SecretRemoved(Event):
    TYPE: ClassVar[str] = "SecretRemoved"
    scope: str
    name: str


# --- schedules (the scheduler; stream "schedule-<project>") -------------------------------
# One stream per project, appended with the expected seq: two schedulers that decide the
# same fire race on the same seq, and only the one whose append wins requests the run.


@_register
@dataclass(frozen=True)
class ScheduleFired(Event):
    """The cron line ``cron`` fired at ``at`` (ISO UTC, whole minute): run ``run_id`` was
    requested for it (its ``RunRequested`` is appended just after this event; a scheduler
    that finds it missing appends it). ``late``: the run started after the fire's minute,
    because no scheduler ran then. ``missed_from``: the earliest of the earlier fires
    that no run was started for (this one run stands for them all); "" for none."""

    TYPE: ClassVar[str] = "ScheduleFired"
    project: str
    cron: str
    at: str
    run_id: str
    late: bool = False
    missed_from: str = ""


@_register
@dataclass(frozen=True)
class ScheduleMissed(Event):
    """The fires of ``cron`` from ``missed_from`` to ``at`` (ISO UTC) passed while no
    scheduler ran, and catching up is off: no run was started for them."""

    TYPE: ClassVar[str] = "ScheduleMissed"
    project: str
    cron: str
    at: str
    missed_from: str


# --- audit ------------------------------------------------------------------------------


@_register
@dataclass(frozen=True)
class AuditCheckpoint(Event):
    """The heads of the streams changed since the previous checkpoint, in the ``audit``
    stream (``shared.audit_checkpoints``): ``heads`` maps a stream to ``{"seq", "hash"}``
    of its last event as of ``position``, so removing a stream's last events shows."""

    TYPE: ClassVar[str] = "AuditCheckpoint"
    heads: Mapping[str, Mapping[str, Any]]
    position: int  # every event up to this global position was looked at


TERMINAL_RUN_EVENTS: tuple[type[Event], ...] = (RunSucceeded, RunFailed, RunCancelled, RunErrored,
                                                 RunSkipped)


# --- envelopes --------------------------------------------------------------------------


@dataclass(frozen=True)
class NewEvent:
    """An event on its way into the store: the envelope fields the writer chooses."""

    event: Event
    id: str = field(default_factory=new_event_id)
    ts: str = field(default_factory=utc_now)
    meta: Mapping[str, str] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.event.TYPE

    @property
    def version(self) -> int:
        return self.event.VERSION

    def data_json(self) -> str:
        return json.dumps(self.event.to_data(), separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class RecordedEvent:
    """An event as stored: ``(stream, seq)`` is unique; ``position`` orders all events."""

    id: str
    stream: str
    seq: int
    type: str
    version: int
    ts: str
    data: dict[str, Any]
    meta: dict[str, str]
    position: int
    # The audit chain (``shared.audit``): this event's hash and its stream's previous
    # event's; "" for events stored before the chain existed.
    hash: str = ""
    prev_hash: str = ""

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON object, for serialising: it shares ``data`` and ``meta``
        with the event (``dataclasses.asdict`` copied them deeply, for every event the
        relay publishes and every stream sends)."""
        return {"id": self.id, "stream": self.stream, "seq": self.seq, "type": self.type,
                "version": self.version, "ts": self.ts, "data": self.data, "meta": self.meta,
                "position": self.position, "hash": self.hash, "prev_hash": self.prev_hash}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RecordedEvent:
        return cls(
            id=str(raw["id"]),
            stream=str(raw["stream"]),
            seq=int(raw["seq"]),
            type=str(raw["type"]),
            version=int(raw["version"]),
            ts=str(raw["ts"]),
            data=dict(raw["data"]),
            meta=dict(raw.get("meta") or {}),
            position=int(raw["position"]),
            hash=str(raw.get("hash") or ""),
            prev_hash=str(raw.get("prev_hash") or ""),
        )


def decode(recorded: RecordedEvent) -> Event | None:
    """The domain event inside ``recorded``, upcast to the current version.

    Returns ``None`` (and logs a warning) for a type this Cyclone does not know or a
    version newer than it understands, so old readers survive new writers.
    """
    cls = EVENT_TYPES.get(recorded.type)
    if cls is None:
        log.warning(
            "skipping unknown event type",
            extra={"event_type": recorded.type, "stream": recorded.stream, "seq": recorded.seq},
        )
        return None
    data, version = dict(recorded.data), recorded.version
    if version > cls.VERSION:
        log.warning(
            "skipping event of a newer version",
            extra={"event_type": recorded.type, "version": version, "seq": recorded.seq},
        )
        return None
    while version < cls.VERSION:
        data = UPCASTERS[(recorded.type, version)](data)
        version += 1
    try:
        return cls.from_data(data)
    except ValueError as exc:  # a status this Cyclone does not know: a newer writer's
        log.warning("skipping event with a value this version does not know", extra={
            "event_type": recorded.type, "seq": recorded.seq, "error": str(exc)})
        return None
