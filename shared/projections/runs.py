"""Run read models as pure functions over a run's event stream.

``apply(run, recorded)`` returns the next ``RunView`` and never mutates its input;
``fold(events)`` is ``apply`` over a whole stream. Every view is a frozen
dataclass of tuples, so a view rebuilt from the store compares equal (``==``) to
the one kept live from the bus. Times come from the events' own timestamps, so a
replay today gives the same durations as the live run did.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from frozendict import deepfreeze, frozendict

from shared import events as ev
from shared.events import RecordedEvent, decode
from shared.pipeline.plan import Plan
from shared.projections.artifacts import ArtifactView, CacheView, TestReportView, cache_view
from shared.projections.delivery import DeploymentState, DeploymentView, ImageView
from shared.status import (
    JOB_DONE,
    JOB_FAILED,
    RUN_DONE,
    CheckoutState,
    JobStatus,
    RunStatus,
    StepStatus,
)

__all__ = [
    "JobView",
    "RunView",
    "StepView",
    "apply",
    "apply_event",
    "fold",
    "run_id_of",
]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class StepView:
    name: str
    status: StepStatus = StepStatus.PENDING
    exit_code: int | None = None
    attempt: int = 0
    started_at: str = ""
    finished_at: str = ""
    duration_s: float | None = None
    reason: str = ""
    log_truncated: str = ""  # what the per-step log limit cut, when it did


@dataclass(frozen=True)
class JobView:
    name: str
    needs: tuple[str, ...] = ()
    status: JobStatus = JobStatus.PENDING
    steps: tuple[StepView, ...] = ()
    worker: str = ""
    executor: str = ""
    queued_at: str = ""  # when it was last queued for a worker (why it waits: waiting.py)
    started_at: str = ""
    finished_at: str = ""
    duration_s: float | None = None
    reason: str = ""
    attempt: int = 0  # how many times a worker has started it (> 1: a worker was lost)
    log_lines: int = 0  # lines its final attempt logged (JobFinished): a stream has them all
    environment: str = ""  # its deploy steps' environment (``environment:``)
    awaiting_approval: str = ""  # the role that may approve it while it waits; "": it does not
    approval_deadline: str = ""  # when a wait for approval ends rejected ("": never)
    approved_by: str = ""
    # What its steps wrote to $CYCLONE_OUTPUT (``StepOutputs``), by key, a later write
    # of a key winning; values holding a secret are masked.
    outputs: tuple[tuple[str, str], ...] = ()
    reused_from: str = ""  # the run whose result it took (``rerun --failed``); "": it ran

    def step(self, name: str) -> StepView | None:
        return next((s for s in self.steps if s.name == name), None)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> JobView:
        """The job of ``RunView.to_data``'s ``jobs`` (see ``RunView.from_data``)."""
        fields = dict(data)
        fields["needs"] = tuple(str(n) for n in fields.get("needs", ()))
        fields["status"] = JobStatus(fields.get("status", JobStatus.PENDING))
        fields["steps"] = tuple(StepView(**{**s, "status": StepStatus(s["status"])})
                                for s in fields.get("steps", ()))
        fields["outputs"] = tuple((str(k), str(v)) for k, v in fields.get("outputs", ()))
        return cls(**fields)

    @property
    def output_map(self) -> dict[str, str]:
        return dict(self.outputs)

    @property
    def waiting_for_approval(self) -> bool:
        return bool(self.awaiting_approval) and self.status == JobStatus.PENDING


@dataclass(frozen=True)
class RunView:
    id: str
    project: str = ""
    status: RunStatus = RunStatus.REQUESTED
    trigger: str = ""
    branch: str = ""
    commit: str = ""
    pipeline_file: str = ""
    source: str = ""
    source_kind: str = "dir"
    params: tuple[tuple[str, str], ...] = ()
    overrides: tuple[str, ...] = ()  # keys of the pipeline file set for it (``--set``)
    forge_event: Mapping[str, Any] | None = None  # what a webhook said (shared.forge.ForgeEvent)
    created_at: str = ""
    started_at: str = ""
    finished_at: str = ""
    duration_s: float | None = None
    cancel_requested: bool = False
    checkout: CheckoutState = CheckoutState.NONE
    checkout_queued_at: str = ""  # when its checkout was queued for a worker
    log_lines: int = 0  # lines the run's steps and checkout logged, as its events report
    reason: str = ""
    secrets_withheld: str = ""  # why the run's steps get no secret; "": they may
    awaiting_approval: str = ""  # why it waits for a maintainer's approval; "": it does not
    approved_by: str = ""
    requested_by: str = ""
    jobs: tuple[JobView, ...] = ()
    images: tuple[ImageView, ...] = ()  # pushed by its build and promote steps, in order
    deployments: tuple[DeploymentView, ...] = ()  # made by its deploy steps, in order
    artifacts: tuple[ArtifactView, ...] = ()  # its jobs' artifacts, as uploaded (or reused)
    caches: tuple[CacheView, ...] = ()  # what its jobs' caches did: restored, missed, saved
    test_reports: tuple[TestReportView, ...] = ()  # one per job with ``reports:``
    rerun_of: str = ""  # the run this one reruns (``cyclone rerun --failed``)
    event: str = ""  # what ``when:`` sees, when not the trigger (a rerun's: its run's event)
    reuse: tuple[str, ...] = ()  # the jobs whose results it takes from ``rerun_of``
    collected: tuple[str, ...] = ()  # what retention removed of it ("logs", "artifacts")
    last_seq: int = 0
    skipped_events: int = 0  # events of unknown types that were skipped
    plan: Plan | None = field(default=None, compare=True, repr=False)
    # Where each job is in ``jobs``: the names and their order are fixed by the plan, so
    # the index is made once per plan and every later view shares it (a lookup must not
    # cost a scan of a run's hundreds of jobs for each of its thousands of events).
    job_index: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.forge_event is not None and not isinstance(self.forge_event, frozendict):
            # as the event holds it (from_data reads JSON's lists): equal views compare equal
            object.__setattr__(self, "forge_event", deepfreeze(self.forge_event))
        if len(self.job_index) != len(self.jobs):
            index = {job.name: n for n, job in enumerate(self.jobs)}
            object.__setattr__(self, "job_index", MappingProxyType(index))

    @property
    def done(self) -> bool:
        return self.status in RUN_DONE

    def job(self, name: str) -> JobView | None:
        at = self.job_index.get(name)
        return None if at is None else self.jobs[at]

    def image(self, name: str) -> ImageView | None:
        """The image pushed last under ``name`` (``${{ images.NAME }}``)."""
        return next((i for i in reversed(self.images) if i.name == name), None)

    @property
    def when_event(self) -> str:
        """The event ``when:`` filters and ``CYCLONE_EVENT`` see: a rerun's is that of the
        run it reruns."""
        return self.event or self.trigger

    def outputs_of(self, needs: Iterable[str]) -> dict[str, str]:
        """The step outputs of the jobs ``needs`` names, in that order (a later job's key
        wins), as their events recorded them: what a job that needs them is given."""
        outputs: dict[str, str] = {}
        for name in needs:
            job = self.job(name)
            outputs.update(job.outputs if job else ())
        return outputs

    def runs_on(self, name: str) -> tuple[str, ...]:
        """The worker labels the job needs (its ``runs-on:``); none for a `cyclone run`,
        whose jobs run on its user's own machine, the one worker it has."""
        if self.plan is None or self.trigger == "cli" or name not in self.job_index:
            return ()
        return self.plan.job(name).runs_on

    def job_failed(self, name: str) -> bool:
        """Whether a job failed, or was skipped because something it needs failed."""
        job = self.job(name)
        if job is None:
            return False
        if job.status in JOB_FAILED:
            return True
        return job.status == JobStatus.SKIPPED and any(self.job_failed(n) for n in job.needs)

    def summary(self) -> dict[str, Any]:
        """The fields a run list shows: what it ran, what started it (and who), when."""
        forge = self.forge_event or {}
        message = str(forge.get("message") or "")
        return {
            "id": self.id, "project": self.project, "status": self.status,
            "trigger": self.trigger, "branch": self.branch, "commit": self.commit,
            "created_at": self.created_at, "finished_at": self.finished_at,
            "duration_s": self.duration_s, "requested_by": self.requested_by,
            "message": message.splitlines()[0] if message else "",
            "tag": str(forge.get("tag") or ""), "pr_number": int(forge.get("pr_number") or 0),
        }

    def to_json(self) -> dict[str, Any]:
        data = self._plain_fields()
        data["params"] = dict(self.params)
        return data

    def _plain_fields(self) -> dict[str, Any]:
        """The fields as plain data (copies), but the plan and the job index."""
        data = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.name not in _VIEW_LISTS}
        data["jobs"] = [dataclasses.asdict(job) for job in self.jobs]
        data["images"] = [dataclasses.asdict(image) for image in self.images]
        data["deployments"] = [dataclasses.asdict(d) for d in self.deployments]
        data["artifacts"] = [dataclasses.asdict(a) for a in self.artifacts]
        data["caches"] = [dataclasses.asdict(c) for c in self.caches]
        data["test_reports"] = [r.to_json() for r in self.test_reports]
        return data

    def to_data(self) -> dict[str, Any]:
        """Every field, JSON-compatible, for storing the view: ``RunView.from_data`` of a
        JSON round trip of it equals (``==``) this view. Unlike ``to_json`` (what the API
        shows) it keeps the plan and the order of ``params``."""
        data = self._plain_fields()
        data["params"] = [list(pair) for pair in self.params]
        data["plan"] = self.plan.to_data() if self.plan else None
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> RunView:
        """The view ``to_data`` described. Raises ``KeyError``, ``TypeError`` or
        ``ValueError`` for data that no ``to_data`` wrote."""
        fields = dict(data)
        fields["params"] = tuple((str(k), str(v)) for k, v in fields.get("params", ()))
        fields["jobs"] = tuple(JobView.from_data(j) for j in fields.get("jobs", ()))
        fields["images"] = tuple(ImageView.from_data(i) for i in fields.get("images", ()))
        fields["deployments"] = tuple(DeploymentView.from_data(d)
                                      for d in fields.get("deployments", ()))
        fields["artifacts"] = tuple(ArtifactView.from_data(a) for a in fields.get("artifacts", ()))
        fields["caches"] = tuple(CacheView.from_data(c) for c in fields.get("caches", ()))
        fields["test_reports"] = tuple(TestReportView.from_data(r)
                                       for r in fields.get("test_reports", ()))
        fields["collected"] = tuple(fields.get("collected", ()))
        fields["reuse"] = tuple(fields.get("reuse", ()))
        fields["overrides"] = tuple(fields.get("overrides", ()))
        fields["status"] = RunStatus(fields.get("status", RunStatus.REQUESTED))
        fields["checkout"] = CheckoutState(fields.get("checkout", CheckoutState.NONE))
        plan = fields.get("plan")
        fields["plan"] = Plan.from_data(plan) if plan else None
        return cls(**fields)


# Fields ``_plain_fields`` writes itself (views of their own), or leaves out.
_VIEW_LISTS = frozenset({"plan", "job_index", "jobs", "images", "deployments", "artifacts",
                         "caches", "test_reports"})


def run_id_of(stream: str) -> str:
    return stream.removeprefix("run-")


def fold(events: Iterable[RecordedEvent], run: RunView | None = None) -> RunView | None:
    """The view after every event of one run's stream (``None`` for no events)."""
    for recorded in events:
        run = apply(run, recorded)
    return run


def apply(run: RunView | None, recorded: RecordedEvent) -> RunView:
    """The view after one more event. Unknown event types are counted and skipped."""
    if run is None:
        run = RunView(id=run_id_of(recorded.stream))
    event = decode(recorded)
    run = replace(run, last_seq=recorded.seq)
    if event is None:
        return replace(run, skipped_events=run.skipped_events + 1)
    return apply_event(run, event, recorded.ts)


def apply_event(run: RunView, event: ev.Event, ts: str) -> RunView:
    """The view after ``event``, recorded at ``ts`` (``apply`` without the record: what
    the state machine uses to see the state its own decisions lead to)."""
    return _dispatch(run, event, ts)


# --- handlers: (view, event, event timestamp) -> view ----------------------------------


def _requested(run: RunView, e: ev.RunRequested, ts: str) -> RunView:
    return replace(
        run, project=e.project, trigger=e.trigger, branch=e.branch, commit=e.commit,
        pipeline_file=e.pipeline_file, source=e.source, source_kind=e.source_kind,
        created_at=ts, forge_event=e.forge_event or None,
        params=tuple(sorted(e.params.items())), secrets_withheld=e.secrets_withheld,
        awaiting_approval=e.approval, requested_by=e.requested_by, rerun_of=e.rerun_of,
        event=e.event,
        reuse=tuple(e.reuse), overrides=tuple(e.overrides),
    )


def _checkout_queued(run: RunView, e: ev.CheckoutQueued, ts: str) -> RunView:
    return replace(run, checkout=CheckoutState.QUEUED, checkout_queued_at=ts)


def _source_resolved(run: RunView, e: ev.RunSourceResolved, ts: str) -> RunView:
    return replace(run, checkout=CheckoutState.DONE, commit=e.commit, branch=e.branch,
                   pipeline_file=e.pipeline_file, log_lines=run.log_lines + e.log_lines)


def _planned(run: RunView, e: ev.RunPlanned, ts: str) -> RunView:
    jobs = tuple(
        JobView(name=j.name, needs=j.needs, steps=tuple(StepView(name=s.name) for s in j.steps),
                environment=j.environment)
        for j in e.plan.jobs
    )
    return replace(run, status=RunStatus.RUNNING, started_at=ts, jobs=jobs, plan=e.plan,
                   job_index={})


def _job_queued(run: RunView, e: ev.JobQueued, ts: str) -> RunView:
    job = run.job(e.job)
    if job is None or not job.attempt:
        return _with_job(run, e.job, status=JobStatus.QUEUED, queued_at=ts)
    # Queued again after its worker was lost: the next attempt starts from scratch.
    fresh = tuple(StepView(name=s.name) for s in job.steps)
    return _with_job(run, e.job, status=JobStatus.QUEUED, steps=fresh, worker="", started_at="",
                     queued_at=ts, outputs=())


def _job_started(run: RunView, e: ev.JobStarted, ts: str) -> RunView:
    job = run.job(e.job)
    return _with_job(run, e.job, status=JobStatus.RUNNING, worker=e.worker, executor=e.executor,
                     started_at=ts, attempt=(job.attempt if job else 0) + 1)


def _job_skipped(run: RunView, e: ev.JobSkipped, ts: str) -> RunView:
    job = run.job(e.job)
    steps = job.steps if job else ()
    skipped = tuple(replace(s, status=StepStatus.SKIPPED) if s.status == StepStatus.PENDING
                    else s for s in steps)
    return _with_job(run, e.job, status=JobStatus.SKIPPED, reason=e.reason, steps=skipped,
                     finished_at=ts)


def _job_finished(run: RunView, e: ev.JobFinished, ts: str) -> RunView:
    run = replace(run, log_lines=run.log_lines + e.log_lines)
    job = run.job(e.job)
    steps = job.steps if job else ()
    # Steps the job never reached are shown as skipped, not left pending forever.
    closed = tuple(replace(s, status=StepStatus.SKIPPED) if s.status == StepStatus.PENDING
                   else s for s in steps)
    return _with_job(run, e.job, status=e.status, duration_s=e.duration_s, reason=e.reason,
                     finished_at=ts, steps=closed, log_lines=e.log_lines)


def _step_started(run: RunView, e: ev.StepStarted, ts: str) -> RunView:
    return _with_step(run, e.job, e.step, status=StepStatus.RUNNING, attempt=e.attempt,
                      started_at=ts, exit_code=None, finished_at="", duration_s=None, reason="",
                      log_truncated="")


def _step_finished(run: RunView, e: ev.StepFinished, ts: str) -> RunView:
    return _with_step(run, e.job, e.step, status=e.status, exit_code=e.exit_code,
                      attempt=e.attempt, finished_at=ts, duration_s=e.duration_s,
                      reason=e.reason)


def _step_log_truncated(run: RunView, e: ev.StepLogTruncated, ts: str) -> RunView:
    return _with_step(run, e.job, e.step, log_truncated=e.message)


def _step_skipped(run: RunView, e: ev.StepSkipped, ts: str) -> RunView:
    return _with_step(run, e.job, e.step, status=StepStatus.SKIPPED, reason=e.reason)


def _approved(run: RunView, e: ev.RunApproved, ts: str) -> RunView:
    withheld = "" if e.secrets else (
        run.secrets_withheld or f"{run.awaiting_approval}: approved without secrets")
    return replace(run, awaiting_approval="", approved_by=e.by, secrets_withheld=withheld)


def _awaiting_approval(run: RunView, e: ev.JobAwaitingApproval, ts: str) -> RunView:
    return _with_job(run, e.job, awaiting_approval=e.role, approval_deadline=e.deadline)


def _job_approved(run: RunView, e: ev.JobApproved, ts: str) -> RunView:
    return _with_job(run, e.job, awaiting_approval="", approval_deadline="", approved_by=e.by)


def _job_rejected(run: RunView, e: ev.JobRejected, ts: str) -> RunView:
    """A rejected job fails (as on GitHub): what needs it runs only on failure."""
    who = f"rejected by {e.by}" if e.by else "rejected"
    reason = f"{who}: {e.reason}" if e.reason else who
    job = run.job(e.job)
    steps = tuple(replace(s, status=StepStatus.SKIPPED) for s in (job.steps if job else ()))
    return _with_job(run, e.job, status=JobStatus.FAILURE, awaiting_approval="",
                     approval_deadline="", reason=reason, finished_at=ts, steps=steps)


def _image_pushed(run: RunView, e: ev.ImagePushed, ts: str) -> RunView:
    image = ImageView(name=e.name, repository=e.repository, tags=e.tags, digest=e.digest,
                      job=e.job, step=e.step, promoted_from=e.promoted_from, pushed_at=ts)
    return replace(run, images=(*run.images, image))


def _deployment_started(run: RunView, e: ev.DeploymentStarted, ts: str) -> RunView:
    view = DeploymentView(job=e.job, step=e.step, environment=e.environment, target=e.target,
                          image=e.image, approved_by=e.approved_by, started_at=ts)
    return replace(run, deployments=(*run.deployments, view))


def _deployment_ended(run: RunView, e: ev.DeploymentSucceeded | ev.DeploymentRolledBack
                      | ev.DeploymentFailed, ts: str) -> RunView:
    """The deployment this step started last gets its outcome."""
    match e:
        case ev.DeploymentSucceeded():
            state, previous, reason = DeploymentState.SUCCEEDED, e.previous, ""
        case ev.DeploymentRolledBack():
            state, previous, reason = DeploymentState.ROLLED_BACK, e.previous, e.reason
        case ev.DeploymentFailed():
            state, previous, reason = DeploymentState.FAILED, "", e.reason
    for at in range(len(run.deployments) - 1, -1, -1):
        d = run.deployments[at]
        if (d.job, d.step, d.target) == (e.job, e.step, e.target):
            ended = replace(d, state=state, previous=previous, reason=reason, finished_at=ts)
            return replace(run, deployments=(*run.deployments[:at], ended,
                                             *run.deployments[at + 1:]))
    return run


def _artifact_uploaded(run: RunView, e: ev.ArtifactUploaded, ts: str) -> RunView:
    return replace(run, artifacts=(*run.artifacts, ArtifactView.of(e, ts)))


def _step_outputs(run: RunView, e: ev.StepOutputs, ts: str) -> RunView:
    job = run.job(e.job)
    if job is None:
        return run
    merged = {**dict(job.outputs), **e.outputs}
    return _with_job(run, e.job, outputs=tuple(merged.items()))


def _test_report(run: RunView, e: ev.TestReportRecorded, ts: str) -> RunView:
    return replace(run, test_reports=(*run.test_reports, TestReportView.of(e, ts)))


def _job_reused(run: RunView, e: ev.JobReused, ts: str) -> RunView:
    """Taken from an earlier run: it ends as it ended there, its steps not run here."""
    job = run.job(e.job)
    steps = tuple(replace(s, status=StepStatus.SKIPPED, reason=f"reused from run {e.from_run}")
                  for s in (job.steps if job else ()))
    artifacts = tuple(ArtifactView.of(ev.ArtifactUploaded.from_data(a), ts, from_run=e.from_run)
                      for a in e.artifacts)
    run = replace(run, artifacts=(*run.artifacts, *artifacts))
    return _with_job(run, e.job, status=e.status, reused_from=e.from_run, steps=steps,
                     outputs=tuple(e.outputs.items()), finished_at=ts, duration_s=0.0,
                     reason=f"reused from run {e.from_run}")


def _data_collected(run: RunView, e: ev.RunDataCollected, ts: str) -> RunView:
    return replace(run, collected=tuple(sorted({*run.collected, *e.what})))


def _cancel_requested(run: RunView, e: ev.RunCancelRequested, ts: str) -> RunView:
    return replace(run, cancel_requested=True)


def _ended(run: RunView, status: RunStatus, ts: str, reason: str = "",
           log_lines: int = 0) -> RunView:
    # A run that ends while steps are still marked running (a crash, an abandoned run)
    # must not show them running forever.
    jobs = tuple(_close_job(j, status) for j in run.jobs)
    return replace(run, status=status, finished_at=ts, duration_s=_elapsed(run, ts),
                   reason=reason, jobs=jobs, log_lines=run.log_lines + log_lines)


def _dispatch(run: RunView, event: ev.Event, ts: str) -> RunView:
    """Each event type to its handler; a type not listed changes nothing in the view."""
    match event:
        case ev.RunRequested():
            return _requested(run, event, ts)
        case ev.CheckoutQueued():
            return _checkout_queued(run, event, ts)
        case ev.RunSourceResolved():
            return _source_resolved(run, event, ts)
        case ev.RunPlanned():
            return _planned(run, event, ts)
        case ev.JobQueued():
            return _job_queued(run, event, ts)
        case ev.JobStarted():
            return _job_started(run, event, ts)
        case ev.JobSkipped():
            return _job_skipped(run, event, ts)
        case ev.JobFinished():
            return _job_finished(run, event, ts)
        case ev.StepStarted():
            return _step_started(run, event, ts)
        case ev.StepFinished():
            return _step_finished(run, event, ts)
        case ev.StepSkipped():
            return _step_skipped(run, event, ts)
        case ev.StepLogTruncated():
            return _step_log_truncated(run, event, ts)
        case ev.RunApproved():
            return _approved(run, event, ts)
        case ev.JobAwaitingApproval():
            return _awaiting_approval(run, event, ts)
        case ev.JobApproved():
            return _job_approved(run, event, ts)
        case ev.JobRejected():
            return _job_rejected(run, event, ts)
        case ev.ImagePushed():
            return _image_pushed(run, event, ts)
        case ev.DeploymentStarted():
            return _deployment_started(run, event, ts)
        case ev.DeploymentSucceeded() | ev.DeploymentRolledBack() | ev.DeploymentFailed():
            return _deployment_ended(run, event, ts)
        case ev.ArtifactUploaded():
            return _artifact_uploaded(run, event, ts)
        case ev.CacheRestored() | ev.CacheMissed() | ev.CacheSaved():
            return replace(run, caches=(*run.caches, cache_view(event, ts)))
        case ev.StepOutputs():
            return _step_outputs(run, event, ts)
        case ev.TestReportRecorded():
            return _test_report(run, event, ts)
        case ev.JobReused():
            return _job_reused(run, event, ts)
        case ev.RunDataCollected():
            return _data_collected(run, event, ts)
        case ev.RunCancelRequested():
            return _cancel_requested(run, event, ts)
        case ev.RunSucceeded():
            return _ended(run, RunStatus.SUCCESS, ts)
        case ev.RunFailed(reason=reason):
            return _ended(run, RunStatus.FAILURE, ts, reason)
        case ev.RunCancelled(reason=reason):
            return _ended(run, RunStatus.CANCELLED, ts, reason)
        case ev.RunErrored(reason=reason, log_lines=lines):
            return _ended(run, RunStatus.ERRORED, ts, reason, lines)
        case ev.RunSkipped(reason=reason, log_lines=lines):
            return _ended(run, RunStatus.SKIPPED, ts, reason, lines)
    return run


# --- helpers ---------------------------------------------------------------------------


def _with_job(run: RunView, name: str, **changes: Any) -> RunView:
    at = run.job_index.get(name)
    if at is None:
        log.warning("event for unknown job", extra={"run": run.id, "job": name})
        return run
    jobs = (*run.jobs[:at], replace(run.jobs[at], **changes), *run.jobs[at + 1:])
    return replace(run, jobs=jobs)


def _with_step(run: RunView, job_name: str, step_name: str, **changes: Any) -> RunView:
    job = run.job(job_name)
    if job is None or job.step(step_name) is None:
        log.warning("event for unknown step", extra={"run": run.id, "job": job_name,
                                                      "step": step_name})
        return run
    steps = tuple(replace(s, **changes) if s.name == step_name else s for s in job.steps)
    return _with_job(run, job_name, steps=steps)


def _close_job(job: JobView, run_status: RunStatus) -> JobView:
    if job.status in JOB_DONE:
        return job
    cancelled = run_status == RunStatus.CANCELLED
    step_ended = StepStatus.CANCELLED if cancelled else StepStatus.ERRORED
    steps = tuple(
        replace(s, status=step_ended if s.status == StepStatus.RUNNING else StepStatus.SKIPPED)
        if s.status in (StepStatus.PENDING, StepStatus.RUNNING) else s
        for s in job.steps
    )
    job_ended = JobStatus.CANCELLED if cancelled else JobStatus.ERRORED
    status = job_ended if job.status == JobStatus.RUNNING else JobStatus.SKIPPED
    return replace(job, status=status, steps=steps)


def _elapsed(run: RunView, ts: str) -> float | None:
    start = run.created_at or run.started_at
    if not start:
        return None
    return round((datetime.fromisoformat(ts) - datetime.fromisoformat(start)).total_seconds(), 6)
